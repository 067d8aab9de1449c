"""A synthetic but valid relaygate inventory of any size, for benchmarks.

``generate(root, records, seed)`` writes ``site.yaml``, ``units.yaml``,
``netreg.yaml`` and ``records`` device files under ``root``. The inventory is
valid as of ``AS_OF`` (2026-11-29): ``relaygate validate`` reports no errors
and no warnings. The same seed always gives the same bytes.

Shape (close to a large campus):

* 20 units of very different sizes, each with its own sender domain,
  1-3 approvers and a pool of requestors and technical contacts;
* copiers, MFDs, scanners and appliances (about 60 %, mostly legacy) and
  applications and servers (about 40 %, mostly authenticated, some with
  small prefixes); about 40 % of all records are legacy (``ip``/``none``);
* about 87 % active, the rest suspended, revoked or retired;
* about 10 % IPv6;
* legacy devices live in per-unit MOD segments (one /22 and one /64 for up
  to 1000 legacy devices each) and each has a NetReg reservation; NetReg
  also lists reservations of some authenticated devices and of hosts that
  never send mail.

Address plan (nothing can collide; relay hosts sit in 10.1.0.0/24 and
2001:db8:1::/64, outside every device region)::

    10.16.0.0/12       authenticated single hosts        2001:db8:1000::/48
    10.32.0.0/12       authenticated prefixes (/28 slots) 2001:db8:2000::/48
    10.48.0.0/12       NetReg-only hosts (no mail)
    10.128.0.0/9       MOD segments, a /22 each           2001:db8:8000:<n>::/64

Usable from other benchmarks: ``from synth import generate``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import random
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

AS_OF = dt.date(2026, 11, 29)

_DEVICE_HEADER = "# yaml-language-server: $schema=../../../schemas/device.schema.json\n"
_SITE_HEADER = "# yaml-language-server: $schema=../schemas/site.schema.json\n"
_UNITS_HEADER = "# yaml-language-server: $schema=../schemas/units.schema.json\n"
_NETREG_HEADER = "# yaml-language-server: $schema=../schemas/netreg.schema.json\n"

_V4_AUTH_HOSTS = int(ipaddress.IPv4Address("10.16.0.0"))
_V4_AUTH_PREFIXES = int(ipaddress.IPv4Address("10.32.0.0"))
_V4_NETREG_ONLY = int(ipaddress.IPv4Address("10.48.0.0"))
_V4_MOD = int(ipaddress.IPv4Address("10.128.0.0"))
_V6_AUTH_HOSTS = int(ipaddress.IPv6Address("2001:db8:1000::"))
_V6_AUTH_PREFIXES = int(ipaddress.IPv6Address("2001:db8:2000::"))
_V6_MOD = int(ipaddress.IPv6Address("2001:db8:8000::"))

_LEGACY_PER_SEGMENT = 1000  # of the 1022 usable hosts of a /22
_FIRST_VLAN = 100
_MAX_VLAN = 4094

# (id, short prefix, sender subdomain, display name, relative size)
_UNITS: tuple[tuple[str, str, str, str, float], ...] = (
    ("medicine", "med", "med", "College of Medicine", 14.0),
    ("engineering", "eng", "eng", "College of Engineering", 11.0),
    ("arts-sciences", "as", "as", "College of Arts and Sciences", 10.0),
    ("oit", "oit", "oit", "Office of Information Technology", 9.0),
    ("libraries", "lib", "lib", "University Libraries", 6.0),
    ("facilities", "fac", "facilities", "Facilities Services", 6.0),
    ("business-office", "bus", "business", "Business Office", 5.0),
    ("agriculture", "ag", "ag", "College of Agriculture", 5.0),
    ("veterinary", "vet", "vet", "College of Veterinary Medicine", 4.0),
    ("nursing", "nur", "nursing", "College of Nursing", 3.5),
    ("pharmacy", "phr", "pharmacy", "College of Pharmacy", 3.0),
    ("law", "law", "law", "College of Law", 2.5),
    ("education", "coe", "coe", "College of Education", 2.5),
    ("business-school", "biz", "biz", "Haslam College of Business", 3.0),
    ("athletics", "ath", "athletics", "Athletics Department", 2.0),
    ("housing", "hou", "housing", "University Housing", 3.0),
    ("police", "pol", "police", "University Police", 1.5),
    ("registrar", "reg", "registrar", "Office of the Registrar", 2.0),
    ("research", "res", "research", "Office of Research", 4.0),
    ("student-health", "sh", "health", "Student Health Center", 2.0),
)

_FIRST = (
    "Alex", "Morgan", "Priya", "Tomas", "Helen", "Samuel", "Jordan", "Chris", "Dana",
    "Riley", "Sam", "Pat", "Kim", "Avery", "Jamie", "Taylor", "Casey", "Nina", "Quinn",
    "Drew", "Harper", "Jesse", "Robin", "Alexis", "Lee", "Rowan", "Emery", "Parker",
    "Skyler", "Reese", "Hayden", "Sasha", "Mina", "Omar", "Lucia", "Wei", "Aisha", "Mateo",
)  # fmt: skip
_LAST = (
    "Dean", "Ellis", "Raman", "Varga", "Okafor", "Ortiz", "Blake", "Nakamura", "Whitfield",
    "Chen", "Roe", "Doe", "Tran", "Brooks", "Novak", "Reed", "Morgan", "Patel", "Foster",
    "Hammond", "Singh", "Kim", "Hale", "Grant", "Alvarez", "Okonkwo", "Lindqvist", "Moreau",
    "Haddad", "Kowalski", "Nguyen", "Baptiste", "Yamamoto", "Fischer", "Mensah", "Rossi",
)  # fmt: skip

_BUILDINGS = (
    "hodges", "perkins", "rhodes", "ayres", "dabney", "walters", "claxton", "strong",
    "hesler", "jessie", "mckenzie", "presidential", "andy-holt", "conference", "ellington",
    "greve", "haslam", "min-kao", "nielsen", "senter", "stokely", "thornton", "zeanah",
)  # fmt: skip

_MODELS: dict[str, tuple[str, ...]] = {
    "copier": (
        "Xerox AltaLink C8170", "Ricoh IM C4500", "Ricoh MP C3004", "Kyocera TASKalfa 5054ci",
        "Canon imageRUNNER ADVANCE C5550i", "Sharp MX-4071", "Konica Minolta bizhub C450i",
    ),
    "mfd": (
        "Canon imageRUNNER ADVANCE 4545i", "HP Color LaserJet Enterprise MFP M776",
        "Brother MFC-L9570CDW", "Sharp MX-3071", "Lexmark CX943", "Epson WorkForce Pro WF-C879R",
    ),
    "scanner": (
        "Epson WorkForce DS-790WN", "Canon imageFORMULA ScanFront 400", "Fujitsu fi-7600",
        "Kodak Alaris ScanStation 730EX Plus", "Zeutschel OS 12002",
    ),
    "appliance": (
        "APC Smart-UPS SRT with AP9630 NMC2", "Setra CEMS gateway",
        "Rees Scientific Centron Presidio", "SenSource Vea people counter gateway",
        "Tridium JACE 8000", "Schneider PowerLogic ION9000 gateway", "Axis P3245 camera",
    ),
    "application": (
        "OCLC ILLiad 9.2", "REDCap 14 LTS", "Cachet status page (self-hosted)",
        "Appointment reminder service (in-house)", "Capstone project portal (Django)",
        "Qualtrics relay connector", "Canvas LMS notification worker", "TeamDynamix connector",
    ),
    "server": (
        "Slurm controller (Rocky Linux 9)", "Zabbix 7.0 server cluster",
        "PaperCut MF application server", "Banner job submission host (RHEL 9)",
        "PACS report distribution server", "Veeam backup server", "Ubuntu 24.04 cron host",
    ),
}  # fmt: skip

_KIND_WORDS: dict[str, tuple[str, ...]] = {
    "copier": ("copier",),
    "mfd": ("mfd",),
    "scanner": ("scanner", "scan"),
    "appliance": ("ups", "monitor", "gateway", "counter", "sensor", "camera"),
    "application": ("portal", "notify", "reminders", "forms", "survey", "tickets", "lms"),
    "server": ("cron", "backup", "sched", "monitor", "jobs", "print"),
}

# kind -> (share of records, share of that kind that is legacy); about 40 % legacy overall
_KINDS: tuple[tuple[str, float, float], ...] = (
    ("copier", 0.15, 0.65),
    ("mfd", 0.18, 0.55),
    ("scanner", 0.10, 0.60),
    ("appliance", 0.17, 0.60),
    ("application", 0.20, 0.05),
    ("server", 0.20, 0.15),
)

# status -> share, reasons
_STATUSES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("active", 0.87, ()),
    ("suspended", 0.04, ("investigation", "spam", "phishing", "compromised")),
    ("revoked", 0.03, ("spam", "phishing", "compromised", "expired", "request")),
    ("retired", 0.06, ("inactive", "request")),
)

_WHY = (
    "The firmware on this unit is no longer updated by the vendor and supports neither OAuth2 "
    "nor SMTP AUTH.",
    "The controller board cannot take firmware newer than the release that predates SMTP "
    "authentication.",
    "The vendor manages this device under a service contract and has not enabled SMTP "
    "authentication on this model.",
    "Its scan-to-email module has no authentication settings and cannot be upgraded without "
    "voiding the support agreement.",
    "The embedded controller only relays by IP address; the vendor has announced no update.",
    "This is validated equipment whose configuration may not change until the next "
    "certification cycle.",
)
_PURPOSE = (
    "{unit} staff scan documents to email from this device.",
    "Alarm and status messages from this device must reach on-call staff of {unit}.",
    "{unit} depends on the daily reports this device sends by email.",
    "Front-desk staff of {unit} use it to send scans to students and visitors.",
)
_PLAN = (
    "Replacement is budgeted for FY{year}.",
    "The lease ends in {month} {year2} and the successor supports OAuth2.",
    "It is replaced during the building renovation planned for {year2}.",
    "A supported model is on order and the exception ends when it is installed.",
)
_MONTHS = ("January", "March", "June", "August", "October", "December")
_COMMENTS = (
    "# Moved to its current address during the 2026 network refresh.",
    "# Owner confirmed during the annual access retention review.",
    "# Volume is an estimate from the relay logs of the last quarter.",
    "# Shared by several offices on this floor.",
)
_NETREG_NOTES = ("no mail", "prints only", "HL7 only; no mail", "lab instrument; no mail")
_OUIS = ("00:1b:a9", "9c:93:4e", "00:50:c2", "f4:81:39", "00:26:73", "3c:52:82", "b4:45:06")


@dataclass(slots=True)
class _Person:
    name: str
    email: str


@dataclass(slots=True)
class _Approver:
    name: str
    email: str
    role: str


@dataclass(slots=True)
class _Unit:
    id: str
    prefix: str
    domain: str
    title: str
    weight: float
    approvers: list[_Approver] = field(default_factory=list)
    staff: list[_Person] = field(default_factory=list)
    legacy_count: int = 0
    segments: list[int] = field(default_factory=list)  # global segment numbers


@dataclass(slots=True)
class _Reservation:
    address: str
    sort_key: tuple[int, int]
    fqdn: str
    type: str
    mac: str | None
    note: str | None = None


@dataclass(slots=True)
class _Allocator:
    """Hands out addresses from disjoint regions; never the same one twice."""

    v4_hosts: int = 0
    v6_hosts: int = 0
    v4_prefixes: int = 0
    v6_prefixes: int = 0
    netreg_only: int = 0
    macs: int = 0
    next_segment: int = 0

    def v4_host(self) -> str:
        n = self.v4_hosts
        self.v4_hosts += 1
        return str(ipaddress.IPv4Address(_V4_AUTH_HOSTS + (n // 250) * 256 + 4 + n % 250))

    def v6_host(self) -> str:
        n = self.v6_hosts
        self.v6_hosts += 1
        return str(ipaddress.IPv6Address(_V6_AUTH_HOSTS + ((n // 4000) << 64) + 0x10 + n % 4000))

    def v4_prefix(self, length: int) -> str:
        n = self.v4_prefixes
        self.v4_prefixes += 1
        return f"{ipaddress.IPv4Address(_V4_AUTH_PREFIXES + n * 16)}/{length}"

    def v6_prefix(self, length: int) -> str:
        n = self.v6_prefixes
        self.v6_prefixes += 1
        return f"{ipaddress.IPv6Address(_V6_AUTH_PREFIXES + n * 16)}/{length}"

    def netreg_only_host(self) -> str:
        n = self.netreg_only
        self.netreg_only += 1
        return str(ipaddress.IPv4Address(_V4_NETREG_ONLY + (n // 250) * 256 + 4 + n % 250))

    def mac(self, rng: random.Random) -> str:
        n = self.macs
        self.macs += 1
        tail = ":".join(f"{(n >> shift) & 0xFF:02x}" for shift in (16, 8, 0))
        return f"{rng.choice(_OUIS)}:{tail}"

    def legacy_address(self, unit: _Unit, v6: bool) -> str:
        """The next address in one of the unit's MOD segments (a new segment when full)."""
        slot = unit.legacy_count % _LEGACY_PER_SEGMENT
        if slot == 0:
            if _FIRST_VLAN + self.next_segment > _MAX_VLAN:
                raise ValueError("too many legacy devices for the VLAN range")
            unit.segments.append(self.next_segment)
            self.next_segment += 1
        unit.legacy_count += 1
        segment = unit.segments[-1]
        if v6:
            return str(ipaddress.IPv6Address(_V6_MOD + (segment << 64) + 0x100 + slot))
        return str(ipaddress.IPv4Address(_V4_MOD + segment * 1024 + 2 + slot))


