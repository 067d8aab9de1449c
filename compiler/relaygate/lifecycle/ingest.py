"""Ingest: read log files into the activity store, one transaction per file.

Input: paths (files, ``-`` for standard input, named pipes) and
``IngestOptions``. Output: the store (``store``), and a ``FileResult`` per
file for the summary.

Invariants:

* Each file is read inside one ``BEGIN IMMEDIATE`` transaction, taken before
  the file is looked up: a crash loses nothing and leaves no half-read file,
  and two ingests of the same file cannot both count it (the second waits,
  then finds it read).
* A file is known by a fingerprint, the SHA-256 of its first bytes (up to
  ``FINGERPRINT_BYTES`` of the decompressed stream), never by its name; the
  store remembers how far it was read (a byte offset at a line boundary), so
  a rotated copy is recognised and a grown file is read from where it stopped.
* A message is counted once, whichever files or formats hold it: its identity
  (relay, queue id, time; see ``logs.postfix``) is kept per day, and a
  message already counted is reported as a duplicate, not counted again.
* Classic syslog lines carry no year. It comes from ``--year`` (the year of
  the file's first line), from where the previous run of a growing file
  stopped, or from the file's modification time, which must then agree with
  the file's last line (within ``MTIME_SLACK_DAYS``): a copy that lost its
  time is refused rather than dated wrongly.
* No day after ``as_of`` (+1 day for time zones) is stored: a file that has
  one is refused whole, with the reason.
* A file with no usable line (no Postfix message in a format read here) is a
  warning naming the formats tried; it is not recorded as read.

Refused and failed files keep nothing; ``forget`` removes a read file's
contribution so that it can be read again (with other options).
"""

from __future__ import annotations

import datetime as dt
import gc
import lzma
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from relaygate.lifecycle import store
from relaygate.lifecycle.logs import classic, formats, postfix
from relaygate.lifecycle.logs.files import (
    FINGERPRINT_BYTES,
    MAX_LINE_BYTES,
    STDIN,
    LineReader,
    Source,
    SourceError,
    fingerprint,
    open_source,
    read_head,
    rotation_order,
    skip_to,
)

#: Queue ids whose qmgr line never came (a lost connection after DATA, a
#: message deleted by hand) are forgotten once they are this many days older
#: than the newest line read.
PENDING_DAYS = 2
#: How many days the last line of a classic syslog file may lie before its
#: modification time when the year is taken from that time.
MTIME_SLACK_DAYS = 2

BAD_DATE = "impossible dates (the year assumed is wrong?)"
PARTIAL = "partial last line (read on the next run)"
OVERLONG = f"lines longer than {MAX_LINE_BYTES // (1 << 20)} MiB (skipped)"

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class IngestOptions:
    year: int | None = None  # the year of the first line of classic syslog files
    zone: dt.tzinfo | None = None  # for journal instants; None: this machine's zone
    as_of: dt.date | None = None  # no later day is stored; None: today


@dataclass(slots=True)
class FileResult:
    """What one file gave. ``status``: read, resumed, unchanged, empty, unusable or failed."""

    path: str
    status: str
    lines: int = 0
    used: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    start_offset: int = 0
    end_offset: int = 0
    first_day: str | None = None
    last_day: str | None = None
    relays: tuple[str, ...] = ()
    years: str | None = None  # what was assumed about classic syslog years
    problem: str | None = None
    overlong_at: int | None = None  # the byte where the first line too long to read starts


class _Refused(Exception):
    """The file is refused: its transaction rolls back and the result says why."""

    def __init__(self, result: FileResult) -> None:
        super().__init__(result.problem)
        self.result = result


@dataclass(slots=True)
class IngestReport:
    files: list[FileResult]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status in ("failed", "unusable")]


def ingest(
    connection: sqlite3.Connection,
    paths: Iterable[Path],
    options: IngestOptions,
    progress: Callable[[Source], Progress | None] | None = None,
) -> IngestReport:
    """Ingest every file, oldest rotation first; each file commits on its own."""
    results: list[FileResult] = []
    for path in rotation_order(list(paths)):
        try:
            results.append(ingest_file(connection, path, options, progress))
        except sqlite3.DatabaseError as error:
            raise store.StoreError(f"the activity store failed: {error}") from error
    return IngestReport(results)


