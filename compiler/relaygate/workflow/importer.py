"""`relaygate import --csv FILE`: records from a spreadsheet export, one per row.

Input: a CSV file whose header names record fields (nested fields with dots,
``requestor.email``, ``exception.approver.role``), the inventory and "today".
Output: one record file per row that validates, written the way ``relaygate
new`` writes them, and a finding ``FILE:ROW:COLUMN: rule-id: message`` for each
problem of a row that does not (ROW counts the header as row 1; COLUMN is the
1-based column the problem is in, 0 when it concerns the whole row).

Invariants:

- The columns a CSV may have are read from the device schema, so a field added
  there is importable without a change here; an unknown column stops the import
  before anything is written (a column the tool ignored would be data lost).
- Each row is validated as the record it would become, inside a private copy of
  the inventory together with the other rows, until no accepted row has an error;
  a row that fails is reported and nothing is written for it. The rows written
  are exactly the ones validated, and the inventory with them validates without
  errors beyond the ones it already had (checked, fail closed).
- An existing record is never overwritten (files are created exclusively).
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaygate import model
from relaygate.errors import InternalError, UsageError
from relaygate.findings import Finding, Severity
from relaygate.load import parse_text
from relaygate.pipeline import DEVICES_DIR, LoadedFile, display_path, touched, validate
from relaygate.rules import rule
from relaygate.scaffold import ID, render
from relaygate.schema import schema_text

#: In ``exception.acknowledged``: every acknowledgment the procedure asks for.
ALL_ACKNOWLEDGED = "all"
#: The order fields take in a written record (PRODUCT.md's example); others follow.
_ORDER = (
    "name",
    "unit",
    "kind",
    "model",
    "fqdn",
    "address",
    "auth",
    "account",
    "senders",
    "volume_per_day",
    "requestor",
    "technical_contact",
    "netreg",
    "exception",
    "status",
    "status_reason",
    "status_date",
    "status_ticket",
)
_EXCEPTION_ORDER = (
    "approver",
    "justification",
    "acknowledged",
    "approved_on",
    "expires_on",
    "mod_ticket",
    "acknowledgment_ref",
)


# --- the columns the schema allows ----------------------------------------------------


def _resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        ref = str(node["$ref"])
        if not ref.startswith("#/"):  # pragma: no cover - the bundled schema is local
            raise InternalError(f"device schema: unsupported $ref {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def _kind(node: Mapping[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return str(kind or "string")


def columns() -> dict[str, str]:
    """Every importable column -> its kind (string, integer, boolean, array), in schema order."""
    root = json.loads(schema_text("device"))
    found: dict[str, str] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, raw in node.get("properties", {}).items():
            child = _resolve(raw, root)
            name = f"{prefix}{key}"
            if _kind(child) == "object":
                walk(child, f"{name}.")
            else:
                found[name] = _kind(child)

    walk(_resolve(root, root), "")
    return found


# --- rows -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A problem of one CSV row (or of the header, row 1), located by column."""

    row: int
    column: int
    rule: str
    message: str

    def text(self, shown: str) -> str:
        return f"{shown}:{self.row}:{self.column}: {self.rule}: {self.message}"


@dataclass(slots=True)
class Row:
    number: int  # the CSV row, the header being row 1
    cells: dict[str, str]  # column -> non-empty cell text
    data: dict[str, Any]
    relative: str = ""  # devices/<unit>/<name>.yaml once known
    text: str = ""
    problems: list[RowProblem] | None = None
    warnings: list[RowProblem] | None = None
    cell_failed: bool = False


@dataclass(frozen=True, slots=True)
class ImportResult:
    shown: str  # the CSV as printed
    header: tuple[str, ...]
    written: tuple[Path, ...]
    rejected: tuple[RowProblem, ...]  # errors: their rows were not written
    warnings: tuple[RowProblem, ...]  # warnings of rows that were written
    rows: int

    @property
    def failed_rows(self) -> int:
        return len({p.row for p in self.rejected if p.row > 1})


def problem(row: int, column: int, rule_id: str, message: str) -> RowProblem:
    return RowProblem(row, column, rule_id, f"{message} ({rule(rule_id).hint})")


def _header_problems(header: list[str], known: Mapping[str, str]) -> list[RowProblem]:
    problems: list[RowProblem] = []
    seen: set[str] = set()
    for index, name in enumerate(header, start=1):
        if name in seen:
            problems.append(problem(1, index, "import.duplicate-column", f"column {name!r} again"))
        seen.add(name)
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                problem(1, index, "import.unknown-column", f"{name!r} is not a record field{guess}")
            )
    for needed in ("name", "unit"):
        if needed not in seen:
            problems.append(
                problem(1, 0, "import.missing-column", f"no {needed!r} column to file rows by")
            )
    return problems


