"""What ``relaygate query`` answers for a cell.

Input: a compiled inventory's artifacts (in process, as ``relaygate query``
builds them) and a ``Cell``. Output: the query's relay decision, from the same
interpreter of the compiled Postfix text that ``relaygate query --sender``
prints (``Relay.decide``), for the master.cf service of the cell's port (the
site's relay or submission port), with the client's hostname and after
STARTTLS, as the XCLIENT session presents them. ``cli_answer`` asks the command line
itself (``relaygate query ADDRESS --sender S [--login L] --format json``), for
the cells the command line can express; the test checks it gives the same
answer as the in-process call on a sample of cells.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import netaddr

from relaygate.cli import main as relaygate_main
from relaygate.render import Artifacts
from relaygate.render.postfix import service_name
from relaygate.render.postfix.evaluate import Relay
from tests.conftest import AS_OF
from tests.differential.matrix import Cell


@dataclass(frozen=True)
class QueryAnswer:
    relay: bool
    action: str
    reason: str
    restriction: str

    def __str__(self) -> str:
        return f"{self.action} ({self.reason}; decided by {self.restriction})"


class QueryModel:
    """``relaygate query``'s relay, built once per compiled inventory."""

    def __init__(self, artifacts: Artifacts, relay_port: int, submission_port: int) -> None:
        self.relay = Relay.from_artifacts(artifacts)
        self.services = {
            "relay": service_name(relay_port),
            "submission": service_name(submission_port),
        }

    def answer(self, cell: Cell) -> QueryAnswer:
        decision = self.relay.decide(
            netaddr.IPAddress(str(cell.client.address)),
            cell.sender,
            cell.login,
            self.services[cell.port],
            client_name=cell.client.hostname,
            tls=True,
        )
        return QueryAnswer(
            decision.action == "OK", decision.action, decision.reason, decision.restriction
        )


def cli_expresses(cell: Cell) -> bool:
    """The command line picks the port from the login (a login: submission; none: the
    relay port) and, without --login, uses the record's own account."""
    if cell.port == "submission":
        return cell.login is not None
    return cell.login is None and (cell.client.record is None or cell.client.record.legacy)


def cli_answer(inventory: Path, cell: Cell) -> str:
    """The action `relaygate query --format json` prints for the cell ("OK"/"REJECT")."""
    argv = [
        "query",
        "--inventory",
        str(inventory),
        "--as-of",
        AS_OF,
        str(cell.client.address),
        "--sender",
        cell.sender,
        "--format",
        "json",
    ]
    if cell.login is not None:
        argv += ["--login", cell.login]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = relaygate_main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 3
    if code not in (0, 1):
        raise AssertionError(f"relaygate {' '.join(argv)} exited {code}: {err.getvalue()}")
    answers = json.loads(out.getvalue())["answers"]
    mine = [a for a in answers if a["client"] == str(cell.client.address)]
    if len(mine) != 1:
        raise AssertionError(f"relaygate {' '.join(argv)}: answers {answers}")
    return str(mine[0]["action"])
