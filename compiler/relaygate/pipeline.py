"""The validate pipeline: discover -> load -> schema -> model -> checks.

``validate(root, as_of)`` reads a whole inventory folder and returns every
finding of every file in one result, with the model of whatever was valid.
User-data problems never raise; anything that does raise is a relaygate bug
and the CLI turns it into a failing exit code.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from relaygate import checks, model, schema, schema_files
from relaygate.findings import Finding, Severity
from relaygate.load import Document, Limits, load_document
from relaygate.rules import rule

SITE_FILE = "site.yaml"
UNITS_FILE = "units.yaml"
NETREG_FILE = "netreg.yaml"
DEVICES_DIR = "devices"
_IGNORED = frozenset({".gitkeep"})


@dataclass(slots=True)
class ValidationResult:
    """Everything ``validate`` learned. ``inventory`` is None unless it is error-free."""

    findings: list[Finding]
    inventory: model.Inventory | None
    documents: dict[str, Document] = field(default_factory=dict)
    devices: list[model.Device] = field(default_factory=list)
    files_checked: int = 0
    #: Active records the relay refuses for time or outside data, by source path.
    lapsed: dict[str, model.Lapse] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.WARNING)


def display_path(path: Path) -> str:
    """How a path is shown in findings: relative to the working directory when inside it."""
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def _entries(folder: Path, found: list[Finding]) -> list[os.DirEntry[str]]:
    """A folder's entries by name; an unreadable folder is a finding, not a crash."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as error:
        found.append(
            rule("file.unreadable").at(
                display_path(folder), 1, 1, f"cannot list the folder: {error.strerror}"
            )
        )
        return []


def discover_devices(root: Path) -> tuple[list[Path], list[Finding]]:
    """Candidate record files under ``devices/``, and findings for everything else there.

    Every entry is accounted for: a file that is not ``devices/<unit>/<name>.yaml``
    is reported, never skipped silently.
    """
    devices = root / DEVICES_DIR
    found: list[Finding] = []
    paths: list[Path] = []
    if devices.is_symlink() or (devices.exists() and not devices.is_dir()):
        found.append(
            rule("file.not-regular").at(
                display_path(devices), 1, 1, "devices/ must be a real folder, not a link or file"
            )
        )
        return paths, found
    if not devices.exists():
        found.append(
            rule("file.missing").at(display_path(devices), 1, 1, "devices/ folder not found")
        )
        return paths, found
    for unit_entry in _entries(devices, found):
        unit_path = Path(unit_entry.path)
        if unit_entry.name in _IGNORED:
            continue
        mode = os.lstat(unit_path).st_mode
        if stat.S_ISLNK(mode):
            found.append(
                rule("file.not-regular").at(
                    display_path(unit_path), 1, 1, "a symbolic link where a unit folder belongs"
                )
            )
            continue
        if not stat.S_ISDIR(mode):
            found.append(
                rule("file.misplaced").at(
                    display_path(unit_path), 1, 1, "records belong in devices/<unit>/<name>.yaml"
                )
            )
            continue
        for entry in _entries(unit_path, found):
            path = Path(entry.path)
            if entry.name in _IGNORED:
                continue
            if entry.name.endswith(".yaml") and not entry.name.startswith("."):
                paths.append(path)  # the loader refuses links, folders and special files
            else:
                found.append(
                    rule("file.misplaced").at(
                        display_path(path),
                        1,
                        1,
                        f"{entry.name!r} is not a record file (<name>.yaml)",
                    )
                )
    return paths, found


def _load_checked(
    path: Path, max_bytes: int, kind: schema.SchemaName, findings: list[Finding]
) -> Document | None:
    """Load a file and check its schema; the document if its checks can go on."""
    result = load_document(path, display_path(path), max_bytes)
    findings.extend(result.findings)
    document = result.document
    if document is None:
        return None
    problems = schema.check(document, kind)
    findings.extend(problems)
    findings.extend(checks.text_checks(document, result.findings))
    if not problems:
        return document
    # Unknown fields are reported above; the rest of the record is still
    # checked so one run shows everything. The model never sees them.
    if all(p.rule == "schema.unknown-field" for p in problems) and schema.strip_unknown_fields(
        document.data, kind
    ):
        return document
    return None


