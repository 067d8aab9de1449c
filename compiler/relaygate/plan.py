"""The plan: what a change to the inventory does, for the people who review it.

Inputs: a git repository holding the inventory (possibly in a subfolder), a
base ref, the inventory folder in the working tree, and "today" (``as_of``).
Output: a ``Plan`` value (records added, removed and changed with field-level
differences; per-device access gained and lost; per-artifact lines added and
removed; risks with stable ids; the approvals still needed). This module
loads the two sides and diffs them; the values are in ``plan_types``, risks
and approvals in ``plan_risks``, git plumbing in ``gitrepo``, CODEOWNERS in
``codeowners`` and formatting in ``plan_report``.

Invariants:

- The base side is read from git objects (``git ls-tree`` + ``git cat-file
  --batch``) into memory (``source.TreeSource``); nothing is checked out or
  written, and the working tree, the index and HEAD are never touched.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relaygate import compile as compile_
from relaygate import model, pipeline, schema
from relaygate.cache import Cache
from relaygate.codeowners import codeowners
from relaygate.errors import UsageError, VerificationFailed
from relaygate.findings import Finding
from relaygate.gitrepo import read_tree, repo_top, resolve_commit
from relaygate.load import Limits, load_document
from relaygate.pipeline import (
    NETREG_FILE,
    SITE_FILE,
    UNITS_FILE,
    touched,
)
from relaygate.plan_limits import limit_changes, limit_risks, limits_summary
from relaygate.plan_risks import (
    device_risks,
    file_risks,
    mass_change,
    mass_risk,
    needed_approvals,
    sender_risks,
)
from relaygate.plan_types import (
    Access,
    AccessChange,
    AccessDelta,
    Approval,
    ArtifactChange,
    FieldChange,
    FileChange,
    MassChange,
    Plan,
    RecordChange,
    Risk,
    Side,
    SideSummary,
    same_record,
)
from relaygate.render import Artifacts, Header
from relaygate.source import Source, TreeSource
from relaygate.verify import MANIFEST

WORKING_TREE = "working tree"


# --- the two sides ----------------------------------------------------------------


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


def load_side(
    label: str,
    commit: str | None,
    root: Path,
    shown: str,
    as_of: dt.date,
    *,
    base: bool,
    store: Cache | None = None,
    source: Source | None = None,
) -> Side:
    """Load, validate and compile one side once; ``shown`` is the inventory path printed."""
    loaded = pipeline.load(root, as_of, shown=shown, store=store, source=source)
    note = None
    try:
        built = compile_.build_loaded(loaded, as_of, commit, store=store)
    except VerificationFailed as error:
        if not base:
            raise
        # A base the verifier rejects is reported, not fatal: the review is about the head.
        built = compile_.CompileResult(loaded, None)
        note = f"the base's compiled artifacts failed verification: {error}"
    records: dict[str, tuple[str, dict[str, Any] | None]] = {}
    keys: dict[str, str] = {}  # path relative to the inventory -> record key
    for relative in loaded.record_paths:
        key = relative.rpartition("/")[2].removesuffix(".yaml")
        if key in records:  # a duplicate name is an error the findings report; keep both
            key = relative
        keys[relative] = key
        records[key] = (pipeline.join_shown(shown, relative), loaded.files[relative].raw)
    devices: dict[str, model.Device] = {}
    for device in loaded.devices:
        found = keys.get(loaded.relative(device.source))
        if found is not None:
            devices[found] = device
    files = {
        name: loaded.files[name].raw if name in loaded.files else None
        for name in (SITE_FILE, UNITS_FILE, NETREG_FILE)
    }
    site, units = _clean_site_and_units(loaded)
    return Side(
        label=label,
        commit=commit,
        root=root,
        validation=loaded,
        artifacts=built.artifacts,
        site=site,
        units=units,
        records=records,
        files=files,
        devices=devices,
        note=note,
    )


def _clean_site_and_units(
    loaded: pipeline.LoadedInventory,
) -> tuple[model.Site | None, dict[str, model.Unit] | None]:
    """The site and units models when their files pass their schemas (even if others fail)."""
    site_file = loaded.files.get(SITE_FILE)
    units_file = loaded.files.get(UNITS_FILE)
    return (
        loaded.site if site_file is not None and site_file.clean else None,
        loaded.units if units_file is not None and units_file.clean else None,
    )


# --- the plan ------------------------------------------------------------------------


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
            elif old is new or old == new:
                fields = ()  # the same bytes on both sides share one value
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
        # Equal data (one object when the bytes are the same) has no field changes.
        fields = () if old == new else field_changes(old, new)
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
    same = same_record(base, head)
    for key in sorted(set(base.devices) | set(head.devices)):
        old, new = base.devices.get(key), head.devices.get(key)
        if same(old, new):
            continue
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
    mass = mass_change(base, head)
    limits = limit_changes(base, head)
    limits_overview = limits_summary(base, head, limits)
    risks = (
        device_risks(base, head)
        + sender_risks(base, head)
        + file_risks(files, shown)
        + mass_risk(mass, shown)
        + limit_risks(base, head, limits_overview, shown)
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
    authority = base.site or head.site  # who approves: the base's word when it has one
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
        approvals=tuple(needed_approvals(base, head, records, files, risks)),
        mass_change=mass,
        platform_team=authority.platform_team if authority is not None else None,
        limits=tuple(limits),
        limits_summary=limits_overview,
    )


def build_plan(
    inventory: Path, base_ref: str, as_of: dt.date, *, store: Cache | None = None
) -> Plan:
    """Compare the inventory at ``base_ref`` with the working tree's (each loaded once)."""
    root = inventory.resolve()
    top = repo_top(root)
    try:
        shown = root.relative_to(top).as_posix()
    except ValueError as error:
        raise UsageError(f"{inventory} is not inside the repository at {top}") from error
    commit = resolve_commit(top, base_ref)
    # The base is read from git objects into memory: nothing is checked out or written.
    tree = TreeSource(root, read_tree(top, commit, shown))
    base = load_side(base_ref, commit, root, shown, as_of, base=True, store=store, source=tree)
    del tree  # its bytes are no longer needed once loaded
    head = load_side(WORKING_TREE, None, root, shown, as_of, base=False, store=store)
    return compare(base, head, shown, as_of)


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
    "Side",
    "SideSummary",
    "build_plan",
    "codeowners",
    "load_side",
    "site_and_units",
]
