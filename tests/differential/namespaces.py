"""The matrix's subset from real client addresses: network namespaces and nftables.

Input: a running ``tests.lab.Lab`` built from a generated inventory (its relay
runs the compiled maps, fragments and nft ruleset, with Cyrus SASL accounts
for every login of the inventory), the ``InventorySpec`` it came from and
``relaygate query``'s model of the same compile. Output: an ``Outcome`` like
the XCLIENT run's, for fewer senders per connection: the base sender, its
``+`` extension, the login's record's sender, another record's sender and the
null sender.

Each connection leaves from the client's own address in its namespace
(``nsclient.py``, run with ``ip netns exec``), so the relay's firewall decides
first: a connection nft drops counts as refused, with "dropped by nft" as the
relay's reply. Logins are real ``AUTH PLAIN`` with the lab's passwords; a
login no record has is unknown to the lab's SASL store, so the relay sees no
login there and query is asked without one.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from relaygate.render import Artifacts
from tests.differential import oracle
from tests.differential.answers import QueryModel
from tests.differential.inventory import InventorySpec
from tests.differential.matrix import RECIPIENT, Cell, Client, clients, logins, senders
from tests.differential.run import Outcome, kind
from tests.lab import Lab

SCRIPT = Path(__file__).resolve().parent / "nsclient.py"
#: A dropped SYN is waited for this long; a reachable port answers in milliseconds.
CONNECT_TIMEOUT = 1.0
_KINDS = ("own", "own +extension", "login's record's sender", "another record's", "null <>")


def _cells(spec: InventorySpec, lab: Lab) -> list[tuple[str, list[Cell], tuple[str, str] | None]]:
    """(namespace, cells of one connection, credentials) for every connection."""
    found = []
    extra = Client("unknown campus IPv6", lab.plan.outsider.campus_v6, None, None)
    for listed in [*clients(spec), extra]:
        if listed.address.is_loopback:
            continue  # the relay's own loopback is no namespace of the lab
        # The lab's clients present no host name (the relay does no reverse lookup).
        client = Client(listed.label, listed.address, None, listed.record)
        if client.address not in lab.client_ns:
            raise AssertionError(f"the lab has no namespace for {client.label} {client.address}")
        namespace = lab.client_ns[client.address]
        for port in ("relay", "submission"):
            for login_kind, login in logins(spec, client):
                credentials = None
                if login is not None:
                    known = [a for a in lab.plan.accounts if a.login == login]
                    password = known[0].password if known else secrets.token_urlsafe(12)
                    credentials = (login, password)
                cells = [
                    Cell(client, port, login_kind, login, sender_kind, text)
                    for sender_kind, text in senders(spec, client, login)
                    if sender_kind in _KINDS
                ]
                found.append((namespace, cells, credentials))
    return found


def _request(lab: Lab, cells: list[Cell], credentials: tuple[str, str] | None) -> dict[str, Any]:
    first = cells[0]
    return {
        "host": str(lab.plan.relay_address(first.client.address.version)),
        "port": lab.plan.relay_port if first.port == "relay" else lab.plan.submission_port,
        "source": str(first.client.address),
        "timeout": CONNECT_TIMEOUT,
        "auth": None
        if credentials is None
        else {"user": credentials[0], "password": credentials[1]},
        "senders": [[cell.sender, cell.smtputf8] for cell in cells],
        "recipient": RECIPIENT,
    }


def check(spec: InventorySpec, lab: Lab, artifacts: Artifacts) -> tuple[Outcome, int]:
    """Run the subset; the outcome and how many connections nft dropped."""
    model = QueryModel(artifacts, lab.plan.relay_port, lab.plan.submission_port)
    planned = _cells(spec, lab)
    known = {a.login for a in lab.plan.accounts}
    by_namespace: dict[str, list[int]] = {}
    for index, (namespace, *_rest) in enumerate(planned):
        by_namespace.setdefault(namespace, []).append(index)

    def run(namespace: str, indexes: list[int]) -> list[dict[str, Any]]:
        request = {"connections": [_request(lab, planned[i][1], planned[i][2]) for i in indexes]}
        done = lab.ns.run(
            namespace,
            [sys.executable, str(SCRIPT)],
            stdin=json.dumps(request),
            timeout=120.0,
        )
        return list(json.loads(done.stdout))

    results: dict[int, dict[str, Any]] = {}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {ns: pool.submit(run, ns, idx) for ns, idx in by_namespace.items()}
        for namespace, future in futures.items():
            for index, result in zip(by_namespace[namespace], future.result(), strict=True):
                results[index] = result
    outcome = Outcome(connections=len(planned))
    dropped = 0
    for index, (_namespace, cells, _credentials) in enumerate(planned):
        result = results[index]
        if result["error"] in ("timeout", "refused"):
            dropped += 1
            replies: list[tuple[bool, str]] = [
                (False, f"dropped by nft ({result['error']})")
            ] * len(cells)
        elif result["error"]:
            raise AssertionError(f"{cells[0]}: {result['error']}\n{lab.relay.log()[-3000:]}")
        else:
            replies = [
                (
                    mail.startswith("250") and rcpt is not None and rcpt.startswith("250"),
                    rcpt if rcpt is not None else f"MAIL: {mail}",
                )
                for mail, rcpt in result["transactions"]
            ]
        for cell, (accepted, reply) in zip(cells, replies, strict=True):
            outcome.cells += 1
            outcome.transactions += 1
            intended = oracle.intended(spec, cell)
            # The relay knows only the lab's accounts: another login fails AUTH and the
            # session goes on without one, so query is asked without it.
            asked = model.answer(cell if cell.login in known else _without_login(cell))
            outcome.relayed += intended.relay and asked.relay and accepted
            if not intended.relay == asked.relay == accepted:
                outcome.disagreements.append(
                    f"- cell (real address, nft): {cell}\n"
                    f"    intended: {intended}\n"
                    f"    query:    {asked}\n"
                    f"    postfix:  {'RELAY' if accepted else 'REFUSE'} ({reply};"
                    f" AUTH: {result.get('auth')})"
                )
                outcome.classes[kind(cell)] += 1
    return outcome, dropped


def _without_login(cell: Cell) -> Cell:
    return Cell(cell.client, cell.port, cell.login_kind, None, cell.sender_kind, cell.sender)
