"""journalctl exports: ``-o json``, ``-o json-seq``, ``-o short-full``, ``-o short-unix``.

``json`` is one object per line; ``json-seq`` the same with an RS byte
(0x1E) before each (RFC 7464). Their ``__REALTIME_TIMESTAMP`` and
short-unix's epoch seconds are instants: days and times are those of the
zone given (``--tz``; default this machine's). ``short-full``
(``Tue 2023-03-14 00:08:33 CET host tag[pid]: msg``) writes the local day
and time, used as written. ``-o short-iso`` lines are read by ``rfc3339``;
``-o short`` lines by ``classic``. A binary ``.journal`` file is refused by
``files`` (export it first).
"""

from __future__ import annotations

import datetime as dt
import json

from relaygate.lifecycle.logs import Parts

NAMES = (
    "journalctl -o json / json-seq",
    "journalctl -o short-full",
    "journalctl -o short-unix",
)
_WEEKDAYS = frozenset(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"))


def parse_json(line: str, zone: dt.tzinfo | None) -> Parts | None:
    if line[:1] == "\x1e":
        line = line[1:]
    try:
        entry = json.loads(line)
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald exports non-UTF-8 text as bytes
            message = bytes(message).decode("utf-8", "replace")
        moment = dt.datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1_000_000, zone)
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


def parse_short_full(line: str) -> Parts | None:
    """``Tue 2023-03-14 00:08:33 CET host tag[pid]: message``."""
    if line[:3] not in _WEEKDAYS or line[8:9] != "-" or line[17:18] != ":":
        return None
    zone_end = line.find(" ", 24)
    host_end = line.find(" ", zone_end + 1)
    colon = line.find(": ", host_end)
    if zone_end < 0 or host_end < 0 or colon < 0:
        return None
    return (
        line[zone_end + 1 : host_end],
        line[host_end + 1 : colon],
        line[colon + 2 :],
        line[4:14],
        line[15:23],
    )


def parse_short_unix(line: str, zone: dt.tzinfo | None) -> Parts | None:
    """``1678748913.579644 host tag[pid]: message``."""
    end = line.find(" ")
    host_end = line.find(" ", end + 1)
    colon = line.find(": ", host_end)
    if end < 0 or host_end < 0 or colon < 0:
        return None
    try:
        moment = dt.datetime.fromtimestamp(float(line[:end]), zone)
    except (ValueError, OverflowError, OSError):
        return None
    return (
        line[end + 1 : host_end],
        line[host_end + 1 : colon],
        line[colon + 2 :],
        moment.strftime("%Y-%m-%d"),
        moment.strftime("%H:%M:%S"),
    )
