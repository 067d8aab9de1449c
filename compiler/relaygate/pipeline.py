"""The validate pipeline: discover -> load -> schema -> model -> checks, once per command.

``load(root, as_of)`` reads a whole inventory (a folder, or a git tree through
``relaygate.source``) and returns a ``LoadedInventory``: every finding of every
file, the raw data of each file, the models of whatever was valid. Commands
build it once and pass it on (``compile.build_loaded``, ``plan.load_side``);
``validate(root, as_of)`` is the same without a cache. With a cache
(``relaygate.cache``), per-file parse/schema results and per-record check
results are reused when their inputs are unchanged, and ``summarize`` reads
validate's whole answer back when nothing changed; the findings are the same
either way. User-data problems never raise; anything that does raise is a
relaygate bug and the CLI turns it into a failing exit code.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache as cache_fn
from pathlib import Path
from typing import Any

from relaygate import addresses, checks, model, schema, schema_files
from relaygate.cache import Cache, canonical, digest
from relaygate.findings import Finding, Severity
from relaygate.load import Document, Limits, decode_text, load_bytes
from relaygate.rules import rule
from relaygate.source import FolderSource, Kind, Source, TreeSource

SITE_FILE = "site.yaml"
UNITS_FILE = "units.yaml"
NETREG_FILE = "netreg.yaml"
#: The files whose facts a record's own checks read besides the record.
_SHARED_FACTS = (SITE_FILE, UNITS_FILE, NETREG_FILE)
DEVICES_DIR = "devices"
_IGNORED = frozenset({".gitkeep"})


@dataclass(slots=True)
class LoadedFile:
    """One inventory file as loaded, by its path relative to the inventory."""

    relative: str
    #: The data as written (before unknown fields are set aside); None if it did not parse.
    raw: dict[str, Any] | None
    #: The document later stages check: passed its schema (unknown fields stripped), or None.
    document: Document | None
    #: True when the schema found nothing at all (not even an unknown field).
    clean: bool
    #: The key of this file's cached result (a hash of its bytes and schema), if it was read.
    key: str | None = None
    #: A device record with schema errors in some top-level fields (``invalid``): the
    #: rest of it, for the checks that read none of them. Never part of a model.
    partial: Document | None = None
    invalid: frozenset[str] = frozenset()


@dataclass(slots=True)
class LoadedInventory:
    """An inventory as loaded once: files, models and every finding.

    Built by ``load`` once per command and passed on (compile, plan), so no
    command reads a file twice. ``inventory`` is None unless it is error-free.
    Paths in findings and ``Device.source`` are ``shown`` joined with the path
    relative to the inventory, whatever the working directory.
    """

    findings: list[Finding]
    inventory: model.Inventory | None
    documents: dict[str, Document] = field(default_factory=dict)
    devices: list[model.Device] = field(default_factory=list)
    files_checked: int = 0
    #: Active records the relay refuses for time or outside data, by source path.
    lapsed: dict[str, model.Lapse] = field(default_factory=dict)
    root: Path | None = None
    shown: str = ""
    #: Every file read (site, units, netreg and each record), by relative path.
    files: dict[str, LoadedFile] = field(default_factory=dict)
    #: Record files in discovery order, relative to the inventory.
    record_paths: list[str] = field(default_factory=list)
    site: model.Site | None = None
    units: dict[str, model.Unit] | None = None
    reservations: dict[str, model.Reservation] | None = None

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.WARNING)

    def relative(self, source: str) -> str:
        """The path relative to the inventory of a shown path (a ``Device.source``)."""
        prefix = "" if self.shown in ("", ".") else self.shown + "/"
        return source[len(prefix) :] if prefix and source.startswith(prefix) else source


#: The name every caller knows: what ``validate`` returns.
ValidationResult = LoadedInventory


def display_path(path: Path) -> str:
    """How a path is shown in findings: relative to the working directory when inside it."""
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def join_shown(shown: str, relative: str) -> str:
    """How a path relative to the inventory is shown: under ``shown`` (the inventory as printed)."""
    return relative if shown in ("", ".") else f"{shown}/{relative}" if relative else shown


def discover_devices(root: Path, shown: str | None = None) -> tuple[list[Path], list[Finding]]:
    """Candidate record files under ``devices/`` of a folder, and findings for the rest.

    Findings show paths under ``shown`` (default: relative to the working directory).
    """
    relatives, found = discover(FolderSource(root), display_path(root) if shown is None else shown)
    return [root / relative for relative in relatives], found


def discover(source: Source, shown: str) -> tuple[list[str], list[Finding]]:
    """Candidate record files under ``devices/``, and findings for everything else there.

    Every entry is accounted for: a file that is not ``devices/<unit>/<name>.yaml``
    is reported, never skipped silently. Paths are relative to the inventory.
    """
    found: list[Finding] = []
    paths: list[str] = []

    def at(rule_id: str, relative: str, message: str) -> None:
        found.append(rule(rule_id).at(join_shown(shown, relative), 1, 1, message))

    def entries(relative: str) -> list[tuple[str, Kind]]:
        try:
            return source.entries(relative)
        except OSError as error:
            at("file.unreadable", relative, f"cannot list the folder: {error.strerror}")
            return []

    kind = source.kind(DEVICES_DIR)
    if kind == "missing":
        at("file.missing", DEVICES_DIR, "devices/ folder not found")
        return paths, found
    if kind != "folder":
        at("file.not-regular", DEVICES_DIR, "devices/ must be a real folder, not a link or file")
        return paths, found
    for unit, unit_kind in entries(DEVICES_DIR):
        unit_path = f"{DEVICES_DIR}/{unit}"
        if unit in _IGNORED:
            continue
        if unit_kind == "link":
            at("file.not-regular", unit_path, "a symbolic link where a unit folder belongs")
            continue
        if unit_kind != "folder":
            at("file.misplaced", unit_path, "records belong in devices/<unit>/<name>.yaml")
            continue
        for name, _ in entries(unit_path):
            if name in _IGNORED:
                continue
            if name.endswith(".yaml") and not name.startswith("."):
                paths.append(f"{unit_path}/{name}")  # the loader refuses links, folders, specials
            else:
                at(
                    "file.misplaced",
                    f"{unit_path}/{name}",
                    f"{name!r} is not a record file (<name>.yaml)",
                )
    return paths, found


_Row = list[Any]  # a cached finding: [line, column, rule, severity, message, hint]


def _rows(findings: list[Finding]) -> list[_Row]:
    return [[f.line, f.column, f.rule, f.severity.value, f.message, f.hint] for f in findings]


def _unrow(rows: list[_Row], display: str) -> list[Finding]:
    return [
        Finding(
            path=display,
            line=int(line),
            column=int(column),
            rule=str(rule_id),
            severity=Severity(severity),
            message=str(message),
            hint=str(hint),
        )
        for line, column, rule_id, severity, message, hint in rows
    ]


@cache_fn
def _schema_digest(kind: schema.SchemaName) -> str:
    return hashlib.sha256(schema.schema_text(kind).encode("utf-8")).hexdigest()


def _file_key(store: Cache, kind: schema.SchemaName, data: bytes) -> str:
    return store.key("file", kind, _schema_digest(kind), hashlib.sha256(data).digest())


def _load_file(
    source: Source,
    relative: str,
    display: str,
    max_bytes: int,
    kind: schema.SchemaName,
    findings: list[Finding],
    store: Cache | None,
) -> LoadedFile:
    """Read one file once, then parse and schema-check it (or take that from the cache)."""
    data, read_findings = source.read(relative, display, max_bytes)
    findings.extend(read_findings)
    if data is None:
        return LoadedFile(relative, None, None, False)
    key = _file_key(store, kind, data) if store is not None else None
    entry = store.get(key) if store is not None and key is not None else None
    return _resolve(source.root, relative, display, data, kind, findings, store, key, entry)


def _resolve(
    root: Path,
    relative: str,
    display: str,
    data: bytes,
    kind: schema.SchemaName,
    findings: list[Finding],
    store: Cache | None,
    key: str | None,
    entry: Any,
) -> LoadedFile:
    """The file's parse and schema result: the cached ``entry`` if usable, else computed.

    The cached result depends only on the file's bytes, its kind's schema and
    relaygate's version, never on its path: findings are stored without one.
    """
    path = root / relative
    if isinstance(entry, dict):
        try:
            hit = _from_entry(path, relative, display, data, entry, findings)
        except (KeyError, TypeError, ValueError):
            hit = None  # an entry of another layout: computed again below
        if hit is not None:
            hit.key = key
            return hit
    own: list[Finding] = []
    loaded = _check_file(path, relative, display, data, kind, own)
    findings.extend(own)
    if store is not None and key is not None:
        document = loaded.document
        store.put(
            key,
            {
                "findings": _rows(own),
                "raw": loaded.raw,
                # Most files are checked as written: their data is stored once.
                "data": None if document is None or document.data is loaded.raw else document.data,
                "same": document is not None and document.data is loaded.raw,
                "clean": loaded.clean,
                "partial": None if loaded.partial is None else loaded.partial.data,
                "invalid": sorted(loaded.invalid),
            },
        )
        loaded.key = key
    return loaded


def _from_entry(
    path: Path,
    relative: str,
    display: str,
    data: bytes,
    entry: dict[str, Any],
    findings: list[Finding],
) -> LoadedFile | None:
    raw, checked, clean = entry["raw"], entry["data"], entry["clean"]
    partial_data, invalid = entry["partial"], entry["invalid"]
    if entry["same"] is True:
        checked = raw
    if (
        not (raw is None or isinstance(raw, dict))
        or not (checked is None or isinstance(checked, dict))
        or not (partial_data is None or isinstance(partial_data, dict))
        or not isinstance(invalid, list)
    ):
        return None
    document = partial = None
    if checked is not None or partial_data is not None:
        text, _ = decode_text(data, display)
        if text is None:
            return None
        if checked is not None:
            document = Document(path=path, display=display, data=checked, text=text)
        if partial_data is not None:
            partial = Document(path=path, display=display, data=partial_data, text=text)
    findings.extend(_unrow(entry["findings"], display))
    return LoadedFile(
        relative, raw, document, bool(clean), partial=partial, invalid=frozenset(invalid)
    )


def _check_file(
    path: Path,
    relative: str,
    display: str,
    data: bytes,
    kind: schema.SchemaName,
    findings: list[Finding],
) -> LoadedFile:
    """Parse and schema-check a file's bytes; the document if its checks can go on."""
    result = load_bytes(path, display, data)
    findings.extend(result.findings)
    document = result.document
    if document is None:
        return LoadedFile(relative, None, None, False)
    raw = document.data
    problems = schema.check(document, kind)
    findings.extend(problems)
    findings.extend(checks.text_checks(document))
    if not problems:
        return LoadedFile(relative, raw, document, True)
    # Unknown fields are reported above; the rest of the record is still
    # checked so one run shows everything. The model never sees them.
    if all(p.rule == "schema.unknown-field" for p in problems):
        raw = copy.deepcopy(raw)
        if schema.strip_unknown_fields(document.data, kind):
            return LoadedFile(relative, raw, document, False)
    if kind == "device":
        # The fields that passed their schema are still checked, by the checks
        # that read none of the others; the record never reaches the model.
        invalid = schema.invalid_fields(raw, kind)
        if invalid is not None:
            rest = copy.deepcopy(raw)
            schema.drop_unknown_fields(rest, kind)
            for name in invalid:
                rest.pop(name, None)
            partial = Document(path=path, display=display, data=rest, text=document.text)
            return LoadedFile(relative, raw, None, False, partial=partial, invalid=invalid)
    return LoadedFile(relative, raw, None, False)


