"""What a relay built from relaygate's Postfix artifacts answers: smtpd's relay check, simulated.

Input: main.cf parameters, master.cf service overrides and the table sources
(``Relay.from_artifacts`` takes them from a compile). ``Relay.decide`` takes one
transaction (client address, optional client hostname, MAIL FROM as the
client spelled it, optional SASL login, the service, whether STARTTLS was
done) and returns the decision of the service's ``smtpd_relay_restrictions``
for a recipient outside the relay's domains, with a trace of every step.

It reads the same text Postfix reads, with Postfix's rules (checked against
a real Postfix 3.7 in the tests): the null sender in every spelling becomes
``smtpd_null_access_lookup_key``; lookups fold case (Unicode case folding
when ``smtputf8_enable`` is on, so U+017F long s matches ``s``); an address
extension is stripped after the full address (``recipient_delimiter``);
indexed client maps are searched by hostname (with parent domains when
``parent_domain_matches_subdomains`` names ``smtpd_access_maps``) and then by
address and its octet prefixes; cidr tables by address only, first match in
file order; ``reject_sender_login_mismatch`` skips the null sender. A
restriction it does not know fails closed (``InternalError``).

The daily limit (``smtpd_end_of_data_restrictions``, asked of postfwd after
DATA) is not simulated: it depends on how many messages came before, which
only postfwd knows; ``relaygate.limits`` gives each record's number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import netaddr

from relaygate.errors import InternalError
from relaygate.render import Artifacts
from relaygate.render.postfix import MAP_DIR, syntax

_TABLE_RESTRICTIONS = frozenset({"check_client_access", "check_sender_access", "check_sasl_access"})
_OK_WORDS = frozenset({"OK", "RELAY", "PERMIT"})
_INDEXED = frozenset({"lmdb", "hash", "btree", "texthash", "inline"})
_MAX_DEPTH = 10
#: Postfix defaults (compatibility_level 3.6) of the settings the simulation reads.
DEFAULTS = {
    "smtpd_sasl_auth_enable": "no",
    "smtpd_tls_auth_only": "no",
    "smtpd_tls_security_level": "",
    "recipient_delimiter": "",
    "smtputf8_enable": "yes",
    "smtpd_null_access_lookup_key": "<>",
    "parent_domain_matches_subdomains": (
        "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
        "qmqpd_authorized_clients,relay_domains,smtpd_access_maps"
    ),
    "smtpd_restriction_classes": "",
    "myorigin": "$myhostname",
    "myhostname": "relay.invalid",
}
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_KEEP = frozenset({"config_directory"})
_TABLE_SPEC = re.compile(
    r"(?:cidr|hash|lmdb|btree|texthash|inline|static|regexp|pcre|proxy|ldap|mysql|pgsql"
    r"|sqlite|tcp|socketmap|memcache|nis|environ|fail|unionmap|pipemap|randmap):"
)


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # OK | REJECT | DEFER
    reason: str
    restriction: str  # the restriction that decided
    trace: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Table:
    kind: str  # lmdb | hash | cidr | static | inline ...
    name: str  # artifact path, or the inline text
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
            try:
                network = netaddr.IPNetwork(pattern.strip("[]").replace("]/", "/"))
            except (netaddr.AddrFormatError, ValueError) as error:
                raise InternalError(f"cidr pattern {pattern!r} in {self.name}") from error
            if network.version == address.version and address in network:
                return value
        return None


def _fold(text: str, utf8: bool) -> str:
    if utf8:
        return text.casefold()
    return "".join(c.lower() if c.isascii() else c for c in text)


def envelope_address(text: str) -> str:
    """MAIL FROM text (with or without angle brackets) the way smtpd reads it.

    A source route is dropped (``@a,@b:x@d`` is ``x@d``; ``@route:`` is the
    null sender), ``""`` is the null sender, a quoted local part that needs no
    quotes loses them, a trailing dot after the domain is dropped. The result
    is empty for the null sender.
    """
    value = text.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    if value.startswith("@") and ":" in value:
        value = value.split(":", 1)[1]
    if value == '""':
        return ""
    local, at, domain = value.rpartition("@")
    if not at:
        return value
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        unquoted = re.sub(r"\\(.)", r"\1", local[1:-1])
        local = unquoted if _ATEXT.fullmatch(unquoted) else local
    return f"{local}@{domain.removesuffix('.')}"


@dataclass
class Relay:
    """A relay's effective restriction lists, maps and settings."""

    params: dict[str, str]
    services: dict[str, dict[str, str]] = field(default_factory=dict)
    #: table name (as the restriction spells it, ``$config_directory`` kept) -> source text
    load: Callable[[str], str | None] = field(default=lambda _name: None)

    @classmethod
    def from_artifacts(cls, artifacts: Artifacts) -> Relay:
        """The relay a deploy of these artifacts builds (on a relay with no other settings)."""
        prefix = f"{MAP_DIR}/"

        def load(location: str) -> str | None:
            if not location.startswith(prefix):
                return None
            return artifacts.get("postfix/" + location.removeprefix(prefix))

        return cls(
            params=syntax.parameters(artifacts["postfix/main.cf.fragment"]),
            services=syntax.overrides(artifacts.get("postfix/master.cf.fragment", "")),
            load=load,
        )

    # -- settings -------------------------------------------------------------------

    def setting(self, name: str, service: str | None = None) -> str:
        """A parameter as ``service`` sees it: its ``-o`` override, main.cf, the default."""
        overrides = self.services.get(service or "", {})
        value = overrides.get(name, self.params.get(name, DEFAULTS.get(name)))
        if value is None:
            raise InternalError(f"{name} is not set and has no known default")
        lookup = {**DEFAULTS, **self.params, **overrides}
        return syntax.expand(value, lookup, _KEEP)

    def _service(self, service: str) -> str:
        return service if "/" in service else f"{service}/inet"

    def table(self, spec: str) -> Table:
        kind, _, location = spec.partition(":")
        if location.startswith("{"):
            if not location.endswith("}"):
                raise InternalError(f"inline table {spec} without a closing brace")
            body = location[1:-1].strip()
            if kind == "static":
                return Table(kind, spec, (("*", body),))
            if kind == "cidr":
                rules = [rule.split(None, 1) for rule in syntax.inline_items(body)]
                return Table(kind, spec, tuple((r[0], r[1] if len(r) > 1 else "") for r in rules))
            if kind == "inline":
                pairs = [item.partition("=") for item in syntax.tokens(body)]
                return Table(kind, spec, tuple((k.strip(), v.strip()) for k, _, v in pairs))
            raise InternalError(f"cannot simulate the inline table {spec}")
        text = self.load(location)
        if text is None:
            raise InternalError(f"table {spec} is not one of the compiled maps")
        name = f"postfix/{location.removeprefix(MAP_DIR + '/')}"
        return Table(kind, name, tuple((e.key, e.value) for e in syntax.table_entries(text)))

    # -- lookup keys -------------------------------------------------------------

    def _domain_keys(self, domain: str) -> list[str]:
        labels = domain.split(".")
        parent = "smtpd_access_maps" in self.setting("parent_domain_matches_subdomains")
        keys = [domain]
        for index in range(1, len(labels)):
            rest = ".".join(labels[index:])
            keys.append(rest if parent else f".{rest}")
        return keys

    def address_keys(self, address: str, service: str) -> list[str]:
        """access(5) lookup keys of an envelope address: full, unextended, domains, local@."""
        if address == "":
            return [self.setting("smtpd_null_access_lookup_key", service)]
        utf8 = self.setting("smtputf8_enable", service) == "yes"
        folded = _fold(address, utf8)
        local, at, domain = folded.rpartition("@")
        if not at:
            local, domain = folded, _fold(self.setting("myorigin", service), utf8)
        delimiters = self.setting("recipient_delimiter", service)
        bare = local
        for index, char in enumerate(local):
            if delimiters and char in delimiters and index > 0:
                bare = local[:index]
                break
        keys = [f"{local}@{domain}"]
        if bare != local:
            keys.append(f"{bare}@{domain}")
        keys += self._domain_keys(domain)
        keys.append(f"{local}@")
        if bare != local:
            keys.append(f"{bare}@")
        return keys

    def _client_keys(self, client: netaddr.IPAddress, name: str | None) -> list[str]:
        keys = self._domain_keys(name.lower()) if name and name != "unknown" else []
        text = str(client)
        keys.append(text)
        separator = "." if client.version == 4 else ":"
        parts = text.split(separator)
        keys += [separator.join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]
        return keys

    def _mynetworks(self, client: netaddr.IPAddress, service: str) -> bool:
        for item in syntax.tokens(self.setting("mynetworks", service)):
            if _TABLE_SPEC.match(item):
                raise InternalError(f"mynetworks table {item} cannot be simulated")
            text = item.replace("[", "").replace("]", "")
            try:
                network = netaddr.IPNetwork(text)
            except (netaddr.AddrFormatError, ValueError) as error:
                raise InternalError(f"mynetworks entry {item!r} cannot be simulated") from error
            if network.version == client.version and client in network:
                return True
        return False

    # -- the decision --------------------------------------------------------------

    def auth_offered(self, service: str, tls: bool) -> bool:
        service = self._service(service)
        if self.setting("smtpd_sasl_auth_enable", service) != "yes":
            return False
        return tls or self.setting("smtpd_tls_auth_only", service) != "yes"

    def decide(
        self,
        client: netaddr.IPAddress,
        sender: str,
        login: str | None,
        service: str = "smtp",
        *,
        client_name: str | None = None,
        tls: bool = True,
    ) -> Decision:
        """The answer of ``service`` (a master.cf service, e.g. ``smtp`` or ``submission``)."""
        service = self._service(service)
        trace: list[str] = []
        if not tls and self.setting("smtpd_tls_security_level", service) == "encrypt":
            trace.append(f"{service} requires STARTTLS before MAIL")
            return Decision(
                "REJECT",
                "Must issue a STARTTLS command first",
                "smtpd_tls_security_level",
                tuple(trace),
            )
        if login and not self.auth_offered(service, tls):
            trace.append(f"{service} offers no AUTH here: the login is not used")
            login = None
        value = self.setting("smtpd_relay_restrictions", service)
        context = _Context(self, service, client, client_name, envelope_address(sender), login)
        outcome = context.run(syntax.tokens(value), trace, 0)
        if outcome is None:
            return Decision("OK", "no restriction decided", "(end of list)", tuple(trace))
        action, reason, restriction = outcome
        return Decision(action, reason, restriction, tuple(trace))


