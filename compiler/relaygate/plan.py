"""The plan: what a change to the inventory does, for the people who review it.

Inputs: a git repository holding the inventory (possibly in a subfolder), a
base ref, the inventory folder in the working tree, and "today" (``as_of``).
Output: a ``Plan`` value (records added, removed and changed with field-level
differences; per-device access gained and lost; per-artifact lines added and
removed; risks with stable ids; the approvals still needed). Formatting lives
in ``relaygate.plan_report``.

Invariants:

- The base side is read from git objects (``git ls-tree`` + ``git cat-file
  --batch``) into a private temporary folder; the working tree, the index and
  HEAD are never touched.
- Both sides go through the same validate/compile pipeline as
  ``relaygate compile``, with the same ``as_of``, so the artifact diff is
  exactly what a deploy would change.
- A side that does not validate is reported with its findings and still
  diffed as far as its records load: the record diff uses the raw YAML, the
  access diff uses every record that passed its schema, and only the artifact
  diff needs a valid side.
- Every list in a ``Plan`` is sorted, so the same change always gives the
  same plan (no clock, no dict-order dependence).
- The pull-request rule: a finding caused by time or outside data (an
  expired exception, a lost NetReg reservation, a departed approver; see
  ``model.LAPSE_REASONS``) is a warning that compiles its record to a
  refusal, and fails the plan only when the change adds or edits that
  record (``pipeline.touched``). A change that leaves the record alone, a
  revocation above all, is never blocked by it.
- A record that gains a sender is a risk (``risk.sender-added``) for the
  platform team and for the unit of every other record that held or holds
  the address (compared as ``checks.sender_key``), or that owns its domain
  (units.yaml ``sender_domains``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr

from relaygate import compile as compile_
from relaygate import model, schema
from relaygate.addresses import canonical_text
from relaygate.checks import sender_key
from relaygate.errors import InternalError, UsageError, VerificationFailed
from relaygate.findings import Finding
from relaygate.load import Limits, load_document
from relaygate.pipeline import (
    DEVICES_DIR,
    NETREG_FILE,
    SITE_FILE,
    UNITS_FILE,
    ValidationResult,
    discover_devices,
    touched,
    validate,
)
from relaygate.render import Artifacts, Header
from relaygate.verify import MANIFEST

WORKING_TREE = "working tree"
#: Statuses the relay refuses explicitly (REJECT with a reason, nft drop for revoked).
REFUSED = frozenset({model.Status.REVOKED, model.Status.SUSPENDED})
_GIT_TIMEOUT = 120

# --- git ------------------------------------------------------------------------


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run git and return stdout; a failure is a usage problem (bad ref, no repo)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=_GIT_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise UsageError(f"cannot run git: {error}") from error
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise UsageError(f"git {args[0]} failed: {message}")
    return done.stdout


def repo_top(path: Path) -> Path:
    """The top folder of the git work tree that holds ``path``."""
    try:
        top = _git(path, "rev-parse", "--show-toplevel")
    except UsageError as error:
        raise UsageError(f"{path} is not inside a git repository ({error})") from error
    return Path(top.decode().strip()).resolve()


def resolve_commit(top: Path, ref: str) -> str:
    """The commit id ``ref`` names; a usage error if it names none."""
    if not ref or ref.startswith("-"):
        raise UsageError(f"{ref!r} is not a git ref")
    try:
        sha = _git(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    except UsageError as error:
        raise UsageError(
            f"git ref {ref!r} not found (in CI, check out with fetch-depth: 0)"
        ) from error
    return sha.decode().strip()


def export_tree(top: Path, commit: str, subfolder: str, dest: Path) -> int:
    """Write the files under ``subfolder`` at ``commit`` into ``dest``; return how many.

    Reads git objects only. Symbolic links are recreated as links (the loader
    refuses them with a finding, as it would in a checkout); submodules are
    skipped. ``dest`` exists afterwards even when the folder did not exist at
    ``commit`` (the base then reports its missing files).
    """
    dest.mkdir(parents=True, exist_ok=True)
    spec = [] if subfolder in ("", ".") else ["--", subfolder]
    listing = _git(top, "ls-tree", "-r", "-z", "--full-tree", commit, *spec)
    entries: list[tuple[str, str, str]] = []
    prefix = "" if subfolder in ("", ".") else subfolder.rstrip("/") + "/"
    for raw in listing.split(b"\0"):
        if not raw:
            continue
        meta, _, path_bytes = raw.partition(b"\t")
        mode, kind, sha = meta.decode().split(" ")
        path = path_bytes.decode("utf-8", "surrogateescape")
        if kind != "blob" or not path.startswith(prefix):
            continue
        entries.append((mode, sha, path[len(prefix) :]))
    if not entries:
        return 0
    batch = _git(
        top, "cat-file", "--batch", stdin="".join(f"{s}\n" for _, s, _ in entries).encode()
    )
    offset = 0
    for mode, sha, relative in entries:
        newline = batch.index(b"\n", offset)
        header = batch[offset:newline].decode().split(" ")
        if header[0] != sha or header[1] != "blob":
            raise InternalError(f"git cat-file answered {header!r} for {sha}")
        size = int(header[2])
        content = batch[newline + 1 : newline + 1 + size]
        offset = newline + 1 + size + 1
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            os.symlink(content.decode("utf-8", "surrogateescape"), target)
        else:
            target.write_bytes(content)
    return len(entries)


# --- the two sides ----------------------------------------------------------------


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

    @property
    def valid(self) -> bool:
        return self.validation.errors == 0 and self.artifacts is not None

    def lapse(self, device: model.Device) -> model.Lapse | None:
        """Why the relay refuses this active record for time or outside data, if it does."""
        return self.validation.lapsed.get(device.source)

    def access(self, device: model.Device) -> tuple[Access, ...]:
        """What the compiled policy grants this record on this side."""
        return () if self.lapse(device) is not None else access_of(device, self.site)

    def refused(self, device: model.Device | None) -> str | None:
        """How the relay refuses this record on this side, or None."""
        if device is None:
            return None
        lapse = self.lapse(device)
        if lapse is not None and device.status is model.Status.ACTIVE:
            return f"suspended: {lapse.text}"
        return _refused(device)


def _load_raw(path: Path, max_bytes: int) -> dict[str, Any] | None:
    result = load_document(path, path.name, max_bytes)
    return None if result.document is None else result.document.data


def _site_and_units(root: Path) -> tuple[model.Site | None, dict[str, model.Unit] | None]:
    """The site and units models when their files pass their schemas (even if other files fail)."""
    limits = Limits()
    site = units = None
    loaded = load_document(root / SITE_FILE, SITE_FILE, limits.site_bytes).document
    if loaded is not None and not schema.check(loaded, "site"):
        site = model.build_site(loaded.data)
    loaded = load_document(root / UNITS_FILE, UNITS_FILE, limits.site_bytes).document
    if loaded is not None and not schema.check(loaded, "units"):
        units = model.build_units(loaded.data)
    return site, units


def relocate(finding: Finding, root: Path, shown: str) -> Finding:
    """Show a finding's path as ``<shown>/...`` whichever folder it was found in under ``root``."""
    path = Path(finding.path)
    absolute = path if path.is_absolute() else Path.cwd() / path
    try:
        inner = absolute.resolve().relative_to(root.resolve())
    except ValueError:
        return finding
    text = (Path(shown) / inner).as_posix() if shown not in ("", ".") else inner.as_posix()
    return Finding(
        path=text,
        line=finding.line,
        column=finding.column,
        rule=finding.rule,
        severity=finding.severity,
        message=finding.message,
        hint=finding.hint,
    )


