"""Activity: what the relays accepted and rejected, read from their Postfix logs.

Input: Postfix log files as operators have them: classic syslog lines
(``/var/log/mail.log`` and its rotations, plain or compressed with gzip, bzip2
or xz, recognised by their magic bytes), rsyslog high-precision (RFC 3339)
lines, RFC 5424 lines, and ``journalctl -o json`` exports; one file may mix
them. Output: the activity store, a SQLite database that holds, for every
client address and every SASL login, the days with accepted or rejected mail
(counts per day) and the last accepted message.

What counts:

* accepted: an smtpd ``QID: client=host[addr]`` line (with ``sasl_username``
  when the client authenticated) followed by the qmgr ``QID: from=<...>, ...
  (queue active)`` line of the same relay and queue id. Only the first qmgr
  line counts: later ones are retries of the same message. The message is
  counted on the day of the qmgr line, for its address and for its login.
* rejected: ``NOQUEUE: reject: ...`` and ``QID: reject: ...`` (also
  ``milter-reject``) lines. A reject is never activity: it never moves a
  last-seen date.

Invariants of the store:

* Each file is ingested in one transaction (``BEGIN IMMEDIATE`` before the
  file is looked up, ``COMMIT`` after its counts, its offset and the queue
  ids still waiting for their qmgr line are written): a crash loses nothing
  and leaves no half-ingested file, and two ingests of the same file cannot
  both count it.
* A file is known by a fingerprint, the SHA-256 of its first bytes (up to
  ``FINGERPRINT_BYTES`` of the decompressed stream), never by its name: a
  rotated copy (``mail.log`` -> ``mail.log.1`` -> ``mail.log.2.gz``) is the
  same file. The store remembers how far each file was read, as a byte offset
  of the decompressed stream at a line boundary; a file that grew is read
  from there, so nothing is counted twice.
* Classic syslog timestamps carry no year. Within a file the year advances
  when the month jumps backwards by two or more (December -> January); a
  December line right after January lines is a late line of the old year.
  The year is anchored on the file's modification time (the last line was
  written then), on ``--year`` (the year of the file's first line), or, for
  a file that grew, on where the previous run stopped. The report says which.
* Days are the calendar days the log lines write (the relay's local time);
  journal entries carry UTC instants and are converted to the zone given
  (default: this machine's zone).

Reading is streaming (fixed-size chunks, counts aggregated per file in
dictionaries whose size depends on the clients and days, not on the lines)
and written once per file with ``executemany``.

Test hook: ``RELAYGATE_TEST_PAUSE=NAME:lines:N`` or ``NAME:commit`` makes the
ingest of the file named NAME print ``relaygate-test: paused`` to stderr and
sleep, after N lines or just before its COMMIT, so a test can kill it inside
the file's transaction.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import ipaddress
import json
import lzma
import os
import re
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, cast

from relaygate.errors import UsageError

SCHEMA_VERSION = 1
FINGERPRINT_BYTES = 4096
CHUNK_BYTES = 1 << 20
#: Queue ids whose qmgr line never came (a lost connection after DATA, a
#: message deleted by hand) are forgotten once they are this many days older
#: than the newest line read.
PENDING_DAYS = 2

Kind = Literal["address", "login"]

#: The store's schema, one list of statements per version; a store is
#: brought up to date on open, in one transaction per step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE files (
            fingerprint TEXT NOT NULL,
            fp_len INTEGER NOT NULL,
            path TEXT NOT NULL,
            offset INTEGER NOT NULL,
            lines INTEGER NOT NULL,
            first_day TEXT,
            last_day TEXT,
            anchor_year INTEGER,
            anchor_month INTEGER,
            PRIMARY KEY (fp_len, fingerprint)
        )""",
        """CREATE TABLE days (
            kind TEXT NOT NULL CHECK (kind IN ('address', 'login')),
            key TEXT NOT NULL,
            day TEXT NOT NULL,
            accepted INTEGER NOT NULL,
            rejected INTEGER NOT NULL,
            PRIMARY KEY (kind, key, day)
        ) WITHOUT ROWID""",
        """CREATE TABLE clients (
            kind TEXT NOT NULL CHECK (kind IN ('address', 'login')),
            key TEXT NOT NULL,
            accepted INTEGER NOT NULL,
            rejected INTEGER NOT NULL,
            last_accepted TEXT,
            last_relay TEXT,
            last_queue_id TEXT,
            last_sender TEXT,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID""",
        """CREATE TABLE pending (
            relay TEXT NOT NULL,
            queue_id TEXT NOT NULL,
            address TEXT NOT NULL,
            login TEXT,
            day TEXT NOT NULL,
            PRIMARY KEY (relay, queue_id)
        ) WITHOUT ROWID""",
    ),
)

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_MONTH_INITIALS = frozenset(name[0] for name in _MONTHS)