def ingest_file(
    connection: sqlite3.Connection,
    path: Path,
    options: IngestOptions,
    progress: Callable[[Source], Progress | None] | None = None,
) -> FileResult:
    """Read one file from where the store last stopped, in one transaction."""
    shown = "<stdin>" if path == STDIN else str(path)
    try:
        source = open_source(path)
    except SourceError as error:
        return FileResult(shown, "failed", problem=str(error))
    except OSError as error:
        return FileResult(shown, "failed", problem=error.strerror or str(error))
    # The correlation makes millions of short-lived tuples and no cycles: the cyclic
    # collector would only walk them over and over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with store.transaction(connection):
            return _read(connection, source, options, progress(source) if progress else None)
    except _Refused as refused:
        return refused.result
    except SourceError as error:
        return FileResult(shown, "failed", problem=str(error))
    except (OSError, EOFError, lzma.LZMAError) as error:
        # A damaged or truncated compressed file: nothing of it is kept.
        return FileResult(shown, "failed", problem=str(error))
    finally:
        if collecting:
            gc.enable()
        source.close()


def _read(
    connection: sqlite3.Connection,
    source: Source,
    options: IngestOptions,
    progress: Progress | None,
) -> FileResult:
    head = read_head(source)
    if not head:
        return FileResult(source.name, "empty")
    known = store.known_file(connection, head, fingerprint)
    offset = 0
    anchor: tuple[int, int] | None = None
    file_id: int | None = None
    if known is not None:
        file_id, offset, anchor = known.id, known.offset, known.anchor
        if known.fp_len != len(head):  # the file was shorter than a fingerprint: now longer
            connection.execute(
                "UPDATE files SET fp_len = ?, fingerprint = ? WHERE id = ?",
                (len(head), fingerprint(head), file_id),
            )
    result = FileResult(source.name, "read" if offset == 0 else "resumed", start_offset=offset)
    first = skip_to(source, head, offset) if offset else head
    pending: postfix.Pending = {
        (relay, queue_id): (address, login, day)
        for relay, queue_id, address, login, day in connection.execute(
            "SELECT relay, queue_id, address, login, day FROM pending"
        )
    }
    years = classic.Years(anchor[1] if anchor else None)
    correlator = postfix.Correlator(pending, years, options.zone)
    reader = LineReader(source, first)
    reported = 0
    for lines in reader.chunks():
        correlator.feed(lines)
        if progress is not None:
            position = source.raw_position()
            progress(position - reported)
            reported = position
    if progress is not None and source.size is not None and source.size > reported:
        progress(source.size - reported)
    consumed = offset + reader.consumed
    result.end_offset = consumed
    if reader.partial:
        result.skipped[PARTIAL] += 1
    if reader.overlong:
        result.skipped[OVERLONG] += reader.overlong
        if reader.first_overlong is not None:
            result.overlong_at = offset + reader.first_overlong
    if known is not None and consumed == offset and correlator.lines == 0:
        result.status = "unchanged"
        connection.execute("UPDATE files SET path = ? WHERE id = ?", (source.name, file_id))
        return result
    today = options.as_of or dt.date.today()
    base_year, result.years, from_time = _base_year(correlator, anchor, options.year, source, today)
    result.lines = correlator.lines
    result.skipped.update(correlator.skipped)
    usable = correlator.used + correlator.skipped[postfix.NO_CLIENT]
    if offset == 0 and not usable:
        result.status = "unusable"
        result.problem = (
            f"no usable line: none of its {correlator.lines} lines is a Postfix message in a "
            f"format relaygate reads (tried: {'; '.join(formats.NAMES)}); not recorded as read"
        )
        raise _Refused(result)
    if from_time:
        _check_time(correlator, base_year, source, today, result)
    settled = _Settled(correlator, base_year)
    _check_future(settled, today, result, correlator.classic > 0)
    file_id = _file_row(
        connection, file_id, head, source, consumed, correlator, settled, years, base_year, anchor
    )
    settled.deduplicate(connection)
    _write(connection, file_id, settled)
    result.used = correlator.used - settled.bad
    result.accepted = settled.accepted
    result.rejected = settled.rejected
    result.duplicates = settled.duplicates
    if settled.bad:
        result.skipped[BAD_DATE] += settled.bad
    result.first_day, result.last_day = settled.first_day, settled.last_day
    result.relays = tuple(sorted(settled.relays))
    return result


