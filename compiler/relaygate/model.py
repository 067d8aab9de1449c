"""Stage 3: the typed model, built from schema-valid documents.

Input: plain data that passed its schema. Output: frozen dataclasses. Builders
here never validate policy (that is ``relaygate.checks``); they only convert
types, so they may assume the schema's shapes. An address that does not parse
at all was already refused by the schema's format; an address that parses but
is not canonical is kept with its parsed form and reported by the checks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

import netaddr

from relaygate import addresses
from relaygate.errors import InternalError


class Kind(enum.StrEnum):
    COPIER = "copier"
    MFD = "mfd"
    SCANNER = "scanner"
    APPLICATION = "application"
    SERVER = "server"
    APPLIANCE = "appliance"


#: Kinds that may give a prefix rather than a single host address.
PREFIX_KINDS = frozenset({Kind.APPLICATION, Kind.SERVER})


class Auth(enum.StrEnum):
    OAUTH2 = "oauth2"
    CREDENTIALS = "credentials"
    IP = "ip"
    NONE = "none"


LEGACY_AUTH = frozenset({Auth.IP, Auth.NONE})
#: How Postfix looks up the null sender in access maps (smtpd_null_access_lookup_key,
#: pinned to this value by the compiled main.cf fragment).
NULL_SENDER_KEY = "<>"


class Status(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    RETIRED = "retired"


class Role(enum.StrEnum):
    DEAN = "dean"
    DEPARTMENT_HEAD = "department-head"
    DIRECTOR = "director"


#: The three statements the procedure requires the approver to acknowledge.
ACKNOWLEDGMENTS = (
    "unauthenticated-smtp-is-legacy-and-insecure",
    "service-may-be-interrupted",
    "support-may-be-discontinued",
)


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Approver:
    name: str
    email: str
    role: Role


@dataclass(frozen=True, slots=True)
class Exception_:
    """A legacy-access exception (``exception:`` in a record)."""

    approver: Approver
    justification: str
    acknowledged: tuple[str, ...]
    approved_on: dt.date
    expires_on: dt.date
    mod_ticket: str | None
    #: The ticket or document holding the approver's written acknowledgment.
    acknowledgment_ref: str = ""


@dataclass(frozen=True, slots=True)
class VolumeOverride:
    """A record's own daily limit (``volume_limit:``), replacing the computed one."""

    per_day: int
    justification: str


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    unit: str
    kind: Kind
    model: str
    fqdn: str
    address: str
    network: netaddr.IPNetwork
    auth: Auth
    account: str | None
    senders: tuple[str, ...]
    shares_senders_with: tuple[str, ...]
    volume_per_day: int
    requestor: Person
    technical_contact: Person
    netreg: str | None
    exception: Exception_ | None
    status: Status
    status_reason: str | None
    status_date: dt.date | None
    status_ticket: str | None
    source: str
    #: Why this record may send with the null sender (``allow_null_sender.reason``);
    #: None (the default) refuses the null sender for it on every relay path.
    null_sender_reason: str | None = None
    #: The record's own daily limit (``volume_limit``); None: computed from the site's
    #: ``volume_limits`` (``relaygate.limits``).
    volume_limit: VolumeOverride | None = None

    @property
    def allow_null_sender(self) -> bool:
        return self.null_sender_reason is not None

    @property
    def relay_senders(self) -> tuple[str, ...]:
        """The sender keys the relay allows this record, sorted: its senders, and the
        null sender's access-map key ``<>`` when it opts in (``allow_null_sender``)."""
        extra = (NULL_SENDER_KEY,) if self.allow_null_sender else ()
        return tuple(sorted((*self.senders, *extra)))

    @property
    def is_legacy(self) -> bool:
        return self.auth in LEGACY_AUTH

    @property
    def is_host(self) -> bool:
        return bool(self.network.prefixlen == (32 if self.network.version == 4 else 128))


@dataclass(frozen=True, slots=True)
class NamedPrefix:
    name: str
    prefix: netaddr.IPNetwork


