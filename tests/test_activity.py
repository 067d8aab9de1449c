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
from relaygate.lifecycle.logs.postfix import rejected_address
from tests import postfix_instance
from tests.conftest import ROOT, require

_CLI = "import sys; from relaygate.cli import main; sys.exit(main(sys.argv[1:]))"


# --- building logs --------------------------------------------------------------------


@dataclass
class Log:
    """Postfix log lines of one relay in one format, each as its writer really writes it.

    classic (rsyslog's default file format), classic-unpadded (``Mar 7``), rfc3339 (rsyslog
    high precision), rfc5424 (structured data), rsyslog5424 (rsyslog's
    RSYSLOG_SyslogProtocol23Format: APP-NAME plain ``postfix``, two spaces before MSG),
    rsyslog5424-slash (the same with permitSlashInProgramName), and the journalctl exports
    journal (-o json), json-seq, short-iso, short-full and short-unix. Journal instants are
    written from ``at`` taken as UTC; the local formats write ``at`` as it is.
    """

    relay: str
    style: str = "classic"
    lines: list[str] = field(default_factory=list)
    pid: int = 4100

    def line(self, at: dt.datetime, program: str, text: str) -> None:
        pid = self.pid + len(program)
        style = self.style
        if style == "classic":
            self.lines.append(
                f"{at:%b} {at.day:2d} {at:%H:%M:%S} {self.relay} postfix/{program}[{pid}]: {text}"
            )
        elif style == "classic-unpadded":
            self.lines.append(
                f"{at:%b} {at.day} {at:%H:%M:%S} {self.relay} postfix/{program}[{pid}]: {text}"
            )
        elif style == "rfc3339":
            self.lines.append(
                f"{at:%Y-%m-%dT%H:%M:%S}.250113+01:00 {self.relay} postfix/{program}[{pid}]: {text}"
            )
        elif style == "rfc5424":
            self.lines.append(
                f"<22>1 {at:%Y-%m-%dT%H:%M:%S}.250113+01:00 {self.relay} postfix/{program} {pid}"
                f' - [origin software="rsyslogd" x="a]b"] {text}'
            )
        elif style in ("rsyslog5424", "rsyslog5424-slash"):
            app = "postfix" if style == "rsyslog5424" else f"postfix/{program}"
            self.lines.append(
                f"<22>1 {at:%Y-%m-%dT%H:%M:%S}.754656+00:00 {self.relay} {app} {pid} - -  {text}"
            )
        elif style == "short-iso":
            self.lines.append(
                f"{at:%Y-%m-%dT%H:%M:%S}+0000 {self.relay} postfix/{program}[{pid}]: {text}"
            )
        elif style == "short-full":
            self.lines.append(
                f"{at:%a %Y-%m-%d %H:%M:%S} UTC {self.relay} postfix/{program}[{pid}]: {text}"
            )
        elif style == "short-unix":
            stamp = at.replace(tzinfo=dt.UTC).timestamp()
            self.lines.append(f"{stamp:.6f} {self.relay} postfix/{program}[{pid}]: {text}")
        else:  # journal, json-seq
            stamp = int(at.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
            entry = json.dumps(
                {
                    "__REALTIME_TIMESTAMP": str(stamp),
                    "_HOSTNAME": self.relay,
                    "SYSLOG_IDENTIFIER": f"postfix/{program}",
                    "SYSLOG_PID": str(pid),
                    "PRIORITY": "6",
                    "MESSAGE": text,
                }
            )
            self.lines.append(("\x1e" if style == "json-seq" else "") + entry)

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


def test_a_version_1_store_with_data_is_refused_not_misread(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "store.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (1)")
        connection.execute("CREATE TABLE files (fingerprint TEXT, fp_len INTEGER, path TEXT)")
        connection.execute("INSERT INTO files VALUES ('x', 1, 'mail.log')")
    path = write(tmp_path / "mail.log", "x\n", "2026-11-20 00:00:00")
    result = run_cli("activity", "ingest", str(path), "--db", str(db))
    assert result.code == 2, result
    assert "schema version 1, whose counts carry no relay and no file" in result.stderr, result
    with sqlite3.connect(db) as connection:  # left as it was
        assert connection.execute("SELECT version FROM schema_version").fetchone() == (1,)
    # An empty version 1 store is simply replaced.
    empty = tmp_path / "empty.sqlite"
    with sqlite3.connect(empty) as connection:
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (1)")
        connection.execute("CREATE TABLE files (fingerprint TEXT, fp_len INTEGER, path TEXT)")
        connection.execute("CREATE TABLE days (kind TEXT)")
    store.connect(empty).close()
    with sqlite3.connect(empty) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchone() == (2,)
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert "days" not in tables and "counts" in tables


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
    port = postfix_instance.free_port()
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
        ("sasl-address", "192.0.2.8", day): (1, 0),
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
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"^log: 200\d\d lines, \d+ accepted, \d+ rejected$", out, re.M), out
    row = r" +[\d.]+ +[\d.]+ +\d+ +\d+$"
    assert re.search(rf"^relaygate activity ingest{row}", out, re.M), out
    assert re.search(rf"^pflogsumm{row}", out, re.M), out
    assert re.search(r"^target: at least 3x less CPU than pflogsumm: (PASS|FAIL)$", out, re.M), out
    flat = re.findall(r"^no newline, +(\d+) MiB: cpu [\d.]+ s, max \d+ MiB, exit 1$", out, re.M)
    assert flat == ["8", "32"], out
    assert re.search(r"^target: memory bounded on a file without newlines: (PASS|FAIL) ", out, re.M)


