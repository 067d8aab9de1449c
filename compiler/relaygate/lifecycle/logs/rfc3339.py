"""Lines that start with an RFC 3339 time: ``2026-11-29T06:25:01.123456+01:00 host tag: msg``.

rsyslog's ``RSYSLOG_FileFormat`` (high precision) and ``journalctl -o
short-iso`` / ``short-iso-precise`` (``+0100`` offsets). The day and time are
the relay's local ones, as written; the offset is not applied.
"""

from __future__ import annotations

from relaygate.lifecycle.logs import Parts

NAME = "RFC 3339 (rsyslog high precision, journalctl -o short-iso)"


def parse(line: str) -> Parts | None:
    if line[4:5] != "-" or line[10:11] != "T" or line[13:14] != ":":
        return None
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
