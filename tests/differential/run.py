"""Run the matrix of one inventory against the three answers and collect disagreements.

Input: an ``InventorySpec``, a folder to write it in, the ``XclientRelay``.
Output: an ``Outcome``: how many cells and real transactions ran, and every
disagreement, each with the cell, the three answers and Postfix's reply.
"""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from relaygate import compile as compile_
from relaygate.errors import RelaygateError
from relaygate.render import Artifacts
from tests.differential import answers, oracle
from tests.differential.inventory import TODAY, InventorySpec, write
from tests.differential.matrix import RECIPIENT, Cell, Connection, connections
from tests.differential.relay import XclientRelay
from tests.differential.smtp import Session, SmtpError, Transaction

#: Concurrent SMTP connections: smtpd does the work, in its own processes.
WORKERS = 4
#: Cells per inventory that are also asked of the command line (each run compiles).
CLI_SAMPLE = 6


@dataclass
class Outcome:
    cells: int = 0
    transactions: int = 0
    connections: int = 0
    cli_checks: int = 0
    relayed: int = 0  # cells all three answers relay: the positive controls
    disagreements: list[str] = field(default_factory=list)
    classes: Counter[str] = field(default_factory=Counter)

    def report(self, spec: InventorySpec, shown: int = 30) -> str:
        lines = [
            f"{len(self.disagreements)} of {self.cells} cells disagree"
            f" ({self.transactions} real transactions, {self.relayed} relayed by all three);"
            f" first {shown}:",
            *self.disagreements[:shown],
            "disagreements by class (client kind, port, login, sender):",
            *(f"  {count:4d}  {name}" for name, count in sorted(self.classes.items())),
            "inventory:",
            spec.describe(),
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class Compiled:
    inventory: Path
    out: Path
    artifacts: Artifacts
    relay_port: int
    submission_port: int


def compile_spec(spec: InventorySpec, root: Path) -> Compiled:
    """Write the inventory under ``root`` and compile it into ``root/compiled``."""
    inventory = root / "inventory"
    write(spec, inventory)
    try:
        built = compile_.build(inventory, TODAY)
    except RelaygateError as error:
        # Every cell's intended answer exists, but no relay can be built: the compiler
        # failed closed on a valid inventory.
        raise AssertionError(
            f"relaygate compile failed on a valid inventory: {type(error).__name__}: {error}\n"
            f"inventory:\n{spec.describe()}"
        ) from error
    errors = [str(f) for f in built.validation.findings if f.is_error]
    assert built.artifacts is not None and not errors, (
        "the generator wrote an inventory that does not compile:\n" + "\n".join(errors)
    )
    assert built.validation.inventory is not None
    site = built.validation.inventory.site
    out = root / "compiled"
    compile_.write(out, built.artifacts)
    return Compiled(inventory, out, built.artifacts, site.relay_port, site.submission_port)


def _drive(relay: XclientRelay, connection: Connection) -> tuple[list[Transaction], str | None]:
    port = relay.relay_port if connection.port == "relay" else relay.submission_port
    session = Session(port)
    try:
        session.start(connection.client.address, connection.client.hostname, connection.login)
        offered = any(f.startswith("AUTH") for f in session.features)
        note = None
        if connection.port == "relay" and offered:
            note = f"the relay port offers {[f for f in session.features if f.startswith('AUTH')]}"
        if connection.port == "submission" and connection.login and not offered:
            note = "the submission port does not offer AUTH"
        found = [
            session.transaction(cell.sender, RECIPIENT, cell.smtputf8) for cell in connection.cells
        ]
        return found, note
    finally:
        session.close()


def kind(cell: Cell) -> str:
    record = cell.client.record
    client = cell.client.label if record is None else cell.client.label.rsplit(" ", 1)[0]
    return f"{client} | {cell.port} | {cell.login_kind} | {cell.sender_kind}"


def check(spec: InventorySpec, root: Path, relay: XclientRelay) -> Outcome:
    compiled = compile_spec(spec, root)
    relay.deploy(compiled.out, compiled.relay_port, compiled.submission_port)
    model = answers.QueryModel(compiled.artifacts, compiled.relay_port, compiled.submission_port)
    planned = connections(spec)
    outcome = Outcome(connections=len(planned))
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(_drive, relay, c) for c in planned]
        results = []
        for connection, future in zip(planned, futures, strict=True):
            try:
                results.append(future.result())
            except (OSError, SmtpError) as error:
                raise AssertionError(
                    f"SMTP failed for {connection.client.label} on {connection.port}"
                    f" login {connection.login}: {error}\n{relay.log()}"
                ) from error
    sampled = 0
    for connection, (transactions, note) in zip(planned, results, strict=True):
        if note:
            outcome.disagreements.append(
                f"- {connection.client.label} port={connection.port}: {note}"
            )
            outcome.classes[f"{connection.port} | AUTH offer"] += 1
        for cell, real in zip(connection.cells, transactions, strict=True):
            outcome.cells += 1
            outcome.transactions += 1
            intended = oracle.intended(spec, cell)
            asked = model.answer(cell)
            outcome.relayed += intended.relay and asked.relay and real.accepted
            if not intended.relay == asked.relay == real.accepted:
                outcome.disagreements.append(
                    f"- cell: {cell}\n"
                    f"    intended: {intended}\n"
                    f"    query:    {asked}\n"
                    f"    postfix:  {'RELAY' if real.accepted else 'REFUSE'} ({real.reply})"
                )
                outcome.classes[kind(cell)] += 1
            if sampled < CLI_SAMPLE and answers.cli_expresses(cell) and outcome.cells % 37 == 0:
                sampled += 1
                printed = answers.cli_answer(compiled.inventory, cell)
                outcome.cli_checks += 1
                if printed != asked.action:
                    outcome.disagreements.append(
                        f"- cell: {cell}\n    relaygate query (CLI json): {printed}"
                        f" but in process: {asked}"
                    )
                    outcome.classes["query CLI vs in-process"] += 1
    return outcome
