"""The cells of the differential matrix: client x port x login x sender.

Input: an ``InventorySpec``. Output: ``Connection`` groups (one SMTP
connection per client, port and login), each holding its ``Cell``s (one
MAIL/RCPT transaction each).

Clients: every record's device (legacy and authenticated, in every status),
an unknown campus address, an off-campus address and the relay's own
loopback (the relay host's local mail). The two addresses no
record holds present a client hostname that ends in a registered legacy
device's IPv4 address (``mail.10.20.30.41``), the lookup-widening probe.
Logins: none, the record's own, another active record's, a retired record's,
and a login no record has. Senders, as written between the angle brackets:
the base sender (the client's own, else the login's, else a registered
one), the null sender in every spelling, ASCII case variants, ``+``/``-``
extensions, a quoted local part, a source route, the percent hack, a
trailing dot and a UTF-8 look-alike; plus another record's sender, a sender
of an inactive record, and a case variant and an extension of the foreign one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from tests.differential.inventory import (
    OFF_CAMPUS,
    UNKNOWN_CAMPUS,
    UNKNOWN_LOGIN,
    InventorySpec,
    Record,
)

Port = Literal["relay", "submission"]
PORTS: tuple[Port, ...] = ("relay", "submission")
RECIPIENT = "someone@elsewhere.example"
#: The relay host's own processes (monitoring, cron) submitting through loopback SMTP.
LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass(frozen=True)
class Client:
    label: str  # "legacy active lib-copier-0", "unknown campus", ...
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    hostname: str | None  # presented as the client's verified name (XCLIENT NAME)
    record: Record | None


@dataclass(frozen=True)
class Cell:
    client: Client
    port: Port
    login_kind: str  # none | own | other-active | retired | unknown
    login: str | None
    sender_kind: str
    sender: str  # the text between MAIL FROM's angle brackets

    @property
    def smtputf8(self) -> bool:
        """MAIL FROM carries the SMTPUTF8 parameter: a non-ASCII sender, unless the
        cell is the look-alike sent without it (as a careless or hostile client may)."""
        return not self.sender.isascii() and "without SMTPUTF8" not in self.sender_kind

    def __str__(self) -> str:
        return (
            f"client={self.client.label} ({self.client.address}"
            f"{', name ' + self.client.hostname if self.client.hostname else ''})"
            f" port={self.port} login={self.login_kind}:{self.login}"
            f" sender={self.sender_kind}:<{self.sender}>"
        )


@dataclass(frozen=True)
class Connection:
    client: Client
    port: Port
    login_kind: str
    login: str | None
    cells: tuple[Cell, ...]


NULL_SENDERS = (("null <>", ""), ('null <"">', '""'), ("null <@route:>", "@relay.example.edu:"))


def variants(base: str) -> list[tuple[str, str]]:
    """The spellings of ``base`` the matrix tries (kind, text)."""
    local, _, domain = base.rpartition("@")
    lookalike = local.replace("s", "\u017f", 1)  # LATIN SMALL LETTER LONG S
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(local))
    return [
        ("own", base),
        ("own upper case", base.upper()),
        ("own mixed case", f"{mixed}@{domain.upper()}"),
        ("own +extension", f"{local}+x@{domain}"),
        ("own -extension", f"{local}-x@{domain}"),
        ("own quoted local part", f'"{local}"@{domain}'),
        ("own source route", f"@a.example,@b.example:{base}"),
        ("own percent hack", f"{local}%{domain}@relay.example.edu"),
        ("own trailing dot", f"{base}."),
        ("own UTF-8 look-alike", f"{lookalike}@{domain}"),
        ("own UTF-8 look-alike without SMTPUTF8", f"{lookalike}@{domain}"),
    ]


def clients(spec: InventorySpec) -> list[Client]:
    found = [
        Client(
            f"{'legacy' if r.legacy else 'auth'} {r.status}"
            f"{' lapsed-' + r.lapse if r.lapse else ''} {r.name}",
            r.source,
            None,
            r,
        )
        for r in spec.records
    ]
    legacy_v4 = [r for r in spec.records if r.legacy and r.active and r.network.version == 4]
    bait = str(legacy_v4[0].source) if legacy_v4 else "10.20.30.41"
    found.append(Client("unknown campus", UNKNOWN_CAMPUS, f"mail.{bait}", None))
    found.append(Client("off campus", OFF_CAMPUS, f"relay.{bait}", None))
    found.append(Client("the relay's own loopback", LOOPBACK, "localhost", None))
    return found


def logins(spec: InventorySpec, client: Client) -> list[tuple[str, str | None]]:
    own = client.record.account if client.record else None
    active = [r.account for r in spec.records if r.active and r.account and r.account != own]
    retired = [r.account for r in spec.records if r.status == "retired" and r.account]
    found: list[tuple[str, str | None]] = [("none", None)]
    if own:
        found.append(("own", own))
    if active:
        found.append(("other-active", active[0]))
    if retired and retired[0] != own:
        found.append(("retired", retired[0]))
    found.append(("unknown", UNKNOWN_LOGIN))
    return found


def senders(spec: InventorySpec, client: Client, login: str | None) -> list[tuple[str, str]]:
    by_login = {r.account: r for r in spec.records if r.account}
    mine = client.record or by_login.get(login or "")
    registered = [r for r in spec.records if r.active]
    base_record = mine or (registered[0] if registered else spec.records[0])
    base = base_record.senders[0]
    found = variants(base)
    found += list(NULL_SENDERS)
    if login in by_login and by_login[login] is not mine:
        found.append(("login's record's sender", by_login[login].senders[0]))
    others = [r for r in registered if r is not base_record and r is not by_login.get(login or "")]
    if others:
        foreign = others[0].senders[-1]
        local, _, domain = foreign.rpartition("@")
        found += [
            ("another record's", foreign),
            ("another record's, upper case", foreign.upper()),
            ("another record's +extension", f"{local}+x@{domain}"),
        ]
    inactive = [r for r in spec.records if not r.active and r is not base_record]
    if inactive:
        found.append(("an inactive record's", inactive[0].senders[0]))
    if client.address.is_loopback:
        # The relay's own mail may use any sender, so a look-alike probes no policy there;
        # whether the relay speaks SMTPUTF8 at all is a deployment choice the policy leaves
        # open (relaygate pins it off). The look-alike without the parameter stays.
        found = [(kind, text) for kind, text in found if kind != "own UTF-8 look-alike"]
    return found


def connections(spec: InventorySpec) -> list[Connection]:
    found = []
    for client in clients(spec):
        for port in PORTS:
            for login_kind, login in logins(spec, client):
                cells = tuple(
                    Cell(client, port, login_kind, login, kind, text)
                    for kind, text in senders(spec, client, login)
                )
                found.append(Connection(client, port, login_kind, login, cells))
    return found