def _segment_prefixes(segment: int) -> tuple[str, str]:
    v4 = f"{ipaddress.IPv4Address(_V4_MOD + segment * 1024)}/22"
    v6 = f"{ipaddress.IPv6Address(_V6_MOD + (segment << 64))}/64"
    return v4, v6


def _address_key(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return parsed.version, int(parsed)


def _pick(rng: random.Random, table: tuple[tuple[str, float, tuple[str, ...]], ...]) -> str:
    return rng.choices([row[0] for row in table], weights=[row[1] for row in table])[0]


def _make_units(rng: random.Random) -> list[_Unit]:
    units: list[_Unit] = []
    used_emails: set[str] = set()

    def person(unit_prefix: str) -> tuple[str, str]:
        while True:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            base = f"{first[0]}{last}".lower()
            email = f"{base}@example.edu"
            suffix = 2
            while email in used_emails:
                email = f"{base}{suffix}@example.edu"
                suffix += 1
            used_emails.add(email)
            return f"{first} {last}", email

    for unit_id, prefix, sub, title, weight in _UNITS:
        unit = _Unit(unit_id, prefix, f"{sub}.example.edu", title, weight)
        roles = ["dean" if title.startswith("College") else "director"]
        roles += rng.sample(["department-head", "director", "department-head"], rng.randint(0, 2))
        for role in roles:
            name, email = person(prefix)
            if role != "director" and rng.random() < 0.7:
                name = f"Dr. {name}"
            unit.approvers.append(_Approver(name, email, role))
        for _ in range(rng.randint(4, 9)):
            name, email = person(prefix)
            unit.staff.append(_Person(name, email))
        units.append(unit)
    return units


def _justification(rng: random.Random, unit: _Unit) -> str:
    year = rng.randint(27, 29)
    text = " ".join(
        (
            rng.choice(_PURPOSE).format(unit=unit.title),
            rng.choice(_WHY),
            rng.choice(_PLAN).format(year=year, year2=2000 + year, month=rng.choice(_MONTHS)),
        )
    )
    return "\n".join(textwrap.wrap(text, width=84, initial_indent="    ", subsequent_indent="    "))


def _exception_dates(rng: random.Random, status: str, status_date: dt.date | None) -> list[str]:
    """approved_on and expires_on: valid terms; active ones outside the warning window."""
    if status == "active":
        term = rng.randint(180, 366)
        left = rng.randint(31, term)  # expires 31+ days after AS_OF, approved on or before it
        expires = AS_OF + dt.timedelta(days=left)
        approved = expires - dt.timedelta(days=term)
    else:
        assert status_date is not None
        approved = status_date - dt.timedelta(days=rng.randint(0, 300))
        expires = approved + dt.timedelta(days=rng.randint(90, 366))
    return [f"  approved_on: {approved.isoformat()}", f"  expires_on: {expires.isoformat()}"]


def _volume(rng: random.Random, kind: str) -> int:
    if kind in ("application", "server"):
        return min(100_000, max(1, int(rng.lognormvariate(5.0, 1.2))))
    return min(5_000, max(1, int(rng.lognormvariate(2.8, 1.0))))


def generate(root: Path, records: int, seed: int = 0) -> None:
    """Write a valid inventory of ``records`` devices under ``root`` (created if missing)."""
    if records < 0:
        raise ValueError("records must be >= 0")
    rng = random.Random(seed)
    units = _make_units(rng)
    alloc = _Allocator()
    reservations: list[_Reservation] = []
    width = max(5, len(str(records)))
    devices_dir = root / "devices"
    for unit in units:
        (devices_dir / unit.id).mkdir(parents=True, exist_ok=True)

    kind_names = [k[0] for k in _KINDS]
    kind_weights = [k[1] for k in _KINDS]
    legacy_share = {k[0]: k[2] for k in _KINDS}
    reasons = {s[0]: s[2] for s in _STATUSES}
    unit_weights = [u.weight for u in units]

    for index in range(records):
        unit = rng.choices(units, weights=unit_weights)[0]
        kind = rng.choices(kind_names, weights=kind_weights)[0]
        legacy = rng.random() < legacy_share[kind]
        status = _pick(rng, _STATUSES)
        v6 = rng.random() < 0.10
        word = rng.choice(_KIND_WORDS[kind])
        serial = f"{index:0{width}d}"
        if kind in ("application", "server"):
            name = f"{unit.prefix}-{word}-{serial}"
        else:
            name = f"{unit.prefix}-{rng.choice(_BUILDINGS)}-{rng.randint(1, 6)}f-{word}-{serial}"
        fqdn = f"{name}.{unit.domain}"

        if legacy:
            address = alloc.legacy_address(unit, v6)
        elif kind in ("application", "server") and rng.random() < 0.25:
            if v6:
                address = alloc.v6_prefix(rng.choice((124, 125, 126)))
            else:
                address = alloc.v4_prefix(rng.choice((28, 29, 30)))
        else:
            address = alloc.v6_host() if v6 else alloc.v4_host()

        auth = rng.choice(("ip", "none")) if legacy else rng.choice(("oauth2", "credentials"))
        requestor, contact = rng.choice(unit.staff), rng.choice(unit.staff)
        local = name.removeprefix(f"{unit.prefix}-")
        senders = [f"{local}@{unit.domain}"]
        if rng.random() < 0.08:
            senders.append(f"{local}-noreply@{rng.choice((unit.domain, 'example.edu'))}")

        netreg: str | None = None
        if legacy or ("/" not in address and rng.random() < 0.3):
            dhcp = kind in ("copier", "mfd", "scanner") and rng.random() < 0.6
            netreg = "static-dhcp" if dhcp else "static"
            reservations.append(
                _Reservation(
                    address,
                    _address_key(address),
                    fqdn,
                    netreg,
                    alloc.mac(rng) if dhcp else None,
                )
            )

        status_date: dt.date | None = None
        if status != "active":
            status_date = AS_OF - dt.timedelta(days=rng.randint(0, 420))

        lines = [_DEVICE_HEADER.rstrip("\n")]
        if rng.random() < 0.1:
            lines.append(rng.choice(_COMMENTS))
        lines += [
            f"name: {name}",
            f"unit: {unit.id}",
            f"kind: {kind}",
            f"model: {rng.choice(_MODELS[kind])}",
            f"fqdn: {fqdn}",
            f"address: {address}",
            f"auth: {auth}",
        ]
        if not legacy:
            lines.append(f"account: svc-{name}@example.edu")
        lines.append("senders:")
        lines += [f"  - {sender}" for sender in senders]
        lines += [
            f"volume_per_day: {_volume(rng, kind)}",
            f"requestor: {{name: {requestor.name}, email: {requestor.email}}}",
            f"technical_contact: {{name: {contact.name}, email: {contact.email}}}",
        ]
        if netreg is not None:
            lines.append(f"netreg: {netreg}")
        if legacy:
            approver = rng.choice(unit.approvers)
            lines += [
                "exception:",
                f"  approver: {{name: {approver.name}, email: {approver.email}, "
                f"role: {approver.role}}}",
                "  justification: >-",
                _justification(rng, unit),
                "  acknowledged:",
                "    - unauthenticated-smtp-is-legacy-and-insecure",
                "    - service-may-be-interrupted",
                "    - support-may-be-discontinued",
                *_exception_dates(rng, status, status_date),
                f"  mod_ticket: NS-{10000 + index}",
                f"  acknowledgment_ref: ACK-{10000 + index}",
            ]
        lines.append(f"status: {status}")
        if status_date is not None:
            lines += [
                f"status_reason: {rng.choice(reasons[status])}",
                f"status_date: {status_date.isoformat()}",
            ]
            if rng.random() < 0.6:
                lines.append(f"status_ticket: {rng.choice(('SEC', 'NS', 'MAIL'))}-{4000 + index}")
        (devices_dir / unit.id / f"{name}.yaml").write_text("\n".join(lines) + "\n", "utf-8")

    # Hosts NetReg knows that never send mail through the relay.
    for index in range(records // 10):
        address = alloc.netreg_only_host()
        dhcp = rng.random() < 0.5
        reservations.append(
            _Reservation(
                address,
                _address_key(address),
                f"host-{index:0{width}d}.{rng.choice(units).domain}",
                "static-dhcp" if dhcp else "static",
                alloc.mac(rng) if dhcp else None,
                rng.choice(_NETREG_NOTES) if rng.random() < 0.2 else None,
            )
        )

    for unit in units:  # every unit has a MOD segment, even without legacy devices yet
        if not unit.segments:
            unit.segments.append(alloc.next_segment)
            alloc.next_segment += 1
    _write_site(root, units)
    _write_units(root, units)
    _write_netreg(root, reservations)


def _write_site(root: Path, units: list[_Unit]) -> None:
    lines = [
        _SITE_HEADER.rstrip("\n"),
        "# Synthetic campus for benchmarks (benchmarks/synth.py).",
        "name: Synthetic State University",
        "campus_networks:",
        "  - {name: campus-v4, prefix: 10.0.0.0/8}",
        '  - {name: campus-v6, prefix: "2001:db8::/32"}',
        "mod_segments:",
    ]
    for unit in units:
        for number, segment in enumerate(unit.segments, start=1):
            v4, v6 = _segment_prefixes(segment)
            lines += [
                f"  - name: mod-{unit.id}-{number}",
                f"    vlan: {_FIRST_VLAN + segment}",
                f"    description: MOD segment {number} for {unit.title} legacy devices",
                f'    prefixes: [{v4}, "{v6}"]',
            ]
    lines += [
        "relay:",
        "  hosts:",
        "    - name: smtp-relay-1",
        "      fqdn: smtp-relay-1.example.edu",
        '      addresses: [10.1.0.25, "2001:db8:1::25"]',
        "    - name: smtp-relay-2",
        "      fqdn: smtp-relay-2.example.edu",
        '      addresses: [10.1.0.26, "2001:db8:1::26"]',
        "  relay_port: 25",
        "  submission_port: 587",
        "sender_domains:",
        "  - example.edu",
        *(f"  - {unit.domain}" for unit in units),
        "policy:",
        "  max_exception_days: 366",
        "  expiry_warning_days: 30",
        "  inactivity_days: 365",
        "  min_justification_chars: 40",
        "  shortest_prefix: {ipv4: 28, ipv6: 124}",
        "  mass_change_share: 0.3",
        "review:",
        '  platform_team: "@example-edu/mail-platform"',
    ]
    (root / "site.yaml").write_text("\n".join(lines) + "\n", "utf-8")


def _write_units(root: Path, units: list[_Unit]) -> None:
    lines = [_UNITS_HEADER.rstrip("\n"), "units:"]
    for unit in units:
        lines += [
            f"  {unit.id}:",
            f"    name: {unit.title}",
            f'    owners: ["@example-edu/{unit.id}-it"]',
            "    approvers:",
            *(
                f"      - {{name: {a.name}, email: {a.email}, role: {a.role}}}"
                for a in unit.approvers
            ),
        ]
    (root / "units.yaml").write_text("\n".join(lines) + "\n", "utf-8")


def _write_netreg(root: Path, reservations: list[_Reservation]) -> None:
    lines = [
        _NETREG_HEADER.rstrip("\n"),
        "# Synthetic NetReg export (benchmarks/synth.py).",
        f"exported_on: {(AS_OF - dt.timedelta(days=9)).isoformat()}",
        "reservations:",
    ]
    for item in sorted(reservations, key=lambda r: r.sort_key):
        address = f'"{item.address}"' if ":" in item.address else item.address
        text = f"  - {{address: {address}, fqdn: {item.fqdn}, type: {item.type}"
        if item.mac is not None:
            text += f', mac: "{item.mac}"'
        if item.note is not None:
            text += f', note: "{item.note}"'
        lines.append(text + "}")
    (root / "netreg.yaml").write_text("\n".join(lines) + "\n", "utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write an inventory (``--out``) or, without it, check a small one validates cleanly."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write here instead of a checked temp dir")
    args = parser.parse_args(argv)
    if args.out is not None:
        generate(args.out, args.records, args.seed)
        return 0
    from relaygate.pipeline import validate  # noqa: PLC0415 - only the self-check needs it

    with tempfile.TemporaryDirectory(prefix="relaygate-synth-") as tmp:
        generate(Path(tmp), args.records, args.seed)
        result = validate(Path(tmp), AS_OF)
        for finding in result.findings[:20]:
            print(finding, file=sys.stderr)
        print(
            f"{args.records} records: {result.errors} errors, {result.warnings} warnings, "
            f"{result.files_checked} files"
        )
        return 1 if result.errors or result.warnings else 0


if __name__ == "__main__":
    sys.exit(main())