def _base_year(
    correlator: postfix.Correlator,
    anchor: tuple[int, int] | None,
    explicit: int | None,
    source: Source,
    today: dt.date,
) -> tuple[int, str | None, bool]:
    """The year of rollover 0 of the classic lines, what was assumed (in words), and whether
    it came from the file's time (and must be checked against it)."""
    years = correlator.years
    if (correlator.classic == 0 and correlator.tail is None) or years.month is None:
        return 0, None, False
    if anchor is not None:
        return anchor[0], f"continued from the previous run ({anchor[0]}-{anchor[1]:02d})", False
    if explicit is not None:
        return explicit, f"--year {explicit} for the first line", False
    if source.mtime is not None:
        reference = source.mtime.date()
        said = f"from the file's modification time ({reference})"
    else:
        reference = today
        said = f"from today ({today}; standard input and pipes have no modification time)"
    return years.base_year(reference), said, True


resolve = postfix.resolve  # the ISO date of a day key (see logs.postfix)


def _check_time(
    correlator: postfix.Correlator,
    base_year: int,
    source: Source,
    today: dt.date,
    result: FileResult,
) -> None:
    """A year taken from the file's time must agree with its last line."""
    if correlator.tail is None:
        return
    last = resolve(correlator.tail, base_year)
    reference = source.mtime.date() if source.mtime is not None else today
    if last is None:
        return
    gap = (reference - dt.date.fromisoformat(last)).days
    if gap > MTIME_SLACK_DAYS:
        what = "modified" if source.mtime is not None else "read"
        result.status = "failed"
        result.problem = (
            f"the year cannot be inferred: the last line is of {correlator.tail[1]}, but the "
            f"file was {what} on {reference}, {gap} days later (copied without its "
            "modification time, or rotations joined out of order?); give --year YEAR, the "
            "year of its first line, or restore its time (touch -d); nothing kept"
        )
        raise _Refused(result)


def _check_future(settled: _Settled, today: dt.date, result: FileResult, has_classic: bool) -> None:
    limit = (today + dt.timedelta(days=1)).isoformat()
    late = sorted(day for day in settled.days if day > limit)
    if not late:
        return
    cause = (
        "the year assumed for classic syslog lines is wrong (give --year)"
        if has_classic
        else "the relay's clock, or --as-of, is wrong"
    )
    result.status = "failed"
    result.problem = (
        f"{len(late)} days of it are after {today} (the first {late[0]}): {cause}; nothing kept"
    )
    raise _Refused(result)


Row = tuple[str, str, str, str, int, int]  # kind, key, day, relay, accepted, rejected


class _Settled:
    """The file's counts with their days resolved; then without messages already counted."""

    def __init__(self, correlator: postfix.Correlator, base_year: int) -> None:
        self.correlator = correlator
        self.base_year = base_year
        self.bad = 0
        self.days: set[str] = set()
        self.relays: dict[str, tuple[str, str]] = {}
        self.resolved: dict[postfix.CountKey, str] = {}
        self.counts: dict[postfix.CountKey, list[int]] = {}
        for key, (accepted_ids, rejected_ids) in correlator.messages.items():
            accepted, rejected = len(accepted_ids) // 2, len(rejected_ids)
            day = resolve(key[3], base_year)
            if day is None:
                self.bad += accepted + rejected
                continue
            self.counts[key] = [accepted, rejected]
            self.resolved[key] = day
            self.days.add(day)
            span = self.relays.get(key[0])
            self.relays[key[0]] = (
                (day, day) if span is None else (min(span[0], day), max(span[1], day))
            )
        self.first_day = min(self.days) if self.days else None
        self.last_day = max(self.days) if self.days else None
        self.accepted = self.rejected = self.duplicates = 0
        self.packed: list[tuple[str, str, bytes]] = []  # day, relay, message identities

    def deduplicate(self, connection: sqlite3.Connection) -> None:
        """Drop messages counted before (from any file, or earlier in this one).

        One relay and day at a time, each packed for the store as soon as it is
        done: memory holds the file's messages once, not three times.
        """
        groups: dict[tuple[str, str], list[postfix.CountKey]] = {}
        for key, day in self.resolved.items():
            groups.setdefault((day, key[0]), []).append(key)
        counts = self.counts
        for (day, relay), keys in sorted(groups.items()):
            seen = store.seen_messages(connection, day, relay)
            new: list[str] = []
            for key in keys:
                tally = self.correlator.messages[key]
                for column in (0, 1):
                    identities = postfix.identities(tally[0]) if column == 0 else tally[1]
                    if not identities:
                        continue
                    fresh = set(identities)
                    if len(fresh) == len(identities) and seen.isdisjoint(fresh):  # common case
                        seen |= fresh
                        new.extend(identities)
                        continue
                    duplicates = 0
                    for identity in identities:
                        if identity in seen:
                            duplicates += 1
                        else:
                            seen.add(identity)
                            new.append(identity)
                    counts[key][column] -= duplicates
                    self.duplicates += duplicates
                tally[0].clear()  # memory: what is left of them is in ``new``
                tally[1].clear()
            if new:
                self.packed.append((day, relay, store.pack_messages(new)))
        for key in self.resolved:
            accepted, rejected = counts[key]
            self.accepted += accepted
            self.rejected += rejected

    def rows(self) -> list[tuple[str, str, str, str, int, int]]:
        merged: dict[tuple[str, str, str, str], list[int]] = {}
        for (relay, address, login, _), day in self.resolved.items():
            accepted, rejected = self.counts[(relay, address, login, _)]
            if not accepted and not rejected:
                continue
            kinds = (
                (("address", address),)
                if login is None
                else (("sasl-address", address), ("login", login))
            )
            for kind, key in kinds:
                slot = merged.setdefault((kind, key, day, relay), [0, 0])
                slot[0] += accepted
                slot[1] += rejected
        return [(k, key, d, r, a, j) for (k, key, d, r), (a, j) in merged.items()]

    def lasts(self) -> list[tuple[str, str, str, str, str, str, str, str]]:
        """(kind, key, event, at, relay, queue id, sender, detail), the latest per client key."""
        found: dict[tuple[str, str, str], tuple[str, str, str, str, str]] = {}
        for event, table in (
            ("accepted", self.correlator.last),
            ("rejected", self.correlator.last_rejected),
        ):
            for (address, login), (day_key, at, relay, queue_id, message) in table.items():
                day = resolve(day_key, self.base_year)
                if day is None:
                    continue
                start = message.find("from=<") + 6
                sender = message[start : message.find(">", start)] if start > 5 else ""
                detail = ""
                if event == "rejected":
                    begin = message.find("reject: ") + 8
                    end = message.find("; from=<", begin)
                    detail = message[begin : end if end >= 0 else len(message)]
                kinds = (
                    (("address", address),)
                    if login is None
                    else (("sasl-address", address), ("login", login))
                )
                stamp = f"{day}T{at}"
                for kind, key in kinds:
                    current = found.get((kind, key, event))
                    if current is None or stamp > current[0]:
                        found[(kind, key, event)] = (stamp, relay, queue_id, sender, detail)
        return [(k, key, e, *values) for (k, key, e), values in found.items()]