def _facts(
    site_doc: Document | None,
    units_doc: Document | None,
    units: dict[str, model.Unit] | None,
    reservations: dict[str, model.Reservation] | None,
    as_of: dt.date,
) -> tuple[str, Callable[[model.Device], str]]:
    """What the record checks of one device read besides the record: as a hash.

    The site (whole), the record's own unit (or that there is none), the NetReg
    reservation of the record's own address (or that NetReg did not load),
    and the day. Nothing else reaches ``checks.record_checks``.
    """
    site_part = canonical(site_doc.data) if site_doc is not None else "no site"
    common = digest("facts", as_of.isoformat(), site_part)
    unit_data: dict[str, Any] = (
        units_doc.data.get("units", {}) if units is not None and units_doc is not None else {}
    )

    unit_parts: dict[str, str] = {}

    def of(device: model.Device) -> str:
        unit = unit_parts.get(device.unit)
        if unit is None:
            unit = unit_parts[device.unit] = (
                "no units" if units is None else canonical(unit_data.get(device.unit))
            )
        if reservations is None:
            reservation = "no netreg"
        else:
            found = reservations.get(addresses.canonical_text(device.network))
            reservation = "none" if found is None else repr(found)
        return digest(common, unit, reservation)

    return common, of


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


def validate(root: Path, as_of: dt.date, limits: Limits | None = None) -> LoadedInventory:
    """Validate the inventory at ``root`` as of the given day (no cache; paths as before)."""
    return load(root, as_of, limits=limits)


