"""Activity ingest: exact counts from realistic logs, idempotence, resumption, crashes.

The logs are written line by line the way Postfix writes them (the real
lines of a private Postfix instance are ingested too, in an integration
test): several relays, rotated and compressed files, IPv6 clients, SASL
logins, rejects, deferred retries and a New Year inside a file. Expected
values are written out by hand, not computed by a second parser.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import importlib.util
import json
import os
import pty
import re
import select
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relaygate.lifecycle import store
from relaygate.lifecycle.logs import files
from tests import postfix_instance
from tests.conftest import ROOT, require

_CLI = "import sys; from relaygate.cli import main; sys.exit(main(sys.argv[1:]))"


# --- building logs --------------------------------------------------------------------


@dataclass
class Log:
    """Postfix log lines of one relay in one format (classic, rfc3339, rfc5424, journal)."""

    relay: str
    style: str = "classic"
    lines: list[str] = field(default_factory=list)
    pid: int = 4100

    def line(self, at: dt.datetime, program: str, text: str) -> None:
        pid = self.pid + len(program)
        if self.style == "classic":
            self.lines.append(
                f"{at:%b} {at.day:2d} {at:%H:%M:%S} {self.relay} postfix/{program}[{pid}]: {text}"
            )
        elif self.style == "rfc3339":
            self.lines.append(
                f"{at:%Y-%m-%dT%H:%M:%S}.250113+01:00 {self.relay} postfix/{program}[{pid}]: {text}"
            )
        elif self.style == "rfc5424":
            self.lines.append(
                f"<22>1 {at:%Y-%m-%dT%H:%M:%S}.250113+01:00 {self.relay} postfix/{program} {pid}"
                f' - [origin software="rsyslogd" x="a]b"] {text}'
            )
        else:  # journal; ``at`` is UTC
            stamp = int(at.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
            self.lines.append(
                json.dumps(
                    {
                        "__REALTIME_TIMESTAMP": str(stamp),
                        "_HOSTNAME": self.relay,
                        "SYSLOG_IDENTIFIER": f"postfix/{program}",
                        "SYSLOG_PID": str(pid),
                        "PRIORITY": "6",
                        "MESSAGE": text,
                    }
                )
            )

    def other(self, at: dt.datetime, text: str = "(root) CMD (run-parts /etc/cron.hourly)") -> None:
        if self.style == "classic":
            self.lines.append(f"{at:%b} {at.day:2d} {at:%H:%M:%S} {self.relay} CRON[77]: {text}")
        else:
            self.line(at, "anvil", "statistics: max cache size 1")

    def start(self, at: dt.datetime, address: str, queue_id: str, login: str | None = None) -> None:
        self.line(at, "smtpd", f"connect from host.example.edu[{address}]")
        sasl = f", sasl_method=PLAIN, sasl_username={login}" if login else ""
        self.line(at, "smtpd", f"{queue_id}: client=host.example.edu[{address}]{sasl}")
        self.line(at, "cleanup", f"{queue_id}: message-id=<{queue_id}@host.example.edu>")

    def finish(
        self,
        at: dt.datetime,
        queue_id: str,
        sender: str = "notify@example.edu",
        retry: bool = False,
    ) -> None:
        active = f"{queue_id}: from=<{sender}>, size=1432, nrcpt=1 (queue active)"
        self.line(at, "qmgr", active)
        if retry:  # deferred, then qmgr logs the same message again on the next attempt
            self.line(
                at,
                "smtp",
                f"{queue_id}: to=<a@example.org>, relay=none, delay=30, dsn=4.4.1, "
                "status=deferred (connect to mx.example.org[192.0.2.25]:25: Connection timed out)",
            )
            self.line(at, "qmgr", active)
        self.line(
            at,
            "smtp",
            f"{queue_id}: to=<a@example.org>, relay=mx.example.org[192.0.2.25]:25, delay=0.4, "
            "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4F1B2)",
        )
        self.line(at, "qmgr", f"{queue_id}: removed")

    def accept(
        self,
        at: dt.datetime,
        address: str,
        queue_id: str,
        login: str | None = None,
        sender: str = "notify@example.edu",
        retry: bool = False,
    ) -> None:
        self.start(at, address, queue_id, login)
        self.finish(at, queue_id, sender, retry)
        self.line(at, "smtpd", f"disconnect from host.example.edu[{address}] ehlo=1 commands=5")

    def reject(self, at: dt.datetime, address: str) -> None:
        self.line(at, "smtpd", f"connect from unknown[{address}]")
        self.line(
            at,
            "smtpd",
            f"NOQUEUE: reject: RCPT from unknown[{address}]: 554 5.7.1 <x@gmail.com>: Relay "
            "access denied; from=<a@example.edu> to=<x@gmail.com> proto=ESMTP helo=<printer>",
        )

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def write(path: Path, text: str, mtime: str, compress: str | None = None) -> Path:
    data = text.encode()
    if compress == "gz":
        data = gzip.compress(data)
    elif compress == "bz2":
        data = bz2.compress(data)
    path.write_bytes(data)
    stamp = at(mtime).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def touch(path: Path, when: str) -> None:
    stamp = at(when).timestamp()
    os.utime(path, (stamp, stamp))


def days(db: Path) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(kind, key, day) -> (accepted, rejected), over every relay and file."""
    with sqlite3.connect(db) as connection:
        return {
            (kind, key, day): (accepted, rejected)
            for kind, key, day, accepted, rejected in connection.execute(
                "SELECT kind, key, day, sum(accepted), sum(rejected) FROM counts"
                " GROUP BY kind, key, day"
            )
        }


