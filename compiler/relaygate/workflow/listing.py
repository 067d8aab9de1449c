"""`relaygate list`: the register of every record, for people and spreadsheets.

Input: the records that pass the schema, valid or not (a register that hid
records with policy findings would hide exactly the ones that need attention;
the command names the files it could not list) and, optionally, the day each
device was last seen. Output: one row per record, sorted by unit and name, as
text, CSV or JSON.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from relaygate import model

#: How a lapse reads in the register (keys: model.LAPSE_REASONS values).
LAPSE_TEXT = {
    "expired": "refused: exception expired",
    "netreg": "refused: NetReg reservation missing or changed",
    "approver": "refused: approver not listed for the unit",
}

COLUMNS = (
    "name",
    "unit",
    "kind",
    "auth",
    "status",
    "lapse",
    "address",
    "account",
    "expires_on",
    "last_seen",
    "file",
)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    unit: str
    kind: str
    auth: str
    status: str
    lapse: str | None  # why the relay refuses an active record (time or outside data)
    address: str
    account: str | None
    expires_on: str | None
    last_seen: str | None
    file: str


def _relative(source: str, root: Path) -> str:
    """A record's file relative to the inventory, wherever the command was run from."""
    path = Path(source)
    path = path if path.is_absolute() else Path.cwd() / path
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return source


def entries(
    devices: list[model.Device],
    root: Path,
    last_seen: Mapping[str, dt.date] | None = None,
    lapsed: Mapping[str, model.Lapse] | None = None,
) -> list[Entry]:
    """The register rows; ``last_seen`` maps a record name to its last accepted day,
    ``lapsed`` a record's source to the lapse the relay refuses it for."""
    seen = last_seen or {}
    lapses = lapsed or {}
    rows = [
        Entry(
            name=d.name,
            unit=d.unit,
            kind=d.kind.value,
            auth=d.auth.value,
            status=d.status.value,
            lapse=LAPSE_TEXT[lapses[d.source].reason] if d.source in lapses else None,
            address=d.address,
            account=d.account,
            expires_on=d.exception.expires_on.isoformat() if d.exception else None,
            last_seen=seen[d.name].isoformat() if d.name in seen else None,
            file=_relative(d.source, root),
        )
        for d in devices
    ]
    return sorted(rows, key=lambda e: (e.unit, e.name, e.file))


def _text(rows: list[Entry]) -> str:
    table = [list(COLUMNS)] + [
        [str(v) if v is not None else "-" for v in asdict(row).values()] for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    return "\n".join(lines) + f"\n{len(rows)} records\n"


def _csv(rows: list[Entry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if v is None else v for v in asdict(row).values()])
    return out.getvalue()


def _json(rows: list[Entry]) -> str:
    return json.dumps({"records": [asdict(row) for row in rows]}, indent=2) + "\n"


FORMATS: dict[str, Callable[[list[Entry]], str]] = {"text": _text, "csv": _csv, "json": _json}