# Skip reasons, as the summary prints them.
NOT_POSTFIX = "not from postfix"
OTHER_POSTFIX = "other postfix messages"
EMPTY = "empty lines"
UNKNOWN_FORMAT = "unrecognised line format"
NO_CLIENT = "qmgr lines without a client= line (retries, local submissions, or an earlier log)"
BAD_ADDRESS = "client address not an IP address"
BAD_DATE = "impossible dates (the year assumed is wrong?)"
PARTIAL = "partial last line (read on the next run)"


class StoreError(UsageError):
    """The activity store cannot be used (newer schema, busy, not a database)."""


# --- the store ------------------------------------------------------------------------


def default_path(inventory: Path) -> Path:
    """The store beside the inventory: ``<inventory>/../.relaygate/activity.sqlite``."""
    return inventory.resolve().parent / ".relaygate" / "activity.sqlite"


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create or migrate) the store; transactions are explicit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=60.0)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed file survives a power cut, not only a crash.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        _migrate(connection)
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path}: not a usable activity store: {error}") from error
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the activity store has schema version {version}; this relaygate knows "
                f"up to {SCHEMA_VERSION} (use a newer relaygate)"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                connection.execute(statement)
        if row is None:
            connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT version FROM schema_version").fetchone()[0])


# --- reading files --------------------------------------------------------------------


