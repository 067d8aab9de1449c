"""`relaygate query`: which record covers an address or has a name, and what the relay answers.

Input: an inventory, a query (an IP address or prefix, a record name, an FQDN
or a login account), optionally an envelope sender and a login, and "today".
Output: a ``QueryResult``: every matching record with its status, exception
and senders, every line of a fresh in-memory compile that mentions it
(path:line), and, for a sender, the relay's answer.

The answer comes from ``relaygate.render.postfix.evaluate.Relay``, the
Postfix package's interpreter of the compiled restriction lists over the
compiled maps and pinned settings, not from the model: it reads the same text
Postfix reads, so a renderer bug shows up here as it would on the relay. A
login means the submission service after STARTTLS; no login, the relay port.
The sender is read as smtpd reads MAIL FROM (``<>``, ``<"">`` and
``<@route:>`` are the null sender). It fails closed (``InternalError``) on a
restriction it does not know.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import netaddr

from relaygate import addresses
from relaygate.addresses import canonical_text
from relaygate.errors import InternalError
from relaygate.limits import Limit, login_limit, record_limit
from relaygate.model import Device, Site, Status
from relaygate.pipeline import ValidationResult
from relaygate.policy import class_name
from relaygate.render import Artifacts
from relaygate.render.postfix import service_name
from relaygate.render.postfix.evaluate import Decision, Relay
from relaygate.verify import MANIFEST

__all__ = ["Decision", "InternalError", "Relay", "run_query"]

# --- the query -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Appearance:
    path: str
    line: int
    text: str


@dataclass(frozen=True, slots=True)
class Match:
    device: Device
    how: str  # "exact address", "inside prefix ...", "name", "fqdn", "account"
    unit_name: str | None
    segment: str | None
    appearances: tuple[Appearance, ...]
    limit: DeviceLimit | None = None


@dataclass(frozen=True, slots=True)
class DeviceLimit:
    """A record's daily limit on the relay (``relaygate.limits``), or why it has none."""

    limit: Limit | None  # None: no limit rule (not active, or lapsed)
    counted_for: str  # "login X" or "address A", or why there is no rule
    total: int | None  # the login's limit (all its active records); the record's for legacy

    def text(self) -> str:
        if self.limit is None:
            return f"none ({self.counted_for})"
        total = (
            f", {self.total}/day in all"
            if self.total is not None and self.total != self.limit.per_day
            else ""
        )
        return (
            f"{self.limit.per_day}/day ({self.limit.explanation}),"
            f" counted per {self.counted_for}{total}"
        )


@dataclass(frozen=True, slots=True)
class Answer:
    device: str | None  # the record whose client this is (None: no record)
    client: str
    service: str  # smtp (the relay port) | submission
    port: int | None
    login: str | None
    sender: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class QueryResult:
    query: str
    as_of: dt.date
    matches: tuple[Match, ...]
    compiled: bool  # False when the inventory has errors (no artifacts, no answers)
    errors: int
    answers: tuple[Answer, ...]

    @property
    def found(self) -> bool:
        return bool(self.matches)


_BEFORE = re.compile(r"[A-Za-z0-9_.:@-]")
_AFTER = re.compile(r"[A-Za-z0-9_:@-]|\.[A-Za-z0-9]")


def mentions(line: str, token: str) -> bool:
    """``token`` occurs in ``line`` as a whole word (10.1.1.4 does not match 10.1.1.41)."""
    start = line.find(token)
    while start >= 0:
        end = start + len(token)
        if (start == 0 or not _BEFORE.fullmatch(line[start - 1])) and not _AFTER.match(line, end):
            return True
        start = line.find(token, start + 1)
    return False


def appearances(device: Device, artifacts: Artifacts) -> tuple[Appearance, ...]:
    """Every line of every artifact (but the manifest) that mentions this record."""
    tokens = [device.name, canonical_text(device.network)]
    if device.account:
        tokens.append(device.account)
    if device.is_legacy:
        tokens.append(class_name(tuple(sorted(device.senders))))
    found = []
    for path, text in sorted(artifacts.items()):
        if path == MANIFEST:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if any(mentions(line, token) for token in tokens):
                found.append(Appearance(path, number, line))
    return tuple(found)


