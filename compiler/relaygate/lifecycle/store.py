"""The activity store: a SQLite database of what the relays' logs showed.

Input: the per-file results of ``ingest`` (counts, last messages, relay
coverage, message identities). Output: answers for the review and the
per-device view (``usage``). Nothing here parses logs.

Tables (schema version 2):

* ``files``: every file read, known by a fingerprint of its first bytes,
  with how far it was read and, for classic syslog, where its year stood;
* ``counts``: accepted and rejected messages per file, relay, client key and
  day. A client key is an ``address`` (mail that arrived unauthenticated
  from it), a ``sasl-address`` (mail from it that authenticated) or a
  ``login`` (the SASL login);
* ``lasts``: per file and client key, the last accepted and the last
  rejected message;
* ``coverage``: per file and relay, the first and last day its lines show;
* ``seen``: the identity of every counted message (its queue id and time, and
  for a rejection its text), one zlib-compressed list per day, relay and file,
  so the same message read from another file or export is not counted again;
* ``pending``: smtpd ``client=`` lines still waiting for their qmgr line.

Every row but ``pending`` belongs to one file, so ``forget`` removes a file's
whole contribution and the file can be read again.

Concurrency: each file is written in one ``BEGIN IMMEDIATE`` transaction, so
a second ingest waits (up to ``BUSY_SECONDS``) and then sees the file as
read; a crash rolls the file back whole (WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from relaygate.errors import UsageError

SCHEMA_VERSION = 2
BUSY_SECONDS = 60.0

Kind = Literal["address", "sasl-address", "login"]
KINDS: tuple[Kind, ...] = ("address", "sasl-address", "login")
Event = Literal["accepted", "rejected"]

_TABLES_V2 = (
    """CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        fp_len INTEGER NOT NULL,
        path TEXT NOT NULL,
        offset INTEGER NOT NULL,
        lines INTEGER NOT NULL,
        first_day TEXT,
        last_day TEXT,
        anchor_year INTEGER,
        anchor_month INTEGER,
        UNIQUE (fp_len, fingerprint)
    )""",
    """CREATE TABLE counts (
        kind TEXT NOT NULL CHECK (kind IN ('address', 'sasl-address', 'login')),
        key TEXT NOT NULL,
        day TEXT NOT NULL,
        relay TEXT NOT NULL,
        file INTEGER NOT NULL REFERENCES files (id),
        accepted INTEGER NOT NULL,
        rejected INTEGER NOT NULL,
        PRIMARY KEY (kind, key, day, relay, file)
    ) WITHOUT ROWID""",
    "CREATE INDEX counts_by_file ON counts (file)",
    """CREATE TABLE lasts (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('accepted', 'rejected')),
        file INTEGER NOT NULL REFERENCES files (id),
        at TEXT NOT NULL,
        relay TEXT NOT NULL,
        queue_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (kind, key, event, file)
    ) WITHOUT ROWID""",
    """CREATE TABLE coverage (
        relay TEXT NOT NULL,
        file INTEGER NOT NULL REFERENCES files (id),
        first_day TEXT NOT NULL,
        last_day TEXT NOT NULL,
        PRIMARY KEY (relay, file)
    ) WITHOUT ROWID""",
    """CREATE TABLE seen (
        day TEXT NOT NULL,
        relay TEXT NOT NULL,
        file INTEGER NOT NULL REFERENCES files (id),
        messages BLOB NOT NULL
    )""",
    "CREATE INDEX seen_by_day ON seen (day, relay)",
    "CREATE INDEX seen_by_file ON seen (file)",
    """CREATE TABLE pending (
        relay TEXT NOT NULL,
        queue_id TEXT NOT NULL,
        address TEXT NOT NULL,
        login TEXT,
        day TEXT NOT NULL,
        PRIMARY KEY (relay, queue_id)
    ) WITHOUT ROWID""",
)


class StoreError(UsageError):
    """The activity store cannot be used (newer schema, busy, not a database)."""


def default_path(inventory: Path) -> Path:
    """The store beside the inventory: ``<inventory>/../.relaygate/activity.sqlite``."""
    return inventory.resolve().parent / ".relaygate" / "activity.sqlite"


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create or migrate) the store; transactions are explicit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_SECONDS)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed file survives a power cut, not only a crash.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        _migrate(connection)
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{path}: not a usable activity store: {error}") from error
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    with transaction(connection):
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the activity store has schema version {version}; this relaygate knows "
                f"up to {SCHEMA_VERSION} (use a newer relaygate)"
            )
        if version == SCHEMA_VERSION:
            return
        if version == 1:
            _from_version_1(connection)
        else:
            for statement in _TABLES_V2:
                connection.execute(statement)
        if row is None:
            connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        else:
            connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))


def _from_version_1(connection: sqlite3.Connection) -> None:
    """Version 1 kept neither relays nor files per count: an empty one is replaced, a full
    one cannot be converted truthfully and is refused."""
    (files,) = connection.execute("SELECT count(*) FROM files").fetchone()
    if files:
        raise StoreError(
            "the activity store has schema version 1, whose counts carry no relay and no "
            "file; it cannot be converted: move it aside and ingest the logs again"
        )
    for table in ("files", "days", "clients", "pending"):
        connection.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in _TABLES_V2:
        connection.execute(statement)


def schema_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT version FROM schema_version").fetchone()[0])


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; waits for another writer up to ``BUSY_SECONDS``."""
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


