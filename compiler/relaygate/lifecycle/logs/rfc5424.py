"""RFC 5424 lines: ``<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID SD MSG``.

As rsyslog's ``RSYSLOG_SyslogProtocol23Format`` really writes them: APP-NAME
is plain ``postfix`` by default (the daemon name is dropped; with
``parser.permitSlashInProgramName`` it is ``postfix/smtpd``), and MSG keeps
the space that followed the tag, so two spaces stand between ``-`` (no
structured data) and the message. The PRI may be missing. The day and time
are the relay's local ones, as written.
"""

from __future__ import annotations

from relaygate.lifecycle.logs import Parts

NAME = "RFC 5424 (rsyslog RSYSLOG_SyslogProtocol23Format)"


def _after_structured_data(text: str) -> str:
    """The message after structured data (``[id k="v"][id2 ...] message``)."""
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
            return text[index + 1 :]
        index += 1
    return ""


def parse(line: str) -> Parts | None:
    if line[:1] == "<":
        close = line.find(">")
        line = line[close + 1 :] if 0 < close < 5 else ""
    parts = line.split(" ", 6)
    if len(parts) < 7 or parts[0] != "1" or len(parts[1]) < 19 or parts[1][10:11] != "T":
        return None
    stamp, host, app, rest = parts[1], parts[2], parts[3], parts[6]
    if rest.startswith("["):
        message = _after_structured_data(rest)
    elif rest.startswith("-"):
        message = rest[1:]
    else:
        return None
    return host, app, message.lstrip(" ").lstrip("\ufeff"), stamp[:10], stamp[11:19]
