"""`relaygate query`: which record covers an address or has a name, and what the relay answers.

Input: an inventory, a query (an IP address or prefix, a record name, an FQDN
or a login account), optionally an envelope sender and a login, and "today".
Output: a ``QueryResult``: every matching record with its status, exception
and senders, every line of a fresh in-memory compile that mentions it
(path:line), and, for a sender, the relay's answer.

The answer comes from ``Relay``, a small interpreter of the compiled
``smtpd_relay_restrictions`` (main.cf.fragment) over the compiled maps, not
from the model: it reads the same text Postfix reads, so a renderer bug shows
up here as it would on the relay. It knows the restrictions the renderer
emits and fails closed (``InternalError``) on any other. Client hostnames are
not simulated: the compiled maps only hold addresses.
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
from relaygate.model import Device, Site
from relaygate.pipeline import ValidationResult
from relaygate.policy import class_name
from relaygate.render import Artifacts
from relaygate.verify import MANIFEST

#: Where the compiled maps live on the relay, as main.cf.fragment spells it.
MAP_PREFIX = "${config_directory}/relaygate/"
_TABLE_RESTRICTIONS = frozenset({"check_client_access", "check_sender_access", "check_sasl_access"})
_OK_WORDS = frozenset({"OK", "RELAY", "PERMIT"})
_MAX_DEPTH = 10

# --- the relay, simulated ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # OK | REJECT
    reason: str
    restriction: str  # the restriction that decided
    trace: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Table:
    kind: str  # lmdb | hash | cidr ...
    name: str  # artifact path
    entries: tuple[tuple[str, str], ...]  # in file order

    def lookup(self, keys: list[str]) -> str | None:
        if self.kind == "static":  # a static map answers every key the same
            return self.entries[0][1]
        table = dict(self.entries)
        for key in keys:
            if key in table:
                return table[key]
        return None

    def cidr_lookup(self, address: netaddr.IPAddress) -> str | None:
        for pattern, value in self.entries:  # cidr_table(5): first match in file order
            network = netaddr.IPNetwork(pattern)
            if network.version == address.version and address in network:
                return value
        return None


def parse_map(text: str) -> tuple[tuple[str, str], ...]:
    """Postfix table source: ``key whitespace value``; '#' comments; indented lines continue."""
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if not entries:
                raise InternalError("a map starts with a continuation line")
            key, value = entries[-1]
            entries[-1] = (key, f"{value} {line.strip()}")
            continue
        key, _, value = line.partition("\t") if "\t" in line else line.partition(" ")
        entries.append((key.strip(), value.strip()))
    return tuple(entries)


def parse_parameters(text: str) -> dict[str, str]:
    """main.cf syntax: ``name = value``; '#' comments; indented lines continue."""
    params: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and last is not None:
            params[last] += " " + line.strip()
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise InternalError(f"not a main.cf line: {line!r}")
        last = name.strip()
        params[last] = value.strip()
    return params


def _tokens(value: str) -> list[str]:
    """Split a restriction list the way Postfix does: on spaces and commas, but a
    ``{...}`` group (e.g. ``static:{REJECT some text}``) stays one token."""
    tokens: list[str] = []
    current = ""
    depth = 0
    for char in value:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if depth == 0 and (char.isspace() or char == ","):
            if current:
                tokens.append(current)
            current = ""
            continue
        current += char
    if depth != 0:
        raise InternalError(f"unbalanced braces in {value!r}")
    if current:
        tokens.append(current)
    return tokens


def parse_services(text: str) -> dict[str, dict[str, str]]:
    """master.cf fragment (``postconf -P`` syntax): ``service/type/name=value`` lines."""
    services: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, equals, value = line.partition("=")
        parts = key.strip().split("/")
        if not equals or len(parts) != 3:
            raise InternalError(f"not a postconf -P line: {line!r}")
        services.setdefault(parts[0], {})[parts[2]] = value.strip()
    return services


class Relay:
    """The compiled relay policy, evaluated the way smtpd evaluates it."""

    def __init__(self, artifacts: Artifacts) -> None:
        self.artifacts = artifacts
        self.params = parse_parameters(artifacts["postfix/main.cf.fragment"])
        self.services = parse_services(artifacts.get("postfix/master.cf.fragment", ""))
        self.classes = set(_tokens(self.params.get("smtpd_restriction_classes", "")))

    def expand(self, value: str, depth: int = 0) -> str:
        """Replace ``$name`` and ``${name}`` with main.cf parameters (not config_directory)."""
        if depth > _MAX_DEPTH:
            raise InternalError("parameter references nest too deep")

        def one(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name == "config_directory":
                return match.group(0)
            if name not in self.params:
                raise InternalError(f"${name} is not a compiled parameter")
            return self.expand(self.params[name], depth + 1)

        return re.sub(r"\$(?:\{([a-z_0-9]+)\}|([a-z_0-9]+))", one, value)

    def restrictions(self, service: str) -> tuple[list[str], bool]:
        """The relay restrictions of a master.cf service and whether it offers SASL."""
        overrides = self.services.get(service, {})
        value = overrides.get(
            "smtpd_relay_restrictions", self.params.get("smtpd_relay_restrictions")
        )
        if value is None:
            raise InternalError("no smtpd_relay_restrictions compiled")
        sasl = overrides.get("smtpd_sasl_auth_enable", "no") == "yes"
        return _tokens(self.expand(value)), sasl

    def table(self, spec: str) -> _Table:
        kind, _, location = spec.partition(":")
        if kind == "static":
            if not (location.startswith("{") and location.endswith("}")):
                raise InternalError(f"static map {spec} without braces")
            return _Table(kind, spec, (("*", location[1:-1].strip()),))
        if not location.startswith(MAP_PREFIX):
            raise InternalError(f"map {spec} is not one of the compiled maps")
        name = "postfix/" + location.removeprefix(MAP_PREFIX)
        if name not in self.artifacts:
            raise InternalError(f"map {spec} names {name}, which was not compiled")
        return _Table(kind, name, parse_map(self.artifacts[name]))

    def _client(self, table: _Table, client: netaddr.IPAddress) -> str | None:
        if table.kind == "cidr":
            return table.cidr_lookup(client)
        text = str(client)
        keys = [text]
        if client.version == 4:  # access(5): 1.2.3.4, then 1.2.3, 1.2, 1
            octets = text.split(".")
            keys += [".".join(octets[:n]) for n in (3, 2, 1)]
        return table.lookup(keys)

    @staticmethod
    def _sender_keys(sender: str) -> list[str]:
        user, _, domain = sender.rpartition("@")
        keys = [sender]
        labels = domain.split(".")
        keys += [".".join(labels[i:]) for i in range(len(labels) - 1)]
        keys.append(f"{user}@")
        return keys

    def decide(
        self,
        client: netaddr.IPAddress,
        sender: str,
        login: str | None,
        service: str = "smtp",
    ) -> Decision:
        """The answer of ``service`` (``smtp``: the relay port; ``submission``: 587)."""
        sender = sender.lower()  # Postfix folds case in these lookups
        login = login.lower() if login else None
        trace: list[str] = []
        restrictions, sasl = self.restrictions(service)
        if login and not sasl:
            trace.append(f"{service} offers no AUTH: the login is not used")
            login = None
        decision = self._run(restrictions, client, sender, login, trace, 0)
        if decision is None:
            # Postfix permits when the list ends without a decision; ours always ends in reject.
            return Decision("OK", "no restriction decided", "(end of list)", tuple(trace))
        action, reason, restriction = decision
        return Decision(action, reason, restriction, tuple(trace))

    def _run(
        self,
        tokens: list[str],
        client: netaddr.IPAddress,
        sender: str,
        login: str | None,
        trace: list[str],
        depth: int,
    ) -> tuple[str, str, str] | None:
        if depth > _MAX_DEPTH:
            raise InternalError("restriction classes nest too deep")
        index = 0
        while index < len(tokens):
            name = tokens[index]
            index += 1
            if name in _TABLE_RESTRICTIONS:
                spec = tokens[index]
                index += 1
                table = self.table(spec)
                shown = (
                    f"{name} {table.name}"
                    if table.kind == "static"
                    else f"{name} {table.kind}:{table.name}"
                )
                if name == "check_client_access":
                    value = self._client(table, client)
                elif name == "check_sender_access":
                    value = table.lookup(self._sender_keys(sender))
                else:
                    value = table.lookup([login]) if login else None
                if value is None:
                    trace.append(f"{shown}: no match")
                    continue
                trace.append(f"{shown}: {value}")
                outcome = self._action(value, shown, client, sender, login, trace, depth)
                if outcome is not None:
                    return outcome
            elif name == "permit":
                return ("OK", "permit", name)
            elif name == "reject":
                trace.append("reject")
                return ("REJECT", "Access denied", name)
            elif name == "permit_sasl_authenticated":
                if login:
                    trace.append(f"permit_sasl_authenticated: logged in as {login}")
                    return ("OK", f"logged in as {login}", name)
                trace.append("permit_sasl_authenticated: not logged in")
            elif name == "reject_sender_login_mismatch":
                outcome = self._login_mismatch(sender, login, trace)
                if outcome is not None:
                    return outcome
            elif name in self.classes:
                trace.append(f"restriction class {name}")
                outcome = self._run(
                    _tokens(self.params[name]), client, sender, login, trace, depth + 1
                )
                if outcome is not None:
                    return outcome
            else:
                raise InternalError(f"query cannot simulate the restriction {name!r}")
        return None

    def _action(
        self,
        value: str,
        shown: str,
        client: netaddr.IPAddress,
        sender: str,
        login: str | None,
        trace: list[str],
        depth: int,
    ) -> tuple[str, str, str] | None:
        word, _, rest = value.partition(" ")
        if word.upper() in _OK_WORDS or word.isdigit():
            return ("OK", f"{word} from {shown}", shown)
        if word.upper() == "REJECT":
            return ("REJECT", rest or "Access denied", shown)
        if word.upper() == "DUNNO":
            return None
        # Anything else is a restriction (a class name or a built-in) evaluated in place.
        return self._run(_tokens(value), client, sender, login, trace, depth + 1)

    def _login_mismatch(
        self, sender: str, login: str | None, trace: list[str]
    ) -> tuple[str, str, str] | None:
        spec = self.params.get("smtpd_sender_login_maps")
        if not spec:
            raise InternalError("reject_sender_login_mismatch without smtpd_sender_login_maps")
        table = self.table(spec)
        _user, _, domain = sender.rpartition("@")
        owners_text = table.lookup([sender, f"@{domain}"])
        owners = [o for o in re.split(r"[\s,]+", owners_text or "") if o]
        name = "reject_sender_login_mismatch"
        if login is None:
            if owners:
                trace.append(f"{name}: {sender} is owned by {', '.join(owners)}; not logged in")
                return ("REJECT", f"<{sender}>: Sender address rejected: not logged in", name)
        elif login not in owners:
            trace.append(f"{name}: {sender} is not owned by {login}")
            return (
                "REJECT",
                f"<{sender}>: Sender address rejected: not owned by user {login}",
                name,
            )
        trace.append(f"{name}: passed")
        return None


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


def _segment(site: Site | None, network: netaddr.IPNetwork) -> str | None:
    if site is None:
        return None
    for segment in site.mod_segments:
        if any(p.version == network.version and network in p for p in segment.prefixes):
            return segment.name
    return None


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
    for device, how in find(result.devices, query):
        unit = (units or {}).get(device.unit)
        matches.append(
            Match(
                device=device,
                how=how,
                unit_name=getattr(unit, "name", None),
                segment=_segment(site, device.network),
                appearances=appearances(device, artifacts) if artifacts is not None else (),
            )
        )
    answers: list[Answer] = []
    if sender is not None and artifacts is not None:
        relay = Relay(artifacts)
        seen = set()
        clients: list[tuple[str | None, netaddr.IPAddress | None, str | None]] = [
            (m.device.name, _client_of(query, m.device), login or m.device.account) for m in matches
        ] or [(None, _client_of(query, None), login)]
        for name, client, who in clients:
            if client is None or (str(client), who) in seen:
                continue
            seen.add((str(client), who))
            # A login means the submission port (the only one offering AUTH);
            # without one the client talks to the relay port.
            service = "submission" if who else "smtp"
            port = None
            if site is not None:
                port = site.submission_port if who else site.relay_port
            decision = relay.decide(client, sender, who, service)
            answers.append(Answer(name, str(client), service, port, who, sender.lower(), decision))
    return QueryResult(
        query=query,
        as_of=as_of,
        matches=tuple(matches),
        compiled=artifacts is not None,
        errors=result.errors,
        answers=tuple(answers),
    )


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