def load_side(
    label: str, commit: str | None, root: Path, shown: str, as_of: dt.date, *, base: bool
) -> Side:
    """Validate and compile one side; ``shown`` is the inventory path printed in the plan."""
    note = None
    try:
        built = compile_.build(root, as_of, commit)
    except VerificationFailed as error:
        if not base:
            raise
        # A base the verifier rejects is reported, not fatal: the review is about the head.
        built = compile_.CompileResult(validate(root, as_of), None)
        note = f"the base's compiled artifacts failed verification: {error}"
    validation = built.validation
    validation.findings = [relocate(f, root, shown) for f in validation.findings]
    artifacts = built.artifacts
    site, units = _site_and_units(root)
    limits = Limits()
    paths, _ = discover_devices(root)
    records: dict[str, tuple[str, dict[str, Any] | None]] = {}
    keys: dict[str, str] = {}  # path relative to the inventory -> record key
    for path in paths:
        relative = path.relative_to(root).as_posix()
        key = path.name.removesuffix(".yaml")
        if key in records:  # a duplicate name is an error the findings report; keep both
            key = relative
        keys[relative] = key
        records[key] = (
            (Path(shown) / relative).as_posix(),
            _load_raw(path, limits.record_bytes),
        )
    devices: dict[str, model.Device] = {}
    for device in validation.devices:
        source = Path(device.source)
        absolute = source if source.is_absolute() else Path.cwd() / source
        try:
            relative = absolute.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:  # pragma: no cover - validate only reads under root
            raise InternalError(f"record {device.source} outside {root}") from None
        found = keys.get(relative)
        if found is not None:
            devices[found] = device
    files = {
        name: _load_raw(
            root / name, limits.netreg_bytes if name == NETREG_FILE else limits.site_bytes
        )
        for name in (SITE_FILE, UNITS_FILE, NETREG_FILE)
    }
    return Side(
        label=label,
        commit=commit,
        root=root,
        validation=validation,
        artifacts=artifacts,
        site=site,
        units=units,
        records=records,
        files=files,
        devices=devices,
        note=note,
    )