def _value(column: str, kind: str, cell: str) -> Any:
    """The field value a cell stands for; ValueError with a reason when it cannot be."""
    if kind == "integer":
        if not cell.isascii() or not cell.lstrip("-").isdigit():
            raise ValueError(f"{cell!r} is not a whole number")
        return int(cell)
    if kind == "boolean":
        if cell.lower() not in ("true", "false"):
            raise ValueError(f"{cell!r} is not true or false")
        return cell.lower() == "true"
    if kind == "array":
        items = cell.split()
        if column == "exception.acknowledged" and items == [ALL_ACKNOWLEDGED]:
            return list(model.ACKNOWLEDGMENTS)
        return items
    return cell


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return _ordered(data)


def _ordered(data: dict[str, Any]) -> dict[str, Any]:
    ordered = {k: data[k] for k in _ORDER if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    exception = ordered.get("exception")
    if isinstance(exception, dict):
        inner = {k: exception[k] for k in _EXCEPTION_ORDER if k in exception}
        inner.update({k: v for k, v in exception.items() if k not in inner})
        ordered["exception"] = inner
    return ordered


def read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A CSV export's header and its non-blank rows, each with its row number (the header
    is row 1). A file that cannot be read as UTF-8 CSV is a usage error."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            table = list(csv.reader(handle, strict=True))
    except FileNotFoundError as error:
        raise UsageError(f"{path}: no such file") from error
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path}: not a readable UTF-8 CSV file: {error}") from error
    if not table:
        raise UsageError(f"{path}: empty, not even a header")
    body = [
        (number, cells)
        for number, cells in enumerate(table[1:], start=2)
        if any(cell.strip() for cell in cells)  # a blank line carries nothing to lose
    ]
    return [name.strip() for name in table[0]], body


def _rows(path: Path, known: Mapping[str, str]) -> tuple[list[str], list[Row], list[RowProblem]]:
    header, body = read_table(path)
    problems = _header_problems(header, known)
    rows: list[Row] = []
    for number, cells in body:
        if len(cells) != len(header):
            problems.append(
                problem(
                    number,
                    0,
                    "import.ragged-row",
                    f"{len(cells)} cells under a header of {len(header)}",
                )
            )
            continue
        given = {name: cell for name, cell in zip(header, cells, strict=True) if cell != ""}
        rows.append(Row(number, given, {}))
    return header, rows, problems


def _build(row: Row, header: list[str], known: Mapping[str, str]) -> None:
    """Fill ``row.data`` and ``row.relative``; problems of the cells themselves."""
    problems: list[RowProblem] = []
    ids = {header.index(key) + 1 for key in ("unit", "name")}
    values: dict[str, Any] = {}
    for column, cell in row.cells.items():
        try:
            values[column] = _value(column, known[column], cell)
        except ValueError as error:
            problems.append(
                problem(row.number, header.index(column) + 1, "import.bad-value", str(error))
            )
    for key in ("unit", "name"):
        value = row.cells.get(key, "")
        if not ID.fullmatch(value):
            problems.append(
                problem(
                    row.number,
                    header.index(key) + 1,
                    "import.bad-value",
                    f"{key} {value!r} must be lower-case letters, digits and inner hyphens",
                )
            )
    row.data = _nest(values)
    # A cell that could not become its field fails the row, but the rest of the row is
    # still validated (without that field) so one run shows every problem it has.
    row.cell_failed = bool(problems)
    if not any(p.rule == "import.bad-value" and p.column in ids for p in problems):
        row.relative = f"{DEVICES_DIR}/{row.cells['unit']}/{row.cells['name']}.yaml"
        row.text = render(row.data)
        readback = parse_text(Path(row.relative), row.relative, row.text, []).document
        if readback is None or readback.data != row.data:
            raise InternalError(f"row {row.number} does not read back as written:\n{row.text}")
    row.problems = problems


# --- validation in a private copy -------------------------------------------------------


def _column_of(row: Row, header: list[str], line: int, column: int) -> int:
    """The CSV column whose field stands at ``line`` (the last one at or before ``column``)."""
    if line <= 0:
        return 0
    document = parse_text(Path(row.relative), row.relative, row.text, []).document
    if document is None:  # pragma: no cover - the text was rendered by us
        return 0
    on_line: list[tuple[int, int]] = []  # (where the field's value starts, CSV column)
    below: list[tuple[int, int]] = []  # (first line of a list field, CSV column)
    for index, name in enumerate(header, start=1):
        if name not in row.cells:
            continue
        at_line, at_column = document.locate(tuple(name.split(".")))
        if at_line == line:
            on_line.append((at_column, index))
        elif at_line < line and known_list(row.data, name):
            below.append((at_line, index))
    if on_line:
        before = [entry for entry in on_line if entry[0] <= column]
        return max(before)[1] if before else min(on_line)[1]
    # A list item (a sender, an acknowledgment) stands on the lines below its key.
    return max(below)[1] if below else 0


def known_list(data: Mapping[str, Any], dotted: str) -> bool:
    value: Any = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return isinstance(value, list)