def _open_stream(raw: BinaryIO) -> tuple[BinaryIO, bool]:
    """The decompressed stream of a file, and whether it was compressed (by magic bytes)."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")), True
    if magic.startswith(b"BZh"):
        return cast(BinaryIO, bz2.BZ2File(raw, mode="rb")), True
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(BinaryIO, lzma.LZMAFile(raw, mode="rb")), True
    return raw, False


def _fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


def rotation_order(paths: Sequence[Path]) -> list[Path]:
    """Oldest first: ``mail.log.2.gz``, ``mail.log.1``, ``mail.log``; dated rotations by date.

    Files of one log are grouped by base name; groups keep the order of their
    first argument. The order matters only for a message whose smtpd and
    qmgr lines fall on either side of a rotation.
    """
    pattern = re.compile(r"^(?P<base>.+?)(?:[.-](?P<number>\d+))?(?:\.(?:gz|bz2|xz))?$")
    groups: dict[str, list[tuple[int, int, Path]]] = {}
    for index, path in enumerate(paths):
        match = pattern.match(path.name)
        base = str(path.parent / (match["base"] if match else path.name))
        number = match["number"] if match else None
        if number is None:
            rank = 0
        elif len(number) >= 8:  # a date (dateext): older dates first, all before the live file
            rank = int(number) - 10**12
        else:
            rank = -int(number)
        groups.setdefault(base, []).append((rank, index, path))
    ordered: list[Path] = []
    for members in groups.values():
        ordered.extend(path for _, _, path in sorted(members))
    return ordered


# --- parsing --------------------------------------------------------------------------

#: A day as the line writes it: an ISO date, or for classic syslog
#: (rollovers since the anchor, "Mon dd") until the year is known.
DayKey = str | tuple[int, str]


class _Years:
    """Counts year rollovers in a stream of classic syslog months."""

    __slots__ = ("month", "rollovers")

    def __init__(self, month: int | None) -> None:
        self.month = month
        self.rollovers = 0

    def rollovers_for(self, month: int) -> int:
        current = self.month
        if current is None:
            self.month = month
            return 0
        if month <= current - 2:  # December -> January (or a gap across New Year)
            self.rollovers += 1
            self.month = month
            return self.rollovers
        if month - current == 11:  # a late December line after January lines
            return self.rollovers - 1
        if month > current:
            self.month = month
        return self.rollovers  # the same month, or a line a month late


#: Logged address text -> canonical spelling ("" when it is not an address).
_ADDRESSES: dict[str, str] = {}


def canonical_address(text: str) -> str | None:
    """The canonical spelling of a logged client address, or None if it is not one."""
    known = _ADDRESSES.get(text)
    if known is None:
        candidate = text[5:] if text[:5].lower() == "ipv6:" else text
        try:
            parsed = ipaddress.ip_address(candidate)
        except ValueError:
            known = ""
        else:
            mapped = getattr(parsed, "ipv4_mapped", None)
            known = str(mapped) if mapped is not None else parsed.compressed
        if len(_ADDRESSES) > 200_000:  # a bound, for logs with very many distinct clients
            _ADDRESSES.clear()
        _ADDRESSES[text] = known
    return known or None


def _after_structured_data(text: str) -> str:
    """The message after RFC 5424 structured data ("[id k=\\"v\\"][id2 ...] message")."""
    index, inside, escaped = 0, False, False
    while index < len(text):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            inside = not inside
        elif char == "]" and not inside and text[index + 1 : index + 2] != "[":
            return text[index + 2 :]
        index += 1
    return ""


def _bracketed(text: str, start: int) -> str | None:
    """The address in ``host[addr]`` at or after ``start``."""
    left = text.find("[", start)
    if left < 0:
        return None
    right = text.find("]", left)
    if right < 0:
        return None
    return canonical_address(text[left + 1 : right])


#: One line's parts: relay host, syslog tag ("postfix/smtpd[123]"), message, day, time.
_Parts = tuple[str, str, str, DayKey, str]
#: The last accepted message of a client: day, time, relay, queue id, qmgr message.
_Last = tuple[DayKey, str, str, str, str]
#: (address, login, day) -> [accepted, rejected]
_Counts = dict[tuple[str, str | None, DayKey], list[int]]


class _Parser:
    """Parses the lines of one file into per-day counts; dates resolve at the end."""

    def __init__(
        self,
        pending: dict[tuple[str, str], tuple[str, str | None, DayKey]],
        years: _Years,
        zone: dt.tzinfo | None,
    ) -> None:
        self.pending = pending
        self.years = years
        self.zone = zone
        self.counts: _Counts = {}
        self.last: dict[tuple[str, str | None], _Last] = {}
        self.skipped: Counter[str] = Counter()
        self.lines = 0
        self.used = 0
        self.accepted = 0
        self.rejected = 0
        self.classic = 0
        self._month_token = ""
        self._rollovers = 0

    def feed(self, lines: list[str]) -> None:
        """Count the accepted and rejected messages of complete lines, in file order.

        The loop is the ingest's hot path: a line is dismissed by three
        substring scans in C before anything is split, and the common classic
        syslog line is cut with ``str.find`` only.
        """
        self.lines += len(lines)
        skipped = self.skipped
        pending = self.pending
        counts = self.counts
        last = self.last
        addresses = _ADDRESSES
        other = not_postfix = used = accepted = rejected = classic = 0
        month_token = self._month_token
        rollovers = self._rollovers
        for line in lines:
            if "client=" in line:
                kind = 1
            elif "(queue active)" in line:
                kind = 2
            elif "reject: " in line:
                kind = 3
            else:
                if "postfix" in line:
                    other += 1
                elif line:
                    not_postfix += 1
                else:
                    skipped[EMPTY] += 1
                continue
            if line[9:10] == ":" and line[:1] in _MONTH_INITIALS:
                # "Nov 29 06:25:01[.123456] host tag[pid]: message"
                token = line[:3]
                line_rollovers = rollovers
                if token != month_token:
                    month = _MONTHS.get(token)
                    if month is None:
                        skipped[UNKNOWN_FORMAT] += 1
                        continue
                    line_rollovers = self.years.rollovers_for(month)
                    if self.years.month == month and line_rollovers == self.years.rollovers:
                        month_token, rollovers = token, line_rollovers
                end = line.find(" ", 15)
                host_end = line.find(" ", end + 1)
                colon = line.find(": ", host_end)
                if end < 0 or host_end < 0 or colon < 0:
                    skipped[UNKNOWN_FORMAT] += 1
                    continue
                classic += 1
                relay = line[end + 1 : host_end]
                tag = line[host_end + 1 : colon]
                message = line[colon + 2 :]
                day: DayKey = (line_rollovers, line[:6])
                at = line[7:15]
            else:
                parts = self._parts(line)
                if parts is None:
                    skipped[UNKNOWN_FORMAT] += 1
                    continue
                relay, tag, message, day, at = parts
            if not tag.startswith("postfix"):
                not_postfix += 1
                continue
            split = message.find(": ")
            queue_id = message[:split]
            if split <= 0 or not queue_id.isalnum():
                other += 1
                continue
            if kind == 1:
                if not message.startswith("client=", split + 2) or "/smtpd" not in tag:
                    other += 1
                    continue
                left = message.find("[", split + 9)
                right = message.find("]", left)
                text = message[left + 1 : right]
                address = addresses.get(text)
                if address is None:
                    address = canonical_address(text) or ""
                if left < 0 or right < 0 or not address:
                    skipped[BAD_ADDRESS] += 1
                    continue
                login = None
                start = message.find("sasl_username=", right)
                if start >= 0:
                    stop = message.find(", ", start)
                    login = message[start + 14 : stop if stop >= 0 else len(message)] or None
                pending[(relay, queue_id)] = (address, login, day)
                used += 1
            elif kind == 2:
                if not message.startswith("from=<", split + 2) or "/qmgr" not in tag:
                    other += 1
                    continue
                waiting = pending.pop((relay, queue_id), None)
                if waiting is None:
                    skipped[NO_CLIENT] += 1
                    continue
                address, login, _ = waiting
                key = (address, login, day)
                pair = counts.get(key)
                if pair is None:
                    counts[key] = [1, 0]
                else:
                    pair[0] += 1
                last[(address, login)] = (day, at, relay, queue_id, message)
                accepted += 1
                used += 1
            elif message.startswith("reject: ", split + 2) or message.startswith(
                "milter-reject: ", split + 2
            ):
                if self._reject(relay, tag.partition("[")[0], queue_id, message, day):
                    rejected += 1
                    used += 1
            else:
                other += 1
        self._month_token = month_token
        self._rollovers = rollovers
        self.used += used
        self.accepted += accepted
        self.rejected += rejected
        self.classic += classic
        if other:
            skipped[OTHER_POSTFIX] += other
        if not_postfix:
            skipped[NOT_POSTFIX] += not_postfix

    def _parts(self, line: str) -> _Parts | None:
        """The parts of a line that is not classic syslog (RFC 3339, RFC 5424, journal JSON)."""
        first = line[:1]
        if first == "{":
            return self._journal(line)
        if first == "<" or line[:2] == "1 ":
            return _rfc5424(line)
        if first.isdigit() and line[4:5] == "-" and line[10:11] == "T":
            # rsyslog high precision: "2026-11-29T06:25:01.123456+01:00 host tag: msg"
            end = line.find(" ")
            host_end = line.find(" ", end + 1)
            colon = line.find(": ", host_end)
            if end < 0 or host_end < 0 or colon < 0:
                return None
            return (
                line[end + 1 : host_end],
                line[host_end + 1 : colon],
                line[colon + 2 :],
                line[:10],
                line[11:19],
            )
        return None

    def _journal(self, line: str) -> _Parts | None:
        try:
            entry = json.loads(line)
            message = entry.get("MESSAGE")
            if isinstance(message, list):  # journald exports non-UTF-8 text as bytes
                message = bytes(message).decode("utf-8", "replace")
            moment = dt.datetime.fromtimestamp(
                int(entry["__REALTIME_TIMESTAMP"]) / 1_000_000, self.zone
            )
        except (ValueError, KeyError, TypeError, OverflowError, OSError, AttributeError):
            return None
        if not isinstance(message, str):
            return None
        return (
            str(entry.get("_HOSTNAME", "")),
            str(entry.get("SYSLOG_IDENTIFIER", "")),
            message,
            moment.strftime("%Y-%m-%d"),
            moment.strftime("%H:%M:%S"),
        )

    def _reject(self, relay: str, program: str, queue_id: str, message: str, day: DayKey) -> bool:
        login: str | None = None
        address: str | None = None
        if queue_id != "NOQUEUE":
            # A cleanup reject drops the message; an smtpd reject of one
            # recipient leaves the others (and the qmgr line) to come.
            key = (relay, queue_id)
            waiting = (
                self.pending.pop(key, None)
                if program.endswith("/cleanup")
                else self.pending.get(key)
            )
            if waiting is not None:
                address, login, _ = waiting
        if address is None:
            if program.endswith("/cleanup"):
                # "reject: header Subject: ... from host[addr]; from=<...>": the
                # header text may say " from " too, so take the last one.
                end = message.find("; from=<")
                start = message.rfind(" from ", 0, end if end >= 0 else len(message))
            else:
                start = message.find(" from ")  # "reject: RCPT from host[addr]: 554 ..."
            address = _bracketed(message, start) if start >= 0 else None
        if address is None:
            self.skipped[BAD_ADDRESS] += 1
            return False
        key3 = (address, login, day)
        pair = self.counts.get(key3)
        if pair is None:
            self.counts[key3] = [0, 1]
        else:
            pair[1] += 1
        return True


def _rfc5424(line: str) -> _Parts | None:
    """ "<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG" (the PRI may be missing)."""
    if line[:1] == "<":
        close = line.find(">")
        line = line[close + 1 :] if close > 0 else ""
    parts = line.split(" ", 6)
    if len(parts) < 7 or parts[0] != "1" or len(parts[1]) < 19 or parts[1][10:11] != "T":
        return None
    stamp, host, app, rest = parts[1], parts[2], parts[3], parts[6]
    if rest.startswith("["):
        message = _after_structured_data(rest)
    elif rest.startswith("-"):
        message = rest[2:]
    else:
        return None
    return host, app, message.lstrip("\ufeff"), stamp[:10], stamp[11:19]


# --- ingest ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngestOptions:
    year: int | None = None  # the year of the first line of classic syslog files
    zone: dt.tzinfo | None = None  # for journal entries; None: this machine's zone


@dataclass(slots=True)
class FileResult:
    """What one file gave. ``status`` is read, resumed, unchanged, empty or failed."""

    path: Path
    status: str
    lines: int = 0
    used: int = 0
    accepted: int = 0
    rejected: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    start_offset: int = 0
    end_offset: int = 0
    first_day: str | None = None
    last_day: str | None = None
    years: str | None = None  # what was assumed about classic syslog years
    problem: str | None = None


Progress = Callable[[int], None]


def _pause_hook(path: Path) -> tuple[int | None, bool]:
    spec = os.environ.get("RELAYGATE_TEST_PAUSE", "")
    name, _, where = spec.partition(":")
    if not spec or name != path.name:
        return None, False
    if where == "commit":
        return None, True
    what, _, count = where.partition(":")
    return (int(count), False) if what == "lines" else (None, False)


def _pause() -> None:
    print("relaygate-test: paused", file=sys.stderr, flush=True)
    time.sleep(3600)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        raise StoreError(f"the activity store is busy: {error}") from error
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _known(
    connection: sqlite3.Connection, head: bytes
) -> tuple[int, str, int, int | None, int | None] | None:
    """The stored (fp_len, fingerprint, offset, anchor year, anchor month) of a file."""
    lengths = [
        int(row[0])
        for row in connection.execute("SELECT DISTINCT fp_len FROM files ORDER BY fp_len DESC")
    ]
    for length in lengths:
        if length > len(head):
            continue
        fingerprint = _fingerprint(head[:length])
        row = connection.execute(
            "SELECT offset, anchor_year, anchor_month FROM files"
            " WHERE fp_len = ? AND fingerprint = ?",
            (length, fingerprint),
        ).fetchone()
        if row is not None:
            return length, fingerprint, int(row[0]), row[1], row[2]
    return None


def ingest_file(
    connection: sqlite3.Connection,
    path: Path,
    options: IngestOptions,
    progress: Progress | None = None,
) -> FileResult:
    """Read one file from where the store last stopped, in one transaction."""
    try:
        raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below, with the stream
    except OSError as error:
        return FileResult(path, "failed", problem=error.strerror or str(error))
    with closing(raw):
        size = os.fstat(raw.fileno()).st_size
        mtime = dt.datetime.fromtimestamp(os.fstat(raw.fileno()).st_mtime)
        stream, compressed = _open_stream(raw)
        with closing(stream), _transaction(connection):
            try:
                return _ingest_stream(
                    connection, path, raw, stream, compressed, size, mtime, options, progress
                )
            except (OSError, EOFError, lzma.LZMAError) as error:
                # A damaged or truncated compressed file: nothing of it is kept.
                raise _FileFailed(str(error)) from error


class _FileFailed(Exception):
    pass


def _ingest_stream(
    connection: sqlite3.Connection,
    path: Path,
    raw: BinaryIO,
    stream: BinaryIO,
    compressed: bool,
    size: int,
    mtime: dt.datetime,
    options: IngestOptions,
    progress: Progress | None,
) -> FileResult:
    head = stream.read(FINGERPRINT_BYTES)
    if not head:
        return FileResult(path, "empty")
    known = _known(connection, head)
    fp_len = len(head)
    fingerprint = _fingerprint(head)
    offset = 0
    anchor: tuple[int, int] | None = None
    if known is not None:
        old_len, old_fingerprint, offset, anchor_year, anchor_month = known
        if anchor_year is not None and anchor_month is not None:
            anchor = (int(anchor_year), int(anchor_month))
        if old_len != fp_len:  # the file was shorter than a fingerprint: now it is longer
            connection.execute(
                "UPDATE files SET fp_len = ?, fingerprint = ? WHERE fp_len = ? AND fingerprint = ?",
                (fp_len, fingerprint, old_len, old_fingerprint),
            )
    result = FileResult(path, "read" if offset == 0 else "resumed", start_offset=offset)
    # Position the stream at the stored offset and check it is a line boundary.
    if offset:
        if offset <= len(head):
            if head[offset - 1 : offset] != b"\n":
                raise _FileFailed(f"byte {offset} is not a line boundary; the file changed")
            leftover = head[offset:]
        else:
            if compressed:
                _skip(stream, offset - 1 - len(head))
            else:
                stream.seek(offset - 1)
            if stream.read(1) != b"\n":
                raise _FileFailed(
                    f"the file is shorter than the {offset} bytes already read, or changed"
                )
            leftover = b""
    else:
        leftover = head

    pending: dict[tuple[str, str], tuple[str, str | None, DayKey]] = {
        (relay, queue_id): (address, login, day)
        for relay, queue_id, address, login, day in connection.execute(
            "SELECT relay, queue_id, address, login, day FROM pending"
        )
    }
    years = _Years(anchor[1] if anchor else None)
    parser = _Parser(pending, years, options.zone)
    pause_lines, pause_commit = _pause_hook(path)
    consumed = offset
    buffer = leftover
    reported = 0
    while True:
        data = stream.read(CHUNK_BYTES)
        if data:
            buffer = buffer + data if buffer else data
        cut = buffer.rfind(b"\n")
        if not data and compressed and buffer and cut != len(buffer) - 1:
            # A finished (compressed) file's last line needs no newline.
            buffer += b"\n"
            cut = len(buffer) - 1
        if cut >= 0:
            parser.feed(buffer[:cut].decode("utf-8", "replace").split("\n"))
            consumed += cut + 1
            buffer = buffer[cut + 1 :]
        if progress is not None:
            position = raw.tell() if compressed else consumed
            progress(position - reported)
            reported = position
        if pause_lines is not None and parser.lines >= pause_lines:
            _pause()
        if not data:
            break
    if buffer:
        result.skipped[PARTIAL] += 1
    if progress is not None and size > reported:
        progress(size - reported)
    if consumed == offset and parser.lines == 0:
        result.status = "unchanged"
        result.end_offset = consumed
        connection.execute(
            "UPDATE files SET path = ? WHERE fp_len = ? AND fingerprint = ?",
            (str(path), fp_len, fingerprint),
        )
        return result

    base_year, years_note = _base_year(parser, years, anchor, options.year, mtime)
    result.years = years_note
    _write(connection, parser, base_year, result)
    result.lines = parser.lines
    result.used = parser.used
    result.accepted = parser.accepted
    result.rejected = parser.rejected
    result.skipped.update(parser.skipped)
    result.end_offset = consumed
    end_anchor = (base_year + years.rollovers, years.month) if years.month is not None else anchor
    connection.execute(
        """INSERT INTO files (fingerprint, fp_len, path, offset, lines, first_day, last_day,
                              anchor_year, anchor_month)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (fp_len, fingerprint) DO UPDATE SET
             path = excluded.path, offset = excluded.offset, lines = lines + excluded.lines,
             first_day = coalesce(min(first_day, excluded.first_day), first_day,
                                  excluded.first_day),
             last_day = coalesce(max(last_day, excluded.last_day), last_day, excluded.last_day),
             anchor_year = excluded.anchor_year, anchor_month = excluded.anchor_month""",
        (
            fingerprint,
            fp_len,
            str(path),
            consumed,
            parser.lines,
            result.first_day,
            result.last_day,
            end_anchor[0] if end_anchor else None,
            end_anchor[1] if end_anchor else None,
        ),
    )
    if pause_commit:
        _pause()
    return result


def _skip(stream: BinaryIO, count: int) -> None:
    while count > 0:
        data = stream.read(min(count, CHUNK_BYTES))
        if not data:
            raise _FileFailed("the file is shorter than the part already read")
        count -= len(data)


def _base_year(
    parser: _Parser,
    years: _Years,
    anchor: tuple[int, int] | None,
    explicit: int | None,
    mtime: dt.datetime,
) -> tuple[int, str | None]:
    """The year of rollover 0 of the classic lines, and what was assumed, in words."""
    if parser.classic == 0 or years.month is None:
        return 0, None
    if anchor is not None:
        return anchor[0], f"continued from the previous run ({anchor[0]}-{anchor[1]:02d})"
    if explicit is not None:
        return explicit, f"--year {explicit} for the first line"
    last_year = mtime.year if years.month <= mtime.month else mtime.year - 1
    return (
        last_year - years.rollovers,
        f"from the file's modification time ({mtime:%Y-%m-%d})",
    )


_DATES: dict[tuple[int, str], str | None] = {}


def _resolve(day: DayKey, base_year: int) -> str | None:
    if isinstance(day, str):
        cached = _DATES.get((0, day), "")
        if cached == "":
            try:
                cached = dt.date.fromisoformat(day).isoformat()
            except ValueError:
                cached = None
            _DATES[(0, day)] = cached
        return cached
    rollovers, token = day
    key = (base_year + rollovers, token)
    cached = _DATES.get(key, "")
    if cached == "":
        try:
            cached = dt.date(key[0], _MONTHS[token[:3]], int(token[4:6])).isoformat()
        except (ValueError, KeyError):
            cached = None
        _DATES[key] = cached
    return cached


def _keys_of(address: str, login: str | None) -> tuple[tuple[Kind, str], ...]:
    """A message counts for its client address and, when it authenticated, its login."""
    if login is None:
        return (("address", address),)
    return (("address", address), ("login", login))


def _write(
    connection: sqlite3.Connection, parser: _Parser, base_year: int, result: FileResult
) -> None:
    """Resolve the file's days and add its counts to the store (inside its transaction)."""
    days: dict[tuple[Kind, str, str], list[int]] = {}
    totals: dict[tuple[Kind, str], list[int]] = {}
    first_day: str | None = None
    last_day: str | None = None
    bad = 0
    for (address, login, day_key), (accepted, rejected) in parser.counts.items():
        day = _resolve(day_key, base_year)
        if day is None:
            bad += accepted + rejected
            continue
        first_day = day if first_day is None or day < first_day else first_day
        last_day = day if last_day is None or day > last_day else last_day
        for kind, key in _keys_of(address, login):
            slot = days.setdefault((kind, key, day), [0, 0])
            slot[0] += accepted
            slot[1] += rejected
            total = totals.setdefault((kind, key), [0, 0])
            total[0] += accepted
            total[1] += rejected
    if bad:
        parser.skipped[BAD_DATE] += bad
        parser.used -= bad
    last: dict[tuple[Kind, str], tuple[str, str, str, str]] = {}
    for (address, login), (day_key, at, relay, queue_id, message) in parser.last.items():
        day = _resolve(day_key, base_year)
        if day is None:
            continue
        stamp = f"{day}T{at}"
        start = message.find("from=<") + 6
        sender = message[start : message.find(">", start)]
        for client in _keys_of(address, login):
            known = last.get(client)
            if known is None or stamp > known[0]:
                last[client] = (stamp, relay, queue_id, sender)
    connection.executemany(
        """INSERT INTO days (kind, key, day, accepted, rejected) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (kind, key, day) DO UPDATE SET
             accepted = accepted + excluded.accepted, rejected = rejected + excluded.rejected""",
        [(kind, key, day, a, r) for (kind, key, day), (a, r) in days.items()],
    )
    connection.executemany(
        """INSERT INTO clients (kind, key, accepted, rejected, last_accepted, last_relay,
                                last_queue_id, last_sender)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (kind, key) DO UPDATE SET
             accepted = accepted + excluded.accepted,
             rejected = rejected + excluded.rejected,
             last_relay = CASE WHEN excluded.last_accepted > coalesce(last_accepted, '')
                               THEN excluded.last_relay ELSE last_relay END,
             last_queue_id = CASE WHEN excluded.last_accepted > coalesce(last_accepted, '')
                                  THEN excluded.last_queue_id ELSE last_queue_id END,
             last_sender = CASE WHEN excluded.last_accepted > coalesce(last_accepted, '')
                                THEN excluded.last_sender ELSE last_sender END,
             last_accepted = CASE WHEN excluded.last_accepted > coalesce(last_accepted, '')
                                  THEN excluded.last_accepted ELSE last_accepted END""",
        [
            (kind, key, a, r, *(last.get((kind, key)) or (None, None, None, None)))
            for (kind, key), (a, r) in totals.items()
        ],
    )
    # Queue ids still waiting for their qmgr line carry over to the next file.
    newest = last_day
    keep: list[tuple[str, str, str, str | None, str]] = []
    for (relay, queue_id), (address, login, day_key) in parser.pending.items():
        day = _resolve(day_key, base_year)
        if day is None:
            continue
        if newest is not None and (
            dt.date.fromisoformat(newest) - dt.date.fromisoformat(day)
        ) > dt.timedelta(days=PENDING_DAYS):
            continue
        keep.append((relay, queue_id, address, login, day))
    connection.execute("DELETE FROM pending")
    connection.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?)", keep)
    result.first_day = first_day
    result.last_day = last_day