# --- the plan ------------------------------------------------------------------------


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

    @property
    def risk_ids(self) -> tuple[str, ...]:
        return tuple(sorted({r.id for r in self.risks}))


_LIST_KEYS = ("name", "address")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values. A list of mappings with a unique ``name`` (or
    ``address``) is keyed by it (``mod_segments[mod-libraries].vlan``), so a
    reordered or inserted item does not show as every later item changing."""
    if isinstance(value, dict):
        if not value:
            return {prefix: {}} if prefix else {}
        flat: dict[str, Any] = {}
        for key in sorted(value, key=str):
            flat.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        for list_key in _LIST_KEYS:
            ids = [item.get(list_key) for item in value]
            if all(isinstance(i, str) for i in ids) and len(set(ids)) == len(ids):
                flat = {}
                for item in value:
                    rest = {k: v for k, v in item.items() if k != list_key}
                    inner = f"{prefix}[{item[list_key]}]"
                    flat.update(flatten(rest, inner) if rest else {inner: {}})
                return flat
    return {prefix: value}


def field_changes(before: Any, after: Any) -> tuple[FieldChange, ...]:
    old, new = flatten(before or {}), flatten(after or {})
    return tuple(
        FieldChange(key, old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) or (key in old) != (key in new)
    )


def _segment(site: model.Site | None, network: netaddr.IPNetwork) -> str | None:
    if site is None:
        return None
    for segment in site.mod_segments:
        for prefix in segment.prefixes:
            if prefix.version == network.version and network in prefix:
                return segment.name
    return None


def access_of(device: model.Device, site: model.Site | None) -> tuple[Access, ...]:
    """What the compiled policy grants this record: nothing unless it is active."""
    if device.status is not model.Status.ACTIVE:
        return ()
    port = None
    if site is not None:
        port = site.relay_port if device.is_legacy else site.submission_port
    account = None if device.is_legacy else device.account
    return (Access(canonical_text(device.network), port, account, tuple(sorted(device.senders))),)


def _refused(device: model.Device | None) -> str | None:
    return device.status.value if device is not None and device.status in REFUSED else None


def _unit_of(path: str) -> str:
    return Path(path).parent.name


def _record_changes(base: Side, head: Side) -> list[RecordChange]:
    changes = []
    for key in sorted(set(base.records) | set(head.records)):
        if key not in base.records:
            path, _ = head.records[key]
            changes.append(RecordChange(key, _unit_of(path), path, "added", ()))
        elif key not in head.records:
            path, _ = base.records[key]
            changes.append(RecordChange(key, _unit_of(path), path, "removed", ()))
        else:
            old_path, old = base.records[key]
            path, new = head.records[key]
            if old is None or new is None:
                # A side that does not load: show it as one pseudo-field.
                if old == new:
                    continue
                fields: tuple[FieldChange, ...] = (
                    FieldChange(
                        "(file)",
                        "loads" if old is not None else "does not load",
                        "loads" if new is not None else "does not load",
                    ),
                )
            else:
                fields = field_changes(old, new)
            if old_path != path:
                fields = (FieldChange("(path)", old_path, path), *fields)
            if fields:
                changes.append(RecordChange(key, _unit_of(path), path, "changed", fields))
    return changes


def _file_changes(base: Side, head: Side, shown: str) -> list[FileChange]:
    changes = []
    for name in (SITE_FILE, UNITS_FILE, NETREG_FILE):
        old, new = base.files.get(name), head.files.get(name)
        fields = field_changes(old, new)
        if (old is None) != (new is None):
            fields = (
                FieldChange(
                    "(file)",
                    "missing or does not load" if old is None else "loads",
                    "missing or does not load" if new is None else "loads",
                ),
                *fields,
            )
        if fields:
            changes.append(FileChange((Path(shown) / name).as_posix(), fields))
    return changes


def access_deltas(before: set[Access], after: set[Access]) -> tuple[AccessDelta, ...]:
    """Access before and after, as per-(address, port, login) sender differences."""
    old = {(a.address, a.port, a.account): set(a.senders) for a in before}
    new = {(a.address, a.port, a.account): set(a.senders) for a in after}
    deltas = []
    for key in sorted(set(old) | set(new), key=lambda k: (k[0], k[1] or 0, k[2] or "")):
        senders_before, senders_after = old.get(key), new.get(key)
        if senders_before == senders_after:
            continue
        change = (
            "gained" if senders_before is None else "lost" if senders_after is None else "changed"
        )
        deltas.append(
            AccessDelta(
                address=key[0],
                port=key[1],
                account=key[2],
                change=change,
                senders_added=tuple(sorted((senders_after or set()) - (senders_before or set()))),
                senders_removed=tuple(sorted((senders_before or set()) - (senders_after or set()))),
            )
        )
    return tuple(deltas)


def _access_changes(base: Side, head: Side) -> list[AccessChange]:
    changes = []
    for key in sorted(set(base.devices) | set(head.devices)):
        old, new = base.devices.get(key), head.devices.get(key)
        before = set(base.access(old)) if old else set()
        after = set(head.access(new)) if new else set()
        refused_before, refused_after = base.refused(old), head.refused(new)
        if before == after and refused_before == refused_after:
            continue
        device = new or old
        assert device is not None
        changes.append(
            AccessChange(
                device=device.name,
                unit=device.unit,
                deltas=access_deltas(before, after),
                refused_before=refused_before,
                refused_after=refused_after,
            )
        )
    return changes


def artifact_changes(
    base: Artifacts, head: Artifacts, headers: frozenset[str] = frozenset()
) -> list[ArtifactChange]:
    """Per artifact, the lines removed and added (manifest.json excluded: it only hashes).

    ``headers`` are the generated-file header lines: left out of a file that is
    added or removed whole, where they are the same noise in every file.
    """
    changes = []
    for path in sorted((set(base) | set(head)) - {MANIFEST}):
        old, new = base.get(path), head.get(path)
        if old == new:
            continue
        old_lines = [] if old is None else old.splitlines()
        new_lines = [] if new is None else new.splitlines()
        added: list[str] = []
        removed: list[str] = []
        matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op in ("replace", "delete"):
                removed.extend(old_lines[i1:i2])
            if op in ("replace", "insert"):
                added.extend(new_lines[j1:j2])
        change = "added" if old is None else "removed" if new is None else "changed"
        if change != "changed":
            added = [line for line in added if line not in headers]
            removed = [line for line in removed if line not in headers]
        changes.append(
            ArtifactChange(path, path.split("/", 1)[0], change, tuple(added), tuple(removed))
        )
    return changes


def _risk(risk_id: str, subject: str, message: str) -> Risk:
    return Risk(risk_id, subject, message)


def _device_risks(base: Side, head: Side) -> list[Risk]:
    risks: list[Risk] = []
    for key in sorted(set(base.devices) | set(head.devices)):
        old, new = base.devices.get(key), head.devices.get(key)
        if new is not None and new.status is model.Status.ACTIVE:
            address = canonical_text(new.network)
            if new.is_legacy:
                if old is None or not old.is_legacy or old.status is model.Status.RETIRED:
                    was = (
                        "a new record"
                        if old is None
                        else f"was auth {old.auth.value}"
                        if not old.is_legacy
                        else "was retired"
                    )
                    risks.append(
                        _risk(
                            "risk.legacy-exception-new",
                            new.name,
                            f"new unauthenticated (auth {new.auth.value}) access from {address}"
                            f" ({was})",
                        )
                    )
                elif old.exception is not None and new.exception is not None:
                    before, after = old.exception, new.exception
                    if after.expires_on > before.expires_on:
                        if after.approved_on != before.approved_on:
                            risks.append(
                                _risk(
                                    "risk.legacy-exception-renewed",
                                    new.name,
                                    f"exception renewed: approved {after.approved_on}, expires"
                                    f" {before.expires_on} -> {after.expires_on}",
                                )
                            )
                        else:
                            risks.append(
                                _risk(
                                    "risk.exception-term-extended",
                                    new.name,
                                    f"expires_on {before.expires_on} -> {after.expires_on}"
                                    f" without a new approval (approved_on {after.approved_on})",
                                )
                            )
            if old is not None:
                old_address = canonical_text(old.network)
                if (
                    old.network.version == new.network.version
                    and new.network.size > old.network.size
                ):
                    risks.append(
                        _risk(
                            "risk.prefix-broadened",
                            new.name,
                            f"address {old_address} -> {address}"
                            f" ({old.network.size} -> {new.network.size} addresses)",
                        )
                    )
                elif new.is_legacy and old_address != address:
                    risks.append(
                        _risk(
                            "risk.address-changed",
                            new.name,
                            f"unauthenticated access moves from {old_address} to {address}",
                        )
                    )
                old_segment = _segment(base.site, old.network)
                new_segment = _segment(head.site, new.network)
                if old_segment != new_segment:
                    risks.append(
                        _risk(
                            "risk.segment-changed",
                            new.name,
                            f"MOD segment {old_segment or '(none)'} -> {new_segment or '(none)'}",
                        )
                    )
        if old is not None and old.status in REFUSED and _refused(new) is None:
            now = "the record is removed" if new is None else f"status {new.status.value}"
            risks.append(
                _risk(
                    "risk.revocation-lifted",
                    old.name,
                    f"was {old.status.value} ({old.status_reason or 'no reason'}"
                    f"{', ' + old.status_ticket if old.status_ticket else ''}); now {now}:"
                    f" the relay no longer refuses {canonical_text(old.network)}",
                )
            )
    return risks


def _mailbox_index(sides: Sequence[Side]) -> dict[str, list[model.Device]]:
    """Mailbox (``sender_key``) -> every record on either side, in any status, using it."""
    index: dict[str, dict[tuple[str, str], model.Device]] = {}
    for side in sides:
        for device in side.devices.values():
            for sender in device.senders:
                index.setdefault(sender_key(sender), {}).setdefault(
                    (device.name, device.unit), device
                )
    return {key: [found[k] for k in sorted(found)] for key, found in index.items()}


def _as(holder: model.Device, sender: str) -> str:
    """``, as SPELLING`` when the holder writes the same mailbox another way."""
    key = sender_key(sender)
    spelling = next(s for s in holder.senders if sender_key(s) == key)
    return "" if spelling == sender else f", as {spelling}"


def _domain_units(sides: Sequence[Side], domain: str) -> list[str]:
    """Units that declare this sender domain in units.yaml, on either side."""
    return sorted(
        {
            unit.id
            for side in sides
            for unit in (side.units or {}).values()
            if domain in unit.sender_domains
        }
    )


def _sender_risks(base: Side, head: Side) -> list[Risk]:
    """A record that gains a sender, new or edited, and who else must agree.

    Retired records gain nothing (they relay nothing and hold no sender).
    """
    risks: list[Risk] = []
    mailboxes: dict[str, list[model.Device]] | None = None  # built on the first sender gained
    for key in sorted(head.devices):
        new, old = head.devices[key], base.devices.get(key)
        if new.status is model.Status.RETIRED:
            continue
        had = set() if old is None or old.status is model.Status.RETIRED else set(old.senders)
        added = sorted(set(new.senders) - had)
        if not added:
            continue
        units: set[str] = set()
        notes: list[str] = []
        for sender in added:
            if mailboxes is None:
                mailboxes = _mailbox_index((base, head))
            holders = [h for h in mailboxes.get(sender_key(sender), []) if h.name != new.name]
            owners = _domain_units((base, head), sender.rpartition("@")[2])
            units |= {h.unit for h in holders} | set(owners)
            held = [f"{h.name} ({h.unit}, {h.status.value}{_as(h, sender)})" for h in holders]
            if held:
                notes.append(f"{sender} is also used by {', '.join(held)}")
            others = [u for u in owners if u != new.unit]
            if others:
                notes.append(f"{sender.rpartition('@')[2]} belongs to unit {', '.join(others)}")
        units.discard(new.unit)
        what = " (a new record)" if old is None else ""
        detail = f"; {'; '.join(notes)}" if notes else ""
        risks.append(
            Risk(
                "risk.sender-added",
                new.name,
                f"new senders{what}: {', '.join(added)}{detail}",
                tuple(sorted(units)),
            )
        )
    return risks


def _file_risks(files: Sequence[FileChange], shown: str) -> list[Risk]:
    ids = {
        (Path(shown) / SITE_FILE).as_posix(): "risk.site-changed",
        (Path(shown) / UNITS_FILE).as_posix(): "risk.units-changed",
    }
    risks = []
    for change in files:
        if change.path in ids:
            names = [f.field for f in change.fields]
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            risks.append(
                _risk(ids[change.path], change.path, f"changed: {', '.join(names[:5])}{more}")
            )
    return risks


def _mass_change(base: Side, head: Side) -> MassChange:
    entries = {k: set(base.access(d)) for k, d in base.devices.items()}
    entries = {k: v for k, v in entries.items() if v}
    affected = 0
    for key, before in entries.items():
        new = head.devices.get(key)
        if new is None or set(head.access(new)) != before:
            affected += 1
    thresholds = [s.policy.mass_change_share for s in (base.site, head.site) if s is not None]
    # The stricter of the two: a change cannot raise its own threshold.
    return MassChange(len(entries), affected, min(thresholds) if thresholds else None)


def _mass_risk(mass: MassChange, shown: str) -> list[Risk]:
    if mass.threshold is None or mass.base_entries == 0:
        return []
    share = mass.removed_or_changed / mass.base_entries
    if share <= mass.threshold:
        return []
    return [
        _risk(
            "risk.mass-change",
            shown if shown not in ("", ".") else "inventory",
            f"{mass.removed_or_changed} of {mass.base_entries} allow entries removed or changed"
            f" ({share:.0%}; policy.mass_change_share is {mass.threshold:.0%})",
        )
    ]


#: Fields a revocation or suspension sets; a change of nothing else is a refusal only.
_STATUS_FIELDS = frozenset({"status", "status_reason", "status_date", "status_ticket"})


def _refusal_only(change: RecordChange, head: Side) -> bool:
    """A change that only revokes or suspends a record: the platform team's call alone."""
    device = head.devices.get(change.name)
    return (
        change.change == "changed"
        and device is not None
        and device.status in (model.Status.REVOKED, model.Status.SUSPENDED)
        and all(f.field in _STATUS_FIELDS for f in change.fields)
    )