@dataclass(slots=True)
class _ReadOnce:
    """A source that reads each file once however often it is asked."""

    inner: Source
    reads: dict[tuple[str, str, int], tuple[bytes | None, list[Finding]]] = field(
        default_factory=dict
    )

    @property
    def root(self) -> Path:
        return self.inner.root

    def kind(self, relative: str) -> Kind:
        return self.inner.kind(relative)

    def entries(self, relative: str) -> list[tuple[str, Kind]]:
        return self.inner.entries(relative)

    def read(
        self, relative: str, display: str, max_bytes: int
    ) -> tuple[bytes | None, list[Finding]]:
        key = (relative, display, max_bytes)
        found = self.reads.get(key)
        if found is None:
            found = self.reads[key] = self.inner.read(relative, display, max_bytes)
        return found


@dataclass(slots=True)
class OverlaySource:
    """A source with some files added in memory (never written): ``relaygate new``
    checks a record inside the inventory it joins without copying the inventory.

    ``files`` maps paths relative to the inventory to their bytes; folders on
    their way that do not exist yet are listed as folders.
    """

    inner: Source
    files: dict[str, bytes]

    @property
    def root(self) -> Path:
        return self.inner.root

    def _under(self, relative: str) -> dict[str, Kind]:
        prefix = f"{relative}/" if relative else ""
        found: dict[str, Kind] = {}
        for path in self.files:
            if path.startswith(prefix):
                name, more, _ = path[len(prefix) :].partition("/")
                found[name] = "folder" if more else "file"
        return found

    def kind(self, relative: str) -> Kind:
        if relative in self.files:
            return "file"
        inner = self.inner.kind(relative)
        return "folder" if inner == "missing" and self._under(relative) else inner

    def entries(self, relative: str) -> list[tuple[str, Kind]]:
        added = self._under(relative)
        try:
            listed = dict(self.inner.entries(relative))
        except FileNotFoundError:
            if not added:
                raise
            listed = {}
        return sorted({**listed, **added}.items())

    def read(
        self, relative: str, display: str, max_bytes: int
    ) -> tuple[bytes | None, list[Finding]]:
        data = self.files.get(relative)
        if data is None:
            return self.inner.read(relative, display, max_bytes)
        if len(data) > max_bytes:
            message = f"{len(data)} bytes is over the cap of {max_bytes} bytes"
            return None, [rule("file.too-large").at(display, 1, 1, message)]
        return data, []


