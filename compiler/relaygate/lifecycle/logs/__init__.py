"""Reading Postfix logs: files and streams, one module per line format, the correlation.

* ``files``: open a path, ``-`` or a pipe; undo gzip, bzip2 or xz (by magic
  bytes); refuse a binary journal; cut the stream into lines in chunks, with
  a cap on a line's length (``LineReader``);
* ``classic``, ``rfc3339``, ``rfc5424``, ``journal``: one line format each,
  every one a function ``parse(line) -> Parts | None``; ``formats`` picks the
  function by the line's first bytes and names what was tried;
* ``postfix``: the correlation of Postfix's lines into accepted and rejected
  messages per relay, client and day (``Correlator``).

A line's parts are ``(relay, tag, message, day, time)``: the relay's host
name as logged (lower case, first label), the syslog tag (``postfix/smtpd``
with or without ``[pid]``), the message, the day (an ISO date, or for classic
syslog the ``"Mon dd"`` token whose year is settled after the file is read),
and ``HH:MM:SS`` in the relay's local time.
"""

from __future__ import annotations

#: relay, tag, message, day (ISO date or classic "Mon dd"), time HH:MM:SS
Parts = tuple[str, str, str, str, str]


def relay_name(host: str) -> str:
    """The relay as logs of every format name it: lower case, first label (an IP address whole)."""
    first = host.split(".", 1)[0]
    if first.isdigit() or ":" in host:
        return host.lower()
    return first.lower()