# --- files --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownFile:
    id: int
    fp_len: int
    fingerprint: str
    path: str
    offset: int
    anchor: tuple[int, int] | None


def seen_messages(connection: sqlite3.Connection, day: str, relay: str) -> set[str]:
    """The identities of the messages counted on ``day`` on ``relay``, from every file."""
    found: set[str] = set()
    for (blob,) in connection.execute(
        "SELECT messages FROM seen WHERE day = ? AND relay = ?", (day, relay)
    ):
        found.update(zlib.decompress(blob).decode("utf-8").split("\n"))
    return found


def pack_messages(identities: list[str]) -> bytes:
    return zlib.compress("\n".join(identities).encode("utf-8"), 1)


def known_file(
    connection: sqlite3.Connection, head: bytes, fingerprint: Callable[[bytes], str]
) -> KnownFile | None:
    """The stored file whose fingerprint matches the start of ``head``, longest first."""
    lengths = [
        int(row[0])
        for row in connection.execute("SELECT DISTINCT fp_len FROM files ORDER BY fp_len DESC")
    ]
    for length in lengths:
        if length > len(head):
            continue
        row = connection.execute(
            "SELECT id, path, offset, anchor_year, anchor_month FROM files"
            " WHERE fp_len = ? AND fingerprint = ?",
            (length, fingerprint(head[:length])),
        ).fetchone()
        if row is not None:
            anchor = None if row[3] is None or row[4] is None else (int(row[3]), int(row[4]))
            return KnownFile(
                int(row[0]), length, fingerprint(head[:length]), str(row[1]), int(row[2]), anchor
            )
    return None


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: int
    path: str
    lines: int
    first_day: str | None
    last_day: str | None
    accepted: int
    rejected: int


def files(connection: sqlite3.Connection) -> list[StoredFile]:
    rows = connection.execute(
        """SELECT f.id, f.path, f.lines, f.first_day, f.last_day,
                  coalesce(sum(c.accepted), 0), coalesce(sum(c.rejected), 0)
           FROM files f LEFT JOIN counts c ON c.file = f.id AND c.kind IN ('address',
                                                                          'sasl-address')
           GROUP BY f.id ORDER BY f.first_day, f.path, f.id"""
    ).fetchall()
    return [
        StoredFile(int(r[0]), str(r[1]), int(r[2]), r[3], r[4], int(r[5]), int(r[6])) for r in rows
    ]


def forget(connection: sqlite3.Connection, file_id: int) -> None:
    """Remove a file's whole contribution (inside the caller's transaction)."""
    for table in ("counts", "lasts", "coverage", "seen"):
        connection.execute(f"DELETE FROM {table} WHERE file = ?", (file_id,))
    connection.execute("DELETE FROM files WHERE id = ?", (file_id,))


# --- queries ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    first: dt.date
    last: dt.date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