def summarize(
    root: Path,
    as_of: dt.date,
    *,
    store: Cache | None,
    limits: Limits | None = None,
    shown: str | None = None,
) -> tuple[list[Finding], int]:
    """What ``validate`` prints: every finding and the number of files checked.

    With a ``store``, when no input changed since a run that stored its answer
    (every file's bytes and path, the other entries under ``devices/``, the
    editor schemas beside the inventory, the day, the schemas and the version),
    the answer is read back whole; otherwise it is ``load``'s, each file read
    once either way.
    """
    limits = limits or Limits()
    shown = display_path(root) if shown is None else shown
    if store is None:
        result = load(root, as_of, limits=limits, shown=shown)
        return result.findings, result.files_checked
    files_from = _ReadOnce(FolderSource(root))
    relatives, structure = discover(files_from, shown)
    sizes = [
        (SITE_FILE, limits.site_bytes),
        (UNITS_FILE, limits.site_bytes),
        (NETREG_FILE, limits.netreg_bytes),
        *((relative, limits.record_bytes) for relative in relatives),
    ]
    parts: list[str | bytes] = [as_of.isoformat(), shown, repr(limits)]
    parts += [_schema_digest(kind) for kind in schema_files.NAMES]
    for relative, max_bytes in sizes:
        data, found = files_from.read(relative, join_shown(shown, relative), max_bytes)
        parts.append(relative)
        parts.append(
            hashlib.sha256(data).digest()
            if data is not None
            else repr([f.as_text() for f in found])
        )
    parts += [f.as_text() for f in structure]
    parts += [f.as_text() for f in schema_files.stale_findings(root, shown)]
    key = store.key("inventory", *parts)
    entry = store.get(key)
    if isinstance(entry, dict):
        try:
            findings = [
                Finding(str(p), int(ln), int(c), str(r), Severity(sv), str(m), str(h))
                for p, ln, c, r, sv, m, h in entry["findings"]
            ]
            return findings, int(entry["files"])
        except (KeyError, TypeError, ValueError):
            pass  # another layout: computed again
    result = load(root, as_of, limits=limits, shown=shown, store=store, source=files_from)
    rows = [[f.path, *row] for f, row in zip(result.findings, _rows(result.findings), strict=True)]
    store.put(key, {"findings": rows, "files": result.files_checked})
    store.flush()
    return result.findings, result.files_checked