@dataclass(frozen=True, slots=True)
class ModSegment:
    name: str
    vlan: int
    description: str
    prefixes: tuple[netaddr.IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class RelayHost:
    name: str
    fqdn: str
    addresses: tuple[netaddr.IPNetwork, ...]


#: The broadest campus network (IPv4, IPv6 prefix length) when site.yaml sets no
#: policy.broadest_campus_prefix: an organisation's own allocations, never the Internet.
DEFAULT_BROADEST_CAMPUS = (8, 32)


@dataclass(frozen=True, slots=True)
class Policy:
    max_exception_days: int
    expiry_warning_days: int
    inactivity_days: int
    min_justification_chars: int
    shortest_prefix_v4: int
    shortest_prefix_v6: int
    mass_change_share: float
    broadest_campus_v4: int = DEFAULT_BROADEST_CAMPUS[0]
    broadest_campus_v6: int = DEFAULT_BROADEST_CAMPUS[1]


#: site.yaml ``volume_limits`` defaults: factor, floor, max_per_day, postfwd port.
DEFAULT_VOLUME_FACTOR = "3"
DEFAULT_VOLUME_FLOOR = 50
DEFAULT_VOLUME_MAX = 10000
DEFAULT_VOLUME_PORT = 10040


@dataclass(frozen=True, slots=True)
class VolumeLimits:
    """site.yaml ``volume_limits``: how a record's daily limit is computed (``relaygate.limits``).

    ``factor`` is kept as the decimal text written in site.yaml (``"2.5"``), so a
    limit is computed exactly (``ceil(40 * 1.1)`` is 44, not 45 as in binary floats).
    """

    factor: str = DEFAULT_VOLUME_FACTOR
    floor: int = DEFAULT_VOLUME_FLOOR
    max_per_day: int = DEFAULT_VOLUME_MAX
    port: int = DEFAULT_VOLUME_PORT


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    campus_networks: tuple[NamedPrefix, ...]
    mod_segments: tuple[ModSegment, ...]
    relay_hosts: tuple[RelayHost, ...]
    relay_port: int
    submission_port: int
    sender_domains: frozenset[str]
    policy: Policy
    platform_team: str
    #: (display name, From address, Reply-To address or None) for review notices.
    notices_from: tuple[str, str, str | None] | None = None
    volume_limits: VolumeLimits = field(default_factory=VolumeLimits)

    def segment_index(self) -> addresses.PrefixIndex:
        """Which MOD segments hold an address: the one lookup the policy, the verifier,
        the plan and ``query`` all use (``first``: the segment a device is placed in)."""
        return addresses.PrefixIndex((s.name, s.prefixes) for s in self.mod_segments)


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    name: str
    owners: tuple[str, ...]
    approvers: tuple[Approver, ...]
    sender_domains: frozenset[str] = frozenset()  # empty: the site's domains, none of its own
    #: (approver email, code-host login) for approvers whose login units.yaml gives.
    logins: tuple[tuple[str, str], ...] = ()

    def login_of(self, email: str) -> str | None:
        return next((login for mail, login in self.logins if mail == email), None)


@dataclass(frozen=True, slots=True)
class Reservation:
    address: str
    fqdn: str
    type: str
    mac: str | None


#: Why the relay refuses an active record for a reason outside its own text,
#: keyed by the rule that found it. The value is the reason key the renderers
#: turn into reply text (they never take text from data).
LAPSE_REASONS: dict[str, str] = {
    "exception.expired": "expired",
    "legacy.netreg-no-reservation": "netreg",
    "legacy.netreg-mismatch": "netreg",
    "legacy.approver-not-listed": "approver",
    "legacy.approver-mismatch": "approver",
}


@dataclass(frozen=True, slots=True)
class Lapse:
    """An active record the relay refuses because time or outside data moved.

    Its exception expired, its NetReg reservation went or changed, or its
    approver left units.yaml. The record compiles to an explicit refusal with
    this reason; the rest of the inventory compiles as usual.
    """

    rule: str  # the finding's rule id (a key of LAPSE_REASONS)
    reason: str  # the reason key (a value of LAPSE_REASONS)
    since: dt.date | None  # the day it took effect, when known (the expiry date)

    @property
    def text(self) -> str:
        words = {
            "expired": "exception expired",
            "netreg": "NetReg reservation missing or changed",
            "approver": "approver not listed for the unit",
        }[self.reason]
        return f"{words} on {self.since.isoformat()}" if self.since else words


@dataclass(frozen=True, slots=True)
class Inventory:
    """A whole, checked inventory. ``devices`` is sorted by name.

    ``lapsed`` holds the active records refused for time or outside data, by
    their source path (``Device.source``).
    """

    site: Site
    units: dict[str, Unit]
    reservations: dict[str, Reservation]
    devices: tuple[Device, ...]
    lapsed: dict[str, Lapse] = field(default_factory=dict)

    def effective(self) -> Inventory:
        """The inventory as the relay enforces it: each lapsed active record suspended.

        A new value (records are never changed in place); the status reason is
        the lapse's reason key and the status date the day it took effect.
        Idempotent: a record already suspended is left as it is.
        """
        devices = tuple(
            dataclasses.replace(
                d,
                status=Status.SUSPENDED,
                status_reason=self.lapsed[d.source].reason,
                status_date=self.lapsed[d.source].since,
                status_ticket=None,
            )
            if d.status is Status.ACTIVE and d.source in self.lapsed
            else d
            for d in self.devices
        )
        return dataclasses.replace(self, devices=devices)


def _network(text: str) -> netaddr.IPNetwork:
    parsed = addresses.parse(text)
    if isinstance(parsed, str):  # the schema's format refuses these first
        raise InternalError(f"unparsable address {text!r} reached the model: {parsed}")
    return parsed.network


def _date(text: str | None) -> dt.date | None:
    return None if text is None else dt.date.fromisoformat(text)


def _person(data: dict[str, Any]) -> Person:
    return Person(name=data["name"], email=data["email"])


def _approver(data: dict[str, Any]) -> Approver:
    return Approver(name=data["name"], email=data["email"], role=Role(data["role"]))


def build_device(data: dict[str, Any], source: str) -> Device:
    exception = data.get("exception")
    status_date = _date(data.get("status_date"))
    return Device(
        name=data["name"],
        unit=data["unit"],
        kind=Kind(data["kind"]),
        model=data["model"],
        fqdn=data["fqdn"],
        address=data["address"],
        network=_network(data["address"]),
        auth=Auth(data["auth"]),
        account=data.get("account"),
        senders=tuple(data["senders"]),
        shares_senders_with=tuple(data.get("shares_senders_with", ())),
        volume_per_day=data["volume_per_day"],
        requestor=_person(data["requestor"]),
        technical_contact=_person(data["technical_contact"]),
        netreg=data.get("netreg"),
        exception=None
        if exception is None
        else Exception_(
            approver=_approver(exception["approver"]),
            justification=exception["justification"],
            acknowledged=tuple(exception["acknowledged"]),
            approved_on=dt.date.fromisoformat(exception["approved_on"]),
            expires_on=dt.date.fromisoformat(exception["expires_on"]),
            mod_ticket=exception.get("mod_ticket"),
            acknowledgment_ref=exception["acknowledgment_ref"],
        ),
        status=Status(data["status"]),
        status_reason=data.get("status_reason"),
        status_date=status_date,
        status_ticket=data.get("status_ticket"),
        source=source,
        null_sender_reason=(data.get("allow_null_sender") or {}).get("reason"),
        volume_limit=_volume_override(data.get("volume_limit")),
    )


def _volume_override(data: dict[str, Any] | None) -> VolumeOverride | None:
    if data is None:
        return None
    return VolumeOverride(per_day=data["per_day"], justification=data["justification"])


#: The top-level fields of a device record (its schema's ``properties``).
DEVICE_FIELDS = frozenset(
    {
        "name",
        "unit",
        "kind",
        "model",
        "fqdn",
        "address",
        "auth",
        "account",
        "senders",
        "shares_senders_with",
        "volume_per_day",
        "requestor",
        "technical_contact",
        "netreg",
        "exception",
        "status",
        "status_reason",
        "status_date",
        "status_ticket",
        "allow_null_sender",
        "volume_limit",
    }
)

#: Stand-ins for required fields with a schema error, so the rest of the record can
#: be built and checked. No check that reads such a field sees the record, no
#: cross-record rule compares it, and the record never reaches a compiled model.
_STAND_INS: dict[str, Any] = {
    "name": "(invalid)",
    "unit": "(invalid)",
    "kind": "server",
    "model": "(invalid)",
    "fqdn": "invalid.invalid",
    "address": "192.0.2.0/32",
    "auth": "oauth2",
    "senders": [],
    "volume_per_day": 0,
    "requestor": {"name": "(invalid)", "email": "invalid@invalid.invalid"},
    "technical_contact": {"name": "(invalid)", "email": "invalid@invalid.invalid"},
    "status": "active",
}


def build_partial_device(data: dict[str, Any], invalid: frozenset[str], source: str) -> Device:
    """A device from a record whose ``invalid`` top-level fields failed their schema.

    The other fields passed theirs and are taken as written; an ``invalid`` field
    holds a stand-in (a required one) or is left out (an optional one). Only for
    checks that read none of the ``invalid`` fields.
    """
    partial = {k: v for k, v in data.items() if k not in invalid}
    for name in invalid:
        if name in _STAND_INS:
            partial[name] = _STAND_INS[name]
    return build_device(partial, source)


def build_site(data: dict[str, Any]) -> Site:
    policy = data["policy"]
    relay = data["relay"]
    return Site(
        name=data["name"],
        campus_networks=tuple(
            NamedPrefix(item["name"], _network(item["prefix"])) for item in data["campus_networks"]
        ),
        mod_segments=tuple(
            ModSegment(
                name=item["name"],
                vlan=item["vlan"],
                description=item.get("description", ""),
                prefixes=tuple(_network(p) for p in item["prefixes"]),
            )
            for item in data["mod_segments"]
        ),
        relay_hosts=tuple(
            RelayHost(
                name=item["name"],
                fqdn=item["fqdn"],
                addresses=tuple(_network(a) for a in item["addresses"]),
            )
            for item in relay["hosts"]
        ),
        relay_port=relay["relay_port"],
        submission_port=relay["submission_port"],
        sender_domains=frozenset(data["sender_domains"]),
        policy=Policy(
            max_exception_days=policy["max_exception_days"],
            expiry_warning_days=policy["expiry_warning_days"],
            inactivity_days=policy["inactivity_days"],
            min_justification_chars=policy["min_justification_chars"],
            shortest_prefix_v4=policy["shortest_prefix"]["ipv4"],
            shortest_prefix_v6=policy["shortest_prefix"]["ipv6"],
            mass_change_share=float(policy["mass_change_share"]),
            broadest_campus_v4=policy.get("broadest_campus_prefix", {}).get(
                "ipv4", DEFAULT_BROADEST_CAMPUS[0]
            ),
            broadest_campus_v6=policy.get("broadest_campus_prefix", {}).get(
                "ipv6", DEFAULT_BROADEST_CAMPUS[1]
            ),
        ),
        platform_team=data["review"]["platform_team"],
        notices_from=_notices_from(data["review"].get("notices")),
        volume_limits=_volume_limits(data.get("volume_limits") or {}),
    )


def _volume_limits(data: dict[str, Any]) -> VolumeLimits:
    factor = data.get("factor", DEFAULT_VOLUME_FACTOR)
    # repr() of a YAML float is the shortest text that reads back as it: the decimal
    # the site wrote (2.5 -> "2.5"); an integer factor stays an integer ("3").
    return VolumeLimits(
        factor=str(factor) if isinstance(factor, int | str) else repr(float(factor)),
        floor=data.get("floor", DEFAULT_VOLUME_FLOOR),
        max_per_day=data.get("max_per_day", DEFAULT_VOLUME_MAX),
        port=data.get("port", DEFAULT_VOLUME_PORT),
    )


def _notices_from(data: dict[str, Any] | None) -> tuple[str, str, str | None] | None:
    if data is None:
        return None
    return (data["from_name"], data["from"], data.get("reply_to"))


def build_units(data: dict[str, Any]) -> dict[str, Unit]:
    return {
        unit_id: Unit(
            id=unit_id,
            name=item["name"],
            owners=tuple(item["owners"]),
            approvers=tuple(_approver(a) for a in item["approvers"]),
            logins=tuple((a["email"], a["login"]) for a in item["approvers"] if "login" in a),
            sender_domains=frozenset(item.get("sender_domains", ())),
        )
        for unit_id, item in sorted(data["units"].items())
    }


def build_reservations(data: dict[str, Any]) -> list[Reservation]:
    return [
        Reservation(
            address=item["address"], fqdn=item["fqdn"], type=item["type"], mac=item.get("mac")
        )
        for item in data["reservations"]
    ]