@dataclass
class _Context:
    relay: Relay
    service: str
    client: netaddr.IPAddress
    client_name: str | None
    sender: str  # envelope form, "" for the null sender
    login: str | None

    @property
    def classes(self) -> set[str]:
        return set(syntax.tokens(self.relay.setting("smtpd_restriction_classes", self.service)))

    def run(self, tokens: list[str], trace: list[str], depth: int) -> tuple[str, str, str] | None:
        if depth > _MAX_DEPTH:
            raise InternalError("restriction classes nest too deep")
        index = 0
        while index < len(tokens):
            name = tokens[index]
            index += 1
            if name in _TABLE_RESTRICTIONS:
                if index >= len(tokens):
                    raise InternalError(f"{name} without a table")
                spec = tokens[index]
                index += 1
                outcome = self._table_restriction(name, spec, trace, depth)
            else:
                outcome = self._restriction(name, trace, depth)
            if outcome is not None:
                return outcome
        return None

    def _table_restriction(
        self, name: str, spec: str, trace: list[str], depth: int
    ) -> tuple[str, str, str] | None:
        table = self.relay.table(spec)
        shown = (
            f"{name} {table.name}"
            if table.kind == "static" or spec.partition(":")[2].startswith("{")
            else f"{name} {table.kind}:{table.name}"
        )
        if name == "check_client_access":
            if table.kind == "cidr":
                value = table.cidr_lookup(self.client)
            elif table.kind in _INDEXED or table.kind == "static":
                value = table.lookup(self.relay._client_keys(self.client, self.client_name))
            else:
                raise InternalError(f"cannot simulate {table.kind} client tables")
        elif table.kind not in _INDEXED and table.kind != "static":
            raise InternalError(f"cannot simulate {table.kind} tables in {name}")
        elif name == "check_sender_access":
            value = table.lookup(self.relay.address_keys(self.sender, self.service))
        elif self.login is None:
            trace.append(f"{shown}: not logged in")
            return None
        else:
            value = table.lookup(self.relay.address_keys(self.login, self.service))
        if value is None:
            trace.append(f"{shown}: no match")
            return None
        trace.append(f"{shown}: {value}")
        return self._action(value, shown, trace, depth)

    def _action(
        self, value: str, shown: str, trace: list[str], depth: int
    ) -> tuple[str, str, str] | None:
        word, _, rest = value.partition(" ")
        upper = word.upper()
        if upper in _OK_WORDS or value.isdigit():
            return ("OK", f"{word} from {shown}", shown)
        if upper == "REJECT" or (len(word) == 3 and word.isdigit() and word[0] == "5"):
            return ("REJECT", rest or "Access denied", shown)
        if upper in ("DEFER", "DEFER_IF_PERMIT") or (
            len(word) == 3 and word.isdigit() and word[0] == "4"
        ):
            return ("DEFER", rest or "Try again later", shown)
        if upper == "DUNNO":
            return None
        # Anything else is a restriction (a class name or a built-in) evaluated in place.
        return self.run(syntax.tokens(value), trace, depth + 1)

    def _restriction(self, name: str, trace: list[str], depth: int) -> tuple[str, str, str] | None:
        if name == "permit":
            trace.append("permit")
            return ("OK", "permit", name)
        if name == "reject":
            trace.append("reject")
            return ("REJECT", "Access denied", name)
        if name in ("reject_unauth_destination", "defer_unauth_destination"):
            # Every decision is about a recipient outside the relay's own domains.
            trace.append(f"{name}: the recipient is not local")
            action = "REJECT" if name.startswith("reject") else "DEFER"
            return (action, "Relay access denied", name)
        if name == "permit_mynetworks":
            if self.relay._mynetworks(self.client, self.service):
                trace.append(f"permit_mynetworks: {self.client} is in mynetworks")
                return ("OK", f"{self.client} is in mynetworks", name)
            trace.append("permit_mynetworks: not in mynetworks")
            return None
        if name == "permit_sasl_authenticated":
            if self.login:
                trace.append(f"permit_sasl_authenticated: logged in as {self.login}")
                return ("OK", f"logged in as {self.login}", name)
            trace.append("permit_sasl_authenticated: not logged in")
            return None
        if name in (
            "reject_sender_login_mismatch",
            "reject_authenticated_sender_login_mismatch",
            "reject_unauthenticated_sender_login_mismatch",
        ):
            return self._login_mismatch(name, trace)
        if name in self.classes:
            trace.append(f"restriction class {name}")
            value = self.relay.setting(name, self.service)
            return self.run(syntax.tokens(value), trace, depth + 1)
        raise InternalError(f"query cannot simulate the restriction {name!r}")

    def _login_mismatch(self, name: str, trace: list[str]) -> tuple[str, str, str] | None:
        if not self.sender:
            # smtpd_check.c tests ``state->sender && *state->sender``: the null
            # sender is never checked against smtpd_sender_login_maps.
            trace.append(f"{name}: skipped for the null sender")
            return None
        spec = self.relay.setting("smtpd_sender_login_maps", self.service)
        if not spec:
            raise InternalError(f"{name} without smtpd_sender_login_maps")
        if name == "reject_authenticated_sender_login_mismatch" and self.login is None:
            return None
        table = self.relay.table(spec)
        owners_text = table.lookup(self.relay.address_keys(self.sender, self.service))
        owners = [o for o in re.split(r"[\s,]+", owners_text or "") if o]
        if self.login is None:
            if owners and name != "reject_authenticated_sender_login_mismatch":
                trace.append(
                    f"{name}: {self.sender} is owned by {', '.join(owners)}; not logged in"
                )
                return ("REJECT", f"<{self.sender}>: Sender address rejected: not logged in", name)
        elif name != "reject_unauthenticated_sender_login_mismatch" and self.login not in owners:
            trace.append(f"{name}: {self.sender} is not owned by {self.login}")
            return (
                "REJECT",
                f"<{self.sender}>: Sender address rejected: not owned by user {self.login}",
                name,
            )
        trace.append(f"{name}: passed")
        return None


def relay_from(
    params: Mapping[str, str],
    services: Mapping[str, Mapping[str, str]],
    load: Callable[[str], str | None],
) -> Relay:
    """A relay from effective settings (``postconf -n``, ``postconf -P``) and a table loader."""
    return Relay(dict(params), {k: dict(v) for k, v in services.items()}, load)