def load(
    root: Path,
    as_of: dt.date,
    *,
    limits: Limits | None = None,
    shown: str | None = None,
    store: Cache | None = None,
    source: Source | None = None,
) -> LoadedInventory:
    """Load and validate the inventory at ``root``: every file read once.

    ``shown`` is how the inventory folder is printed in findings and
    ``Device.source`` (default: relative to the working directory). With a
    ``store``, per-file results are taken from and saved to that cache; the
    result is the same as without one, byte for byte. ``source`` reads the
    files from elsewhere than the folder ``root`` (a git tree; see
    ``relaygate.source``); ``root`` then only names where they would be.
    """
    files_from: Source = source or FolderSource(root)
    limits = limits or Limits()
    shown = display_path(root) if shown is None else shown
    findings: list[Finding] = []
    files: dict[str, LoadedFile] = {}

    def one(relative: str, max_bytes: int, kind: schema.SchemaName) -> LoadedFile:
        loaded = _load_file(
            files_from, relative, join_shown(shown, relative), max_bytes, kind, findings, store
        )
        files[relative] = loaded
        return loaded

    site_doc = one(SITE_FILE, limits.site_bytes, "site").document
    site = model.build_site(site_doc.data) if site_doc else None
    if site is not None and site_doc is not None:
        findings.extend(checks.site_checks(site, site_doc))

    units_doc = one(UNITS_FILE, limits.site_bytes, "units").document
    units = model.build_units(units_doc.data) if units_doc else None
    if units is not None and units_doc is not None:
        findings.extend(checks.units_checks(units, units_doc, site))

    netreg_doc = one(NETREG_FILE, limits.netreg_bytes, "netreg").document
    reservations: dict[str, model.Reservation] | None = None
    if netreg_doc is not None:
        netreg_key = files[NETREG_FILE].key
        memo = f"netreg\0{netreg_key}\0{netreg_doc.display}" if netreg_key is not None else None
        indexed = store.objects.get(memo) if store is not None and memo is not None else None
        if indexed is None:
            indexed = checks.netreg_checks(model.build_reservations(netreg_doc.data), netreg_doc)
            if store is not None and memo is not None:
                store.objects[memo] = indexed
        reservations, netreg_findings = indexed
        findings.extend(netreg_findings)

    record_paths, structure = discover(files_from, shown)
    findings.extend(structure)
    documents: dict[str, Document] = {}
    devices: list[model.Device] = []
    partial_docs: dict[str, Document] = {}
    partial: list[model.Device] = []
    invalid: dict[str, frozenset[str]] = {}
    read: list[tuple[str, str, bytes | None, str | None]] = []
    for relative in record_paths:
        display = join_shown(shown, relative)
        data, read_findings = files_from.read(relative, display, limits.record_bytes)
        findings.extend(read_findings)
        key = _file_key(store, "device", data) if store is not None and data else None
        read.append((relative, display, data, key))
    entries = (
        store.get_many([key for _, _, _, key in read if key is not None])
        if store is not None
        else {}
    )
    for relative, display, data, key in read:
        if data is None:
            files[relative] = LoadedFile(relative, None, None, False)
            continue
        # The same bytes at the same path, already built in this process (the other
        # side of a plan): the same objects, not a second copy.
        memo = f"{key}\0{relative}\0{display}\0{files_from.root}" if key is not None else None
        built = store.objects.get(memo) if store is not None and memo is not None else None
        if built is None:
            own: list[Finding] = []
            entry = entries.get(key) if key is not None else None
            loaded = _resolve(root, relative, display, data, "device", own, store, key, entry)
            document = loaded.document
            if document is not None:
                device: model.Device | None = model.build_device(document.data, display)
            elif loaded.partial is not None:
                device = model.build_partial_device(loaded.partial.data, loaded.invalid, display)
            else:
                device = None
            built = (loaded, device, own)
            if store is not None and memo is not None:
                store.objects[memo] = built
        loaded, device, own = built
        findings.extend(own)
        files[relative] = loaded
        if device is None:
            continue
        if loaded.document is not None:
            documents[display] = loaded.document
            devices.append(device)
        elif loaded.partial is not None:
            partial_docs[display] = loaded.partial
            partial.append(device)
            invalid[display] = loaded.invalid

    devices.sort(key=lambda d: (d.name, d.source))
    # Editor schemas beside the inventory are a working-tree matter.
    stale = [] if isinstance(files_from, TreeSource) else schema_files.stale_findings(root, shown)
    whole = (
        _findings_key(store, files, record_paths, structure, stale, as_of, shown, limits)
        if store is not None
        else None
    )
    known = _cached_findings(store, whole) if store is not None and whole is not None else None
    if known is not None:
        # Every input of every check is unchanged: the checks' answer is read back.
        findings = known
    else:
        context = checks.Context(
            as_of=as_of,
            site=site,
            units=units,
            reservations=reservations,
            site_doc=site_doc,
            docs={**documents, **partial_docs},
            invalid=invalid,
        )
        # Records with schema errors take part in the checks (of their valid fields
        # only) and in nothing else: not in ``devices``, never in the model.
        checked = devices + partial
        relatives = {join_shown(shown, relative): relative for relative in record_paths}
        findings.extend(_record_checks(relatives, checked, files, context, units_doc, store))
        checked.sort(key=lambda d: (d.name, d.source))
        findings.extend(checks.inventory_checks(checked, context))
        findings.extend(stale)
        findings = sorted(set(findings), key=Finding.sort_key)
        if store is not None and whole is not None:
            store.put(
                whole, [[f.path, *row] for f, row in zip(findings, _rows(findings), strict=True)]
            )
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
    if store is not None:
        store.flush()
    return LoadedInventory(
        findings=findings,
        inventory=inventory,
        documents=documents,
        devices=devices,
        files_checked=3 + len(record_paths),
        lapsed=lapsed,
        root=root,
        shown=shown,
        files=files,
        record_paths=record_paths,
        site=site,
        units=units,
        reservations=reservations,
    )


