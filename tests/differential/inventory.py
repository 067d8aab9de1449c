"""Random valid inventories for the differential test, as plain specs and as YAML.

Input: a hypothesis draw of record specs (``inventories()``). Output: an
``InventorySpec`` (the facts the oracle reads: every record's address,
login, senders and status) and ``write(spec, root)``, which lays it out as an
inventory folder on the example campus's site and units files.

The specs are this module's own data: the oracle reads them, never the
compiler's model, so a compiler bug cannot hide itself in the expectation.
Addresses never collide (legacy devices in the units' MOD segments, each with
a NetReg reservation; authenticated hosts and small prefixes elsewhere on
campus), and senders are drawn so that one record's ``+x``/``-x`` extension
of its sender can be another record's registered sender: the case where a
widened lookup would hand one device another's address.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from relaygate.findings import Severity
from relaygate.rules import RULES
from tests.conftest import AS_OF, EXAMPLE, ROOT

TODAY = dt.date.fromisoformat(AS_OF)
STATUSES = ("active", "suspended", "revoked", "retired")
_REASONS = {"suspended": "investigation", "revoked": "spam", "retired": "request"}


@dataclass(frozen=True)
class Unit:
    id: str
    domain: str
    approver: str  # the flow-mapping text of one approver listed in units.yaml
    mod_v4: str
    mod_v6: str
    auth_v4: str  # a /24 on campus outside every MOD segment
    auth_v6: str  # a /64 on campus outside every MOD segment


#: Three units of the example campus (inventory/site.yaml, inventory/units.yaml).
UNITS = (
    Unit(
        "libraries",
        "lib.example.edu",
        "{name: Dr. Alex Dean, email: adean@example.edu, role: dean}",
        "10.20.30.0/24",
        "2001:db8:1020:310::/64",
        "10.20.61.0/24",
        "2001:db8:1020:610::/64",
    ),
    Unit(
        "engineering",
        "eng.example.edu",
        "{name: Dr. Priya Raman, email: praman@example.edu, role: dean}",
        "10.40.32.0/24",
        "2001:db8:1040:320::/64",
        "10.40.61.0/24",
        "2001:db8:1040:610::/64",
    ),
    Unit(
        "medicine",
        "med.example.edu",
        "{name: Dr. Helen Okafor, email: hokafor@example.edu, role: dean}",
        "10.60.33.0/24",
        "2001:db8:1060:330::/64",
        "10.60.61.0/24",
        "2001:db8:1060:610::/64",
    ),
)

#: Whether the record format has the one-owner rule for senders (``shares_senders_with``).
SHARING = (
    "shares_senders_with"
    in json.loads((ROOT / "schemas" / "device.schema.json").read_text("utf-8"))["properties"]
)

#: Lapses the compiler turns into a refusal of that one record (a warning) instead of
#: refusing the whole inventory (an error): with these rules, a lapsed legacy record is
#: a valid input, so the generator draws it. Each kind, with its rule ids (either name).
_LAPSE_RULES = (
    ("expired", ("exception.expired",)),
    ("netreg", ("legacy.netreg-no-reservation", "legacy.netreg-missing")),
    ("approver", ("legacy.approver-not-listed",)),
)
LAPSES = tuple(
    kind
    for kind, ids in _LAPSE_RULES
    if any(i in RULES and RULES[i].severity is Severity.WARNING for i in ids)
)
#: An approver units.yaml does not list (the "approver left" lapse).
_DEPARTED = "{name: Dr. Gone Away, email: gaway@example.edu, role: dean}"

#: Held by no record, on campus (inside a MOD segment; the lab picks it too) and off campus.
UNKNOWN_CAMPUS = ipaddress.ip_address("10.20.30.250")
OFF_CAMPUS = ipaddress.ip_address("198.51.100.7")
#: A login no record has.
UNKNOWN_LOGIN = "svc-nobody@example.edu"


@dataclass(frozen=True)
class RecordDraw:
    """What hypothesis chooses for one record."""

    legacy: bool
    status: str
    unit: int
    v6: bool
    prefix: bool  # authenticated only: a small prefix instead of a host
    extra: int | None  # a second sender: the +x/-x extension of record ``extra``'s sender
    dash: bool  # the extension's delimiter: '-' (True) or '+'
    null_ok: bool = False  # the record opts in to the null sender (allow_null_sender)
    lapse: str | None = None  # legacy only: expired | netreg | approver (see LAPSES)


@dataclass(frozen=True)
class Record:
    name: str
    unit: Unit
    legacy: bool
    status: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    account: str | None
    senders: tuple[str, ...]
    null_ok: bool = False
    shares: tuple[str, ...] = ()  # shares_senders_with
    lapse: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def source(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address the record's device sends from (a prefix: its first host)."""
        if self.network.num_addresses == 1:
            return self.network.network_address
        return self.network.network_address + 1


