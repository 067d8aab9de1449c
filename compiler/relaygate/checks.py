"""Stage 4: every rule of the procedure, as checks over the typed model.

Input: the site, units and NetReg models (each may be missing when its file
was invalid), the devices, their documents (for positions) and the as-of
date. A device whose record failed its schema in some top-level fields
(``Context.invalid``) holds stand-ins there: no record check that reads such a
field sees it (each check declares what it reads), and no cross-record rule
compares it by such a field. Output: findings. A check never raises for
bad data; an exception escaping a check is a bug and fails the run closed.

Record checks look at one device; inventory checks compare devices with each
other. Retired records are history: they keep their name but give up their
address, FQDN and account, so those may be reused.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import netaddr

from relaygate import addresses
from relaygate.findings import Finding
from relaygate.load import FORBIDDEN_CHARACTERS, Document, Pointer
from relaygate.model import (
    ACKNOWLEDGMENTS,
    DEVICE_FIELDS,
    PREFIX_KINDS,
    Device,
    Reservation,
    Site,
    Status,
    Unit,
)


@dataclass(frozen=True, slots=True)
class Context:
    as_of: dt.date
    site: Site | None
    units: dict[str, Unit] | None
    reservations: dict[str, Reservation] | None
    site_doc: Document | None
    docs: dict[str, Document]  # device documents by display path
    #: The top-level fields with a schema error, by display path, of the records
    #: that have some (they are checked without those fields).
    invalid: dict[str, frozenset[str]] = field(default_factory=dict)

    def invalid_of(self, device: Device) -> frozenset[str]:
        """The fields of ``device`` that failed their schema (none for most records)."""
        return self.invalid.get(device.source, frozenset())

    def usable(self, devices: Iterable[Device], *reads: str) -> list[Device]:
        """The ``devices`` whose fields ``reads`` all passed their schema."""
        if not self.invalid:  # the usual case: every record passed its schema
            return list(devices)
        wanted = frozenset(reads)
        return [d for d in devices if not self.invalid_of(d) & wanted]


_KIND_LABEL = {
    "copier": "a copier",
    "mfd": "an MFD",
    "scanner": "a scanner",
    "appliance": "an appliance",
    "application": "an application",
    "server": "a server",
}

#: Free-text fields that may span lines; every other value is one line.
MULTILINE_FIELDS = frozenset({"justification", "description", "note"})

RecordCheck = Callable[[Device, Document, Context], Iterator[Finding]]
#: Each record check with the top-level record fields it reads.
_RECORD_CHECKS: list[tuple[frozenset[str], RecordCheck]] = []


def record_check(*reads: str) -> Callable[[RecordCheck], RecordCheck]:
    """Register a check that looks at one device record and reads the fields ``reads``.

    A record with a schema error in one of those fields is not given to the check:
    its value there is a stand-in, and a finding about it would be false.
    """
    unknown = set(reads) - DEVICE_FIELDS
    if unknown:  # pragma: no cover - a typo in a declaration, caught at import
        raise ValueError(f"record check reads unknown fields {sorted(unknown)}")

    def register(function: RecordCheck) -> RecordCheck:
        _RECORD_CHECKS.append((frozenset(reads), function))
        return function

    return register


# --- text ---------------------------------------------------------------------


def _strings(value: Any, pointer: Pointer) -> Iterator[tuple[Pointer, str]]:
    if isinstance(value, str):
        yield pointer, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):  # most values: no nested generator for them
                yield (*pointer, key), item
            else:
                yield from _strings(item, (*pointer, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*pointer, index))


#: A value with none of these characters and no surrounding whitespace gets no
#: text finding below; the rest are looked at one check at a time.
_NEEDS_A_LOOK = re.compile("[\r\n\t" + FORBIDDEN_CHARACTERS.pattern.removeprefix("["))


def text_checks(document: Document) -> Iterator[Finding]:
    """No value may carry invisible characters or surrounding whitespace.

    Characters written literally were already reported by the loader at their
    exact position; this catches those written as escapes ("\\u202e").
    """
    literal: set[str] | None = None
    for pointer, value in _strings(document.data, ()):
        if value == value.strip() and not _NEEDS_A_LOOK.search(value):
            continue
        field = "/".join(map(str, pointer))
        if value != value.strip():
            yield document.finding("text.surrounding-whitespace", pointer, f"{field}: {value!r}")
        if "\r" in value:
            yield document.finding(
                "text.forbidden-character", pointer, f"{field}: carriage return in a value"
            )
        elif "\n" in value.strip() and pointer[-1] not in MULTILINE_FIELDS:
            yield document.finding(
                "text.forbidden-character", pointer, f"{field}: line break in a one-line value"
            )
        found = FORBIDDEN_CHARACTERS.findall(value)
        if found:
            if literal is None:
                literal = set(FORBIDDEN_CHARACTERS.findall(document.text))
            escaped = [c for c in found if c not in literal]
            if escaped:
                yield document.finding(
                    "text.forbidden-character",
                    pointer,
                    f"{field}: character U+{ord(escaped[0]):04X}",
                )
        elif "\t" in value:
            yield document.finding("text.forbidden-character", pointer, f"{field}: tab character")


# --- identity -----------------------------------------------------------------


@record_check("name", "unit")
def _identity(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    stem = doc.path.name.removesuffix(".yaml")
    if device.name != stem:
        yield doc.finding(
            "identity.name-mismatch",
            ("name",),
            f"name {device.name!r} but the file is {doc.path.name!r}",
        )
    folder = doc.path.parent.name
    if device.unit != folder:
        yield doc.finding(
            "identity.unit-mismatch",
            ("unit",),
            f"unit {device.unit!r} but the file is in devices/{folder}/",
        )
    if ctx.units is not None and device.unit not in ctx.units:
        close = difflib.get_close_matches(device.unit, sorted(ctx.units), n=1)
        yield doc.finding(
            "identity.unit-undeclared",
            ("unit",),
            f"unit {device.unit!r} is not declared in units.yaml",
            hint=f"did you mean {close[0]!r}? Otherwise declare the unit in units.yaml"
            if close
            else None,
        )


# --- addressing ---------------------------------------------------------------


def _overlaps(network: netaddr.IPNetwork, other: netaddr.IPNetwork) -> bool:
    return bool(
        network.version == other.version
        and network.first <= other.last
        and other.first <= network.last
    )


@record_check("address", "kind", "auth", "status")
def _addressing(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    parsed = addresses.parse(device.address)
    if isinstance(parsed, str):  # pragma: no cover - refused by the schema format
        yield doc.finding("address.invalid", ("address",), parsed)
        return
    if parsed.problem:
        yield doc.finding(
            "address.not-canonical",
            ("address",),
            f"{device.address!r}: {parsed.problem}; write {parsed.canonical!r}",
        )
    network = device.network
    special = addresses.special_kind(network)
    if special:
        yield doc.finding("address.special", ("address",), f"{device.address} is {special}")
    if not device.is_host and device.kind not in PREFIX_KINDS:
        yield doc.finding(
            "address.prefix-not-allowed",
            ("address",),
            f"{_KIND_LABEL[device.kind]} must be a single host, not {device.address}",
        )
    elif not device.is_host and device.is_legacy:
        # NetReg reserves hosts and an exception covers one device: a legacy
        # prefix could never be reserved, so say so instead of asking for it.
        yield doc.finding(
            "legacy.prefix-not-allowed",
            ("address",),
            f"auth {device.auth} needs the single host address NetReg reserves, not the prefix"
            f" {device.address}",
        )
    site = ctx.site
    if site is None:
        return
    if not device.is_host and device.kind in PREFIX_KINDS:
        limit = (
            site.policy.shortest_prefix_v4
            if network.version == 4
            else site.policy.shortest_prefix_v6
        )
        if network.prefixlen < limit:
            yield doc.finding(
                "address.prefix-too-broad",
                ("address",),
                f"/{network.prefixlen} is broader than the site limit /{limit}",
            )
    if not special and not addresses.inside(network, (n.prefix for n in site.campus_networks)):
        yield doc.finding(
            "address.outside-campus",
            ("address",),
            f"{device.address} is outside every campus network",
        )
    if device.status is Status.ACTIVE and not any(
        a.version == network.version for host in site.relay_hosts for a in host.addresses
    ):
        yield doc.finding(
            "address.no-relay-address",
            ("address",),
            f"no relay host has an IPv{network.version} address, so {device.address} "
            "cannot reach the relay",
        )
    for host in site.relay_hosts:
        if any(_overlaps(network, a) for a in host.addresses):
            yield doc.finding(
                "address.relay-host",
                ("address",),
                f"{device.address} overlaps relay host {host.name}",
            )


# --- authentication and legacy access -------------------------------------------


@record_check("auth", "account", "exception")
def _authentication(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    if device.is_legacy:
        if device.exception is None:
            yield doc.finding(
                "legacy.exception-missing",
                ("auth",),
                f"auth {device.auth} is legacy access and needs an exception",
            )
        if device.account is not None:
            yield doc.finding(
                "auth.account-on-legacy",
                ("account",),
                f"auth {device.auth} does not log in; account is misleading",
            )
    else:
        if device.account is None:
            yield doc.finding(
                "auth.account-missing",
                ("auth",),
                f"auth {device.auth} needs the account the device logs in with",
            )
        if device.exception is not None:
            yield doc.finding(
                "auth.exception-forbidden",
                ("exception",),
                f"auth {device.auth} is authenticated; it needs no exception",
            )


_WORD = re.compile(r"[A-Za-z]{2,}")


def justification_shortfall(text: str, minimum: int) -> str | None:
    """Why a business justification is too short to review, or None when it is long enough."""
    words = {w.lower() for w in _WORD.findall(text)}
    real = " ".join(text.split())
    if len(real) >= minimum and len(words) >= 5:
        return None
    return (
        f"{len(real)} characters, {len(words)} distinct words; "
        f"at least {minimum} characters and 5 distinct words are required"
    )


@record_check("auth", "exception", "status", "unit")
def _legacy(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    exception = device.exception
    if not device.is_legacy or exception is None or device.status is Status.RETIRED:
        # A retired record is history: its approver may have left, its
        # reservation and MOD placement are gone, and it grants nothing.
        return
    missing = [a for a in ACKNOWLEDGMENTS if a not in exception.acknowledged]
    for item in missing:
        yield doc.finding(
            "legacy.acknowledgment-missing",
            ("exception", "acknowledged"),
            f"missing acknowledgment {item!r}",
        )
    minimum = ctx.site.policy.min_justification_chars if ctx.site else 0
    shortfall = justification_shortfall(exception.justification, minimum)
    if shortfall is not None:
        yield doc.finding(
            "legacy.justification-too-short", ("exception", "justification"), shortfall
        )
    if exception.mod_ticket is None:
        yield doc.finding("legacy.mod-ticket-missing", ("exception",), "no mod_ticket")
    if ctx.units is not None and device.unit in ctx.units:
        approver = exception.approver
        listed = {a.email: a for a in ctx.units[device.unit].approvers}
        known = listed.get(approver.email)
        if known is None:
            yield doc.finding(
                "legacy.approver-not-listed",
                ("exception", "approver", "email"),
                f"{approver.email} is not an approver of unit {device.unit}",
            )
        elif (known.name, known.role) != (approver.name, approver.role):
            yield doc.finding(
                "legacy.approver-mismatch",
                ("exception", "approver"),
                f"units.yaml lists {known.email} as {known.name!r} ({known.role}), "
                f"the record says {approver.name!r} ({approver.role})",
            )


@record_check("volume_limit", "volume_per_day", "status")
def _volume_limit(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    """A volume_limit override is justified and within the site's bound."""
    override = device.volume_limit
    if override is None or device.status is Status.RETIRED:
        return
    minimum = ctx.site.policy.min_justification_chars if ctx.site else 0
    shortfall = justification_shortfall(override.justification, minimum)
    if shortfall is not None:
        yield doc.finding(
            "limit.justification-too-short", ("volume_limit", "justification"), shortfall
        )
    highest = ctx.site.volume_limits.max_per_day if ctx.site else None
    if highest is not None and override.per_day > highest:
        yield doc.finding(
            "limit.override-too-high",
            ("volume_limit", "per_day"),
            f"per_day {override.per_day} is above volume_limits.max_per_day {highest}",
        )
    if override.per_day < device.volume_per_day:
        yield doc.finding(
            "limit.override-below-estimate",
            ("volume_limit", "per_day"),
            f"per_day {override.per_day} is below volume_per_day {device.volume_per_day}",
        )