def find(devices: list[Device], query: str) -> list[tuple[Device, str]]:
    """Records matching the query: by address (exact, then inside a prefix) or by name."""
    parsed = addresses.parse(query)
    found: list[tuple[Device, str]] = []
    if not isinstance(parsed, str):
        wanted = parsed.network
        for device in devices:
            network = device.network
            if network.version != wanted.version:
                continue
            if network == wanted:
                found.append((device, "exact address"))
            elif wanted in network:
                found.append((device, f"inside prefix {canonical_text(network)}"))
        found.sort(key=lambda m: (m[1] != "exact address", -m[0].network.prefixlen, m[0].name))
        return found
    lowered = query.lower()
    for device in devices:
        if device.name == lowered:
            found.append((device, "name"))
        elif device.fqdn == lowered:
            found.append((device, "fqdn"))
        elif device.account == lowered:
            found.append((device, "account"))
    return sorted(found, key=lambda m: m[0].name)


def _client_of(query: str, device: Device | None) -> netaddr.IPAddress | None:
    parsed = addresses.parse(query)
    if not isinstance(parsed, str) and parsed.is_host:
        return netaddr.IPAddress(parsed.network.first, parsed.network.version)
    if device is None:
        return None
    # A prefix record (application/server): its first address stands for the client.
    return netaddr.IPAddress(device.network.first, device.network.version)


def run_query(
    result: ValidationResult,
    artifacts: Artifacts | None,
    site: Site | None,
    units: dict[str, Any] | None,
    query: str,
    as_of: dt.date,
    sender: str | None = None,
    login: str | None = None,
) -> QueryResult:
    """Answer ``query`` from a validation result and (when it compiled) its artifacts."""
    matches = []
    limits = _limits(result, site)
    segments = site.segment_index() if site is not None else None
    for device, how in find(result.devices, query):
        unit = (units or {}).get(device.unit)
        matches.append(
            Match(
                device=device,
                how=how,
                unit_name=getattr(unit, "name", None),
                segment=segments.first(device.network) if segments is not None else None,
                appearances=appearances(device, artifacts) if artifacts is not None else (),
                limit=limits.get(device.source),
            )
        )
    answers: list[Answer] = []
    if sender is not None and artifacts is not None:
        relay = Relay.from_artifacts(artifacts)
        seen = set()
        clients: list[tuple[str | None, netaddr.IPAddress | None, str | None]] = [
            (m.device.name, _client_of(query, m.device), login or m.device.account) for m in matches
        ] or [(None, _client_of(query, None), login)]
        for name, client, who in clients:
            if client is None or (str(client), who) in seen:
                continue
            seen.add((str(client), who))
            # A login means the submission port (the only one offering AUTH, after
            # STARTTLS); without one the client talks to the relay port.
            port = None
            service = "submission" if who else "smtp"
            if site is not None:
                port = site.submission_port if who else site.relay_port
                service = service_name(port)
            decision = relay.decide(client, sender, who, service)
            answers.append(Answer(name, str(client), service, port, who, sender, decision))
    return QueryResult(
        query=query,
        as_of=as_of,
        matches=tuple(matches),
        compiled=artifacts is not None,
        errors=result.errors,
        answers=tuple(answers),
    )


def _limits(result: ValidationResult, site: Site | None) -> dict[str, DeviceLimit]:
    """Every schema-valid record's daily limit, by source path (none without a site)."""
    if site is None:
        return {}
    relaying = [
        d for d in result.devices if d.status is Status.ACTIVE and d.source not in result.lapsed
    ]
    per_login: dict[str, list[tuple[str, Limit]]] = {}
    for device in relaying:
        if not device.is_legacy and device.account:
            per_login.setdefault(device.account, []).append(
                (device.name, record_limit(device, site.volume_limits))
            )
    found = {}
    for device in result.devices:
        if device.source in result.lapsed:
            why = f"lapsed: {result.lapsed[device.source].text}; the relay refuses it"
            found[device.source] = DeviceLimit(None, why, None)
        elif device.status is Status.RETIRED:
            found[device.source] = DeviceLimit(None, "retired: no relay access", None)
        elif device.status is not Status.ACTIVE:
            why = f"{device.status.value}: the relay refuses it before DATA"
            found[device.source] = DeviceLimit(None, why, None)
        elif device.is_legacy or not device.account:
            limit = record_limit(device, site.volume_limits)
            found[device.source] = DeviceLimit(limit, f"address {device.address}", None)
        else:
            limit = record_limit(device, site.volume_limits)
            total = login_limit(device.account, per_login[device.account]).per_day
            found[device.source] = DeviceLimit(limit, f"login {device.account}", total)
    return found


# --- output ------------------------------------------------------------------------------


def _exception_text(device: Device, as_of: dt.date) -> str | None:
    exception = device.exception
    if exception is None:
        return None
    days = (exception.expires_on - as_of).days
    when = f"in {days} days" if days >= 0 else f"{-days} days ago"
    ticket = f", MOD ticket {exception.mod_ticket}" if exception.mod_ticket else ""
    return (
        f"approved by {exception.approver.name} <{exception.approver.email}>"
        f" ({exception.approver.role.value}) on {exception.approved_on},"
        f" expires {exception.expires_on} ({when}){ticket},"
        f" acknowledgment {exception.acknowledgment_ref}"
    )