def _file_row(
    connection: sqlite3.Connection,
    file_id: int | None,
    head: bytes,
    source: Source,
    consumed: int,
    correlator: postfix.Correlator,
    settled: _Settled,
    years: classic.Years,
    base_year: int,
    anchor: tuple[int, int] | None,
) -> int:
    end_anchor = (base_year + years.rollovers, years.month) if years.month is not None else anchor
    anchor_year = end_anchor[0] if end_anchor else None
    anchor_month = end_anchor[1] if end_anchor else None
    if file_id is None:
        cursor = connection.execute(
            """INSERT INTO files (fingerprint, fp_len, path, offset, lines, first_day, last_day,
                                  anchor_year, anchor_month)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                fingerprint(head[:FINGERPRINT_BYTES]),
                len(head),
                source.name,
                consumed,
                correlator.lines,
                settled.first_day,
                settled.last_day,
                anchor_year,
                anchor_month,
            ),
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)
    connection.execute(
        """UPDATE files SET path = ?, offset = ?, lines = lines + ?,
             first_day = coalesce(min(first_day, ?), first_day, ?),
             last_day = coalesce(max(last_day, ?), last_day, ?),
             anchor_year = ?, anchor_month = ?
           WHERE id = ?""",
        (
            source.name,
            consumed,
            correlator.lines,
            settled.first_day,
            settled.first_day,
            settled.last_day,
            settled.last_day,
            anchor_year,
            anchor_month,
            file_id,
        ),
    )
    return file_id


def _write(connection: sqlite3.Connection, file_id: int, settled: _Settled) -> None:
    """Add the file's counts, lasts, coverage and message identities (inside its transaction)."""
    connection.executemany(
        """INSERT INTO counts (kind, key, day, relay, file, accepted, rejected)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (kind, key, day, relay, file) DO UPDATE SET
             accepted = accepted + excluded.accepted, rejected = rejected + excluded.rejected""",
        [(k, key, d, r, file_id, a, j) for k, key, d, r, a, j in settled.rows()],
    )
    connection.executemany(
        """INSERT INTO lasts (kind, key, event, file, at, relay, queue_id, sender, detail)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (kind, key, event, file) DO UPDATE SET
             at = excluded.at, relay = excluded.relay, queue_id = excluded.queue_id,
             sender = excluded.sender, detail = excluded.detail
           WHERE excluded.at > lasts.at""",
        [(k, key, e, file_id, *rest) for k, key, e, *rest in settled.lasts()],
    )
    connection.executemany(
        """INSERT INTO coverage (relay, file, first_day, last_day) VALUES (?, ?, ?, ?)
           ON CONFLICT (relay, file) DO UPDATE SET
             first_day = min(first_day, excluded.first_day),
             last_day = max(last_day, excluded.last_day)""",
        [(relay, file_id, first, last) for relay, (first, last) in settled.relays.items()],
    )
    connection.executemany(
        "INSERT INTO seen (day, relay, file, messages) VALUES (?, ?, ?, ?)",
        [(day, relay, file_id, packed) for day, relay, packed in settled.packed],
    )
    # Queue ids still waiting for their qmgr line carry over to the next file.
    newest = settled.last_day
    keep: list[tuple[str, str, str, str | None, str]] = []
    for (relay, queue_id), (address, login, day_key) in settled.correlator.pending.items():
        day = resolve(day_key, settled.base_year)
        if day is None:
            continue
        if newest is not None and (
            dt.date.fromisoformat(newest) - dt.date.fromisoformat(day)
        ) > dt.timedelta(days=PENDING_DAYS):
            continue
        keep.append((relay, queue_id, address, login, day))
    connection.execute("DELETE FROM pending")
    connection.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?)", keep)