def _approvals(
    base: Side,
    head: Side,
    records: Sequence[RecordChange],
    files: Sequence[FileChange],
    risks: Sequence[Risk],
) -> list[Approval]:
    """Who must approve: the exception's listed approver and the unit's owners for what a unit
    asks, the platform team for every risk and site-wide file; a revocation or suspension
    needs the platform team alone, so a unit can neither block nor wave through its own."""
    approvals: dict[tuple[str, str], tuple[tuple[str, ...], list[str]]] = {}

    def need(kind: str, who: str, accepts: tuple[str, ...], reason: str) -> None:
        _, reasons = approvals.setdefault((kind, who), (accepts, []))
        if reason not in reasons:
            reasons.append(reason)

    units = head.units or base.units or {}
    for key in sorted(head.devices):
        new, old = head.devices[key], base.devices.get(key)
        if new.status is not model.Status.ACTIVE or new.exception is None:
            continue
        if old is not None and old.exception == new.exception and old.is_legacy:
            continue
        approver = new.exception.approver
        unit = units.get(new.unit)
        listed = unit is not None and approver in unit.approvers
        who = f"{approver.name} <{approver.email}>"
        role = approver.role.value
        detail = (
            f"{role}, {unit.name}"
            if listed and unit is not None
            else f"{role}; NOT a listed approver of unit {new.unit}"
        )
        login = unit.login_of(approver.email) if listed and unit is not None else None
        need(
            "exception-approver",
            who,
            (login,) if login else (),
            f"exception for {new.name} ({detail}; acknowledgment"
            f" {new.exception.acknowledgment_ref})",
        )
    site = head.site or base.site
    platform = site.platform_team if site else "(site.yaml review.platform_team)"
    team = (site.platform_team,) if site else ()
    for change in records:
        if _refusal_only(change, head):
            status = head.devices[change.name].status.value
            need("platform-team", platform, team, f"{status} {change.path}")
            continue
        unit = units.get(change.unit)
        owners = " ".join(unit.owners) if unit else f"(unit {change.unit} is not in units.yaml)"
        need("unit-owners", owners, unit.owners if unit else (), f"{change.change} {change.path}")
    for risk in risks:
        need("platform-team", platform, team, f"{risk.id}: {risk.subject}")
        for unit_id in risk.units:
            unit = units.get(unit_id)
            owners = " ".join(unit.owners) if unit else f"(unit {unit_id} is not in units.yaml)"
            need("unit-owners", owners, unit.owners if unit else (), f"{risk.id}: {risk.subject}")
    for file_change in files:
        need("platform-team", platform, team, f"changed {file_change.path}")
    order = {"exception-approver": 0, "unit-owners": 1, "platform-team": 2}
    return [
        Approval(kind, who, tuple(reasons), accepts)
        for (kind, who), (accepts, reasons) in sorted(
            approvals.items(), key=lambda i: (order[i[0][0]], i[0][1])
        )
    ]