def _key_of(files: dict[str, LoadedFile], relative: str) -> str | None:
    loaded = files.get(relative)
    return None if loaded is None else loaded.key


def _findings_key(
    store: Cache,
    files: dict[str, LoadedFile],
    record_paths: list[str],
    structure: list[Finding],
    stale: list[Finding],
    as_of: dt.date,
    shown: str,
    limits: Limits,
) -> str | None:
    """A key over every input of every check of a load, or None when one has no key.

    Each file's key already covers its bytes and its kind's schema; the paths,
    the other entries under ``devices/``, the editor schemas, the day, how the
    inventory is shown and the size limits are the rest (the version and code
    are in every key). A file that could not be read has no key: no entry.
    """
    parts: list[str | bytes] = ["findings", as_of.isoformat(), shown, repr(limits)]
    for relative in (SITE_FILE, UNITS_FILE, NETREG_FILE, *record_paths):
        loaded = files.get(relative)
        if loaded is None or loaded.key is None:
            return None
        parts += [relative, loaded.key]
    parts += [f.as_text() for f in structure]
    parts.append("editor schemas")
    parts += [f.as_text() for f in stale]
    return store.key(*parts)


def _cached_findings(store: Cache, key: str) -> list[Finding] | None:
    entry = store.get(key)
    if not isinstance(entry, list):
        return None
    try:
        return [
            Finding(str(p), int(ln), int(c), str(r), Severity(sv), str(m), str(h))
            for p, ln, c, r, sv, m, h in entry
        ]
    except (TypeError, ValueError):
        return None  # another layout: computed again