def clients(db: Path) -> dict[tuple[str, str], tuple[object, ...]]:
    """(kind, key) -> (accepted, rejected, last accepted time, its relay, queue id, sender)."""
    with sqlite3.connect(db) as connection:
        found: dict[tuple[str, str], tuple[object, ...]] = {}
        for kind, key, accepted, rejected in connection.execute(
            "SELECT kind, key, sum(accepted), sum(rejected) FROM counts GROUP BY kind, key"
        ):
            last = connection.execute(
                "SELECT at, relay, queue_id, sender FROM lasts WHERE kind = ? AND key = ?"
                " AND event = 'accepted' ORDER BY at DESC LIMIT 1",
                (kind, key),
            ).fetchone()
            found[(kind, key)] = (accepted, rejected, *(last or (None, None, None, None)))
        return found


def totals(db: Path) -> tuple[int, int]:
    """Accepted and rejected messages over every client address."""
    with sqlite3.connect(db) as connection:
        accepted, rejected = connection.execute(
            "SELECT coalesce(sum(accepted), 0), coalesce(sum(rejected), 0) FROM counts"
            " WHERE kind IN ('address', 'sasl-address')"
        ).fetchone()
    return int(accepted), int(rejected)


def dump(db: Path) -> tuple[object, ...]:
    with sqlite3.connect(db) as connection:
        return tuple(
            tuple(connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4").fetchall())
            for table in ("counts", "lasts", "coverage", "seen", "pending")
        )


# --- the campus scenario ----------------------------------------------------------------


def campus_logs(folder: Path) -> dict[str, Path]:
    """Four relays over New Year 2026/27: rotated, compressed, four formats."""
    folder.mkdir(parents=True, exist_ok=True)
    old = Log("smtp-relay-1")  # mail.log.2.gz: Dec 28 .. Dec 31, 2026
    old.accept(at("2026-12-28 09:00:00"), "10.20.30.41", "3F1A0")
    old.other(at("2026-12-28 09:00:01"))
    old.accept(at("2026-12-28 17:45:10"), "10.20.30.41", "3F1A1")
    old.reject(at("2026-12-29 10:00:00"), "10.20.30.41")
    old.accept(at("2026-12-30 08:30:00"), "10.20.30.41", "3F1A2")
    old.accept(
        at("2026-12-31 12:00:00"),
        "10.20.50.16",
        "3F1A3",
        login="svc-lib-illiad@example.edu",
        retry=True,
    )
    one = Log("smtp-relay-1")  # mail.log.1: Dec 31, 2026 .. Jan 2, 2027
    one.accept(at("2026-12-31 23:59:58"), "10.20.30.41", "3F1B0", sender="scans@lib.example.edu")
    one.accept(at("2027-01-01 00:00:05"), "10.20.30.41", "3F1B1")
    one.reject(at("2026-12-31 23:59:59"), "192.0.2.7")  # written late, after the Jan 1 lines
    for index in range(3):
        one.accept(at(f"2027-01-02 1{index}:00:00"), "2001:db8:1040:320::1f", f"3F1C{index}")
    one.reject(at("2027-01-02 13:00:00"), "2001:db8:1040:320::1f")
    one.start(at("2027-01-02 23:59:59"), "10.20.30.57", "3F1D0")  # its qmgr line is in mail.log
    live = Log("smtp-relay-1")  # mail.log: Jan 3, 2027
    live.finish(at("2027-01-03 00:00:01"), "3F1D0")
    live.accept(at("2027-01-03 08:00:00"), "10.20.30.41", "3F1E0", sender="late@lib.example.edu")
    live.start(at("2027-01-03 08:10:00"), "10.20.30.88", "3F1E1")
    live.line(
        at("2027-01-03 08:10:00"),
        "cleanup",
        "3F1E1: reject: header Subject: mail from printer from unknown[10.20.30.88]; "
        "from=<a@lib.example.edu> to=<x@example.org> proto=ESMTP helo=<gate>: 5.7.1 spam",
    )
    live.start(at("2027-01-03 09:00:00"), "10.20.30.57", "3F1E2")
    live.line(
        at("2027-01-03 09:00:00"),
        "smtpd",
        "3F1E2: reject: RCPT from host.example.edu[10.20.30.57]: 550 5.1.1 <gone@example.edu>: "
        "Recipient address rejected; from=<s@lib.example.edu> to=<gone@example.edu> proto=ESMTP",
    )
    live.finish(at("2027-01-03 09:00:01"), "3F1E2")
    live.finish(at("2027-01-03 09:30:00"), "0D0D0")  # a retry of a message from before the logs
    two = Log("smtp-relay-2", "rfc3339")
    two.accept(at("2027-01-02 07:00:00"), "10.5.10.17", "3F1A0", login="svc-oit-zabbix@example.edu")
    two.accept(at("2027-01-02 07:05:00"), "10.5.10.18", "3F1A1", login="svc-oit-zabbix@example.edu")
    two.reject(at("2027-01-02 07:06:00"), "2001:db8:1040:320::99")
    three = Log("smtp-relay-3", "rfc5424")
    three.accept(at("2027-01-03 09:30:00"), "10.20.30.41", "A0001", sender="last@lib.example.edu")
    four = Log("smtp-relay-4", "journal")
    four.accept(
        at("2027-01-03 23:30:00"),
        "2001:db8:1020:50::16",
        "B0001",
        login="svc-lib-illiad@example.edu",
    )
    return {
        "mail.log": write(folder / "mail.log", live.text(), "2027-01-03 12:00:00"),
        "mail.log.1": write(folder / "mail.log.1", one.text(), "2027-01-02 23:59:59"),
        "mail.log.2.gz": write(
            folder / "mail.log.2.gz", old.text(), "2026-12-31 23:59:00", compress="gz"
        ),
        "relay2.log": write(folder / "relay2.log", two.text(), "2027-01-02 08:00:00"),
        "relay3.log.bz2": write(
            folder / "relay3.log.bz2", three.text(), "2027-01-03 10:00:00", compress="bz2"
        ),
        "relay4.json": write(folder / "relay4.json", four.text(), "2027-01-04 00:00:00"),
    }


#: The day after the campus logs end (they are dated after the example's as-of day).
CAMPUS_AS_OF = "2027-01-04"

CAMPUS_DAYS = {
    ("address", "10.20.30.41", "2026-12-28"): (2, 0),
    ("address", "10.20.30.41", "2026-12-29"): (0, 1),
    ("address", "10.20.30.41", "2026-12-30"): (1, 0),
    ("address", "10.20.30.41", "2026-12-31"): (1, 0),
    ("address", "10.20.30.41", "2027-01-01"): (1, 0),
    ("address", "10.20.30.41", "2027-01-03"): (2, 0),
    ("sasl-address", "10.20.50.16", "2026-12-31"): (1, 0),
    ("login", "svc-lib-illiad@example.edu", "2026-12-31"): (1, 0),
    ("address", "192.0.2.7", "2026-12-31"): (0, 1),
    ("address", "2001:db8:1040:320::1f", "2027-01-02"): (3, 1),
    ("address", "10.20.30.57", "2027-01-03"): (2, 1),
    ("address", "10.20.30.88", "2027-01-03"): (0, 1),
    ("sasl-address", "10.5.10.17", "2027-01-02"): (1, 0),
    ("sasl-address", "10.5.10.18", "2027-01-02"): (1, 0),
    ("login", "svc-oit-zabbix@example.edu", "2027-01-02"): (2, 0),
    ("address", "2001:db8:1040:320::99", "2027-01-02"): (0, 1),
    ("sasl-address", "2001:db8:1020:50::16", "2027-01-03"): (1, 0),
    ("login", "svc-lib-illiad@example.edu", "2027-01-03"): (1, 0),
}


def test_campus_logs_give_exact_days_counts_and_last_seen(
    tmp_path: Path, run_cli, inventory: Path
) -> None:  # type: ignore[no-untyped-def]
    logs = campus_logs(tmp_path)
    # Newest first, as a shell glob of mail.log* gives them: the ingest reorders rotations.
    result = run_cli(
        "activity",
        "ingest",
        *(str(p) for p in logs.values()),
        "--inventory",
        str(inventory),
        "--tz",
        "UTC",
        "--as-of",
        CAMPUS_AS_OF,
    )
    assert result.code == 0, result
    db = inventory.parent / ".relaygate" / "activity.sqlite"
    assert days(db) == CAMPUS_DAYS
    assert clients(db)[("address", "10.20.30.41")] == (
        7,
        1,
        "2027-01-03T09:30:00",
        "smtp-relay-3",
        "A0001",
        "last@lib.example.edu",
    )
    assert clients(db)[("login", "svc-lib-illiad@example.edu")] == (
        2,
        0,
        "2027-01-03T23:30:00",
        "smtp-relay-4",
        "B0001",
        "notify@example.edu",
    )
    # Rejections never count as activity.
    assert clients(db)[("address", "10.20.30.88")] == (0, 1, None, None, None, None)
    assert clients(db)[("address", "192.0.2.7")] == (0, 1, None, None, None, None)
    out = result.stdout
    assert re.search(
        r"mail\.log\.2\.gz: read: \d+ lines, \d+ used, 4 accepted, 1 rejected, "
        r"2026-12-28 \.\. 2026-12-31; relays smtp-relay-1; classic syslog years from the file's "
        r"modification time \(2026-12-31\)",
        out,
    ), out
    assert "mail.log.1: read:" in out and "2026-12-31 .. 2027-01-02" in out, out
    # The rotations were read oldest first whatever the argument order.
    names = [line.split(":")[0].rsplit("/", 1)[-1] for line in out.splitlines()[:3]]
    assert names == ["mail.log.2.gz", "mail.log.1", "mail.log"], out
    # 16 accepted: 7 from 10.20.30.41, 3 from the IPv6 copier, 2 from 10.20.30.57 (one of
    # them across the rotation), 2 zabbix, 2 illiad (one retried: counted once); 6 rejects.
    assert out.splitlines()[-1] == (
        "ingest: 6 files, 129 lines read, 39 used, 90 skipped (1 not from postfix, "
        "87 other postfix messages, 2 qmgr lines without a client= line (retries, local "
        "submissions, or an earlier log)); 16 messages accepted, 6 rejected"
    ), out
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT version FROM schema_version").fetchone()[0] == 2
        assert connection.execute("SELECT count(*) FROM pending").fetchone()[0] == 0


def test_reingest_and_rotated_copies_never_double_count(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    logs = campus_logs(tmp_path / "logs")
    db = tmp_path / "store.sqlite"
    first = run_cli(
        "activity",
        "ingest",
        *(str(p) for p in logs.values()),
        "--db",
        str(db),
        "--tz",
        "UTC",
        "--as-of",
        CAMPUS_AS_OF,
    )
    assert first.code == 0, first
    before = dump(db)
    # The same content under other names and compressions: a later rotation.
    copies = tmp_path / "rotated"
    copies.mkdir()
    (copies / "mail.log.1.gz").write_bytes(gzip.compress(logs["mail.log"].read_bytes()))
    (copies / "mail.log.2").write_bytes(logs["mail.log.1"].read_bytes())
    shutil.copy(logs["mail.log.2.gz"], copies / "mail.log.3.gz")
    again = run_cli(
        "activity",
        "ingest",
        *(str(p) for p in logs.values()),
        *(str(p) for p in copies.iterdir()),
        "--db",
        str(db),
        "--tz",
        "UTC",
        "--as-of",
        CAMPUS_AS_OF,
    )
    assert again.code == 0, again
    assert dump(db) == before
    assert again.stdout.count("already read") == 9, again
    assert again.stdout.splitlines()[-1].startswith("ingest: 9 files, 0 lines read, 0 used"), again


def test_a_growing_log_is_read_from_where_it_stopped(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    log = Log("smtp-relay-1")
    log.accept(at("2026-11-20 08:00:00"), "10.20.30.41", "AA01")
    head = log.text()
    assert len(head) < files.FINGERPRINT_BYTES  # the fingerprint must grow with the file
    path = write(tmp_path / "mail.log", head, "2026-11-20 08:00:00")
    # A line being written: no newline yet. It is read on the next run, not now.
    partial = (
        "Nov 20 08:00:01 smtp-relay-1 postfix/qmgr[4104]: AA02: from=<a@lib.example.edu>, size=1"
    )
    log.start(at("2026-11-20 08:00:01"), "10.20.30.57", "AA02")
    started = log.text()
    path.write_text(started + partial)
    touch(path, "2026-11-20 08:00:01")  # the time of its last write, as a relay leaves it
    db = tmp_path / "store.sqlite"
    first = run_cli("activity", "ingest", str(path), "--db", str(db))
    assert first.code == 0, first
    assert days(db) == {("address", "10.20.30.41", "2026-11-20"): (1, 0)}
    assert "1 partial last line (read on the next run)" in first.stdout, first
    # The line completes, then much more is written (past the fingerprint size).
    log.lines.clear()
    for index in range(60):
        log.accept(at(f"2026-11-21 09:{index:02d}:00"), "10.20.30.41", f"AB{index:02d}")
    with path.open("a") as out:
        out.write("00, nrcpt=1 (queue active)\n" + log.text())
    touch(path, "2026-11-21 09:59:00")
    second = run_cli("activity", "ingest", str(path), "--db", str(db))
    assert second.code == 0, second
    # 421 lines: the completed qmgr line and 60 conversations of 7 lines.
    assert f"{path}: resumed from byte {len(started.encode())}: 421 lines, 121 used, " in (
        second.stdout
    ), second
    assert days(db) == {
        ("address", "10.20.30.41", "2026-11-20"): (1, 0),
        ("address", "10.20.30.57", "2026-11-20"): (1, 0),
        ("address", "10.20.30.41", "2026-11-21"): (60, 0),
    }
    # logrotate renames the file, one more line lands in it, then it is compressed.
    log.lines.clear()
    log.accept(at("2026-11-22 00:00:30"), "10.20.30.88", "AC01")
    with path.open("a") as out:
        out.write(log.text())
    rotated = tmp_path / "mail.log.1.gz"
    rotated.write_bytes(gzip.compress(path.read_bytes()))
    touch(rotated, "2026-11-22 00:00:30")  # gzip keeps the file's time
    path.write_text("")  # the new, empty mail.log
    third = run_cli("activity", "ingest", str(path), str(rotated), "--db", str(db))
    assert third.code == 0, third
    assert f"{path}: empty" in third.stdout, third
    assert days(db)[("address", "10.20.30.88", "2026-11-22")] == (1, 0)
    assert sum(a for a, _ in days(db).values()) == 63


@pytest.mark.parametrize(
    ("lines", "mtime", "year", "expected", "assumed"),
    [
        (
            ["Dec 31 23:59:58", "Jan  1 00:00:05", "Dec 31 23:59:59", "Jan  1 00:10:00"],
            "2027-01-01 00:10:00",
            None,
            {"2026-12-31": 2, "2027-01-01": 2},
            "from the file's modification time (2027-01-01)",
        ),
        (
            ["Dec 31 23:59:58", "Jan  1 00:00:05", "Dec 31 23:59:59", "Jan  1 00:10:00"],
            "2027-01-01 00:10:00",
            2030,
            {"2030-12-31": 2, "2031-01-01": 2},
            "--year 2030 for the first line",
        ),
        (  # compressed after New Year: December lines of the year before the mtime
            ["Dec 30 10:00:00", "Dec 31 10:00:00"],
            "2027-01-01 06:25:00",
            None,
            {"2026-12-30": 1, "2026-12-31": 1},
            "from the file's modification time (2027-01-01)",
        ),
        (  # a gap across New Year: October, then March of the next year
            ["Oct  3 10:00:00", "Mar  4 10:00:00"],
            "2027-03-04 10:00:00",
            None,
            {"2026-10-03": 1, "2027-03-04": 1},
            "from the file's modification time (2027-03-04)",
        ),
    ],
)
def test_classic_syslog_years(
    tmp_path: Path,
    run_cli,  # type: ignore[no-untyped-def]
    lines: list[str],
    mtime: str,
    year: int | None,
    expected: dict[str, int],
    assumed: str,
) -> None:
    text = ""
    for index, stamp in enumerate(lines):
        text += (
            f"{stamp} smtp-relay-1 postfix/smtpd[1]: Q{index}: client=h[10.20.30.41]\n"
            f"{stamp} smtp-relay-1 postfix/qmgr[2]: Q{index}: from=<a@b.example.edu>, size=1, "
            "nrcpt=1 (queue active)\n"
        )
    path = write(tmp_path / "mail.log", text, mtime)
    db = tmp_path / "store.sqlite"
    args = ["activity", "ingest", str(path), "--db", str(db), "--as-of", "2031-12-31"]
    if year is not None:
        args += ["--year", str(year)]
    result = run_cli(*args)
    assert result.code == 0, result
    assert {day: a for (_, _, day), (a, _) in days(db).items()} == expected
    assert f"classic syslog years {assumed}" in result.stdout, result


def test_an_impossible_date_is_skipped_and_said(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    text = (
        "Feb 29 10:00:00 r postfix/smtpd[1]: Q1: client=h[10.20.30.41]\n"
        "Feb 29 10:00:00 r postfix/qmgr[2]: Q1: from=<a@b.example.edu>, size=1, nrcpt=1 "
        "(queue active)\n"
    )
    path = write(tmp_path / "mail.log", text, "2026-03-01 00:00:00")  # 2026 is no leap year
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(path), "--db", str(db))
    assert result.code == 0, result
    assert days(db) == {}
    assert "1 impossible dates (the year assumed is wrong?)" in result.stdout, result


def test_a_damaged_file_fails_alone_and_keeps_nothing(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    log = Log("r")
    for index in range(200):
        log.accept(at("2026-11-20 08:00:00"), "10.20.30.41", f"D{index}")
    whole = gzip.compress(log.text().encode())
    broken = tmp_path / "mail.log.2.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    good = write(tmp_path / "other.log", Log("s").text(), "2026-11-20 09:00:00")
    good.write_text(
        "Nov 20 09:00:00 s postfix/smtpd[1]: Q1: client=h[10.20.30.57]\n"
        "Nov 20 09:00:00 s postfix/qmgr[2]: Q1: from=<a@b.example.edu>, size=1, nrcpt=1 "
        "(queue active)\n"
    )
    db = tmp_path / "store.sqlite"
    result = run_cli(
        "activity", "ingest", str(broken), str(good), "--db", str(db), "--year", "2026"
    )
    assert result.code == 1, result
    assert f"{broken}: failed, nothing kept" in result.stdout, result
    assert days(db) == {("address", "10.20.30.57", "2026-11-20"): (1, 0)}
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM files").fetchone()[0] == 1


def test_a_store_from_a_newer_relaygate_is_refused(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "store.sqlite"
    store.connect(db).close()
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    path = write(tmp_path / "mail.log", "x\n", "2026-11-20 00:00:00")
    result = run_cli("activity", "ingest", str(path), "--db", str(db))
    assert result.code == 2, result
    assert "schema version 99; this relaygate knows up to 2" in result.stderr, result


def test_an_old_store_is_migrated_in_place(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    with sqlite3.connect(db) as connection:  # an empty store of "version 0"
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (0)")
    connection = store.connect(db)
    try:
        assert store.schema_version(connection) == store.SCHEMA_VERSION == 2
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        assert {"files", "counts", "lasts", "coverage", "seen", "pending"} <= tables
    finally:
        connection.close()


# --- crashes ---------------------------------------------------------------------------


def _bench_generate():  # type: ignore[no-untyped-def]
    """``generate`` of benchmarks/ingest.py (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "benchmarks" / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
    return module.generate


def _ingest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CLI, "activity", "ingest", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


def _locked(db: Path) -> bool:
    """Whether another process holds the store's write lock (is inside a file's transaction)."""
    if not db.exists():
        return False
    probe = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def _wait_until_locked(db: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not _locked(db):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the ingest never took the store's write lock"
        time.sleep(0.05)


def _spawn_ingest(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CLI, "activity", "ingest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("fed", ["half", "all"])
def test_a_crash_inside_a_files_transaction_loses_nothing(tmp_path: Path, fed: str) -> None:
    """A real kill while the ingest holds the store's write lock inside the second file.

    The second file comes through a named pipe: the test decides how much of it the ingest
    has read (half of it, or all of it without the end), proves with SQLite's own lock that
    the ingest is inside that file's transaction, and kills it there.
    """
    generate = _bench_generate()
    first = tmp_path / "first.log"
    second = tmp_path / "second.log"
    made_first = generate(first, 30_000, seed=1)
    made_second = generate(second, 30_000, seed=2, start=dt.datetime(2026, 11, 12))
    data = second.read_bytes()
    assert len(data) > files.CHUNK_BYTES * 2  # several reads: the kill is mid-file
    pipe = tmp_path / "second.pipe"
    os.mkfifo(pipe)
    db = tmp_path / "crashed.sqlite"
    process = _spawn_ingest(str(first), str(pipe), "--db", str(db), "--year", "2026")
    writer = -1
    try:
        writer = os.open(pipe, os.O_WRONLY)  # returns once the ingest opened the pipe
        end = len(data) // 2 if fed == "half" else len(data)
        view = memoryview(data)[:end]
        while view:  # the pipe holds 64 KiB: returning means the ingest read the rest
            view = view[os.write(writer, view) :]
        _wait_until_locked(db, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        if writer >= 0:
            os.close(writer)
    assert process.returncode == -signal.SIGKILL
    connection = store.connect(db)
    try:
        assert store.check_consistency(connection) == []
        stored = [row[0] for row in connection.execute("SELECT path FROM files")]
    finally:
        connection.close()
    # The first file committed; nothing of the second one is there.
    assert totals(db) == (made_first.accepted, made_first.rejected)
    assert stored == [str(first)]
    rerun = _ingest(str(first), str(second), "--db", str(db), "--year", "2026")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{first}: already read" in rerun.stdout
    clean = tmp_path / "clean.sqlite"
    done = _ingest(str(first), str(second), "--db", str(clean), "--year", "2026")
    assert done.returncode == 0, done.stdout + done.stderr
    assert dump(db) == dump(clean)
    assert totals(db) == (
        made_first.accepted + made_second.accepted,
        made_first.rejected + made_second.rejected,
    )


def test_two_ingests_of_one_file_count_it_once(tmp_path: Path) -> None:
    """Two processes, one file: the second waits on SQLite's lock, then finds it read."""
    generate = _bench_generate()
    log = tmp_path / "mail.log"
    made = generate(log, 30_000, seed=3)
    data = log.read_bytes()
    pipe = tmp_path / "mail.pipe"
    os.mkfifo(pipe)
    db = tmp_path / "store.sqlite"
    first = _spawn_ingest(str(pipe), "--db", str(db), "--year", "2026")
    second: subprocess.Popen[str] | None = None
    writer = os.open(pipe, os.O_WRONLY)
    try:
        half = memoryview(data)[: len(data) // 2]
        while half:
            half = half[os.write(writer, half) :]
        _wait_until_locked(db, first)
        second = _spawn_ingest(str(log), "--db", str(db), "--year", "2026")
        time.sleep(1.0)
        assert second.poll() is None, second.communicate()  # waiting for the lock
        rest = memoryview(data)[len(data) // 2 :]
        while rest:
            rest = rest[os.write(writer, rest) :]
    finally:
        os.close(writer)
    first_out, first_err = first.communicate(timeout=300)
    assert second is not None
    second_out, second_err = second.communicate(timeout=300)
    assert first.returncode == 0, first_out + first_err
    assert second.returncode == 0, second_out + second_err
    assert "<stdin>" not in first_out and f"{pipe}: read: " in first_out, first_out
    assert f"{log}: already read (up to byte {len(data)}), nothing new" in second_out, second_out
    assert totals(db) == (made.accepted, made.rejected)


# --- a real Postfix ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _send(port: int, address: str, login: str | None = None) -> tuple[int, bytes] | None:
    """One message through XCLIENT (as if from ``address``); the refusal, if any."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        attributes = f"ADDR={address} NAME=[UNAVAILABLE]" + (f" LOGIN={login}" if login else "")
        code, _ = client.docmd(f"XCLIENT {attributes}")
        assert code == 220
        client.ehlo()
        try:
            client.sendmail("scans@lib.example.edu", ["x@example.net"], "Subject: t\r\n\r\nhi\r\n")
        except smtplib.SMTPRecipientsRefused as refused:
            return refused.recipients["x@example.net"]
    return None


@pytest.mark.integration
def test_a_real_postfix_log_is_counted_exactly(
    tmp_path: Path,
    run_cli,  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest,
) -> None:
    require(os.geteuid() == 0, "a private Postfix instance needs root")
    require(postfix_instance.available(), "Postfix is not installed")
    # Postfix daemons run as the postfix user: pytest's tmp folders (0700) are closed to them.
    base = Path(tempfile.mkdtemp(prefix="relaygate-activity-"))
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    root = base / "pf"
    config = postfix_instance.make_instance(root)
    port = _free_port()
    with (config / "master.cf").open("a") as master:
        master.write(f"127.0.0.1:{port} inet n - n - - smtpd\n")
    log = root / "mail.log"
    for setting in (
        f"maillog_file = {log}",
        f"maillog_file_prefixes = {root}",
        "smtpd_authorized_xclient_hosts = 127.0.0.1",
        "mynetworks = 127.0.0.0/8 10.20.30.0/24 [2001:db8:1040:320::]/64",
        "smtpd_sasl_auth_enable = yes",
        "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
        "reject_unauth_destination",
        "default_transport = discard",
        "myhostname = relay-test.example.edu",
    ):
        postfix_instance_postconf(config, setting)
    subprocess.run(["postfix", "-c", str(config), "start"], check=False, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "Postfix did not start"
                time.sleep(0.2)
        assert _send(port, "10.20.30.41") is None
        assert _send(port, "10.20.30.41") is None
        assert _send(port, "IPV6:2001:db8:1040:320::1f") is None
        assert _send(port, "192.0.2.7") == (554, b"5.7.1 <x@example.net>: Relay access denied")
        assert _send(port, "192.0.2.8", login="svc-lib-illiad@example.edu") is None
        deadline = time.monotonic() + 60
        while not log.exists() or log.read_text().count("(queue active)") < 4:
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.2)
    finally:
        subprocess.run(["postfix", "-c", str(config), "stop"], check=False, capture_output=True)
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(log), "--db", str(db))
    assert result.code == 0, result
    day = dt.date.fromtimestamp(log.stat().st_mtime).isoformat()
    assert days(db) == {
        ("address", "10.20.30.41", day): (2, 0),
        ("address", "2001:db8:1040:320::1f", day): (1, 0),
        ("address", "192.0.2.7", day): (0, 1),
        ("address", "192.0.2.8", day): (1, 0),
        ("login", "svc-lib-illiad@example.edu", day): (1, 0),
    }, log.read_text()
    assert clients(db)[("login", "svc-lib-illiad@example.edu")][5] == "scans@lib.example.edu"


def postfix_instance_postconf(config: Path, setting: str) -> None:
    subprocess.run(
        ["postconf", "-c", str(config), "-e", setting], check=True, capture_output=True, text=True
    )


# --- the benchmark ----------------------------------------------------------------------


def test_the_ingest_benchmark_runs_against_pflogsumm() -> None:
    require(shutil.which("pflogsumm") is not None, "pflogsumm is not installed")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ingest.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^log: 200\d\d lines, \d+ accepted, \d+ rejected$", done.stdout, re.M), (
        done.stdout
    )
    assert re.search(r"^relaygate activity ingest +[\d.]+ +\d+$", done.stdout, re.M), done.stdout
    assert re.search(r"^pflogsumm +[\d.]+ +\d+$", done.stdout, re.M), done.stdout
    assert re.search(r"^target: at least as fast as pflogsumm: (PASS|FAIL)$", done.stdout, re.M), (
        done.stdout
    )


@pytest.mark.parametrize("terminal", [True, False])
def test_a_progress_bar_only_on_a_terminal(tmp_path: Path, terminal: bool) -> None:
    logs = campus_logs(tmp_path / "logs")
    command = [
        sys.executable,
        "-c",
        _CLI,
        "activity",
        "ingest",
        str(logs["mail.log.1"]),
        str(logs["relay2.log"]),
        "--db",
        str(tmp_path / "store.sqlite"),
        "--as-of",
        CAMPUS_AS_OF,
    ]
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert done.stdout.splitlines()[-1].startswith("ingest: 2 files, 58 lines read"), (
            done.stdout
        )
        return
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, text=True)
        os.close(follower)
        stdout, _ = process.communicate(timeout=300)
        seen = b""
        while select.select([leader], [], [], 0.5)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert process.returncode == 0, seen
    text = seen.decode()
    assert "mail.log.1" in text and "relay2.log" in text and "100%" in text, text
    assert stdout.splitlines()[-1].startswith("ingest: 2 files, 58 lines read"), stdout


def test_journal_days_follow_the_zone_given(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    log = Log("smtp-relay-4", "journal")
    log.accept(at("2026-11-29 23:30:00"), "10.20.30.41", "J1")  # UTC
    path = write(tmp_path / "journal.json", log.text(), "2026-11-30 00:00:00")
    utc = run_cli(
        "activity", "ingest", str(path), "--db", str(tmp_path / "utc.sqlite"), "--tz", "UTC"
    )
    assert utc.code == 0, utc
    assert days(tmp_path / "utc.sqlite") == {("address", "10.20.30.41", "2026-11-29"): (1, 0)}
    berlin = tmp_path / "berlin.sqlite"
    result = run_cli("activity", "ingest", str(path), "--db", str(berlin), "--tz", "Europe/Berlin")
    assert result.code == 0, result
    assert days(berlin) == {("address", "10.20.30.41", "2026-11-30"): (1, 0)}
    assert clients(berlin)[("address", "10.20.30.41")][2] == "2026-11-30T00:30:00"
    bad = run_cli("activity", "ingest", str(path), "--db", str(berlin), "--tz", "Mars/Olympus")
    assert bad.code == 2, bad
    assert "--tz 'Mars/Olympus' is not a time zone" in bad.stderr, bad
