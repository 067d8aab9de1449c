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

It prints lines per second for both, the ratio, and the verdict line
``target: at least as fast as pflogsumm: PASS`` (or ``FAIL``). The verdict
is a report: the exit status is 0 whether it passes or not, and nonzero only
if a run fails or the ingest does not count exactly the messages generated.

    python benchmarks/ingest.py                   # 1,000,000 lines
    python benchmarks/ingest.py --lines 3000000
    python benchmarks/ingest.py --quick           # 20,000 lines, once (for tests)
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def generate(path: Path, lines: int, seed: int = 0) -> Generated:
    """Write a log of about ``lines`` lines (whole conversations; never fewer)."""
    rng = random.Random(seed)
    clients = _clients(rng)
    now = START
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
    return Generated(written, accepted, rejected)


def _best(command: list[str], repeat: int, before: object = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if callable(before):
            before()
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        took = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
        best = min(best, took)
    return best


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

        ingest = [sys.executable, "-c", _INGEST, "activity", "ingest", str(log), "--db", str(db)]
        ingest_s = _best(ingest, repeat, fresh_store)
        with sqlite3.connect(db) as check:
            counted = check.execute(
                "SELECT sum(accepted), sum(rejected) FROM clients WHERE kind = 'address'"
            ).fetchone()
        if tuple(counted) != (made.accepted, made.rejected):
            raise SystemExit(
                f"ingest counted {counted}, generated {made.accepted} accepted, "
                f"{made.rejected} rejected"
            )
        print(f"log: {made.lines} lines, {made.accepted} accepted, {made.rejected} rejected")
        print(f"{'program':<26} {'seconds':>8} {'lines/s':>10}")
        ingest_rate = made.lines / ingest_s
        print(f"{'relaygate activity ingest':<26} {ingest_s:>8.2f} {ingest_rate:>10.0f}")
        if shutil.which(PFLOGSUMM) is None:
            print(f"{PFLOGSUMM}: not installed; comparison skipped")
            print("target: at least as fast as pflogsumm: not measured")
            return 0
        pflogsumm_s = _best([PFLOGSUMM, str(log)], repeat)
        pflogsumm_rate = made.lines / pflogsumm_s
        print(f"{PFLOGSUMM:<26} {pflogsumm_s:>8.2f} {pflogsumm_rate:>10.0f}")
        ratio = ingest_rate / pflogsumm_rate
        verdict = "PASS" if ratio >= 1.0 else "FAIL"
        print(f"ratio (ingest / pflogsumm lines per second): {ratio:.2f}")
        print(f"target: at least as fast as pflogsumm: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
