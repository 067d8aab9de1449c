"""``python -m tests.lab``: build the relay lab by hand (root, from the repository root).

Without options it builds the lab for ``./inventory``, prints its map, runs
every active record's positive and negative case, prints the counts and
tears everything down (exit 0 when every case behaved, 1 otherwise).
``--hold`` keeps the lab up, prints ready-to-paste commands, and tears it down
when Enter is pressed or the process gets SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import signal
import sys
from pathlib import Path
from types import FrameType

from tests.lab.cases import run_matrix
from tests.lab.lab import CLIENT_SCRIPT, Lab
from tests.lab.plan import CAMPUS, OUTSIDER


def _describe(lab: Lab, *, secrets: bool) -> str:
    plan = lab.plan
    relay = " ".join(str(a) for a in plan.relay_addresses)
    lines = [
        f"lab {lab.run_id}: {lab.root}",
        f"  relay     {lab.relay_ns}  {relay}  port {plan.relay_port} (no AUTH),"
        f" port {plan.submission_port} (STARTTLS, AUTH PLAIN LOGIN)",
    ]
    names = {c.source: c for c in plan.clients}
    roles = plan.roles()
    for role in sorted(roles, key=lambda r: (r == OUTSIDER, r != CAMPUS, r)):
        for address in sorted(roles[role], key=lambda a: (a.version, a)):
            client = names.get(address)
            what = (
                "no record"
                if client is None
                else f"{client.name} ({'legacy' if client.legacy else 'authenticated'},"
                f" {client.status.value})"
            )
            label = role if role in (OUTSIDER, CAMPUS) else "segment"
            lines.append(f"  {label:9} {lab.ns.name(role)}  {address}  {what}")
    lines += [
        f"  config    {lab.relay.config}",
        f"  maillog   {lab.relay.maillog}",
        f"  sink      {lab.sink_file}",
    ]
    if lab.postfwd is not None:
        daemon = lab.postfwd
        lines.append(f"  postfwd   127.0.0.1:{daemon.port} ({lab.relay_ns}) {daemon.live}")
    if secrets:
        lines += [f"  account   {a.login}  password {a.password}" for a in plan.accounts]
    return "\n".join(lines)


def _example(lab: Lab) -> str:
    hodges = next(c for c in lab.plan.active if c.legacy and c.source.version == 4)
    request = {
        "sessions": [
            {
                "host": str(lab.plan.relay_address(4)),
                "port": lab.plan.relay_port,
                "source": str(hodges.source),
                "mail_from": hodges.senders[0],
                "rcpt_to": ["someone@example.net"],
                "token": "by-hand-1",
            }
        ]
    }
    return (
        "send a message by hand (the reply comes back as JSON):\n"
        f"  echo '{json.dumps(request)}' |\n"
        f"    ip netns exec {lab.client_ns[hodges.source]} python3 {CLIENT_SCRIPT}\n"
        f"  cat {lab.sink_file}"
    )


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"lab: signal {signum}, tearing down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    parser.add_argument("--inventory", type=Path, default=Path("inventory"))
    parser.add_argument(
        "--as-of", type=dt.date.fromisoformat, default=dt.date.today(), help="YYYY-MM-DD"
    )
    parser.add_argument("--hold", action="store_true", help="keep the lab up until Enter")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    with Lab.running(args.inventory, args.as_of) as lab:
        print(_describe(lab, secrets=args.hold), flush=True)
        if args.hold:
            print(_example(lab))
            print("press Enter (or Ctrl-C) to tear the lab down", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                sys.stdin.readline()
            return 0
        report = run_matrix(lab)
        for failure in report.failures:
            print(f"FAILED {failure}")
        print(report.summary())
        return 1 if report.failures else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
