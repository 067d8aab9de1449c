"""Which format a line is in, by its first bytes; the names of every format tried.

Classic syslog is the common case and is tried first by the correlation
itself (``classic.parse``); ``parse_other`` is everything else.
"""

from __future__ import annotations

import datetime as dt

from relaygate.lifecycle.logs import Parts, classic, journal, rfc3339, rfc5424

#: Every format read, in the words the warnings use.
NAMES: tuple[str, ...] = (classic.NAME, rfc3339.NAME, rfc5424.NAME, *journal.NAMES)


def parse_other(line: str, zone: dt.tzinfo | None) -> Parts | None:
    """The parts of a line that is not classic syslog, or None if no format reads it."""
    first = line[:1]
    if first in {"{", "\x1e"}:
        return journal.parse_json(line, zone)
    if first == "<" or line[:2] == "1 ":
        return rfc5424.parse(line)
    if first.isdigit():
        if line[4:5] == "-":
            return rfc3339.parse(line)
        return journal.parse_short_unix(line, zone)
    return journal.parse_short_full(line)