def _record_checks(
    relatives: dict[str, str],
    devices: list[model.Device],
    files: dict[str, LoadedFile],
    context: checks.Context,
    units_doc: Document | None,
    store: Cache | None,
) -> list[Finding]:
    """Every record's own checks, taken from the cache where their inputs are unchanged.

    ``relatives`` maps each record's shown path (``Device.source``) to its path
    relative to the inventory.
    """
    found: list[Finding] = []
    if store is None:
        for device in devices:
            found.extend(
                checks.record_checks(
                    device, context.docs[device.source], context, context.invalid_of(device)
                )
            )
        return found
    # The rows of the last load under the same site, units, NetReg and day, by
    # record path: a record whose file is unchanged has the same facts (its unit
    # and address are in its bytes), so its rows stand without computing its key.
    shared = [key for name in _SHARED_FACTS if (key := _key_of(files, name)) is not None]
    table_key = (
        store.key("record-table", context.as_of.isoformat(), *shared)
        if len(shared) == len(_SHARED_FACTS)
        else None
    )
    previous = store.get(table_key) if table_key is not None else None
    table: dict[str, Any] = previous if isinstance(previous, dict) else {}
    fresh: dict[str, list[Any]] = {}
    rest: list[model.Device] = []
    for device in devices:
        relative = relatives[device.source]
        file_key = files[relative].key
        known = table.get(relative)
        if (
            file_key is not None
            and isinstance(known, list)
            and len(known) == 2
            and known[0] == file_key
            and isinstance(known[1], list)
        ):
            try:
                found.extend(_unrow(known[1], device.source))
            except (TypeError, ValueError):
                pass  # another layout: computed again below
            else:
                fresh[relative] = known
                continue
        rest.append(device)
    _, facts_of = _facts(
        context.site_doc, units_doc, context.units, context.reservations, context.as_of
    )
    keys: dict[str, str] = {}
    for device in rest:
        relative = relatives[device.source]
        file_key = files[relative].key
        if file_key is not None:
            keys[device.source] = store.key("record", file_key, relative, facts_of(device))
    entries = store.get_many(list(keys.values()))
    for device in rest:
        document = context.docs[device.source]
        key = keys.get(device.source)
        rows = entries.get(key) if key is not None else None
        if isinstance(rows, list):
            try:
                found.extend(_unrow(rows, document.display))
            except (TypeError, ValueError):
                rows = None
        if not isinstance(rows, list):
            own = list(checks.record_checks(device, document, context, context.invalid_of(device)))
            found.extend(own)
            rows = _rows(own)
            if key is not None:
                store.put(key, rows)
        file_key = files[relatives[device.source]].key
        if file_key is not None:
            fresh[relatives[device.source]] = [file_key, rows]
    if table_key is not None and fresh != table:
        store.put(table_key, fresh)
    return found