def test_the_lifecycle_code_has_no_test_hooks_and_small_format_modules() -> None:
    """Production code reads no environment variable; each log format is one small module."""
    package = ROOT / "compiler" / "relaygate" / "lifecycle"
    assert not (package / "activity.py").exists()
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        assert "os.environ" not in text and "getenv" not in text, path
        assert "RELAYGATE_TEST" not in text and "time.sleep" not in text, path
    for name in ("classic", "rfc3339", "rfc5424", "journal", "formats"):
        lines = len((package / "logs" / f"{name}.py").read_text().splitlines())
        assert lines <= 150, (name, lines)


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


# --- the formats relays really write (issue items 1 and 2) --------------------------------


def _conversation(log: Log) -> None:
    """Two accepted messages (one authenticated), an smtpd and a cleanup refusal."""
    log.accept(at("2026-11-20 08:00:00"), "10.20.30.41", "5A1")
    log.accept(at("2026-11-20 09:00:00"), "10.20.30.57", "5A2", login="svc-lib-illiad@example.edu")
    log.reject(at("2026-11-20 10:00:00"), "192.0.2.7")
    log.start(at("2026-11-21 08:10:00"), "10.20.30.88", "5A3")
    log.line(
        at("2026-11-21 08:10:00"),
        "cleanup",
        "5A3: reject: header Subject: from printer from unknown[10.20.30.88]; "
        "from=<a@lib.example.edu> to=<x@example.org> proto=ESMTP helo=<gate>: 5.7.1 spam",
    )
    log.finish(at("2026-11-21 08:10:01"), "5A3")  # never comes after a cleanup reject: ignored


FORMAT_DAYS = {
    ("address", "10.20.30.41", "2026-11-20"): (1, 0),
    ("sasl-address", "10.20.30.57", "2026-11-20"): (1, 0),
    ("login", "svc-lib-illiad@example.edu", "2026-11-20"): (1, 0),
    ("address", "192.0.2.7", "2026-11-20"): (0, 1),
    ("address", "10.20.30.88", "2026-11-21"): (0, 1),
}


@pytest.mark.parametrize(
    "style",
    [
        "classic",
        "classic-unpadded",
        "rfc3339",
        "rfc5424",
        "rsyslog5424",
        "rsyslog5424-slash",
        "journal",
        "json-seq",
        "short-iso",
        "short-full",
        "short-unix",
    ],
)
def test_every_format_gives_the_same_counts(tmp_path: Path, run_cli, style: str) -> None:  # type: ignore[no-untyped-def]
    log = Log("smtp-relay-1", style)
    _conversation(log)
    if style == "rsyslog5424":  # exactly what rsyslog writes: no daemon name, two spaces
        assert log.lines[1].startswith("<22>1 2026-11-20T08:00:00.754656+00:00 smtp-relay-1 ")
        assert " postfix 4105 - -  5A1: client=host.example.edu[10.20.30.41]" in log.lines[1]
    path = write(tmp_path / f"{style}.log", log.text(), "2026-11-21 08:10:01")
    db = tmp_path / "store.sqlite"
    result = run_cli(
        "activity", "ingest", str(path), "--db", str(db), "--tz", "UTC", "--year", "2026"
    )
    assert result.code == 0, result
    assert days(db) == FORMAT_DAYS, result
    # 7 lines used: three client= lines, two qmgr lines, two refusals.
    assert f"{path}: read: {len(log.lines)} lines, 7 used, 2 accepted, 2 rejected" in result.stdout
    assert "unrecognised line format" not in result.stdout, result
    # The cleanup reject dropped the message: its late qmgr line counts as a retry.
    assert "1 qmgr lines without a client= line" in result.stdout, result


