"""Classic (BSD, RFC 3164) syslog lines: ``Nov 29 06:25:01 host postfix/smtpd[123]: message``.

What rsyslog's default file format and syslog-ng write to ``/var/log/mail.log``.
The day may be space-padded (``Mar  7``), not padded (``Mar 7``) or
zero-padded (``Mar 07``); the time may carry a fraction (``06:25:01.123456``).
The line carries no year: the day comes back as its ``"Mon dd"`` token
(space-padded) and ``Years`` settles the year once the file is read.
"""

from __future__ import annotations

import datetime as dt

from relaygate.lifecycle.logs import Parts

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
MONTH_INITIALS = frozenset(name[0] for name in MONTHS)
NAME = "classic syslog (Mon dd HH:MM:SS host tag: message)"


def parse(line: str) -> Parts | None:
    """The parts of a classic syslog line, or None if it is not one.

    The month name is not looked up here (the hot loop looks it up only when
    it changes): a caller must check ``token[:3] in MONTHS``.
    """
    if line[9:10] == ":":  # "Nov 29 06:25:01", "Nov  9 06:25:01"
        end = line.find(" ", 15)
        host_end = line.find(" ", end + 1)
        colon = line.find(": ", host_end)
        if end < 0 or host_end < 0 or colon < 0 or line[3:4] != " ":
            return None
        return (
            line[end + 1 : host_end],
            line[host_end + 1 : colon],
            line[colon + 2 :],
            line[:6],
            line[7:15],
        )
    if line[8:9] == ":" and line[3:4] == " " and line[5:6] == " ":  # "Mar 7 02:09:33"
        end = line.find(" ", 14)
        host_end = line.find(" ", end + 1)
        colon = line.find(": ", host_end)
        if end < 0 or host_end < 0 or colon < 0:
            return None
        return (
            line[end + 1 : host_end],
            line[host_end + 1 : colon],
            line[colon + 2 :],
            f"{line[:3]}  {line[4]}",
            line[6:14],
        )
    return None


class Years:
    """Counts year rollovers in a stream of classic syslog months (file order).

    The year advances when the month jumps backwards by two or more
    (December -> January, or a gap across New Year); a December line right
    after January lines is a late line of the old year.
    """

    __slots__ = ("month", "rollovers")

    def __init__(self, month: int | None) -> None:
        self.month = month
        self.rollovers = 0

    def rollovers_for(self, month: int) -> int:
        current = self.month
        if current is None:
            self.month = month
            return 0
        if month <= current - 2:
            self.rollovers += 1
            self.month = month
            return self.rollovers
        if month - current == 11:
            return self.rollovers - 1
        if month > current:
            self.month = month
        return self.rollovers

    def base_year(self, reference: dt.date) -> int:
        """The year of rollover 0, the last month read lying on or before ``reference``.

        ``reference`` is when the last line was written (a file's modification
        time, the watch's "now", or today); a last month after its month is of the
        year before.
        """
        month = self.month if self.month is not None else reference.month
        last_year = reference.year if month <= reference.month else reference.year - 1
        return last_year - self.rollovers
