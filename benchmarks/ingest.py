"""Benchmark ``relaygate activity ingest`` against ``pflogsumm`` on the same log, same run.

A synthetic Postfix log in classic syslog format is written to a temporary
folder: two relays, legacy clients (IPv4 and IPv6) and SASL logins, every
line a real relay writes for a message (connect, client=, cleanup, qmgr,
delivery, removed, disconnect), rejected relay attempts, deferred-message
retries, and lines of other daemons. Then, each the best of ``--repeat``
runs in a fresh child process:

* ``relaygate activity ingest LOG --db NEW.sqlite`` (a new store each run,
  so the whole file is read, counted and written);
* ``pflogsumm LOG`` (output discarded), the Postfix log summariser most
  operators already run over the same files.

It prints, for both, the CPU time of the child (user + system, from
``wait4``), the wall time, lines per CPU second and peak memory, then the
verdict ``target: at least 3x less CPU than pflogsumm: PASS`` (or ``FAIL``).
Then it ingests two files without a single newline (64 and 256 MiB; 8 and
32 MiB with ``--quick``) and prints their CPU time and peak memory, and
``target: memory bounded on a file without newlines: PASS`` when the larger
file needed (almost) no more memory than the smaller one. The verdicts are
a report: the exit status is 0 whether they pass or not, and nonzero only if
a run fails or the ingest does not count exactly the messages generated.

    python benchmarks/ingest.py                   # 1,000,000 lines
    python benchmarks/ingest.py --lines 3000000
    python benchmarks/ingest.py --quick           # 20,000 lines, once (for tests)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PFLOGSUMM = "pflogsumm"
TARGET = 3.0  # pflogsumm CPU seconds per ingest CPU second
CHUNK = 1 << 20
START = dt.datetime(2026, 11, 2, 0, 0, 0)
RELAYS = ("smtp-relay-1", "smtp-relay-2")
_INGEST = "import sys; from relaygate.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass(frozen=True)
class Generated:
    lines: int
    accepted: int
    rejected: int


def _clients(rng: random.Random) -> list[tuple[str, str, str | None]]:
    """(host name, address, login) of the synthetic clients."""
    found: list[tuple[str, str, str | None]] = []
    for index in range(400):
        address = f"10.20.{index // 200}.{index % 200 + 10}"
        found.append((f"copier-{index}.example.edu", address, None))
    for index in range(60):
        found.append((f"mfd-{index}.example.edu", f"2001:db8:1020:310::{index + 16:x}", None))
    for index in range(140):
        found.append(
            (
                f"app-{index}.example.edu",
                f"10.5.{index // 100}.{index % 100 + 20}",
                f"svc-app-{index}@example.edu",
            )
        )
    rng.shuffle(found)
    return found


def generate(path: Path, lines: int, seed: int = 0, start: dt.datetime = START) -> Generated:
    """Write a log of about ``lines`` lines (whole conversations; never fewer) from ``start``.

    Queue ids restart with every log: two logs must start at different times, or the
    same queue id in the same second on the same relay is (rightly) one message.
    """
    rng = random.Random(seed)
    clients = _clients(rng)
    now = start
    queue = 0x1A2B3C0
    written = accepted = rejected = 0
    chunk: list[str] = []
    with path.open("w", encoding="ascii") as out:
        while written < lines:
            now += dt.timedelta(seconds=rng.randint(0, 3))
            stamp = f"{now:%b} {now.day:2d} {now:%H:%M:%S}"
            relay = RELAYS[queue % 2]
            host, address, login = clients[rng.randrange(len(clients))]
            smtpd = f"{stamp} {relay} postfix/smtpd[{1000 + queue % 97}]"
            roll = rng.random()
            if roll < 0.08:
                chunk += [
                    f"{smtpd}: connect from unknown[{address}]",
                    f"{smtpd}: NOQUEUE: reject: RCPT from unknown[{address}]: 554 5.7.1 "
                    f"<user{queue % 50}@gmail.com>: Relay access denied; "
                    f"from=<x@example.edu> to=<user{queue % 50}@gmail.com> proto=ESMTP "
                    f"helo=<{host}>",
                    f"{smtpd}: disconnect from unknown[{address}] ehlo=1 mail=1 rcpt=0/1 quit=1 "
                    "commands=3/4",
                ]
                rejected += 1
                written += 3
                queue += 1
                continue
            if roll < 0.10:
                chunk.append(f"{stamp} {relay} CRON[{queue % 999}]: (root) CMD (run-parts)")
                chunk.append(
                    f"{stamp} {relay} postfix/anvil[77]: statistics: max connection rate "
                    f"1/60s for (smtp:{address}) at {stamp}"
                )
                written += 2
            qid = f"{queue:X}"
            queue += 1
            sasl = f", sasl_method=PLAIN, sasl_username={login}" if login else ""
            sender = f"notify-{queue % 300}@example.edu"
            chunk += [
                f"{smtpd}: connect from {host}[{address}]",
                f"{smtpd}: {qid}: client={host}[{address}]{sasl}",
                f"{stamp} {relay} postfix/cleanup[2{queue % 89}]: {qid}: "
                f"message-id=<{qid}.{queue}@{host}>",
                f"{stamp} {relay} postfix/qmgr[900]: {qid}: from=<{sender}>, size="
                f"{rng.randint(900, 90000)}, nrcpt=1 (queue active)",
                f"{smtpd}: disconnect from {host}[{address}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 "
                "commands=5",
            ]
            accepted += 1
            written += 5
            if rng.random() < 0.03:  # deferred once, retried: qmgr logs the message again
                chunk += [
                    f"{stamp} {relay} postfix/smtp[3{queue % 71}]: {qid}: to=<a@b.example.org>, "
                    "relay=none, delay=31, delays=0.1/0/30/0, dsn=4.4.1, status=deferred "
                    "(connect to b.example.org[192.0.2.1]:25: Connection timed out)",
                    f"{stamp} {relay} postfix/qmgr[900]: {qid}: from=<{sender}>, size=1200, "
                    "nrcpt=1 (queue active)",
                ]
                written += 2
            chunk += [
                f"{stamp} {relay} postfix/smtp[3{queue % 71}]: {qid}: to=<a@b.example.org>, "
                "relay=mx.b.example.org[192.0.2.25]:25, delay=0.4, delays=0.1/0/0.1/0.2, "
                "dsn=2.0.0, status=sent (250 2.0.0 OK)",
                f"{stamp} {relay} postfix/qmgr[900]: {qid}: removed",
            ]
            written += 2
            if len(chunk) > 20000:
                out.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            out.write("\n".join(chunk) + "\n")
    # The file was last written when its last line was: the ingest infers the year from it.
    os.utime(path, (now.timestamp(), now.timestamp()))
    return Generated(written, accepted, rejected)


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # user + system seconds of the child
    max_rss_mib: float
    code: int


def _measure(command: list[str]) -> Run:
    """Run ``command`` once; its wall time, its own CPU time and peak memory (wait4)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{errors.decode()}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, process.returncode)