@dataclass(frozen=True, slots=True)
class Coverage:
    """The days the ingested logs span, per relay (merged spans of the files)."""

    relays: dict[str, tuple[Span, ...]]
    files: int

    @property
    def first_day(self) -> dt.date | None:
        firsts = [spans[0].first for spans in self.relays.values() if spans]
        return min(firsts) if firsts else None

    @property
    def last_day(self) -> dt.date | None:
        lasts = [spans[-1].last for spans in self.relays.values() if spans]
        return max(lasts) if lasts else None


def merge(spans: Iterable[Span]) -> tuple[Span, ...]:
    """Spans merged where they overlap or touch (a day after another's last day)."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.first, s.last)):
        if merged and span.first <= merged[-1].last + dt.timedelta(days=1):
            if span.last > merged[-1].last:
                merged[-1] = Span(merged[-1].first, span.last)
        else:
            merged.append(span)
    return tuple(merged)


def coverage(connection: sqlite3.Connection) -> Coverage:
    by_relay: dict[str, list[Span]] = {}
    for relay, first, last in connection.execute("SELECT relay, first_day, last_day FROM coverage"):
        by_relay.setdefault(str(relay), []).append(
            Span(dt.date.fromisoformat(first), dt.date.fromisoformat(last))
        )
    (count,) = connection.execute("SELECT count(*) FROM files").fetchone()
    return Coverage({relay: merge(spans) for relay, spans in sorted(by_relay.items())}, int(count))


def keys(connection: sqlite3.Connection, kind: Kind) -> list[str]:
    return [
        str(row[0])
        for row in connection.execute(
            "SELECT DISTINCT key FROM counts WHERE kind = ? ORDER BY key", (kind,)
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
    """Every stored day up to ``until`` of the given keys (all relays and files), by key, day."""
    _load_wanted(connection, wanted)
    rows = connection.execute(
        """SELECT c.key, c.day, sum(c.accepted), sum(c.rejected)
           FROM counts c JOIN wanted w ON w.key = c.key
           WHERE c.kind = ? AND c.day <= ? GROUP BY c.key, c.day ORDER BY c.key, c.day""",
        (kind, until.isoformat()),
    ).fetchall()
    for key, day, accepted, rejected in rows:
        yield DayCount(str(key), dt.date.fromisoformat(day), int(accepted), int(rejected))


def _load_wanted(connection: sqlite3.Connection, wanted: Iterable[str]) -> None:
    connection.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (key TEXT PRIMARY KEY)")
    connection.execute("DELETE FROM wanted")
    connection.executemany("INSERT INTO wanted VALUES (?)", [(k,) for k in sorted(set(wanted))])


@dataclass(frozen=True, slots=True)
class LastMessage:
    at: str  # YYYY-MM-DDTHH:MM:SS as the log wrote it
    relay: str
    queue_id: str
    sender: str
    detail: str  # the refusal's text, for a rejection

    @property
    def day(self) -> dt.date:
        return dt.date.fromisoformat(self.at[:10])


def last_messages(
    connection: sqlite3.Connection, kind: Kind, wanted: Iterable[str], event: Event, until: str
) -> dict[str, LastMessage]:
    """Per key, its last message of ``event`` at or before ``until`` (an ISO time prefix)."""
    _load_wanted(connection, wanted)
    found: dict[str, LastMessage] = {}
    for key, at, relay, queue_id, sender, detail in connection.execute(
        """SELECT l.key, l.at, l.relay, l.queue_id, l.sender, l.detail
           FROM lasts l JOIN wanted w ON w.key = l.key
           WHERE l.kind = ? AND l.event = ? AND l.at <= ?
           ORDER BY l.key, l.at, l.relay, l.queue_id""",
        (kind, event, until),
    ):
        found[str(key)] = LastMessage(str(at), str(relay), str(queue_id), str(sender), str(detail))
    return found


def check_consistency(connection: sqlite3.Connection) -> list[str]:
    """Problems in the store (used by tests after a crash): every row belongs to a file."""
    problems: list[str] = []
    for table in ("counts", "lasts", "coverage", "seen"):
        (orphans,) = connection.execute(
            f"SELECT count(*) FROM {table} t WHERE NOT EXISTS"
            " (SELECT 1 FROM files f WHERE f.id = t.file)"
        ).fetchone()
        if orphans:
            problems.append(f"{orphans} {table} rows without their file")
    integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    return problems