def test_the_old_rsyslog_5424_reading_counted_nothing(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """rsyslog's real RFC 5424 lines, and the shape that was read before, side by side."""
    log = Log("smtp-relay-1", "rsyslog5424")
    _conversation(log)
    # Without the two spaces' second space (what the old reading assumed) the message
    # starts at the queue id as well: both read the same.
    squeezed = log.text().replace(" - -  ", " - - ")
    db = tmp_path / "store.sqlite"
    for name, text in (("real.log", log.text()), ("squeezed.log", squeezed)):
        path = write(tmp_path / name, text, "2026-11-21 08:10:01")
        other = tmp_path / f"{name}.sqlite"
        result = run_cli("activity", "ingest", str(path), "--db", str(other), "--tz", "UTC")
        assert result.code == 0, result
        assert days(other) == FORMAT_DAYS, (name, result)
    assert not db.exists()


def test_a_binary_journal_is_refused_with_the_command_that_exports_it(
    tmp_path: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    journal = tmp_path / "system.journal"
    journal.write_bytes(b"LPKSHHRH" + bytes(4096))
    good = Log("smtp-relay-1")
    good.accept(at("2026-11-20 08:00:00"), "10.20.30.41", "5B1")
    text_log = write(tmp_path / "mail.log", good.text(), "2026-11-20 08:00:00")
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(journal), str(text_log), "--db", str(db))
    assert result.code == 1, result
    assert (
        f"{journal}: failed, nothing kept: a binary systemd journal file: relaygate reads "
        f"journal exports; run `journalctl --file {journal} -o json > system.journal.json`"
    ) in result.stdout, result
    with sqlite3.connect(db) as connection:
        assert [r[0] for r in connection.execute("SELECT path FROM files")] == [str(text_log)]
    assert totals(db) == (1, 0)  # the other file was still read


# --- nothing usable (item 3) --------------------------------------------------------------


def test_a_file_without_a_usable_line_warns_and_is_not_recorded(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "auth.log"
    junk.write_text(
        "Nov 20 08:00:00 host sshd[1]: Accepted publickey for root\n"
        "2026-11-20 08:00:00,123 INFO some application line\n"
        "<13>Nov 20 08:00:00 host postfix/smtpd[1]: a postfix line in no format read here\n"
    )
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(junk), "--db", str(db))
    assert result.code == 1, result
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"{junk}: warning: no usable line: none of its 3 lines is a Postfix "), (
        line
    )
    for name in (
        "classic syslog",
        "RFC 3339",
        "RFC 5424",
        "journalctl -o json / json-seq",
        "journalctl -o short-full",
        "journalctl -o short-unix",
    ):
        assert name in line, line
    assert line.endswith("; not recorded as read"), line
    assert result.stdout.splitlines()[-1].endswith("; 1 files without a usable line"), result
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM files").fetchone()[0] == 0
    # Positive control: once it holds one Postfix message it is read and recorded.
    with junk.open("a") as out:
        out.write(
            "Nov 20 09:00:00 host postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown"
            "[192.0.2.7]: 554 5.7.1 <x@gmail.com>: Relay access denied; from=<a@b> "
            "to=<x@gmail.com>\n"
        )
    touch(junk, "2026-11-20 09:00:00")
    again = run_cli("activity", "ingest", str(junk), "--db", str(db))
    assert again.code == 0, again
    assert f"{junk}: read: 4 lines, 1 used, 0 accepted, 1 rejected" in again.stdout, again


# --- years (item 4) -------------------------------------------------------------------------