@dataclass(slots=True)
class IngestReport:
    files: list[FileResult]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def totals(self) -> tuple[int, int, Counter[str], int, int]:
        skipped: Counter[str] = Counter()
        for item in self.files:
            skipped.update(item.skipped)
        return (
            sum(f.lines for f in self.files),
            sum(f.used for f in self.files),
            skipped,
            sum(f.accepted for f in self.files),
            sum(f.rejected for f in self.files),
        )


def ingest(
    connection: sqlite3.Connection,
    paths: Iterable[Path],
    options: IngestOptions,
    progress: Callable[[Path], Progress | None] | None = None,
) -> IngestReport:
    """Ingest every file, oldest rotation first; each file commits on its own."""
    results: list[FileResult] = []
    for path in rotation_order(list(paths)):
        try:
            results.append(
                ingest_file(connection, path, options, progress(path) if progress else None)
            )
        except _FileFailed as error:
            results.append(FileResult(path, "failed", problem=str(error)))
        except sqlite3.DatabaseError as error:
            raise StoreError(f"the activity store failed: {error}") from error
    return IngestReport(results)


def describe(result: FileResult) -> str:
    """One line per file for the summary."""
    if result.status == "failed":
        return f"{result.path}: failed, nothing kept: {result.problem}"
    if result.status == "empty":
        return f"{result.path}: empty"
    if result.status == "unchanged":
        return f"{result.path}: already read (up to byte {result.end_offset}), nothing new"
    where = "" if result.status == "read" else f" from byte {result.start_offset}"
    days = (
        f", {result.first_day} .. {result.last_day}" if result.first_day and result.last_day else ""
    )
    text = (
        f"{result.path}: {result.status}{where}: {result.lines} lines, {result.used} used, "
        f"{result.accepted} accepted, {result.rejected} rejected{days}"
    )
    if result.years:
        text += f"; classic syslog years {result.years}"
    return text