def _key(finding: Finding, root: Path) -> tuple[str, str, str]:
    path = Path(finding.path)
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        relative = finding.path
    return (relative, finding.rule, finding.message)


def _validate(
    inventory: Path, rows: list[Row], header: list[str], as_of: dt.date
) -> tuple[list[Row], list[Finding]]:
    """Validate the inventory with ``rows``; drop failing rows until the rest is clean."""
    with tempfile.TemporaryDirectory(prefix="relaygate-import-") as tmp:
        copy = Path(tmp) / "inventory"
        shutil.copytree(inventory, copy, symlinks=True)
        before = {_key(f, copy) for f in validate(copy, as_of).findings if f.is_error}
        accepted = list(rows)
        while True:
            for row in accepted:
                target = copy / row.relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(row.text, encoding="utf-8")
            result = validate(copy, as_of)
            # Every row is a new record: the pull-request rule makes its lapses (an
            # expired exception, a missing reservation, an unlisted approver) errors.
            findings = touched(
                result.findings, {display_path(copy / row.relative) for row in accepted}
            )
            by_file: dict[str, list[Finding]] = {}
            for finding in findings:
                by_file.setdefault(_key(finding, copy)[0], []).append(finding)
            # A row whose record fails its schema fails on its own; it is dropped first
            # and the others judged again without it, since its valid fields still take
            # part in the cross-record rules (a duplicate of it is not theirs to pay).
            failing = [
                row
                for row in accepted
                if row.cell_failed or _fails_schema(result.files.get(row.relative))
            ] or [
                row
                for row in accepted
                if row.cell_failed or any(f.is_error for f in by_file.get(row.relative, []))
            ]
            for row in failing if failing else accepted:
                for finding in by_file.get(row.relative, []):
                    # Other records are named by their path in the real inventory.
                    message = finding.message.replace(display_path(copy), display_path(inventory))
                    problem = RowProblem(
                        row.number,
                        _column_of(row, header, finding.line, finding.column),
                        finding.rule,
                        f"{message} ({finding.hint})",
                    )
                    target_list = row.problems if finding.is_error else row.warnings
                    assert target_list is not None
                    if problem not in target_list:
                        target_list.append(problem)
            if not failing:
                new = [f for f in findings if f.is_error and _key(f, copy) not in before]
                return accepted, new
            for row in failing:
                (copy / row.relative).unlink()
                accepted.remove(row)
            for row in accepted:  # re-judged with the failing rows gone
                row.warnings = []


def _fails_schema(loaded: LoadedFile | None) -> bool:
    """True when a row's record is missing or failed its schema (beyond unknown fields)."""
    return loaded is None or loaded.document is None


def _duplicate(row: Row) -> bool:
    return any(p.rule == "import.duplicate-row" for p in row.problems or [])


def run(
    inventory: Path, csv_path: Path, shown: str, as_of: dt.date, *, write: bool
) -> ImportResult:
    """Import the CSV's rows into ``inventory`` (or, without ``write``, only check them)."""
    known = columns()
    header, rows, problems = _rows(csv_path, known)
    if problems and any(p.row == 1 for p in problems):
        return ImportResult(shown, tuple(header), (), tuple(problems), (), len(rows))
    seen: dict[str, int] = {}
    for row in rows:
        row.warnings = []
        _build(row, header, known)
        assert row.problems is not None
        if not row.relative:
            continue
        if row.relative in seen or (inventory / row.relative).exists():
            earlier = f"row {seen[row.relative]}" if row.relative in seen else "the inventory"
            row.problems.append(
                problem(
                    row.number,
                    header.index("name") + 1,
                    "import.duplicate-row",
                    f"{row.relative} is already in {earlier}",
                )
            )
            continue
        seen[row.relative] = row.number
    candidates = [row for row in rows if row.relative and not _duplicate(row)]
    accepted, unexplained = _validate(inventory, candidates, header, as_of)
    if unexplained:
        raise InternalError(
            "the inventory with the accepted rows has errors no row explains: "
            + "; ".join(f.as_text() for f in unexplained)
        )
    written: list[Path] = []
    if write:
        for row in accepted:
            path = inventory / row.relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as handle:  # never overwrite
                handle.write(row.text)
            written.append(path)
    rejected = [*problems, *(p for row in rows for p in (row.problems or []))]
    warnings = [p for row in accepted for p in (row.warnings or [])]
    return ImportResult(
        shown,
        tuple(header),
        tuple(written),
        tuple(sorted(rejected, key=lambda p: (p.row, p.column, p.rule))),
        tuple(sorted(warnings, key=lambda p: (p.row, p.column, p.rule))),
        len(rows),
    )


def problems_text(result: ImportResult) -> Iterator[str]:
    for problem in result.rejected:
        yield problem.text(result.shown)
    for problem in result.warnings:
        yield f"{problem.text(result.shown)} [{Severity.WARNING}]"


__all__ = ["ImportResult", "RowProblem", "columns", "problems_text", "run"]
