"""The lab's mail sink: an aiosmtpd server that records every message it is given.

Run inside the relay namespace (``ip netns exec RELAY python sink.py ...``) on
127.0.0.1: Postfix relays everything it accepts there (``relayhost``), so the
sink's file is the record of what was really delivered, not what was answered
250. Output: one JSON object per line in ``--out`` (``mail_from``,
``rcpt_tos``, ``token`` = the ``X-Lab-Token`` header, ``subject``), flushed
before the sink answers 250, so a reader never misses a message the relay saw
as delivered. ``--ready`` is created once the server listens.

``read(path)`` parses the file for the tests.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Delivered:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    token: str
    subject: str


def read(path: Path) -> list[Delivered]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            found.append(
                Delivered(
                    mail_from=item["mail_from"],
                    rcpt_tos=tuple(item["rcpt_tos"]),
                    token=item["token"],
                    subject=item["subject"],
                )
            )
    return found


class Recorder:
    """aiosmtpd handler: append the envelope and token of each message to a file."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        message = email.message_from_bytes(content, policy=email.policy.compat32)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "token": str(message.get("X-Lab-Token", "")),
            "subject": str(message.get("Subject", "")),
        }
        with self.lock, self.out.open("a") as stream:
            stream.write(json.dumps(record, sort_keys=True) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        return "250 2.0.0 recorded by the lab sink"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args()

    controller = Controller(Recorder(args.out), hostname=args.host, port=args.port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    args.ready.touch()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        controller.stop()
        args.ready.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