#: The site's (relay port, submission port): the standard pair and another the relay
#: must follow just as well (site.yaml decides; every target must agree).
PORT_PAIRS = ((25, 587), (2525, 10587))


@dataclass(frozen=True)
class InventorySpec:
    records: tuple[Record, ...]
    ports: tuple[int, int] = PORT_PAIRS[0]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How hypothesis shows a (shrunk) failing inventory: one line per record."""
        printer.text("InventorySpec(\n" + self.describe() + "\n)")

    def describe(self) -> str:
        return f"  site ports: relay {self.ports[0]}, submission {self.ports[1]}\n" + "\n".join(
            f"  {r.name}: {r.status} {'legacy' if r.legacy else 'auth ' + str(r.account)}"
            f" {r.network} senders={list(r.senders)}{' allow_null_sender' if r.null_ok else ''}"
            f"{' shares_senders_with=' + ','.join(r.shares) if r.shares else ''}"
            f"{' lapsed:' + r.lapse if r.lapse else ''}"
            for r in self.records
        )


def local_part(index: int) -> str:
    # Every local part holds an 's', so the U+017F look-alike has a letter to replace.
    return f"scans{index}"


def _shared_mailbox(one: str, other: str) -> bool:
    """Two senders the one-owner rule treats as one mailbox (``x+tag@d`` is ``x@d``)."""

    def key(sender: str) -> str:
        local, _, domain = sender.rpartition("@")
        return f"{local.split('+', 1)[0]}@{domain}"

    return key(one) == key(other)


def build(draws: list[RecordDraw], ports: tuple[int, int] = PORT_PAIRS[0]) -> InventorySpec:
    """Turn draws into records with unique names, addresses, logins and senders.

    A second sender is the ``+x``/``-x`` extension of another record's first sender in
    the same unit. Where the sender format knows the one-owner rule (a ``+extension``
    is the same mailbox; two live records may hold one only by naming each other in
    ``shares_senders_with``, and never a legacy record with an authenticated one), the
    draw declares the sharing or, for a legacy/authenticated pair, drops the sender.
    """
    records: list[Record] = []
    used_senders: set[str] = set()
    for index, draw in enumerate(draws):
        unit = UNITS[draw.unit % len(UNITS)]
        legacy = draw.legacy
        name = f"{unit.id[:3]}-{'copier' if legacy else 'app'}-{index}"
        host = 16 + index
        if legacy:
            base = ipaddress.ip_network(unit.mod_v6 if draw.v6 else unit.mod_v4)
            network = ipaddress.ip_network(base.network_address + 100 + index)
        elif draw.prefix:
            base = ipaddress.ip_network(unit.auth_v6 if draw.v6 else unit.auth_v4)
            length = 124 if draw.v6 else 28
            network = ipaddress.ip_network(f"{base.network_address + 16 * (8 + index)}/{length}")
        else:
            base = ipaddress.ip_network(unit.auth_v6 if draw.v6 else unit.auth_v4)
            network = ipaddress.ip_network(base.network_address + host)
        senders = [f"{local_part(index)}@{unit.domain}"]
        if draw.extra is not None and draws:
            other = draw.extra % len(draws)
            mate = draws[other]
            both_live = "retired" not in (draw.status, mate.status)
            mixed = mate.legacy != legacy and both_live and not draw.dash and SHARING
            if other != index and UNITS[mate.unit % len(UNITS)] == unit and not mixed:
                delimiter = "-" if draw.dash else "+"
                senders.append(f"{local_part(other)}{delimiter}x@{unit.domain}")
        senders = [s for s in senders if s not in used_senders]
        used_senders.update(senders)
        records.append(
            Record(
                name=name,
                unit=unit,
                legacy=legacy,
                status=draw.status,
                network=network,
                account=None if legacy else f"svc-{name}@example.edu",
                senders=tuple(senders),
                null_ok=draw.null_ok,
                lapse=draw.lapse if legacy else None,
            )
        )
    if SHARING:
        records = _declare_sharing(records)
    return InventorySpec(tuple(records), ports)


def _declare_sharing(records: list[Record]) -> list[Record]:
    live = [r for r in records if r.status != "retired"]
    shares: dict[str, set[str]] = {r.name: set() for r in records}
    for one in live:
        for other in live:
            if one is not other and any(
                _shared_mailbox(a, b) for a in one.senders for b in other.senders
            ):
                shares[one.name].add(other.name)
    return [dataclasses.replace(r, shares=tuple(sorted(shares[r.name]))) for r in records]


_DRAW = st.builds(
    RecordDraw,
    legacy=st.booleans(),
    status=st.sampled_from(STATUSES),
    unit=st.integers(0, len(UNITS) - 1),
    v6=st.booleans(),
    prefix=st.booleans(),
    extra=st.none() | st.integers(0, 7),
    dash=st.booleans(),
    null_ok=st.booleans(),
    lapse=st.sampled_from((None, *LAPSES)),
)


def inventories(max_records: int = 8) -> st.SearchStrategy[InventorySpec]:
    """Inventories of 1..max_records records; shrinking removes and simplifies records."""
    return st.builds(
        build, st.lists(_DRAW, min_size=1, max_size=max_records), st.sampled_from(PORT_PAIRS)
    )


def full_coverage() -> InventorySpec:
    """Every status for legacy and authenticated records, both families, a prefix, and
    extension senders that are another record's registered sender (both delimiters)."""
    draws = [
        RecordDraw(True, "active", 0, False, False, None, False),
        RecordDraw(True, "active", 0, True, False, 0, False),  # owns scans0+x@lib
        RecordDraw(False, "active", 1, False, False, None, False),
        RecordDraw(False, "active", 0, False, False, 1, True),  # owns scans1-x@lib
        RecordDraw(False, "active", 2, True, True, None, False),
        RecordDraw(True, "suspended", 1, False, False, None, False),
        RecordDraw(True, "revoked", 2, False, False, None, False),
        RecordDraw(True, "retired", 0, False, False, None, False),
        RecordDraw(False, "suspended", 1, False, False, None, False),
        RecordDraw(False, "revoked", 0, True, False, None, False),
        RecordDraw(False, "retired", 2, False, False, None, False),
        RecordDraw(False, "active", 1, True, False, 2, False),  # owns scans2+x@eng
    ]
    draws += [RecordDraw(True, "active", 1, False, False, None, False, lapse=k) for k in LAPSES]
    return build(draws)