def _live_legacy(device: Device) -> bool:
    """A legacy record with an exception that is not history (see ``_legacy``)."""
    return device.is_legacy and device.exception is not None and device.status is not Status.RETIRED


@record_check("auth", "exception", "status", "address")
def _legacy_placement(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    if not _live_legacy(device):
        return
    if ctx.site is not None and not any(
        addresses.inside(device.network, segment.prefixes) for segment in ctx.site.mod_segments
    ):
        yield doc.finding(
            "legacy.outside-mod", ("address",), f"{device.address} is in no MOD segment"
        )


@record_check("auth", "exception", "status", "address", "fqdn", "netreg")
def _legacy_netreg(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    if not _live_legacy(device):
        return
    if device.netreg is None:
        yield doc.finding("legacy.netreg-missing", ("auth",), "netreg is not given")
    if ctx.reservations is not None and device.is_host:  # a prefix: legacy.prefix-not-allowed
        reservation = ctx.reservations.get(addresses.canonical_text(device.network))
        if reservation is None:
            yield doc.finding(
                "legacy.netreg-no-reservation",
                ("address",),
                f"NetReg has no reservation for {device.address}",
            )
        else:
            if reservation.fqdn != device.fqdn:
                yield doc.finding(
                    "legacy.netreg-mismatch",
                    ("fqdn",),
                    f"NetReg reserves {device.address} for {reservation.fqdn!r}, "
                    f"not {device.fqdn!r}",
                )
            if device.netreg is not None and reservation.type != device.netreg:
                yield doc.finding(
                    "legacy.netreg-mismatch",
                    ("netreg",),
                    f"NetReg has a {reservation.type} reservation, the record says {device.netreg}",
                )


@record_check("auth", "exception", "status")
def _exception_dates(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    exception = device.exception
    if exception is None or not device.is_legacy:
        return
    if exception.approved_on > ctx.as_of:
        yield doc.finding(
            "exception.approved-in-future",
            ("exception", "approved_on"),
            f"approved_on {exception.approved_on} is after {ctx.as_of}",
        )
    if exception.expires_on <= exception.approved_on:
        yield doc.finding(
            "exception.expires-before-approval",
            ("exception", "expires_on"),
            f"expires_on {exception.expires_on} is not after approved_on {exception.approved_on}",
        )
    if ctx.site is not None:
        term = (exception.expires_on - exception.approved_on).days
        limit = ctx.site.policy.max_exception_days
        if term > limit:
            yield doc.finding(
                "exception.term-too-long",
                ("exception", "expires_on"),
                f"a term of {term} days; the site allows at most {limit}",
            )
    if device.status is not Status.ACTIVE:
        return  # history: an old record may carry an old exception
    if exception.expires_on <= ctx.as_of:
        yield doc.finding(
            "exception.expired",
            ("exception", "expires_on"),
            f"expired on {exception.expires_on} (as of {ctx.as_of})",
        )
    elif ctx.site is not None:
        left = (exception.expires_on - ctx.as_of).days
        if left <= ctx.site.policy.expiry_warning_days:
            yield doc.finding(
                "exception.expires-soon",
                ("exception", "expires_on"),
                f"expires on {exception.expires_on}, in {left} day{'s' if left != 1 else ''}",
            )


# --- senders ----------------------------------------------------------------------


@record_check("senders", "unit", "status")
def _senders(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    unit = ctx.units.get(device.unit) if ctx.units is not None else None
    own_domains = unit.sender_domains if unit is not None else frozenset()
    for index, sender in enumerate(device.senders):
        domain = sender.rpartition("@")[2]
        if ctx.site is not None and domain not in ctx.site.sender_domains:
            yield doc.finding(
                "sender.domain-not-allowed",
                ("senders", index),
                f"{sender}: {domain} is not an allowed sender domain",
            )
        elif own_domains and domain not in own_domains and device.status is not Status.RETIRED:
            yield doc.finding(
                "sender.domain-not-in-unit",
                ("senders", index),
                f"{sender}: unit {device.unit} sends only from {', '.join(sorted(own_domains))}",
            )


# --- status -------------------------------------------------------------------------


@record_check("status", "status_reason", "status_date")
def _status(device: Device, doc: Document, ctx: Context) -> Iterator[Finding]:
    if device.status is Status.ACTIVE:
        for name in ("status_reason", "status_date"):
            if name in doc.data:
                yield doc.finding(
                    "status.stale-fields", (name,), f"active record with {name}", key=True
                )
        return
    if device.status_reason is None:
        yield doc.finding(
            "status.reason-missing", ("status",), f"status {device.status} needs status_reason"
        )
    if device.status_date is None:
        yield doc.finding(
            "status.date-missing", ("status",), f"status {device.status} needs status_date"
        )
    elif device.status_date > ctx.as_of:
        yield doc.finding(
            "status.date-in-future",
            ("status_date",),
            f"status_date {device.status_date} is after {ctx.as_of}",
        )


# --- across records -----------------------------------------------------------------


def _shared(
    devices: Iterable[Device],
    key: Callable[[Device], Any],
    ctx: Context,
    rule_id: str,
    pointer: Pointer,
    what: str,
) -> Iterator[Finding]:
    """Every record sharing a value with another is told, naming the others.

    Both sides are reported so the annotation lands on the new record of a
    pull request as well as on the one it collides with.
    """
    groups: dict[Any, list[Device]] = {}
    for device in devices:
        value = key(device)
        if value is not None:
            groups.setdefault(value, []).append(device)
    for value, members in groups.items():
        if len(members) < 2:
            continue
        # At most a few others are named: a value shared by a thousand records must
        # cost a thousand findings, not a million names.
        named = [f"{o.name} ({o.source})" for o in members[: _NAMED + 1]]
        for device in members:
            others = [text for o, text in zip(members, named, strict=False) if o is not device][
                :_NAMED
            ]
            more = len(members) - 1 - len(others)
            tail = f" and {more} more" if more > 0 else ""
            yield ctx.docs[device.source].finding(
                rule_id, pointer, f"{what} {value} is also used by {', '.join(others)}{tail}"
            )


def inventory_checks(devices: list[Device], ctx: Context) -> Iterator[Finding]:
    """Uniqueness and cross-record rules; ``devices`` is in a stable order.

    A record's field that failed its schema takes part in none of them (see
    ``Context.usable``); a record whose status failed it is in no rule of live records,
    and one whose name failed it in no rule whose message names the other record.
    """
    yield from _shared(
        ctx.usable(devices, "name"),
        lambda d: d.name,
        ctx,
        "identity.duplicate-name",
        ("name",),
        "name",
    )
    live = [d for d in ctx.usable(devices, "status") if d.status is not Status.RETIRED]
    yield from _shared(
        ctx.usable(live, "fqdn", "name"),
        lambda d: d.fqdn,
        ctx,
        "identity.duplicate-fqdn",
        ("fqdn",),
        "FQDN",
    )
    yield from _shared(
        ctx.usable(live, "address", "name"),
        lambda d: addresses.canonical_text(d.network),
        ctx,
        "identity.duplicate-address",
        ("address",),
        "address",
    )
    yield from _shared(
        [d for d in ctx.usable(live, "auth", "account", "name") if not d.is_legacy],
        lambda d: d.account,
        ctx,
        "auth.shared-account",
        ("account",),
        "account",
    )
    yield from _overlapping(ctx.usable(live, "address", "name"), ctx)
    owners: dict[str, Device] = {}
    for device in ctx.usable(live, "auth", "senders", "account", "name"):
        if not device.is_legacy:
            for sender in device.senders:
                owners.setdefault(sender_key(sender), device)
    for device in ctx.usable(live, "auth", "senders"):
        if device.is_legacy:
            for index, sender in enumerate(device.senders):
                owner = owners.get(sender_key(sender))
                if owner is not None:
                    yield ctx.docs[device.source].finding(
                        "sender.claimed-by-account",
                        ("senders", index),
                        f"{sender} belongs to account {owner.account} ({owner.name})",
                    )
    yield from _sender_ownership(ctx.usable(live, "senders", "name", "shares_senders_with"), ctx)
    # "No live record" is only said when every record's name and status are known.
    names_known = len(ctx.usable(devices, "name", "status")) == len(devices)
    yield from _share_declarations(live, ctx, names_known)


@functools.lru_cache(maxsize=65536)
def sender_key(sender: str) -> str:
    """The mailbox a sender address reaches, for the one-owner rule.

    Lower case, no trailing dot on the domain, no ``+extension``: Postfix
    strips the extension when it looks an address up in an access or login
    map, so ``x+tag@d`` answers as ``x@d``. Look-alike spellings of one
    mailbox therefore share a key. (The schema already refuses upper case,
    trailing dots and non-ASCII; the key does not rely on it.)
    """
    local, _, domain = sender.rpartition("@")
    return f"{local.lower().split('+', 1)[0]}@{domain.lower().rstrip('.')}"


def _mutual(one: Device, other: Device) -> bool:
    return other.name in one.shares_senders_with and one.name in other.shares_senders_with


#: How many other records a sender.owned-by-another finding names.
_NAMED = 5


def _sender_ownership(live: list[Device], ctx: Context) -> Iterator[Finding]:
    """A sender belongs to one live record unless both records declare the sharing.

    Live is every status but retired: a suspended or revoked record keeps its
    senders (it may come back, and its address stays refused), so nobody else
    may take them until it is retired. Each record involved is told, naming
    the other record and its file.
    """
    holders: dict[str, list[tuple[Device, int, str]]] = {}
    for device in live:
        for index, sender in enumerate(device.senders):
            holders.setdefault(sender_key(sender), []).append((device, index, sender))
    for entries in holders.values():
        if len({id(device) for device, _, _ in entries}) < 2:
            continue
        by_name: dict[str, list[Device]] = {}
        for other, _, _ in entries:
            by_name.setdefault(other.name, []).append(other)
        for device, index, sender in entries:
            # One finding per sender, naming at most a few others: a thousand records
            # listing one address must not make a million findings, nor a million steps.
            excused = sum(
                1
                for name in set(device.shares_senders_with)
                for other in by_name.get(name, ())
                if other is not device and _mutual(device, other)
            ) + sum(1 for other in by_name.get(device.name, ()) if other is device)
            count = len(entries) - excused
            named: list[str] = []
            for other, _, spelling in entries:
                if len(named) == _NAMED:
                    break
                if other is device or _mutual(device, other):
                    continue
                shown = "" if spelling == sender else f" as {spelling}"
                named.append(f"{other.name} ({other.source}){shown}")
            if not count:
                continue
            more = f" and {count - _NAMED} more" if count > _NAMED else ""
            yield ctx.docs[device.source].finding(
                "sender.owned-by-another",
                ("senders", index),
                f"{sender} is also a sender of {', '.join(named)}{more}",
            )


def _share_declarations(
    live: list[Device], ctx: Context, names_known: bool = True
) -> Iterator[Finding]:
    """Each name in a live record's shares_senders_with is another live record naming it back.

    ``live`` may hold records with fields that failed their schema: a record is
    only compared by the fields that passed, and "no live record" is only said
    when ``names_known`` (every record's name and status passed their schema).
    """
    by_name = {d.name: d for d in ctx.usable(live, "name")}
    for device in ctx.usable(live, "name", "shares_senders_with", "senders"):
        keys = {sender_key(s) for s in device.senders}
        for index, name in enumerate(device.shares_senders_with):
            pointer: Pointer = ("shares_senders_with", index)
            other = by_name.get(name)
            doc = ctx.docs[device.source]
            if other is device:
                yield doc.finding("sender.share-unused", pointer, f"{name} is this record")
            elif other is None:
                if names_known:
                    yield doc.finding(
                        "sender.share-not-mutual", pointer, f"{name} is no live record"
                    )
            elif "shares_senders_with" in ctx.invalid_of(other):
                continue
            elif device.name not in other.shares_senders_with:
                yield doc.finding(
                    "sender.share-not-mutual",
                    pointer,
                    f"{name} ({other.source}) does not name {device.name} in its"
                    " shares_senders_with",
                )
            elif "senders" not in ctx.invalid_of(other) and not keys & {
                sender_key(s) for s in other.senders
            }:
                yield doc.finding(
                    "sender.share-unused", pointer, f"{name} shares no sender with this record"
                )


def _overlapping(devices: list[Device], ctx: Context) -> Iterator[Finding]:
    """Distinct records whose ranges overlap (identical ranges are duplicates)."""
    ordered = sorted(
        devices, key=lambda d: (d.network.version, d.network.first, -d.network.last, d.name)
    )
    open_range: Device | None = None
    for device in ordered:
        if (
            open_range is not None
            and open_range.network.version == device.network.version
            and device.network.first <= open_range.network.last
        ):
            if (device.network.first, device.network.last) != (
                open_range.network.first,
                open_range.network.last,
            ):
                for one, other in ((device, open_range), (open_range, device)):
                    yield ctx.docs[one.source].finding(
                        "identity.overlapping-prefix",
                        ("address",),
                        f"{one.address} overlaps {other.address} of {other.name}",
                    )
            if device.network.last > open_range.network.last:
                open_range = device
        else:
            open_range = device


def record_checks(
    device: Device, doc: Document, ctx: Context, invalid: frozenset[str] = frozenset()
) -> Iterator[Finding]:
    """Every record check of ``device`` that reads none of its ``invalid`` fields."""
    for reads, check in _RECORD_CHECKS:
        if not reads & invalid:
            yield from check(device, doc, ctx)


# --- site, units and NetReg -------------------------------------------------------------


def site_checks(site: Site, doc: Document) -> Iterator[Finding]:
    for index, item in enumerate(doc.data["campus_networks"]):
        yield from _canonical_prefix(doc, ("campus_networks", index, "prefix"), item["prefix"])
    for index, segment in enumerate(doc.data["mod_segments"]):
        for p_index, text in enumerate(segment["prefixes"]):
            yield from _canonical_prefix(doc, ("mod_segments", index, "prefixes", p_index), text)
    for h_index, host in enumerate(doc.data["relay"]["hosts"]):
        for a_index, text in enumerate(host["addresses"]):
            yield from _canonical_prefix(
                doc, ("relay", "hosts", h_index, "addresses", a_index), text
            )
    if site.relay_port == site.submission_port:
        yield doc.finding(
            "site.duplicate-port",
            ("relay", "submission_port"),
            f"relay and submission both use port {site.relay_port}",
        )
    if site.volume_limits.port in (site.relay_port, site.submission_port):
        yield doc.finding(
            "limit.port-in-use",
            ("volume_limits", "port")
            if "port" in (doc.data.get("volume_limits") or {})
            else ("relay", "relay_port"),
            f"volume_limits.port {site.volume_limits.port} is also a relay port",
        )
    campus = [n.prefix for n in site.campus_networks]
    yield from _campus_checks(site, doc)
    seen_vlans: dict[int, str] = {}
    spans: list[tuple[netaddr.IPNetwork, str, Pointer]] = []
    for index, segment in enumerate(site.mod_segments):
        if segment.vlan in seen_vlans:
            yield doc.finding(
                "site.duplicate-vlan",
                ("mod_segments", index, "vlan"),
                f"VLAN {segment.vlan} is also used by {seen_vlans[segment.vlan]}",
            )
        seen_vlans.setdefault(segment.vlan, segment.name)
        for p_index, prefix in enumerate(segment.prefixes):
            pointer: Pointer = ("mod_segments", index, "prefixes", p_index)
            if not addresses.inside(prefix, campus):
                yield doc.finding(
                    "site.mod-outside-campus",
                    pointer,
                    f"{prefix} of {segment.name} is outside every campus network",
                )
            for other, other_name, _ in spans:
                if _overlaps(prefix, other):
                    yield doc.finding(
                        "site.overlapping-segments",
                        pointer,
                        f"{prefix} of {segment.name} overlaps {other} of {other_name}",
                    )
            spans.append((prefix, segment.name, pointer))
        for h_index, host in enumerate(site.relay_hosts):
            for a_index, address in enumerate(host.addresses):
                if addresses.inside(address, segment.prefixes):
                    yield doc.finding(
                        "site.relay-in-mod",
                        ("relay", "hosts", h_index, "addresses", a_index),
                        f"relay host {host.name} address {address.ip} is inside "
                        f"MOD segment {segment.name}",
                    )
    for section, names in (
        ("campus_networks", [n.name for n in site.campus_networks]),
        ("mod_segments", [s.name for s in site.mod_segments]),
    ):
        yield from _duplicate_names(doc, (section,), names)
    yield from _duplicate_names(doc, ("relay", "hosts"), [h.name for h in site.relay_hosts])


def _campus_checks(site: Site, doc: Document) -> Iterator[Finding]:
    """Campus networks are the campus's own space, and never overlap.

    The submission port is open to every campus address, so an Internet-sized
    prefix opens it to the Internet. nft keeps the campus networks in one
    interval set, which refuses overlapping elements ("conflicting
    intervals"): an overlap here would fail every later deploy.
    """
    limits = {4: site.policy.broadest_campus_v4, 6: site.policy.broadest_campus_v6}
    for index, item in enumerate(site.campus_networks):
        pointer: Pointer = ("campus_networks", index, "prefix")
        limit = limits[item.prefix.version]
        if item.prefix.prefixlen < limit:
            yield doc.finding(
                "site.campus-too-broad",
                pointer,
                f"{item.name} {item.prefix} is broader than /{limit}"
                f" (policy.broadest_campus_prefix.ipv{item.prefix.version})",
            )
        for other in site.campus_networks[:index]:
            if _overlaps(item.prefix, other.prefix):
                yield doc.finding(
                    "site.overlapping-campus",
                    pointer,
                    f"{item.name} {item.prefix} overlaps {other.name} {other.prefix}",
                )


def _duplicate_names(doc: Document, pointer: Pointer, names: list[str]) -> Iterator[Finding]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield doc.finding(
                "site.duplicate-name", (*pointer, index, "name"), f"name {name!r} is used twice"
            )
        seen.add(name)


def _canonical_prefix(doc: Document, pointer: Pointer, text: str) -> Iterator[Finding]:
    """A site prefix or address: canonical, and never loopback, /0 or another special range."""
    parsed = addresses.parse(text)
    if isinstance(parsed, str):
        return
    if parsed.problem:
        yield doc.finding(
            "site.prefix-not-canonical",
            pointer,
            f"{text!r}: {parsed.problem}; write {parsed.canonical!r}",
        )
    special = addresses.special_kind(parsed.network)
    if special:
        field = "/".join(map(str, pointer))
        yield doc.finding("address.special", pointer, f"{field}: {text} is {special}")


def netreg_checks(
    reservations: list[Reservation], doc: Document
) -> tuple[dict[str, Reservation], list[Finding]]:
    """Index reservations by canonical address; report duplicates and gaps."""
    found: list[Finding] = []
    index: dict[str, Reservation] = {}
    for position, item in enumerate(reservations):
        parsed = addresses.parse(item.address)
        key = item.address
        if not isinstance(parsed, str) and parsed.problem:
            found.append(
                doc.finding(
                    "netreg.not-canonical",
                    ("reservations", position, "address"),
                    f"{item.address!r}: {parsed.problem}; write {parsed.canonical!r}",
                )
            )
            key = parsed.canonical
        if key in index:
            found.append(
                doc.finding(
                    "netreg.duplicate-address",
                    ("reservations", position, "address"),
                    f"{key} is reserved twice",
                )
            )
            continue
        index[key] = item
        if item.type == "static-dhcp" and item.mac is None:
            found.append(
                doc.finding(
                    "netreg.missing-mac",
                    ("reservations", position),
                    f"static-dhcp reservation for {key} has no mac",
                )
            )
    return index, found


def units_checks(units: dict[str, Unit], doc: Document, site: Site | None) -> Iterator[Finding]:
    for unit in units.values():
        if site is not None:
            for index, domain in enumerate(doc.data["units"][unit.id].get("sender_domains", ())):
                if domain not in site.sender_domains:
                    yield doc.finding(
                        "units.sender-domain-not-allowed",
                        ("units", unit.id, "sender_domains", index),
                        f"{unit.id}: {domain} is not in site.yaml sender_domains",
                    )
        seen: set[str] = set()
        for index, approver in enumerate(unit.approvers):
            if approver.email in seen:
                yield doc.finding(
                    "units.duplicate-approver",
                    ("units", unit.id, "approvers", index, "email"),
                    f"{approver.email} is listed twice for {unit.id}",
                )
            seen.add(approver.email)
