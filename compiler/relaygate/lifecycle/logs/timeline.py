"""A timeline of Postfix's log lines: who sent what when, to whom, and what was refused.

Input: log paths (files, ``-``, pipes; any format and compression ``files``
and the format modules read) and how to settle classic syslog years. Output:
``Timeline``: timed events per client (address and SASL login), the lines
where Postfix could not reach a policy service, the latest time read, and
what each file gave. ``activity watch`` looks at its last minutes; the
activity store (``postfix.Correlator``) keeps day counts instead.

Events, as the correlation in ``postfix`` attributes them:

* ``accepted``: a qmgr ``QID: from=<...>, size=N, nrcpt=K (queue active)``
  line whose smtpd ``QID: client=host[addr]`` line was read (the first
  ``queue active`` only: later ones are retries); ``count`` is ``nrcpt``;
* ``recipient``: a delivery agent's ``QID: to=<r>, ... status=...`` line of
  such a message (any status: sent, deferred, bounced), until qmgr's
  ``QID: removed``;
* ``rejected``: a ``reject:`` or ``milter-reject:`` line (one refused
  recipient, or a whole message cleanup refused), with its ``to=<r>``. A
  ``NOQUEUE`` reject names only the client's address; when the same smtpd
  process (``tag[pid]``) logged a ``client=... sasl_username=`` line since its
  ``connect from`` of that address, the reject is that login's. ``over_limit``:
  whom the volume-limit policy service's refusal after DATA names (``device
  NAME`` or ``login LOGIN``), read only from the reject's fixed head (see
  ``OVER_LIMIT``), never from text a sender or recipient could carry.

Times are the relays' local times as written (journal instants in
``zone``). Classic syslog lines carry no year: it comes from ``year`` (the
year of a file's first line) or from ``reference`` (when the last line was
written: the watch's "now", else the file's modification time, else today).
"""

from __future__ import annotations

import datetime as dt
import lzma
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from relaygate.lifecycle.logs import classic, formats, postfix, relay_name
from relaygate.lifecycle.logs.files import (
    STDIN,
    LineReader,
    Source,
    SourceError,
    open_source,
    read_head,
    rotation_order,
)

EventKind = Literal["accepted", "recipient", "rejected"]
#: What Postfix logs when a check_policy_service server does not answer (attr_clnt.c).
POLICY_TROUBLE = "warning: problem talking to server "
#: The volume-limit refusal (render/postfwd.py: "450 4.7.1 device NAME reached its limit of N
#: messages per day", or "login LOGIN of NAMES ..."), as smtpd logs it after DATA, matched from
#: the start of the reject up to its first ";". The sender and the recipients come after
#: that ";" (``from=<...> to=<...>``), and a client's hostname cannot hold spaces or brackets,
#: so no text a sender controls can stand where this pattern looks.
OVER_LIMIT = re.compile(
    r"reject: END-OF-MESSAGE from [^\s\[\]]+\[[^\s\]]+\]: 450 4\.7\.1 <END-OF-MESSAGE>:"
    r" End-of-data rejected: (?:(device) ([a-z0-9][a-z0-9._-]*)|(login) ([^\s;<>]+) of [^;]+)"
    r" reached its limit of [0-9]+ messages per day;"
)
#: Daemons whose ``QID: to=<...>`` lines are deliveries (not cleanup's or smtpd's).
_NOT_DELIVERY = ("/qmgr", "/cleanup", "/smtpd", "/pickup", "/bounce", "/postsuper")


@dataclass(frozen=True, slots=True)
class Event:
    at: dt.datetime
    kind: EventKind
    address: str
    login: str | None
    relay: str
    count: int = 1  # accepted: the message's recipients (nrcpt)
    recipient: str = ""  # lower case; "" when the line names none
    over_limit: str = ""  # "device NAME" / "login LOGIN" the volume-limit refusal names


@dataclass(frozen=True, slots=True)
class PolicyTrouble:
    """A ``warning: problem talking to server ...`` line."""

    path: str
    line: int
    at: dt.datetime
    relay: str
    server: str  # as logged, e.g. inet:127.0.0.1:10040
    text: str


@dataclass(slots=True)
class FileRead:
    """What one file gave: ``status`` read, empty, unusable or failed."""

    path: str
    status: str
    lines: int = 0
    used: int = 0
    problem: str | None = None
    years: str | None = None


