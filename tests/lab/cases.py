"""Generated cases: every active record, once with what it owns and once without.

Input: a running ``Lab``. Output: a ``MatrixReport`` with the number of
records tried each way and a description of every case that went wrong.

A positive case sends from the record's source address with each of its own
senders (a legacy record on the relay port; an authenticated record on the
submission port, logged in as its account) and expects every message in the
sink. A negative case sends the same way with a sender the record does not
own (the first sender of the next records in name order that it does not
list) and expects the RCPT refused with 554 by the sender class of the
record (legacy devices and logins alike: a login's class binds it to its
record's address and senders) and nothing in the sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tests.lab.lab import Lab, Result, Session
from tests.lab.netns import LabError
from tests.lab.plan import Client

RECIPIENT = "someone@example.net"


@dataclass(frozen=True)
class Case:
    record: str
    way: Literal["positive", "negative"]
    session: Session
    refusal: tuple[int, str] | None  # None: must be delivered


@dataclass
class MatrixReport:
    records: int
    positive: int = 0
    negative: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"lab: {self.positive} positive and {self.negative} negative cases tried"


def _login(lab: Lab, client: Client) -> tuple[str, str] | None:
    if client.legacy:
        return None
    if client.account is None:
        raise LabError(f"{client.name}: an authenticated record without an account")
    account = lab.plan.account(client.account)
    return (account.login, account.password)


def cases(lab: Lab) -> list[Case]:
    active = sorted(lab.plan.active, key=lambda c: c.name)
    found: list[Case] = []
    for index, client in enumerate(active):
        if not client.senders:
            raise LabError(f"{client.name}: an active record without senders")
        login = _login(lab, client)
        port = lab.plan.relay_port if client.legacy else lab.plan.submission_port
        for sender in client.senders:
            session = Session(
                client.source, port, sender, (RECIPIENT,), lab.token(client.name), login
            )
            found.append(Case(client.name, "positive", session, None))
        others = active[index + 1 :] + active[:index]
        foreign = next(s for other in others for s in other.senders if s not in client.senders)
        refusal = (554, "Sender address rejected: sender not registered for this device")
        session = Session(client.source, port, foreign, (RECIPIENT,), lab.token(client.name), login)
        found.append(Case(client.name, "negative", session, refusal))
    return found


def run_matrix(lab: Lab) -> MatrixReport:
    """Send every case, wait for the queue to drain, and check each against the sink."""
    planned = cases(lab)
    results = lab.send([case.session for case in planned])
    tokens = [c.session.token for c in planned if c.refusal is None]
    lab.wait_delivered(tokens)
    lab.settle()
    report = MatrixReport(records=len(lab.plan.active))
    tried: dict[str, set[str]] = {"positive": set(), "negative": set()}
    for case, result in zip(planned, results, strict=True):
        tried[case.way].add(case.record)
        problem = _check(lab, case, result)
        if problem:
            report.failures.append(f"{case.record} ({case.way}): {problem}; {result}")
    report.positive = len(tried["positive"])
    report.negative = len(tried["negative"])
    return report


def _check(lab: Lab, case: Case, result: Result) -> str | None:
    delivered = lab.delivered(case.session.token)
    if case.refusal is None:
        if not result.accepted:
            return "not accepted"
        if [m.mail_from for m in delivered] != [case.session.mail_from]:
            return f"delivered {len(delivered)} times, expected once with its sender"
        return None
    code, text = case.refusal
    if not result.refused or [r[0] for r in result.rcpt] != [code]:
        return f"expected {code}"
    if text not in result.rcpt[0][1]:
        return f"reply lacks {text!r}"
    if delivered:
        return "refused, yet delivered"
    return None