def summary(report: IngestReport) -> str:
    lines, used, skipped, accepted, rejected = report.totals()
    partial = skipped.pop(PARTIAL, 0)
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
    text = (
        f"ingest: {len(report.files)} files, {lines} lines read, {used} used, "
        f"{sum(skipped.values())} skipped"
    )
    if reasons:
        text += f" ({reasons})"
    text += f"; {accepted} messages accepted, {rejected} rejected"
    if partial:
        text += f"; {partial} {PARTIAL}"
    if report.failed:
        text += f"; {len(report.failed)} files failed"
    return text


# --- queries (for the review) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    """The days the ingested logs span, and how many files they came from."""

    first_day: dt.date | None
    last_day: dt.date | None
    files: int


def coverage(connection: sqlite3.Connection) -> Coverage:
    first, last, files = connection.execute(
        "SELECT min(first_day), max(last_day), count(*) FROM files"
    ).fetchone()
    return Coverage(
        dt.date.fromisoformat(first) if first else None,
        dt.date.fromisoformat(last) if last else None,
        int(files),
    )


def keys(connection: sqlite3.Connection, kind: Kind) -> list[str]:
    return [
        str(row[0])
        for row in connection.execute(
            "SELECT key FROM clients WHERE kind = ? ORDER BY key", (kind,)
        )
    ]


