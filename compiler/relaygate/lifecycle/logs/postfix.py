"""Correlation: Postfix's log lines become accepted and rejected messages.

Input: complete lines in file order (any mix of the formats in this
package). Output, per file: counts per (relay, client address, SASL login,
day), the identity of each counted message (for de-duplication across files),
the last accepted and the last rejected message per client, and the smtpd
lines still waiting for their qmgr line.

What counts:

* accepted: an smtpd ``QID: client=host[addr]`` line (with
  ``sasl_username=`` when the client authenticated) followed by the qmgr
  ``QID: from=<...>, ... (queue active)`` line of the same relay and queue id.
  Only the first qmgr line counts: later ones are retries. The message is
  counted on the day of the qmgr line; its identity is (relay, queue id,
  time of that line).
* rejected: ``NOQUEUE: reject:``, ``QID: reject:`` and ``milter-reject:``
  lines; identity (relay, queue id, time, text, and how many identical lines
  came before it in the same second).

When the syslog tag names no daemon (rsyslog's RFC 5424 APP-NAME is plain
``postfix`` by default), the message's own shape says which daemon wrote it:
only smtpd writes ``client=``, only qmgr ``(queue active)``, and cleanup's
rejections are of a header, a body or the end of the message.

The loop over lines is the ingest's hot path: a line is dismissed by three
substring scans in C before anything is split, and classic syslog's common
shape is cut inline, with the same cuts as ``classic.parse`` (which reads
every other classic shape).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections import Counter

from relaygate.lifecycle.logs import classic, formats, relay_name

# Skip reasons, as the summary prints them.
NOT_POSTFIX = "not from postfix"
OTHER_POSTFIX = "other postfix messages"
EMPTY = "empty lines"
UNKNOWN_FORMAT = "unrecognised line format"
NO_CLIENT = "qmgr lines without a client= line (retries, local submissions, or an earlier log)"
BAD_ADDRESS = "client address not an IP address"

#: A day as the line writes it: an ISO date, or for classic syslog
#: (rollovers since the anchor, "Mon dd") until the year is known.
DayKey = str | tuple[int, str]
#: (relay, client address, SASL login or None, day)
CountKey = tuple[str, str, str | None, DayKey]
#: A message for the "last" columns: day, time, relay, queue id, message text.
Seen = tuple[DayKey, str, str, str, str]
Pending = dict[tuple[str, str], tuple[str, str | None, DayKey]]

#: Logged address text -> canonical spelling ("" when it is not an address).
_ADDRESSES: dict[str, str] = {}
_RELAYS: dict[str, str] = {}
_CLEANUP_REJECTS = ("header ", "body ", "END-OF-MESSAGE", "MIME-")


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


def _relay(host: str) -> str:
    known = _RELAYS.get(host)
    if known is None:
        if len(_RELAYS) > 10_000:
            _RELAYS.clear()
        known = _RELAYS[host] = relay_name(host)
    return known


def identities(accepted: list[str]) -> list[str]:
    """The identities of accepted messages (queue id and time) from ``messages``."""
    return [
        f"{queue_id}\0{at}" for queue_id, at in zip(accepted[::2], accepted[1::2], strict=False)
    ]


def _bracketed(text: str, start: int) -> str | None:
    """The address in ``host[addr]`` at or after ``start``."""
    left = text.find("[", start)
    if left < 0:
        return None
    right = text.find("]", left)
    if right < 0:
        return None
    return canonical_address(text[left + 1 : right])


def is_cleanup_reject(program: str, message: str, split: int) -> bool:
    """Whether a ``QID: reject:`` line is cleanup's (the whole message) rather than smtpd's.

    ``program`` is the tag without ``[pid]``; when the tag names no daemon
    (rsyslog's plain ``postfix``) the reason's first words tell.
    """
    if "/" in program:
        return program.endswith("/cleanup")
    reason = message[message.find("reject: ", split) + 8 :]
    return reason.startswith(_CLEANUP_REJECTS)


def rejected_address(message: str, by_cleanup: bool) -> str | None:
    """The client address a reject line names, or None."""
    if by_cleanup:
        # "reject: header Subject: ... from host[addr]; from=<...>": the
        # header text may say " from " too, so take the last one before
        # "; from=<". The header (or the sender) may also say "; from=<", to
        # make the line name another client: then it names none.
        end = message.find("; from=<")
        if end >= 0 and message.find("; from=<", end + 1) >= 0:
            return None
        start = message.rfind(" from ", 0, end if end >= 0 else len(message))
    else:
        start = message.find(" from ")  # "reject: RCPT from host[addr]: 554 ..."
    return _bracketed(message, start) if start >= 0 else None


def client_fields(message: str, start: int) -> tuple[str, str | None] | None:
    """The address and SASL login of an smtpd ``client=host[addr], sasl_username=x`` text.

    ``start`` is where ``client=`` begins; None when the address is not an IP address.
    """
    left = message.find("[", start)
    right = message.find("]", left)
    if left < 0 or right < 0:
        return None
    address = canonical_address(message[left + 1 : right])
    if address is None:
        return None
    login = None
    found = message.find("sasl_username=", right)
    if found >= 0:
        stop = message.find(", ", found)
        login = message[found + 14 : stop if stop >= 0 else len(message)] or None
    return address, login


_DATES: dict[tuple[int, str], str | None] = {}


def resolve(day: DayKey, base_year: int) -> str | None:
    """The ISO date of a day key, or None when there is no such day (Feb 29 of 2026)."""
    if isinstance(day, str):
        key = (0, day)
        cached = _DATES.get(key, "")
        if cached == "":
            try:
                cached = dt.date.fromisoformat(day).isoformat()
            except ValueError:
                cached = None
            _DATES[key] = cached
        return cached
    rollovers, token = day
    key = (base_year + rollovers, token)
    cached = _DATES.get(key, "")
    if cached == "":
        try:
            cached = dt.date(key[0], classic.MONTHS[token[:3]], int(token[4:6])).isoformat()
        except (ValueError, KeyError):
            cached = None
        _DATES[key] = cached
    return cached


class Correlator:
    """Turns the lines of one file into counts; classic syslog days resolve at the end."""

    def __init__(self, pending: Pending, years: classic.Years, zone: dt.tzinfo | None) -> None:
        self.pending = pending
        self.years = years
        self.zone = zone
        #: per count key, (queue id and time of each accepted message, alternating;
        #: the identity of each rejection): the counts are their lengths
        self.messages: dict[CountKey, tuple[list[str], list[str]]] = {}
        self.last: dict[tuple[str, str | None], Seen] = {}
        self.last_rejected: dict[tuple[str, str | None], Seen] = {}
        self.skipped: Counter[str] = Counter()
        self.lines = 0
        self.used = 0
        self.accepted = 0
        self.rejected = 0
        self.classic = 0
        self.tail: DayKey | None = None  # the day of the last classic line read
        self._month_token = ""
        self._rollovers = 0
        self._second: tuple[DayKey, str] | None = None
        self._same_second: Counter[str] = Counter()

    def feed(self, lines: list[str]) -> None:
        """Count the accepted and rejected messages of complete lines, in file order."""
        self.lines += len(lines)
        skipped = self.skipped
        pending = self.pending
        messages = self.messages
        last = self.last
        relays = _RELAYS
        parse_classic = classic.parse
        parse_other = formats.parse_other
        initials = classic.MONTH_INITIALS
        months = classic.MONTHS
        zone = self.zone
        other = not_postfix = used = accepted = rejected = classic_lines = 0
        month_token = self._month_token
        rollovers = self._rollovers
        last_host = last_relay = ""
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
            if line[9:10] == ":" and line[:1] in initials:
                # classic.parse's common shape, inlined: these are the loop's hottest lines.
                end = line.find(" ", 15)
                host_end = line.find(" ", end + 1)
                colon = line.find(": ", host_end)
                if end < 0 or host_end < 0 or colon < 0 or line[3:4] != " ":
                    skipped[UNKNOWN_FORMAT] += 1
                    continue
                host = line[end + 1 : host_end]
                tag = line[host_end + 1 : colon]
                message = line[colon + 2 :]
                token = line[:6]
                at = line[7:15]
                parts = None
                is_classic = True
            else:
                parts = parse_classic(line) if line[:1] in initials else None
                is_classic = parts is not None
                if parts is not None:
                    host, tag, message, token, at = parts
            if is_classic:
                classic_lines += 1
                line_rollovers = rollovers
                if token[:3] != month_token:
                    month = months.get(token[:3])
                    if month is None:
                        skipped[UNKNOWN_FORMAT] += 1
                        continue
                    line_rollovers = self.years.rollovers_for(month)
                    if self.years.month == month and line_rollovers == self.years.rollovers:
                        month_token, rollovers = token[:3], line_rollovers
                day: DayKey = (line_rollovers, token)
            else:
                parts = parse_other(line, zone)
                if parts is None:
                    skipped[UNKNOWN_FORMAT] += 1
                    continue
                host, tag, message, day, at = parts
            if not tag.startswith("postfix"):
                not_postfix += 1
                continue
            if host != last_host:
                last_host = host
                last_relay = relays.get(host) or _relay(host)
            relay = last_relay
            split = message.find(": ")
            queue_id = message[:split]
            if split <= 0 or not queue_id.isalnum():
                other += 1
                continue
            named = "/" in tag  # False: rsyslog RFC 5424 with APP-NAME "postfix"
            if kind == 1:
                if not message.startswith("client=", split + 2) or (named and "/smtpd" not in tag):
                    other += 1
                    continue
                fields = client_fields(message, split + 9)
                if fields is None:
                    skipped[BAD_ADDRESS] += 1
                    continue
                pending[(relay, queue_id)] = (fields[0], fields[1], day)
                used += 1
            elif kind == 2:
                if not message.startswith("from=<", split + 2) or (named and "/qmgr" not in tag):
                    other += 1
                    continue
                waiting = pending.pop((relay, queue_id), None)
                if waiting is None:
                    skipped[NO_CLIENT] += 1
                    continue
                address, login, _ = waiting
                key = (relay, address, login, day)
                tally = messages.get(key)
                if tally is None:
                    tally = messages[key] = ([], [])
                ids = tally[0]
                ids.append(queue_id)  # joined with its time at the end: no string made here
                ids.append(at)
                last[(address, login)] = (day, at, relay, queue_id, message)
                accepted += 1
                used += 1
            elif message.startswith("reject: ", split + 2) or message.startswith(
                "milter-reject: ", split + 2
            ):
                if self._reject(relay, tag.partition("[")[0], queue_id, message, split, day, at):
                    rejected += 1
                    used += 1
            else:
                other += 1
        self._month_token = month_token
        self._rollovers = rollovers
        self.used += used
        self.accepted += accepted
        self.rejected += rejected
        self.classic += classic_lines
        if other:
            skipped[OTHER_POSTFIX] += other
        if not_postfix:
            skipped[NOT_POSTFIX] += not_postfix
        self._note_tail(lines)

    def _note_tail(self, lines: list[str]) -> None:
        """The day of the chunk's last classic line (of any program): the file's last write."""
        for line in reversed(lines[-8:]):
            parts = classic.parse(line) if line[:1] in classic.MONTH_INITIALS else None
            if parts is not None and parts[3][:3] in classic.MONTHS:
                token = parts[3]
                self.tail = (self.years.rollovers_for(classic.MONTHS[token[:3]]), token)
                self._month_token = ""  # the tracker may have moved
                return

    def _reject(
        self,
        relay: str,
        program: str,
        queue_id: str,
        message: str,
        split: int,
        day: DayKey,
        at: str,
    ) -> bool:
        login: str | None = None
        address: str | None = None
        by_cleanup = is_cleanup_reject(program, message, split)
        if queue_id != "NOQUEUE":
            # A cleanup reject drops the message; an smtpd reject of one
            # recipient leaves the others (and the qmgr line) to come.
            queued = (relay, queue_id)
            waiting = self.pending.pop(queued, None) if by_cleanup else self.pending.get(queued)
            if waiting is not None:
                address, login, _ = waiting
        if address is None:
            address = rejected_address(message, by_cleanup)
        if address is None:
            self.skipped[BAD_ADDRESS] += 1
            return False
        second = (day, at)
        if second != self._second:
            self._second = second
            self._same_second.clear()
        text = f"{queue_id}\0{at}\0{message}"
        ordinal = self._same_second[text]
        self._same_second[text] = ordinal + 1
        key = (relay, address, login, day)
        tally = self.messages.get(key)
        if tally is None:
            tally = self.messages[key] = ([], [])
        tally[1].append(f"{text}\0{ordinal}")
        self.last_rejected[(address, login)] = (day, at, relay, queue_id, message)
        return True