def _summary(side: Side, findings: Sequence[Finding] | None = None) -> SideSummary:
    """The side as reported; ``findings`` replaces its own (the head's, under the PR rule)."""
    shown = tuple(side.validation.findings if findings is None else findings)
    errors = sum(1 for f in shown if f.is_error)
    return SideSummary(
        label=side.label,
        commit=side.commit,
        valid=errors == 0 and side.artifacts is not None,
        errors=errors,
        warnings=len(shown) - errors,
        findings=shown,
        note=side.note,
    )


def compare(base: Side, head: Side, shown: str, as_of: dt.date) -> Plan:
    """The plan of going from ``base`` to ``head``."""
    records = _record_changes(base, head)
    files = _file_changes(base, head, shown)
    mass = _mass_change(base, head)
    risks = (
        _device_risks(base, head)
        + _sender_risks(base, head)
        + _file_risks(files, shown)
        + _mass_risk(mass, shown)
    )
    risks.sort(key=lambda r: (r.id, r.subject, r.message))
    artifacts = None
    note = None
    if base.artifacts is not None and head.artifacts is not None:
        headers = frozenset(
            line
            for side in (base, head)
            if side.site is not None
            for comment in ("#", "!")
            for line in Header(site=side.site.name).lines(comment).splitlines()
        )
        artifacts = tuple(artifact_changes(base.artifacts, head.artifacts, headers))
    else:
        missing = [s.label for s in (base, head) if s.artifacts is None]
        note = (
            f"not compiled: {' and '.join(missing)} did not validate, so there are no"
            " artifacts to compare"
        )
    return Plan(
        as_of=as_of,
        inventory=shown,
        base=_summary(base),
        head=_summary(
            head,
            touched(head.validation.findings, {r.path for r in records if r.change != "removed"}),
        ),
        records=tuple(records),
        files=tuple(files),
        access=tuple(_access_changes(base, head)),
        artifacts=artifacts,
        artifacts_note=note,
        risks=tuple(risks),
        approvals=tuple(_approvals(base, head, records, files, risks)),
        mass_change=mass,
    )