def _best(command: list[str], repeat: int, before: object = None) -> Run:
    """The run with the least CPU time of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        if callable(before):
            before()
        run = _measure(command)
        if run.code != 0:
            raise SystemExit(f"{' '.join(command)} exited {run.code}")
        runs.append(run)
    return min(runs, key=lambda r: r.cpu)


def write_without_newlines(path: Path, size: int) -> None:
    """``size`` bytes of log text with every newline replaced by a space (one giant line)."""
    piece = (
        b"Nov 20 09:00:00 smtp-relay-1 postfix/smtpd[1]: 3F1A0: client=h[10.20.30.41] "
        b"Nov 20 09:00:00 smtp-relay-1 postfix/qmgr[2]: 3F1A0: from=<a@b.example.edu>, size=1, "
        b"nrcpt=1 (queue active) "
    )
    block = piece * (CHUNK // len(piece))
    with path.open("wb") as out:
        written = 0
        while written < size:
            data = block[: size - written]
            out.write(data)
            written += len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20,000 lines, once")
    args = parser.parse_args(argv)
    lines = 20_000 if args.quick else args.lines
    repeat = 1 if args.quick else args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mail.log"
        made = generate(log, lines)
        db = Path(tmp) / "activity.sqlite"

        def fresh_store() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)

        # --as-of: the generated days are in November 2026, whatever today is.
        ingest = [sys.executable, "-c", _INGEST, "activity", "ingest", "--db", str(db)]
        ingest += ["--as-of", "2099-12-31"]
        ingest_run = _best([*ingest, str(log)], repeat, fresh_store)
        with sqlite3.connect(db) as check:
            counted = check.execute(
                "SELECT sum(accepted), sum(rejected) FROM counts WHERE kind IN"
                " ('address', 'sasl-address')"
            ).fetchone()
        if tuple(counted) != (made.accepted, made.rejected):
            raise SystemExit(
                f"ingest counted {counted}, generated {made.accepted} accepted, "
                f"{made.rejected} rejected"
            )
        print(f"log: {made.lines} lines, {made.accepted} accepted, {made.rejected} rejected")
        print(f"{'program':<26} {'cpu s':>8} {'wall s':>8} {'lines/cpu s':>12} {'max MiB':>8}")

        def show(name: str, run: Run) -> None:
            print(
                f"{name:<26} {run.cpu:>8.2f} {run.wall:>8.2f} {made.lines / run.cpu:>12.0f} "
                f"{run.max_rss_mib:>8.0f}"
            )

        show("relaygate activity ingest", ingest_run)
        if shutil.which(PFLOGSUMM) is None:
            print(f"{PFLOGSUMM}: not installed; comparison skipped")
            print(f"target: at least {TARGET:g}x less CPU than pflogsumm: not measured")
        else:
            pflogsumm_run = _best([PFLOGSUMM, str(log)], repeat)
            show(PFLOGSUMM, pflogsumm_run)
            ratio = pflogsumm_run.cpu / ingest_run.cpu
            verdict = "PASS" if ratio >= TARGET else "FAIL"
            print(f"ratio (pflogsumm CPU / ingest CPU): {ratio:.2f}")
            print(f"target: at least {TARGET:g}x less CPU than pflogsumm: {verdict}")
        log.unlink()
        # A file without a single newline: memory must not grow with it, time linearly.
        sizes = (8 << 20, 32 << 20) if args.quick else (64 << 20, 256 << 20)
        flat = []
        for size in sizes:
            giant = Path(tmp) / f"flat-{size >> 20}.log"
            write_without_newlines(giant, size)
            fresh_store()
            run = _measure([*ingest, str(giant)])
            giant.unlink()
            flat.append(run)
            print(
                f"no newline, {size >> 20:>4} MiB: cpu {run.cpu:.2f} s, max {run.max_rss_mib:.0f} "
                f"MiB, exit {run.code}"
            )
        grew = flat[1].max_rss_mib - flat[0].max_rss_mib
        bounded = grew < (sizes[1] - sizes[0]) / (1 << 20) / 4
        print(
            f"target: memory bounded on a file without newlines: {'PASS' if bounded else 'FAIL'}"
            f" ({grew:+.0f} MiB for {(sizes[1] - sizes[0]) >> 20} MiB more input)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