def _status_text(device: Device) -> str:
    if device.status_reason is None:
        return device.status.value
    extra = ", ".join(
        str(x) for x in (device.status_reason, device.status_date, device.status_ticket) if x
    )
    return f"{device.status.value} ({extra})"


def text(result: QueryResult, extra: Mapping[str, Sequence[str]] | None = None) -> str:
    """The query answer for a person at a terminal; ``extra``: more lines per record name."""
    out: list[str] = []
    if not result.compiled:
        out.append(
            f"note: the inventory has {result.errors} errors; it was not compiled, so"
            " artifact lines and relay answers are not available"
        )
    if not result.matches:
        out.append(f"no record covers {result.query}")
    for match in result.matches:
        device = match.device
        auth = device.auth.value
        access = "legacy: IP only, no login" if device.is_legacy else f"login {device.account}"
        out += [
            f"{device.name} ({match.how})",
            f"  file:      {device.source}",
            f"  unit:      {device.unit}" + (f" ({match.unit_name})" if match.unit_name else ""),
            f"  kind:      {device.kind.value}, {device.model}",
            f"  fqdn:      {device.fqdn}",
            f"  address:   {device.address}"
            + (f" (MOD segment {match.segment})" if match.segment else ""),
            f"  auth:      {auth} ({access})",
            f"  status:    {_status_text(device)}",
        ]
        exception = _exception_text(device, result.as_of)
        if exception:
            out.append(f"  exception: {exception}")
        out.append(f"  senders:   {', '.join(device.senders)}")
        if match.limit is not None:
            out.append(f"  limit:     {match.limit.text()}")
        if result.compiled:
            out.append("  appears in:" if match.appearances else "  appears in: no artifact")
            out += [f"    {a.path}:{a.line}: {a.text}" for a in match.appearances]
        out += (extra or {}).get(device.name, ())
    for answer in result.answers:
        who = f"as {answer.login}" if answer.login else "without login"
        port = f"port {answer.port}" if answer.port is not None else answer.service
        out.append(
            f"relay answer for MAIL FROM:<{answer.sender}> from {answer.client} to {port}"
            f" {who}: {answer.decision.action} ({answer.decision.reason})"
        )
        out += [f"  {step}" for step in answer.decision.trace]
    return "\n".join(out) + "\n"


def as_dict(result: QueryResult, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The query answer as plain data (the json format); ``extra``: ``activity`` per name."""
    return {
        "query": result.query,
        "as_of": result.as_of.isoformat(),
        "found": result.found,
        "compiled": result.compiled,
        "errors": result.errors,
        "matches": [
            {
                "name": m.device.name,
                "how": m.how,
                "path": m.device.source,
                "unit": m.device.unit,
                "address": m.device.address,
                "segment": m.segment,
                "auth": m.device.auth.value,
                "account": m.device.account,
                "status": m.device.status.value,
                "status_reason": m.device.status_reason,
                "exception": None
                if m.device.exception is None
                else {
                    "approver": m.device.exception.approver.name,
                    "approver_email": m.device.exception.approver.email,
                    "role": m.device.exception.approver.role.value,
                    "approved_on": m.device.exception.approved_on.isoformat(),
                    "expires_on": m.device.exception.expires_on.isoformat(),
                    "mod_ticket": m.device.exception.mod_ticket,
                    "acknowledgment_ref": m.device.exception.acknowledgment_ref,
                },
                "senders": list(m.device.senders),
                "limit": None
                if m.limit is None
                else {
                    "per_day": m.limit.limit.per_day if m.limit.limit else None,
                    "source": m.limit.limit.source.value if m.limit.limit else None,
                    "how": m.limit.limit.explanation if m.limit.limit else None,
                    "counted_per": m.limit.counted_for,
                    "login_total": m.limit.total,
                },
                "appears_in": [
                    {"path": a.path, "line": a.line, "text": a.text} for a in m.appearances
                ],
                **({"activity": extra[m.device.name]} if extra and m.device.name in extra else {}),
            }
            for m in result.matches
        ],
        "answers": [
            {
                "device": a.device,
                "client": a.client,
                "service": a.service,
                "port": a.port,
                "login": a.login,
                "sender": a.sender,
                "action": a.decision.action,
                "reason": a.decision.reason,
                "restriction": a.decision.restriction,
                "trace": list(a.decision.trace),
            }
            for a in result.answers
        ],
    }