# --- forgetting a file --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forgotten:
    path: str
    found: store.StoredFile | None


def forget(connection: sqlite3.Connection, paths: Iterable[Path]) -> list[Forgotten]:
    """Remove each file's contribution: by content when the file exists, else by stored path."""
    done: list[Forgotten] = []
    for path in paths:
        shown = "<stdin>" if path == STDIN else str(path)
        with store.transaction(connection):
            file_id = _stored_id(connection, path)
            stored = next((f for f in store.files(connection) if f.id == file_id), None)
            if stored is not None:
                store.forget(connection, stored.id)
        done.append(Forgotten(shown, stored))
    return done


def _stored_id(connection: sqlite3.Connection, path: Path) -> int | None:
    if path != STDIN and not path.exists():
        row = connection.execute(
            "SELECT id FROM files WHERE path = ? ORDER BY id DESC", (str(path),)
        ).fetchone()
        return None if row is None else int(row[0])
    try:
        source = open_source(path)
    except (SourceError, OSError) as error:
        raise store.StoreError(f"{path}: cannot be read: {error}") from error
    try:
        head = read_head(source)
    finally:
        source.close()
    known = store.known_file(connection, head, fingerprint) if head else None
    return None if known is None else known.id


# --- the summary --------------------------------------------------------------------------


def describe(result: FileResult) -> str:
    """One line per file for the summary."""
    if result.status == "failed":
        return f"{result.path}: failed, nothing kept: {result.problem}"
    long_lines = ""
    if result.overlong_at is not None:
        long_lines = (
            f"; {result.skipped[OVERLONG]} {OVERLONG}, the first at byte {result.overlong_at}"
        )
    if result.status == "unusable":
        return f"{result.path}: warning: {result.problem}{long_lines}"
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
    if result.duplicates:
        text += f", {result.duplicates} already counted from another file"
    if result.relays:
        text += f"; relays {', '.join(result.relays)}"
    if result.years:
        text += f"; classic syslog years {result.years}"
    return text + long_lines


def summary(report: IngestReport) -> str:
    files = report.files
    skipped: Counter[str] = Counter()
    for item in files:
        skipped.update(item.skipped)
    partial = skipped.pop(PARTIAL, 0)
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
    text = (
        f"ingest: {len(files)} files, {sum(f.lines for f in files)} lines read, "
        f"{sum(f.used for f in files)} used, {sum(skipped.values())} skipped"
    )
    if reasons:
        text += f" ({reasons})"
    text += (
        f"; {sum(f.accepted for f in files)} messages accepted, "
        f"{sum(f.rejected for f in files)} rejected"
    )
    duplicates = sum(f.duplicates for f in files)
    if duplicates:
        text += f"; {duplicates} already counted"
    if partial:
        text += f"; {partial} {PARTIAL}"
    failed = [f for f in files if f.status == "failed"]
    unusable = [f for f in files if f.status == "unusable"]
    if failed:
        text += f"; {len(failed)} files failed"
    if unusable:
        text += f"; {len(unusable)} files without a usable line"
    return text