#: Records that allow the null sender (active legacy and authenticated, and a suspended
#: one) beside one that does not.
NULL_SENDER_OPT_IN = [
    RecordDraw(True, "active", 2, False, False, None, False, null_ok=True),
    RecordDraw(False, "active", 2, False, False, None, False, null_ok=True),
    RecordDraw(True, "suspended", 2, False, False, None, False, null_ok=True),
    RecordDraw(True, "active", 0, False, False, None, False),
]


# --- writing the inventory ----------------------------------------------------------


def write(spec: InventorySpec, root: Path) -> None:
    """An inventory folder for ``spec``: the example's site and units, our records and NetReg."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLE / "units.yaml", root / "units.yaml")
    site = (EXAMPLE / "site.yaml").read_text("utf-8")
    for key, port in zip(("relay_port", "submission_port"), spec.ports, strict=True):
        site, count = re.subn(rf"(?m)^(\s+{key}:\s*)\d+", rf"\g<1>{port}", site)
        if count != 1:
            raise ValueError(f"the example site.yaml has no single {key} line")
    (root / "site.yaml").write_text(site, "utf-8")
    reservations = []
    for record in spec.records:
        folder = root / "devices" / record.unit.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{record.name}.yaml").write_text(_device(record), "utf-8")
        if record.legacy and record.lapse != "netreg":
            address = str(record.network.network_address)
            quoted = f'"{address}"' if ":" in address else address
            reservations.append(
                f"  - {{address: {quoted}, fqdn: {record.name}.{record.unit.domain}, type: static}}"
            )
    exported = (TODAY - dt.timedelta(days=3)).isoformat()
    (root / "netreg.yaml").write_text(
        f"exported_on: {exported}\nreservations:\n" + "\n".join(reservations) + "\n"
        if reservations
        else f"exported_on: {exported}\nreservations: []\n",
        "utf-8",
    )


def _device(record: Record) -> str:
    address = str(record.network.network_address)
    if record.network.num_addresses > 1:
        address = str(record.network)
    quoted = f'"{address}"' if ":" in address else address
    lines = [
        f"name: {record.name}",
        f"unit: {record.unit.id}",
        f"kind: {'copier' if record.legacy else 'application'}",
        "model: Differential Test Device",
        f"fqdn: {record.name}.{record.unit.domain}",
        f"address: {quoted}",
        f"auth: {'ip' if record.legacy else 'credentials'}",
    ]
    if record.account:
        lines.append(f"account: {record.account}")
    lines.append("senders:")
    lines += [f"  - {sender}" for sender in record.senders]
    if record.shares:
        lines.append(f"shares_senders_with: [{', '.join(record.shares)}]")
    if record.null_ok:
        lines += [
            "allow_null_sender:",
            "  reason: The device sends delivery reports for failed jobs with the null sender.",
        ]
    lines += [
        "volume_per_day: 10",
        "requestor: {name: Pat Doe, email: pdoe@example.edu}",
        "technical_contact: {name: Sam Roe, email: sroe@example.edu}",
    ]
    if record.legacy:
        # An expired exception ended five days ago; the others run 240 more days.
        approved = TODAY - dt.timedelta(days=300 if record.lapse == "expired" else 60)
        expires = approved + dt.timedelta(days=295 if record.lapse == "expired" else 300)
        approver = _DEPARTED if record.lapse == "approver" else record.unit.approver
        lines += [
            "netreg: static",
            "exception:",
            f"  approver: {approver}",
            "  justification: >-",
            "    The firmware supports neither OAuth2 nor SMTP AUTH; replacement is budgeted.",
            "  acknowledged:",
            "    - unauthenticated-smtp-is-legacy-and-insecure",
            "    - service-may-be-interrupted",
            "    - support-may-be-discontinued",
            f"  approved_on: {approved.isoformat()}",
            f"  expires_on: {expires.isoformat()}",
            "  mod_ticket: NS-12345",
            "  acknowledgment_ref: ACK-2026-0001",
        ]
    lines.append(f"status: {record.status}")
    if record.status != "active":
        lines += [
            f"status_reason: {_REASONS[record.status]}",
            f"status_date: {(TODAY - dt.timedelta(days=10)).isoformat()}",
        ]
    return "\n".join(lines) + "\n"