@dataclass(frozen=True, slots=True)
class DayCount:
    key: str
    day: dt.date
    accepted: int
    rejected: int


def day_counts(
    connection: sqlite3.Connection, kind: Kind, wanted: Iterable[str], until: dt.date
) -> Iterator[DayCount]:
    """Every stored day up to ``until`` of the given keys, by key then day."""
    wanted = sorted(set(wanted))
    connection.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (key TEXT PRIMARY KEY)")
    connection.execute("DELETE FROM wanted")
    connection.executemany("INSERT INTO wanted VALUES (?)", [(k,) for k in wanted])
    rows = connection.execute(
        """SELECT d.key, d.day, d.accepted, d.rejected FROM days d JOIN wanted w ON w.key = d.key
           WHERE d.kind = ? AND d.day <= ? ORDER BY d.key, d.day""",
        (kind, until.isoformat()),
    ).fetchall()
    for key, day, accepted, rejected in rows:
        yield DayCount(str(key), dt.date.fromisoformat(day), int(accepted), int(rejected))


@dataclass(frozen=True, slots=True)
class LastMessage:
    at: str  # YYYY-MM-DDTHH:MM:SS as the log wrote it
    relay: str
    queue_id: str
    sender: str


def last_messages(
    connection: sqlite3.Connection, kind: Kind, wanted: Iterable[str]
) -> dict[str, LastMessage]:
    found: dict[str, LastMessage] = {}
    for key in sorted(set(wanted)):
        row = connection.execute(
            "SELECT last_accepted, last_relay, last_queue_id, last_sender FROM clients"
            " WHERE kind = ? AND key = ? AND last_accepted IS NOT NULL",
            (kind, key),
        ).fetchone()
        if row is not None:
            found[key] = LastMessage(str(row[0]), str(row[1]), str(row[2]), str(row[3]))
    return found


def check_consistency(connection: sqlite3.Connection) -> list[str]:
    """Problems in the store (used by tests after a crash): per-key totals must match days."""
    problems: list[str] = []
    rows = connection.execute(
        """SELECT c.kind, c.key, c.accepted, c.rejected,
                  coalesce(sum(d.accepted), 0), coalesce(sum(d.rejected), 0)
           FROM clients c LEFT JOIN days d ON d.kind = c.kind AND d.key = c.key
           GROUP BY c.kind, c.key"""
    ).fetchall()
    for kind, key, accepted, rejected, day_accepted, day_rejected in rows:
        if (accepted, rejected) != (day_accepted, day_rejected):
            problems.append(
                f"{kind} {key}: totals {accepted}/{rejected} but days sum to "
                f"{day_accepted}/{day_rejected}"
            )
    orphans = connection.execute(
        "SELECT count(*) FROM days d WHERE NOT EXISTS"
        " (SELECT 1 FROM clients c WHERE c.kind = d.kind AND c.key = d.key)"
    ).fetchone()[0]
    if orphans:
        problems.append(f"{orphans} day rows without a client row")
    integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    return problems