def build_plan(inventory: Path, base_ref: str, as_of: dt.date) -> Plan:
    """Compare the inventory at ``base_ref`` with the working tree's."""
    root = inventory.resolve()
    top = repo_top(root)
    try:
        shown = root.relative_to(top).as_posix()
    except ValueError as error:
        raise UsageError(f"{inventory} is not inside the repository at {top}") from error
    commit = resolve_commit(top, base_ref)
    with tempfile.TemporaryDirectory(prefix="relaygate-plan-") as tmp:
        base_root = Path(tmp) / (Path(shown).name or "inventory")
        export_tree(top, commit, shown, base_root)
        base = load_side(base_ref, commit, base_root, shown, as_of, base=True)
        head = load_side(WORKING_TREE, None, root, shown, as_of, base=False)
        return compare(base, head, shown, as_of)


# --- CODEOWNERS -------------------------------------------------------------------------


def codeowners(site: model.Site, units: dict[str, model.Unit], inventory: str, version: str) -> str:
    """A CODEOWNERS file: unit owners own their records, the platform team the rest.

    In CODEOWNERS the last matching pattern wins, so the catch-all comes first
    and the platform files come last (a unit can never own site.yaml).
    """
    base = "/" if inventory in ("", ".") else f"/{inventory.strip('/')}/"
    parent = Path(inventory).parent.as_posix() if inventory not in ("", ".") else "."
    schemas = "/schemas/" if parent in ("", ".") else f"/{parent}/schemas/"
    team = site.platform_team
    lines = [
        f"# Generated by relaygate {version} from {base[1:]}units.yaml and {base[1:]}site.yaml.",
        "# Do not edit: change the inventory and run"
        " `relaygate codeowners --out .github/CODEOWNERS`.",
        "",
        "# Anything not listed below: the mail platform team (site.yaml review.platform_team).",
        f"* {team}",
        "",
        "# Device records: the owning unit (units.yaml owners).",
    ]
    lines += [
        f"{base}{DEVICES_DIR}/{unit_id}/ {' '.join(unit.owners)}"
        for unit_id, unit in sorted(units.items())
    ]
    lines += [
        "",
        "# Site-wide facts, schemas and the pipelines: the mail platform team.",
        f"{base}{SITE_FILE} {team}",
        f"{base}{UNITS_FILE} {team}",
        f"{base}{NETREG_FILE} {team}",
        f"{schemas} {team}",
        f"/.github/ {team}",
        f"/.gitlab-ci.yml {team}",
        f"/.pre-commit-hooks.yaml {team}",
    ]
    return "\n".join(lines) + "\n"


def site_and_units(root: Path) -> tuple[model.Site | None, dict[str, model.Unit] | None]:
    """Public wrapper: the site and units models of an inventory, if they load."""
    return _site_and_units(root)


def inventory_in_repo(inventory: Path) -> str:
    """The inventory folder relative to its repository top (or to the working directory)."""
    root = inventory.resolve()
    try:
        top = repo_top(root)
    except UsageError:
        top = Path.cwd().resolve()
    try:
        return root.relative_to(top).as_posix()
    except ValueError as error:
        raise UsageError(f"{inventory} is outside {top}") from error


__all__ = [
    "Access",
    "AccessChange",
    "AccessDelta",
    "Approval",
    "ArtifactChange",
    "FieldChange",
    "FileChange",
    "MassChange",
    "Plan",
    "RecordChange",
    "Risk",
    "build_plan",
    "codeowners",
]
