"""Health probes for a relay: SMTP cases whose answers prove the compiled policy is in force.

Input: the compiled artifacts. Output: ``Probe`` values (client address, login,
MAIL FROM, which service, and the answer the relay must give), for a deploy's
health gate to send through XCLIENT from loopback after a switch. Each answer
comes from ``evaluate.Relay`` over the same artifacts, and every negative probe
is checked to be refused there, so a probe never expects what the policy does
not say.

The negative probes are the ones a widened relay fails (an override on a
service, a lost pinned setting): a legacy device with a sender it does not own,
with the null sender, with its own sender plus an extension and with a Unicode
look-alike of it, a login with a foreign sender, the null sender and
from an address that is not its record's, a login no record has, a client no
record has, and a revoked client. The positive probes (a legacy device and a
login with their own senders) show the relay still works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import netaddr

from relaygate.errors import InternalError
from relaygate.render.postfix import NULL_SENDER, service_name, syntax
from relaygate.render.postfix.evaluate import Relay

#: A sender no record can own (RFC 2606 reserved domain).
FOREIGN_SENDER = "relaygate-probe@probe.invalid"
#: A client no campus record can hold (TEST-NET-1, RFC 5737).
UNKNOWN_CLIENT = "192.0.2.1"
#: U+017F LATIN SMALL LETTER LONG S: Unicode case folding makes it "s".
LONG_S = "\u017f"
#: A login no record can have.
UNKNOWN_LOGIN = "relaygate-probe@probe.invalid"


@dataclass(frozen=True, slots=True)
class Probe:
    what: str  # one line for the health gate's report
    service: str  # master.cf service, e.g. smtp or submission
    port: int
    client: str
    login: str | None
    sender: str  # as written between the angle brackets of MAIL FROM
    accept: bool  # True: RCPT to an outside recipient must be 2xx; False: 5xx


def _entries(artifacts: Mapping[str, str], path: str) -> list[tuple[str, str]]:
    return [(e.key, e.value) for e in syntax.table_entries(artifacts.get(path, ""))]


def _host(cidr: str) -> str:
    network = netaddr.IPNetwork(cidr)
    return str(netaddr.IPAddress(network.first, network.version))


def health_probes(
    artifacts: Mapping[str, str], relay_port: int, submission_port: int
) -> list[Probe]:
    """The probes for these artifacts (module docstring); InternalError if one contradicts them."""
    relay = Relay.from_artifacts(dict(artifacts))
    smtp, submission = service_name(relay_port), service_name(submission_port)
    wanted: list[tuple[str, str, int, str, str | None, str, bool]] = []
    legacy = _entries(artifacts, "postfix/legacy_clients") + _entries(
        artifacts, "postfix/legacy_clients.cidr"
    )
    if legacy:
        address, sender_class = legacy[0]
        senders = [k for k, _ in _entries(artifacts, f"postfix/senders/{sender_class}")]
        own = next(s for s in senders if s != NULL_SENDER)
        client = _host(address) if "/" in address else address
        wanted += [
            ("legacy device, its own sender", smtp, relay_port, client, None, own, True),
            (
                "legacy device, a foreign sender",
                smtp,
                relay_port,
                client,
                None,
                FOREIGN_SENDER,
                False,
            ),
        ]
        if NULL_SENDER not in senders:
            wanted.append(("legacy device, null sender", smtp, relay_port, client, None, "", False))
        local, _, domain = own.partition("@")
        tagged = f"{local}+probe@{domain}"
        if tagged not in senders:
            wanted.append(
                (
                    "legacy device, its sender with an extension",
                    smtp,
                    relay_port,
                    client,
                    None,
                    tagged,
                    False,
                )
            )
        if "s" in local:
            look_alike = f"{local.replace('s', LONG_S, 1)}@{domain}"
            wanted.append(
                (
                    "legacy device, a look-alike of its sender",
                    smtp,
                    relay_port,
                    client,
                    None,
                    look_alike,
                    False,
                )
            )
    logins = _entries(artifacts, "postfix/logins")
    if logins:
        login, login_class = logins[0]
        cidr, sender_class = syntax.inline_items(
            syntax.tokens(relay.setting(login_class))[1].removeprefix("cidr:{").removesuffix("}")
        )[0].split()
        senders = [k for k, _ in _entries(artifacts, f"postfix/senders/{sender_class}")]
        own = next(s for s in senders if s != NULL_SENDER)
        client = _host(cidr)
        port = submission_port
        wanted += [
            ("login, its own sender", submission, port, client, login, own, True),
            ("login, a foreign sender", submission, port, client, login, FOREIGN_SENDER, False),
            ("login, another address", submission, port, UNKNOWN_CLIENT, login, own, False),
            ("unknown login", submission, port, client, UNKNOWN_LOGIN, own, False),
            ("no login on submission", submission, port, client, None, own, False),
        ]
        if NULL_SENDER not in senders:
            wanted.append(("login, null sender", submission, port, client, login, "", False))
    wanted.append(("unknown client", smtp, relay_port, UNKNOWN_CLIENT, None, FOREIGN_SENDER, False))
    refused = _entries(artifacts, "postfix/refused_clients") + _entries(
        artifacts, "postfix/refused_clients.cidr"
    )
    if refused:
        address = refused[0][0]
        client = _host(address) if "/" in address else address
        wanted.append(("refused client", smtp, relay_port, client, None, FOREIGN_SENDER, False))
    probes = []
    for what, service, port, host, who, sender, accept in wanted:
        decision = relay.decide(netaddr.IPAddress(host), sender, who, service)
        if (decision.action == "OK") != accept:
            raise InternalError(
                f"health probe {what!r} expects {'accept' if accept else 'refuse'}, but the"
                f" compiled policy answers {decision.action} ({decision.reason})"
            )
        probes.append(Probe(what, service, port, host, who, sender, accept))
    return probes
