"""The values a plan is made of: the two sides, and every change, risk and approval.

Frozen dataclasses with sorted tuples, so the same change always gives the
same plan; ``Side`` also answers what the compiled policy grants a record on
that side (``access``) and how the relay refuses it (``refused``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netaddr

from relaygate import model
from relaygate.addresses import PrefixIndex, canonical_text
from relaygate.findings import Finding
from relaygate.pipeline import ValidationResult
from relaygate.render import Artifacts

#: Statuses the relay refuses explicitly (REJECT with a reason, nft drop for revoked).
REFUSED = frozenset({model.Status.REVOKED, model.Status.SUSPENDED})


@dataclass(slots=True)
class Side:
    """One side of the comparison, as far as it loads."""

    label: str  # the ref as given, or "working tree"
    commit: str | None
    root: Path  # where its inventory folder is on disk (a temp folder for the base)
    validation: ValidationResult
    artifacts: Artifacts | None
    site: model.Site | None
    units: dict[str, model.Unit] | None
    records: dict[str, tuple[str, dict[str, Any] | None]]  # key -> (inventory path, raw data)
    files: dict[str, dict[str, Any] | None]  # site/units/netreg -> raw data
    devices: dict[str, model.Device]  # key -> schema-valid record
    note: str | None = None  # why the artifacts are missing beyond findings
    _segments: PrefixIndex | None = field(default=None, init=False, repr=False)

    @property
    def valid(self) -> bool:
        return self.validation.errors == 0 and self.artifacts is not None

    def lapse(self, device: model.Device) -> model.Lapse | None:
        """Why the relay refuses this active record for time or outside data, if it does."""
        return self.validation.lapsed.get(device.source)

    def access(self, device: model.Device) -> tuple[Access, ...]:
        """What the compiled policy grants this record on this side."""
        return () if self.lapse(device) is not None else access_of(device, self.site)

    def grants(self, device: model.Device) -> bool:
        """Whether ``access(device)`` is not empty, without building it."""
        return device.status is model.Status.ACTIVE and self.lapse(device) is None

    def segment(self, network: netaddr.IPNetwork) -> str | None:
        """The MOD segment this side's site places ``network`` in (None: none, or no site)."""
        if self.site is None:
            return None
        if self._segments is None:
            self._segments = self.site.segment_index()
        return self._segments.first(network)

    def refused(self, device: model.Device | None) -> str | None:
        """How the relay refuses this record on this side, or None."""
        if device is None:
            return None
        lapse = self.lapse(device)
        if lapse is not None and device.status is model.Status.ACTIVE:
            return f"suspended: {lapse.text}"
        return refusal(device)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed field; ``None`` stands for "absent" on that side."""

    field: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class RecordChange:
    name: str
    unit: str
    path: str
    change: str  # added | removed | changed
    fields: tuple[FieldChange, ...]


@dataclass(frozen=True, slots=True)
class FileChange:
    """A change to site.yaml, units.yaml or netreg.yaml."""

    path: str
    fields: tuple[FieldChange, ...]


@dataclass(frozen=True, slots=True, order=True)
class Access:
    """Relay access through one address and port, as one login (or none), with these senders."""

    address: str
    port: int | None  # None when the side's site.yaml does not load
    account: str | None  # None for legacy (IP-authorised) access
    senders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccessDelta:
    """How access through one (address, port, login) changes.

    ``gained``: the relay starts accepting this client; ``lost``: it stops;
    ``changed``: it still accepts it, with other senders.
    """

    address: str
    port: int | None
    account: str | None
    change: str  # gained | lost | changed
    senders_added: tuple[str, ...]
    senders_removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AccessChange:
    device: str
    unit: str
    deltas: tuple[AccessDelta, ...]
    refused_before: str | None  # "revoked" / "suspended" when the relay refuses it explicitly
    refused_after: str | None


@dataclass(frozen=True, slots=True)
class ArtifactChange:
    path: str
    target: str
    change: str  # added | removed | changed
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LimitChange:
    """A record whose daily limit on the relay changes (None: it has no limit on that side)."""

    device: str
    unit: str
    before: int | None
    after: int | None
    #: How the head's limit is computed (``limits.Limit.explanation``), or None without one.
    how: str | None


@dataclass(frozen=True, slots=True)
class LimitsSummary:
    """All daily limit changes at once, with the site's ``volume_limits`` when they change."""

    site_before: str | None  # "factor 3, floor 50, max_per_day 10000, port 10040"
    site_after: str | None
    raised: int
    lowered: int
    added: int  # records that gain a limit (new, or active again)
    removed: int  # records that lose it (removed, or no longer active)
    total_before: int  # sum of the limits of records active on both sides
    total_after: int


@dataclass(frozen=True, slots=True)
class Risk:
    id: str
    subject: str
    message: str
    #: Other units whose owners must review it (besides the platform team).
    units: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Approval:
    kind: str  # exception-approver | platform-team | unit-owners
    who: str
    reasons: tuple[str, ...]
    #: Code-host users (@login) or teams (@org/team) any one of whom satisfies it; empty
    #: when nobody can (an approver without a login in units.yaml).
    accepts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MassChange:
    """Allow entries (active records) of the base that this change removes or changes."""

    base_entries: int
    removed_or_changed: int
    threshold: float | None


@dataclass(frozen=True, slots=True)
class SideSummary:
    label: str
    commit: str | None
    valid: bool
    errors: int
    warnings: int
    findings: tuple[Finding, ...]
    note: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    as_of: dt.date
    inventory: str  # the inventory folder, relative to the repository top
    base: SideSummary
    head: SideSummary
    records: tuple[RecordChange, ...]
    files: tuple[FileChange, ...]
    access: tuple[AccessChange, ...]
    artifacts: tuple[ArtifactChange, ...] | None  # None when a side has no artifacts
    artifacts_note: str | None
    risks: tuple[Risk, ...]
    approvals: tuple[Approval, ...]
    mass_change: MassChange
    #: The platform team as the base side names it (the head's when the base has none):
    #: who approves what a change does outside the inventory.
    platform_team: str | None = None
    #: Daily limit changes (``relaygate.limits``), by device; summary None when none change.
    limits: tuple[LimitChange, ...] = ()
    limits_summary: LimitsSummary | None = None


def same_record(
    base: Side, head: Side
) -> Callable[[model.Device | None, model.Device | None], bool]:
    """A test for "this record is the very same on both sides" (computed once per plan).

    True for one ``Device`` object on both sides (the same bytes at the same
    path are built once per process) when the two sites are equal and the
    record lapses the same way on both: then everything a plan derives from
    one record (access, refusal, segment, every per-record risk) is the same
    on both sides, and a 10k-record plan skips comparing it. A per-record risk
    that reads anything else (units, NetReg) must be added to this test.
    """
    sites_equal = base.site == head.site

    def same(old: model.Device | None, new: model.Device | None) -> bool:
        return sites_equal and old is not None and old is new and base.lapse(old) == head.lapse(new)

    return same


def access_of(device: model.Device, site: model.Site | None) -> tuple[Access, ...]:
    """What the compiled policy grants this record: nothing unless it is active."""
    if device.status is not model.Status.ACTIVE:
        return ()
    port = None
    if site is not None:
        port = site.relay_port if device.is_legacy else site.submission_port
    account = None if device.is_legacy else device.account
    # relay_senders: the null sender ("<>") is access too when the record opts in.
    return (Access(canonical_text(device.network), port, account, device.relay_senders),)


def refusal(device: model.Device | None) -> str | None:
    return device.status.value if device is not None and device.status in REFUSED else None