def _january(tmp_path: Path, name: str = "mail.log") -> tuple[Path, str]:
    log = Log("mx")
    log.accept(at("2021-01-27 10:00:00"), "10.20.30.41", "6A1")
    log.accept(at("2021-01-28 06:30:00"), "10.20.30.41", "6A2")
    return tmp_path / name, log.text()


def test_a_copy_without_its_time_is_refused_not_misdated(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    path, text = _january(tmp_path)
    path.write_text(text)  # copied today: its time says 2026, its lines are of 2021
    touch(path, "2026-11-29 12:00:00")
    db = tmp_path / "store.sqlite"
    refused = run_cli("activity", "ingest", str(path), "--db", str(db), "--as-of", "2026-11-29")
    assert refused.code == 1, refused
    assert (
        f"{path}: failed, nothing kept: the year cannot be inferred: the last line is of "
        "Jan 28, but the file was modified on 2026-11-29, 305 days later"
    ) in refused.stdout, refused
    assert totals(db) == (0, 0)
    # Its real time restored, the same file is dated right...
    touch(path, "2021-01-28 06:32:00")
    right = run_cli("activity", "ingest", str(path), "--db", str(db), "--as-of", "2026-11-29")
    assert right.code == 0, right
    assert set(day for _, _, day in days(db)) == {"2021-01-27", "2021-01-28"}


def test_rotations_joined_newest_first_are_refused(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    newer = Log("mx")
    newer.accept(at("2026-03-02 10:00:00"), "10.20.30.41", "6B1")
    older = Log("mx")
    older.accept(at("2026-01-05 10:00:00"), "10.20.30.41", "6B2")
    path = write(tmp_path / "joined.log", newer.text() + older.text(), "2026-03-02 10:00:00")
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(path), "--db", str(db), "--as-of", "2026-11-29")
    assert result.code == 1, result
    assert "the last line is of Jan  5, but the file was modified on 2026-03-02" in result.stdout
    # In order, the same lines are read.
    fine = write(tmp_path / "ordered.log", older.text() + newer.text(), "2026-03-02 10:00:00")
    ok = run_cli("activity", "ingest", str(fine), "--db", str(db), "--as-of", "2026-11-29")
    assert ok.code == 0, ok
    assert set(day for _, _, day in days(db)) == {"2026-01-05", "2026-03-02"}


@pytest.mark.parametrize(("as_of", "refused"), [("2026-11-29", True), ("2030-12-31", False)])
def test_days_in_the_future_are_refused(tmp_path: Path, run_cli, as_of: str, refused: bool) -> None:  # type: ignore[no-untyped-def]
    path, text = _january(tmp_path)
    path.write_text(text)
    db = tmp_path / "store.sqlite"
    result = run_cli(
        "activity", "ingest", str(path), "--db", str(db), "--year", "2030", "--as-of", as_of
    )
    if refused:
        assert result.code == 1, result
        assert (
            "2 days of it are after 2026-11-29 (the first 2030-01-27): the year assumed for "
            "classic syslog lines is wrong (give --year); nothing kept"
        ) in result.stdout, result
        assert totals(db) == (0, 0)
    else:
        assert result.code == 0, result
        assert totals(db) == (2, 0)


def test_forget_then_ingest_again_with_the_right_year(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    path, text = _january(tmp_path)
    path.write_text(text)
    other = Log("mx")
    other.accept(at("2021-02-01 10:00:00"), "10.20.30.57", "6C1")
    kept = write(tmp_path / "other.log", other.text(), "2021-02-01 10:00:00")
    db = tmp_path / "store.sqlite"
    assert run_cli("activity", "ingest", str(kept), "--db", str(db), "--year", "2021").code == 0
    wrong = run_cli("activity", "ingest", str(path), "--db", str(db), "--year", "2019")
    assert wrong.code == 0, wrong
    assert ("address", "10.20.30.41", "2019-01-28") in days(db)
    again = run_cli("activity", "ingest", str(path), "--db", str(db), "--year", "2021")
    assert f"{path}: already read" in again.stdout  # read files are not read twice...
    forgot = run_cli("activity", "forget", str(path), "--db", str(db))
    assert forgot.code == 0, forgot
    assert forgot.stdout == (
        f"{path}: forgotten: 2 accepted and 0 rejected messages (2019-01-27 .. 2019-01-28) no "
        "longer counted; ingest it again to count it anew\n"
    )
    assert days(db) == {("address", "10.20.30.57", "2021-02-01"): (1, 0)}  # the other file stays
    right = run_cli("activity", "ingest", str(path), "--db", str(db), "--year", "2021")
    assert right.code == 0, right
    assert days(db) == {
        ("address", "10.20.30.41", "2021-01-27"): (1, 0),
        ("address", "10.20.30.41", "2021-01-28"): (1, 0),
        ("address", "10.20.30.57", "2021-02-01"): (1, 0),
    }
    with sqlite3.connect(db) as connection:
        assert store.check_consistency(connection) == []
    # A file that is gone is forgotten by the path the store recorded; an unknown one is said.
    kept.unlink()
    gone = run_cli("activity", "forget", str(kept), str(tmp_path / "never.log"), "--db", str(db))
    assert gone.code == 1, gone
    assert f"{kept}: forgotten: 1 accepted" in gone.stdout, gone
    assert f"{tmp_path / 'never.log'}: not in the activity store; nothing forgotten" in gone.stdout
    listed = run_cli("activity", "files", "--db", str(db))
    assert listed.stdout.splitlines() == [
        f"{path}: 2021-01-27 .. 2021-01-28, 14 lines, 2 accepted, 0 rejected",
        "relay mx: 2021-01-27 .. 2021-01-28",
        "1 files",
    ], listed


# --- the same message twice (item 5) ----------------------------------------------------


def test_one_relay_as_syslog_and_as_journal_counts_once(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    syslog = Log("smtp-relay-1")
    journal = Log("smtp-relay-1.example.edu", "journal")
    seq = Log("SMTP-RELAY-1", "json-seq")
    for log in (syslog, journal, seq):
        log.accept(at("2026-11-20 08:00:00"), "10.20.30.41", "7A1")
        log.reject(at("2026-11-20 08:05:00"), "192.0.2.7")
        log.reject(at("2026-11-20 08:05:00"), "192.0.2.7")  # the same refusal twice, same second
    # Two overlapping exports: days 20-21 and days 21-22.
    journal.accept(at("2026-11-21 08:00:00"), "10.20.30.41", "7A2")
    seq.accept(at("2026-11-21 08:00:00"), "10.20.30.41", "7A2")
    seq.accept(at("2026-11-22 08:00:00"), "10.20.30.41", "7A3")
    # The same queue id again later on: another message (Postfix reuses queue ids).
    seq.accept(at("2026-11-22 18:00:00"), "10.20.30.41", "7A1")
    paths = [
        write(tmp_path / "mail.log", syslog.text(), "2026-11-20 08:05:00"),
        write(tmp_path / "a.json", journal.text(), "2026-11-21 08:00:00"),
        write(tmp_path / "b.json", seq.text(), "2026-11-22 18:00:00"),
    ]
    db = tmp_path / "store.sqlite"
    result = run_cli(
        "activity", "ingest", *map(str, paths), "--db", str(db), "--tz", "UTC", "--year", "2026"
    )
    assert result.code == 0, result
    assert days(db) == {
        ("address", "10.20.30.41", "2026-11-20"): (1, 0),
        ("address", "10.20.30.41", "2026-11-21"): (1, 0),
        ("address", "10.20.30.41", "2026-11-22"): (2, 0),
        ("address", "192.0.2.7", "2026-11-20"): (0, 2),
    }
    out = result.stdout
    assert (
        f"{paths[1]}: read: " in out
        and "1 accepted, 0 rejected, 2026-11-20 .. 2026-11-21, 3 already counted" in out
    ), out
    assert out.splitlines()[-1].endswith("; 4 messages accepted, 2 rejected; 7 already counted"), (
        out
    )


# --- input edges (item 6) -------------------------------------------------------------------


def test_crlf_lines_keep_no_carriage_return(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    log = Log("smtp-relay-1")
    log.accept(at("2026-11-20 08:00:00"), "10.20.30.57", "8A1", login="svc-lib-illiad@example.edu")
    path = tmp_path / "mail.log"
    path.write_bytes(log.text().replace("\n", "\r\n").encode())
    touch(path, "2026-11-20 08:00:00")
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(path), "--db", str(db))
    assert result.code == 0, result
    assert ("login", "svc-lib-illiad@example.edu", "2026-11-20") in days(db), days(db)
    assert not any("\r" in key for _, key, _ in days(db))


@pytest.mark.parametrize("how", ["-", "/dev/stdin", "fifo"])
def test_standard_input_and_pipes_are_read(tmp_path: Path, how: str) -> None:
    """``-`` and /dev/stdin read a pipe (what ``zcat x | relaygate ...`` gives); so does a FIFO."""
    log = Log("smtp-relay-1")
    log.accept(at("2026-11-20 08:00:00"), "10.20.30.41", "8B1")
    log.reject(at("2026-11-20 08:01:00"), "192.0.2.7")
    data = gzip.compress(log.text().encode())  # a pipe of gzip data is recognised too
    db = tmp_path / "store.sqlite"
    args = ["--db", str(db), "--year", "2026"]
    if how == "fifo":
        fifo = tmp_path / "mail.pipe"
        os.mkfifo(fifo)
        process = subprocess.Popen(
            [sys.executable, "-c", _CLI, "activity", "ingest", str(fifo), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with fifo.open("wb") as writer:  # opens once the ingest opened it
            writer.write(data)
        stdout, stderr = process.communicate(timeout=300)
        code = process.returncode
    else:
        done = subprocess.run(
            [sys.executable, "-c", _CLI, "activity", "ingest", how, *args],
            input=data,
            capture_output=True,
            timeout=300,
            check=False,
        )
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    out = stdout.decode()
    assert code == 0, (out, stderr)
    assert "1 accepted, 1 rejected" in out, out
    assert totals(db) == (1, 1)
    if how == "-":
        assert out.startswith("<stdin>: read: "), out


def test_unpadded_days_are_read(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    log = Log("smtp-relay-1", "classic-unpadded")
    log.accept(at("2026-03-07 02:09:33"), "10.20.30.41", "8C1")
    assert log.lines[0].startswith("Mar 7 02:09:33 smtp-relay-1 ")
    path = write(tmp_path / "mail.log", log.text(), "2026-03-07 02:09:33")
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(path), "--db", str(db))
    assert result.code == 0, result
    assert days(db) == {("address", "10.20.30.41", "2026-03-07"): (1, 0)}


def test_a_file_without_newlines_is_skipped_in_bounded_pieces(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    log = Log("smtp-relay-1")
    log.accept(at("2026-11-20 08:00:00"), "10.20.30.41", "8D1")
    flat = (log.text().replace("\n", " ") * 20_000).encode()  # ~5 MiB, one line
    assert len(flat) > 3 * files.MAX_LINE_BYTES and b"\n" not in flat
    path = tmp_path / "flat.log"
    path.write_bytes(flat)
    db = tmp_path / "store.sqlite"
    result = run_cli("activity", "ingest", str(path), "--db", str(db), "--year", "2026")
    assert result.code == 1, result
    assert "no usable line" in result.stdout, result
    assert "; 1 lines longer than 1 MiB (skipped), the first at byte 0\n" in result.stdout, result
    # A line after the long one is read: the reader skips the long line and goes on.
    path.write_bytes(flat + b"\n" + log.text().encode())
    touch(path, "2026-11-20 08:00:00")
    again = run_cli("activity", "ingest", str(path), "--db", str(db), "--year", "2026")
    assert again.code == 0, again
    assert "; 1 lines longer than 1 MiB (skipped), the first at byte 0\n" in again.stdout, again
    assert totals(db) == (1, 0)
    # In the middle of a file, it is located by its byte.
    head = log.text().encode()
    path.write_bytes(head + flat + b"\n" + log.text().replace("8D1", "8D2").encode())
    touch(path, "2026-11-20 08:00:00")
    third = run_cli(
        "activity", "ingest", str(path), "--db", str(tmp_path / "third.sqlite"), "--year", "2026"
    )
    assert third.code == 0, third
    assert f"(skipped), the first at byte {len(head)}\n" in third.stdout, third
    assert totals(tmp_path / "third.sqlite") == (2, 0)


# --- real relay logs (../shared/logs, with their true counts in its README) -------------------

SHARED_LOGS = ROOT.parent / "shared" / "logs"


@dataclass(frozen=True)
class Expected:
    """One row of the corpus README: the flags a correct reading needs and its true counts."""

    name: str
    flags: tuple[str, ...]
    accepted: int
    rejected: int
    days: frozenset[str] | None  # None: the README gives none (or says they mean nothing)
    logins: dict[str, int]


def _readme() -> dict[str, Expected]:
    """The README's table; "same" / "as above" take the row above's counts or days."""
    rows: dict[str, Expected] = {}
    previous: Expected | None = None
    for line in (SHARED_LOGS / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith("`"):
            continue
        name, flags_cell, expected = cells[0].strip("`"), cells[3], cells[4]
        flags: list[str] = []
        for flag in re.findall(r"`(--(?:year|tz) [^`]+)`", flags_cell):
            flags += flag.split(" ", 1)
        counts = re.search(r"(\d+)/(\d+)", expected)
        if counts is None:  # "same", "same days as above": the row above's numbers
            assert previous is not None and expected.startswith("same"), line
            rows[name] = Expected(
                name,
                tuple(flags),
                previous.accepted,
                previous.rejected,
                previous.days,
                previous.logins if expected == "same" else {},
            )
            continue
        days: frozenset[str] | None = None
        ranged = re.search(r"(\d{4}-\d\d-)(\d\d)\.\.(\d\d)", expected)
        if ranged:
            days = frozenset(
                f"{ranged[1]}{day:02d}" for day in range(int(ranged[2]), int(ranged[3]) + 1)
            )
        elif "not meaningful" in expected:
            days = None
        elif "as above" in expected and previous is not None:
            days = previous.days
        else:
            found = re.findall(r"\d{4}-\d\d-\d\d", expected.split("; ingested after")[0])
            days = frozenset(found) or None
        logins = {
            login: int(count)
            for login, count in re.findall(r"login `([^`…]+)` (\d+)(?![\d-])", expected)
        }
        if "as above" in expected and previous is not None and not logins:
            logins = previous.logins
        previous = rows[name] = Expected(
            name, tuple(flags), int(counts[1]), int(counts[2]), days, logins
        )
    return rows


def _corpus() -> list[str]:
    if not SHARED_LOGS.is_dir():
        return ["(no ../shared/logs)"]
    return sorted(p.name for p in SHARED_LOGS.iterdir() if p.name != "README.md")


def _require_corpus() -> dict[str, Expected]:
    require(SHARED_LOGS.is_dir(), f"the real relay logs are not at {SHARED_LOGS}")
    return _readme()


@pytest.mark.parametrize("name", _corpus())
def test_every_real_log_gives_the_counts_its_readme_gives(
    tmp_path: Path,
    run_cli,  # type: ignore[no-untyped-def]
    name: str,
) -> None:
    expected = _require_corpus().get(name)
    assert expected is not None, f"{name} is in {SHARED_LOGS} but not in its README"
    db = tmp_path / "store.sqlite"
    # --as-of: the rsyslog copies are dated on the day they were made (2026-11-29).
    result = run_cli(
        "activity",
        "ingest",
        str(SHARED_LOGS / name),
        "--db",
        str(db),
        "--as-of",
        "2026-11-29",
        *expected.flags,
    )
    assert result.code == 0, result
    assert totals(db) == (expected.accepted, expected.rejected), result
    found = days(db)
    if expected.days is not None:
        assert {day for (kind, _, day) in found if kind != "login"} == expected.days, result
    for login, count in expected.logins.items():
        assert sum(
            a for (kind, key, _), (a, _) in found.items() if (kind, key) == ("login", login)
        ) == (count), result


def test_the_readme_lists_only_files_that_are_there() -> None:
    rows = _require_corpus()
    assert len(rows) >= 19
    assert sorted(rows) == _corpus()


def test_the_lightmeter_rotation_pair_and_every_helga_export_together(
    tmp_path: Path, run_cli
) -> None:  # type: ignore[no-untyped-def]
    _require_corpus()
    db = tmp_path / "pair.sqlite"
    pair = [SHARED_LOGS / "lightmeter-mail.log.gz", SHARED_LOGS / "lightmeter-mail.log.1.gz"]
    result = run_cli("activity", "ingest", *map(str, pair), "--db", str(db), "--year", "2021")
    assert result.code == 0, result
    # .1 is read first (rotation order): 310/8 together, 33 client addresses.
    assert result.stdout.splitlines()[0].startswith(f"{pair[1]}: read: "), result
    assert totals(db) == (310, 8), result
    with sqlite3.connect(db) as connection:
        (addresses,) = connection.execute(
            "SELECT count(DISTINCT key) FROM counts WHERE kind IN ('address', 'sasl-address')"
        ).fetchone()
    assert addresses == 33
    # The same 20,000 lines as RFC 3339 and four journal exports: each message counted once.
    helga = tmp_path / "helga.sqlite"
    exports = [
        *sorted(SHARED_LOGS.glob("helga-journal-*")),
        SHARED_LOGS / "helga-rfc3339-20k.log.gz",
    ]
    assert len(exports) == 5
    together = run_cli(
        "activity", "ingest", *map(str, exports), "--db", str(helga), "--tz", "Europe/Berlin"
    )
    assert together.code == 0, together
    assert totals(helga) == (105, 32), together
    assert together.stdout.splitlines()[-1].endswith(
        "; 105 messages accepted, 32 rejected; 548 already counted"
    ), together


def test_a_real_copy_that_lost_its_time_is_refused(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    _require_corpus()
    copy = tmp_path / "mail.log.1.gz"
    shutil.copyfile(SHARED_LOGS / "lightmeter-mail.log.1.gz", copy)  # mtime: now
    touch(copy, "2026-11-29 10:00:00")
    db = tmp_path / "store.sqlite"
    refused = run_cli("activity", "ingest", str(copy), "--db", str(db), "--as-of", "2026-11-29")
    assert refused.code == 1, refused
    assert "the year cannot be inferred: the last line is of Jan 28" in refused.stdout, refused
    touch(copy, "2021-01-28 06:32:00")  # the real time of the file
    right = run_cli("activity", "ingest", str(copy), "--db", str(db), "--as-of", "2026-11-29")
    assert right.code == 0, right
    assert totals(db) == (202, 7)
    assert {day for _, _, day in days(db)} == {"2021-01-27", "2021-01-28"}


@pytest.mark.parametrize(
    ("name", "year"),
    [
        ("derived-rollover-mail.log.1.gz", True),
        ("derived-rollover-late.log.gz", True),
        ("derived-rollover-mail.log.1.gz", False),  # the year from its real time instead
    ],
)
def test_a_real_new_year_inside_a_file(tmp_path: Path, run_cli, name: str, year: bool) -> None:  # type: ignore[no-untyped-def]
    _require_corpus()
    db = tmp_path / "store.sqlite"
    copy = tmp_path / name
    shutil.copyfile(SHARED_LOGS / name, copy)
    touch(copy, "2021-01-01 06:32:23")
    flags = ["--year", "2020"] if year else []
    result = run_cli("activity", "ingest", str(copy), "--db", str(db), *flags)
    assert result.code == 0, result
    login = "h-aaf4c@h-ffeb17e38996c.com"
    found = days(db)
    assert found[("login", login, "2020-12-31")][0] == 26, result
    assert found[("login", login, "2021-01-01")][0] == 8, result


def test_a_cleanup_reject_whose_text_names_another_client_names_none() -> None:
    """A header_checks reject logs the header's text, which the sender wrote; when no
    ``client=`` line gives the queue id's client, the line is read, and a header that
    mimics the tail of the line must not make it name another device."""
    tail = "from=<a@lib.example.edu> to=<x@example.org> proto=ESMTP helo=<gate>: 5.7.1 spam"
    plain = f"5A3: reject: header Subject: hi from unknown[10.20.30.88]; {tail}"
    # Positive controls: the client is the one before "; from=<", whatever " from " precedes.
    assert rejected_address(plain, by_cleanup=True) == "10.20.30.88"
    mentions = (
        f"5A3: reject: header Subject: scans from x[10.90.35.14] from unknown[10.20.30.88]; {tail}"
    )
    assert rejected_address(mentions, by_cleanup=True) == "10.20.30.88"
    forged = (
        "5A3: reject: header Subject: hi from x[10.90.35.14]; from=<y@lib.example.edu> "
        f"from unknown[10.20.30.88]; {tail}"
    )
    assert rejected_address(forged, by_cleanup=True) is None