@dataclass(slots=True)
class Timeline:
    events: list[Event] = field(default_factory=list)
    troubles: list[PolicyTrouble] = field(default_factory=list)
    files: list[FileRead] = field(default_factory=list)
    latest: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    year: int | None = None  # the year of each classic file's first line
    reference: dt.date | None = None  # when the last line was written (overrides mtime)
    today: dt.date | None = None  # for standard input and pipes without a reference
    zone: dt.tzinfo | None = None  # journal instants


#: When a line was written, before its classic year is known: (day key, HH:MM:SS).
_Raw = tuple[postfix.DayKey, str]
#: An event's fields after its time: kind, address, login, relay, count, recipient, over limit.
_Fields = tuple[EventKind, str, str | None, str, int, str, str]


class _Reader:
    """The correlation state, carried from one file to the next (rotations, oldest first)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pending: dict[tuple[str, str], tuple[str, str | None]] = {}  # smtpd client= lines
        self.queued: dict[tuple[str, str], tuple[str, str | None]] = {}  # accepted, not removed
        self.sessions: dict[tuple[str, str], tuple[str, str | None]] = {}  # smtpd tag[pid]

    def read(self, path: Path, timeline: Timeline) -> None:
        shown = "<stdin>" if path == STDIN else str(path)
        try:
            source = open_source(path)
        except (SourceError, OSError) as error:
            problem = error.strerror if isinstance(error, OSError) and error.strerror else error
            timeline.files.append(FileRead(shown, "failed", problem=str(problem)))
            return
        try:
            timeline.files.append(self._read(source, shown, timeline))
        except (SourceError, OSError, EOFError, lzma.LZMAError) as error:
            timeline.files.append(FileRead(shown, "failed", problem=str(error)))
        finally:
            source.close()

    def _read(self, source: Source, shown: str, timeline: Timeline) -> FileRead:
        head = read_head(source)
        result = FileRead(shown, "read")
        if not head:
            result.status = "empty"
            return result
        years = classic.Years(None)
        raw_events: list[tuple[_Raw, _Fields]] = []
        raw_troubles: list[tuple[_Raw, PolicyTrouble]] = []
        latest: dict[postfix.DayKey, str] = {}  # the last time of each day read
        number = 0
        reader = LineReader(source, head)
        for lines in reader.chunks():
            for line in lines:
                number += 1
                parts = self._parts(line, years)
                if parts is None:
                    continue
                host, tag, message, day, at = parts
                if not tag.startswith("postfix"):
                    continue
                result.used += 1
                if at > latest.get(day, ""):
                    latest[day] = at
                relay = relay_name(host)
                when: _Raw = (day, at)
                if message.startswith(POLICY_TROUBLE):
                    server = message[len(POLICY_TROUBLE) :].split(": ", 1)[0]
                    raw_troubles.append(
                        (when, PolicyTrouble(shown, number, _EPOCH, relay, server, message))
                    )
                    continue
                fields = self._event(relay, tag, message)
                if fields is not None:
                    raw_events.append((when, fields))
        result.lines = number
        if not result.used:
            result.status = "unusable"
            result.problem = (
                f"none of its {number} lines is a Postfix message in a format relaygate reads"
                f" (tried: {'; '.join(formats.NAMES)})"
            )
            return result
        base_year = self._base_year(years, source, result)
        for when, fields in raw_events:
            moment = _moment(when, base_year)
            if moment is not None:
                timeline.events.append(Event(moment, *fields))
        for when, trouble in raw_troubles:
            moment = _moment(when, base_year)
            if moment is not None:
                timeline.troubles.append(
                    PolicyTrouble(
                        trouble.path,
                        trouble.line,
                        moment,
                        trouble.relay,
                        trouble.server,
                        trouble.text,
                    )
                )
        for day, at in latest.items():
            moment = _moment((day, at), base_year)
            if moment is not None and (timeline.latest is None or moment > timeline.latest):
                timeline.latest = moment
        return result

    def _parts(
        self, line: str, years: classic.Years
    ) -> tuple[str, str, str, postfix.DayKey, str] | None:
        if not line or "postfix" not in line:
            return None
        parts = classic.parse(line) if line[:1] in classic.MONTH_INITIALS else None
        if parts is not None:
            host, tag, message, token, at = parts
            month = classic.MONTHS.get(token[:3])
            if month is None:
                return None
            return host, tag, message, (years.rollovers_for(month), token), at
        other = formats.parse_other(line, self.settings.zone)
        return other

    def _base_year(self, years: classic.Years, source: Source, result: FileRead) -> int:
        if years.month is None:
            return 0
        settings = self.settings
        if settings.year is not None:
            result.years = f"--year {settings.year} for the first line"
            return settings.year
        if settings.reference is not None:
            reference = settings.reference
            result.years = f"from --now ({reference})"
        elif source.mtime is not None:
            reference = source.mtime.date()
            result.years = f"from the file's modification time ({reference})"
        else:
            reference = settings.today or dt.date.today()
            result.years = f"from today ({reference})"
        return years.base_year(reference)

    def _event(self, relay: str, tag: str, message: str) -> _Fields | None:
        """(kind, address, login, relay, count, recipient) of a line, or None."""
        split = message.find(": ")
        named = "/" in tag
        if split <= 0:
            self._session(relay, tag, message)
            return None
        queue_id = message[:split]
        if not queue_id.isalnum():
            return None
        body = message[split + 2 :]
        key = (relay, queue_id)
        if body.startswith("client="):
            if named and "/smtpd" not in tag:
                return None
            fields = postfix.client_fields(message, split + 9)
            if fields is not None:
                self.pending[key] = fields
                if "[" in tag and fields[1] is not None:
                    self.sessions[(relay, tag)] = fields
            return None
        if body.startswith("from=<") and body.endswith("(queue active)"):
            if named and "/qmgr" not in tag:
                return None
            client = self.pending.pop(key, None)
            if client is None:
                return None  # a retry, or its client= line is in an earlier log
            self.queued[key] = client
            return ("accepted", client[0], client[1], relay, _nrcpt(body), "", "")
        if body == "removed":
            self.queued.pop(key, None)
            return None
        if body.startswith("to=<"):
            if named and tag.partition("[")[0].endswith(_NOT_DELIVERY):
                return None
            client = self.queued.get(key)
            if client is None or ", status=" not in body:
                return None
            return ("recipient", client[0], client[1], relay, 1, _address_in(body, 0), "")
        if body.startswith(("reject: ", "milter-reject: ")):
            return self._rejected(relay, tag, queue_id, message, split)
        return None

    def _rejected(
        self, relay: str, tag: str, queue_id: str, message: str, split: int
    ) -> _Fields | None:
        by_cleanup = postfix.is_cleanup_reject(tag.partition("[")[0], message, split)
        client: tuple[str, str | None] | None = None
        if queue_id != "NOQUEUE":
            key = (relay, queue_id)
            client = self.pending.pop(key, None) if by_cleanup else self.pending.get(key)
        if client is None:
            address = postfix.rejected_address(message, by_cleanup)
            if address is None:
                return None
            session = self.sessions.get((relay, tag)) if "[" in tag else None
            login = session[1] if session is not None and session[0] == address else None
            client = (address, login)
        start = message.find(" to=<")
        recipient = _address_in(message, start + 1) if start >= 0 else ""
        named = OVER_LIMIT.match(message, split + 2)
        over = ""
        if named is not None:
            over = f"device {named[2]}" if named[1] else f"login {named[4].lower()}"
        return ("rejected", client[0], client[1], relay, 1, recipient, over)

    def _session(self, relay: str, tag: str, message: str) -> None:
        """smtpd's ``connect from`` and ``disconnect from`` start and end a session."""
        if "[" not in tag:
            return
        if message.startswith(("connect from ", "disconnect from ")):
            self.sessions.pop((relay, tag), None)


_EPOCH = dt.datetime(1970, 1, 1)


def _nrcpt(body: str) -> int:
    start = body.find("nrcpt=")
    if start < 0:
        return 1
    digits = body[start + 6 :].split(" ", 1)[0].rstrip(",")
    return int(digits) if digits.isdigit() else 1


def _address_in(text: str, start: int) -> str:
    """The address of ``to=<...>`` at ``start``, lower case."""
    left = text.find("<", start)
    right = text.find(">", left)
    if left < 0 or right < 0:
        return ""
    return text[left + 1 : right].lower()


def _moment(when: _Raw, base_year: int) -> dt.datetime | None:
    day = postfix.resolve(when[0], base_year)
    if day is None:
        return None
    try:
        return dt.datetime.fromisoformat(f"{day}T{when[1]}")
    except ValueError:
        return None


def read(paths: Iterable[Path], settings: Settings) -> Timeline:
    """The timeline of every file, oldest rotation first; a file that fails is said, not raised."""
    timeline = Timeline()
    reader = _Reader(settings)
    for path in rotation_order(list(paths)):
        reader.read(path, timeline)
    timeline.events.sort(key=lambda event: event.at)
    timeline.troubles.sort(key=lambda trouble: trouble.at)
    return timeline