def lapses(devices: list[model.Device], findings: list[Finding]) -> dict[str, model.Lapse]:
    """The active records a finding of time or outside data refuses, by source path.

    Such a finding (``model.LAPSE_REASONS``) is a warning: the record compiles
    to an explicit refusal with the first reason in that table's order (an
    expired exception before a lost reservation before a departed approver),
    and every other record compiles as usual.
    """
    order = list(model.LAPSE_REASONS)
    found: dict[str, str] = {}
    for finding in findings:
        if finding.rule in model.LAPSE_REASONS:
            current = found.get(finding.path)
            if current is None or order.index(finding.rule) < order.index(current):
                found[finding.path] = finding.rule
    lapsed: dict[str, model.Lapse] = {}
    for device in devices:
        rule_id = found.get(device.source)
        if rule_id is None or device.status is not model.Status.ACTIVE:
            continue
        since = (
            device.exception.expires_on
            if rule_id == "exception.expired" and device.exception is not None
            else None
        )
        lapsed[device.source] = model.Lapse(rule_id, model.LAPSE_REASONS[rule_id], since)
    return lapsed


def touched(findings: list[Finding], paths: set[str]) -> list[Finding]:
    """The findings with every time or outside-data warning on ``paths`` made an error.

    The pull-request rule: such a finding never fails a change that leaves its
    record alone, and always fails a change that adds or edits the record.
    """
    return sorted(
        (
            Finding(
                path=f.path,
                line=f.line,
                column=f.column,
                rule=f.rule,
                severity=Severity.ERROR,
                message=f"{f.message}; this change adds or edits the record",
                hint=f.hint,
            )
            if f.rule in model.LAPSE_REASONS and f.path in paths
            else f
            for f in findings
        ),
        key=Finding.sort_key,
    )


def validate(root: Path, as_of: dt.date, limits: Limits | None = None) -> ValidationResult:
    """Validate the inventory at ``root`` as of the given day."""
    limits = limits or Limits()
    findings: list[Finding] = []

    site_doc = _load_checked(root / SITE_FILE, limits.site_bytes, "site", findings)
    site = model.build_site(site_doc.data) if site_doc else None
    if site is not None and site_doc is not None:
        findings.extend(checks.site_checks(site, site_doc))

    units_doc = _load_checked(root / UNITS_FILE, limits.site_bytes, "units", findings)
    units = model.build_units(units_doc.data) if units_doc else None
    if units is not None and units_doc is not None:
        findings.extend(checks.units_checks(units, units_doc, site))

    netreg_doc = _load_checked(root / NETREG_FILE, limits.netreg_bytes, "netreg", findings)
    reservations: dict[str, model.Reservation] | None = None
    if netreg_doc is not None:
        reservations, netreg_findings = checks.netreg_checks(
            model.build_reservations(netreg_doc.data), netreg_doc
        )
        findings.extend(netreg_findings)

    paths, structure = discover_devices(root)
    findings.extend(structure)
    documents: dict[str, Document] = {}
    devices: list[model.Device] = []
    for path in paths:
        document = _load_checked(path, limits.record_bytes, "device", findings)
        if document is None:
            continue
        documents[document.display] = document
        devices.append(model.build_device(document.data, document.display))

    context = checks.Context(
        as_of=as_of,
        site=site,
        units=units,
        reservations=reservations,
        site_doc=site_doc,
        docs=documents,
    )
    for device in devices:
        findings.extend(checks.record_checks(device, documents[device.source], context))
    devices.sort(key=lambda d: (d.name, d.source))
    findings.extend(checks.inventory_checks(devices, context))

    findings.extend(schema_files.stale_findings(root, display_path(root)))
    findings = sorted(set(findings), key=Finding.sort_key)
    lapsed = lapses(devices, findings)
    inventory = None
    if (
        site
        and units is not None
        and reservations is not None
        and not any(f.is_error for f in findings)
    ):
        inventory = model.Inventory(
            site=site,
            units=units,
            reservations=reservations,
            devices=tuple(devices),
            lapsed=lapsed,
        )
    return ValidationResult(
        findings=findings,
        inventory=inventory,
        documents=documents,
        devices=devices,
        files_checked=3 + len(paths),
        lapsed=lapsed,
    )
