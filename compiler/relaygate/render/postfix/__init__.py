"""Postfix target: access maps, restriction classes, a main.cf and a master.cf fragment.

This package owns Postfix semantics for relaygate: this module writes the
artifacts, ``syntax`` reads them back (one rule per format), ``evaluate``
answers what a relay built from them does with a transaction, and
``effective`` lists how a relay's effective settings would widen them.

Artifacts (under ``postfix/``), read by Postfix from
``${config_directory}/relaygate/`` on the relay:

- ``main.cf.fragment``: ``name = value`` lines the deploy applies with
  ``postconf -e``. First the settings the policy's meaning depends on
  (``PINNED``), then the restriction classes, then the two relay policies:
  ``smtpd_relay_restrictions`` (the relay port: loopback, refused clients,
  legacy clients bound to their senders, reject; no AUTH there) and
  ``relaygate_submission_relay_restrictions`` (the submission port: refused
  clients and logins, then each active login bound to its records' addresses
  and senders, reject). Never ``permit_sasl_authenticated``: the SASL
  backend knows logins the inventory does not. Last,
  ``smtpd_end_of_data_restrictions``: once per message, on both services,
  ask the volume-limit daemon (postfwd on 127.0.0.1, ``postfwd/postfwd.cf``);
  when it does not answer, mail keeps flowing (``default_action=DUNNO``)
  and smtpd logs ``warning: problem talking to server``.
- ``master.cf.fragment``: ``postconf -P`` lines for the two services, named
  after the site's ports (``service_name``): AUTH only on submission, only
  after STARTTLS (the submission service's relay policy is its own
  parameter). The relay port uses main.cf's ``smtpd_relay_restrictions``;
  ``effective.widenings`` finds any ``-o`` that would replace it.
- ``legacy_clients`` (lmdb source): IPv4 host -> sender class.
  ``legacy_clients.cidr``: IPv4 prefixes and every IPv6 entry -> class.
- ``senders/<class>`` (lmdb source): the senders one class allows -> OK;
  ``<>`` (the null sender's lookup key) only for a record that opts in.
- ``logins`` (lmdb source): login of an active authenticated record -> its
  login class, which checks the client address (an inline cidr table) and
  then the sender class of the record at that address.
- ``refused_clients`` / ``refused_clients.cidr`` / ``refused_logins``:
  revoked and suspended devices -> REJECT with a short reason.

Postfix ignores a lookup table on the right-hand side of an access map,
which is why each binding is a named restriction class.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable

from relaygate.errors import RenderRefused
from relaygate.model import NULL_SENDER_KEY, Status
from relaygate.policy import Policy, class_name
from relaygate.render import Artifacts, Header, guards, render_template, target

MAP_DIR = "${config_directory}/relaygate"
OK = "OK"
REJECT = "REJECT"
#: The lookup key Postfix uses for the null sender in access maps (pinned below).
NULL_SENDER = NULL_SENDER_KEY
#: Every spelling of MAIL FROM that Postfix reads as the null sender (checked in tests).
NULL_SENDER_SPELLINGS = ("", '""', "@route:", "@a,@b:")
#: The submission service's restrictions live in this parameter; the service
#: uses it with ``-o smtpd_relay_restrictions=$relaygate_submission_relay_restrictions``.
SUBMISSION_PARAMETER = "relaygate_submission_relay_restrictions"
#: What every IPv4/IPv6 host address may be to Postfix's own loopback clients.
LOOPBACK = "127.0.0.0/8 [::1]/128"
#: Settings the compiled policy's meaning depends on, pinned on every relay:
#: - mynetworks: loopback only, for ``permit_mynetworks`` (the relay's own mail);
#: - parent_domain_matches_subdomains without smtpd_access_maps: otherwise an
#:   IPv4 key in an lmdb client map also matches a client *hostname* such as
#:   ``mail.10.20.30.41`` (the default value minus that one feature);
#: - recipient_delimiter empty: otherwise ``own+tag@domain`` matches ``own@domain``;
#: - smtputf8_enable no: otherwise lookups fold Unicode case, and a look-alike
#:   such as ``hodges-\u017fcans@`` (U+017F, long s) matches ``hodges-scans@``;
#: - smtpd_null_access_lookup_key ``<>``: the key a null-sender opt-in is written as;
#: - smtpd_sasl_auth_enable no: the relay port never offers AUTH (submission
#:   turns it on for itself in master.cf.fragment).
PINNED = {
    "mynetworks": LOOPBACK,
    "parent_domain_matches_subdomains": (
        "debug_peer_list, fast_flush_domains, mynetworks, permit_mx_backup_networks,"
        " qmqpd_authorized_clients, relay_domains"
    ),
    "recipient_delimiter": "",
    "smtputf8_enable": "no",
    "smtpd_null_access_lookup_key": NULL_SENDER,
    "smtpd_sasl_auth_enable": "no",
}
#: Parameters an older relaygate set and this one no longer does: a deploy removes them.
RETIRED = ("smtpd_sender_login_maps",)

_REFUSED_CLIENTS = (
    f"check_client_access lmdb:{MAP_DIR}/refused_clients",
    f"check_client_access cidr:{MAP_DIR}/refused_clients.cidr",
)
#: The relay port: the relay's own loopback clients (its local mail), refused
#: clients, then legacy clients (each bound to its sender class), then nothing.
RELAY_RESTRICTIONS = (
    "permit_mynetworks",
    *_REFUSED_CLIENTS,
    f"check_client_access lmdb:{MAP_DIR}/legacy_clients",
    f"check_client_access cidr:{MAP_DIR}/legacy_clients.cidr",
    "reject",
)
#: The submission port: refused clients and logins, then each login of an
#: active record through its login class. No login, an unknown login, or a
#: legacy device's address alone: reject.
SUBMISSION_RESTRICTIONS = (
    *_REFUSED_CLIENTS,
    f"check_sasl_access lmdb:{MAP_DIR}/refused_logins",
    f"check_sasl_access lmdb:{MAP_DIR}/logins",
    "reject",
)
#: The volume-limit check, once per message (its attributes are fixed here, so
#: main.cf's ``smtpd_policy_service_*`` defaults do not change how it fails):
#: - default_action=DUNNO: when postfwd is down or slow, mail keeps flowing (the
#:   relay policy itself is the access maps above, not the daemon); smtpd logs
#:   ``warning: problem talking to server 127.0.0.1:PORT: <reason>`` (tested:
#:   "Application error" when postfwd died under an open connection);
#: - try_limit=1 and timeout=10s: one attempt, so a dead daemon delays a
#:   message by at most the timeout instead of stalling the session.
POLICY_SERVICE = (
    "check_policy_service {{ inet:127.0.0.1:{port}, default_action=DUNNO,"
    " try_limit=1, timeout=10s }}"
)
END_OF_DATA = "smtpd_end_of_data_restrictions"


def end_of_data_restrictions(port: int) -> str:
    """The value of ``smtpd_end_of_data_restrictions``: the volume-limit policy service."""
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise RenderRefused(f"refusing to render policy service port {port!r}")
    return POLICY_SERVICE.format(port=port)


#: What a sender class answers for a sender outside its set.
CLASS_FALLBACK = "check_sender_access static:{REJECT sender not registered for this device}"
#: What a login class answers for a client address outside the login's records.
LOGIN_FALLBACK = "check_client_access static:{REJECT login not registered for this client address}"
#: The class names are listed in parameters of at most CLASS_CHUNK names each
#: (``relaygate_classes_1``, ...), which ``smtpd_restriction_classes`` names: one
#: list of thousands of classes would be longer than one ``postconf -e`` argument
#: may be (128 KiB on Linux).
CLASS_LIST = "relaygate_classes_"
CLASS_CHUNK = 1000
#: The shape of the restriction class names relaygate generates.
SENDER_CLASS = re.compile(r"relaygate_s_[0-9a-f]{12}")
LOGIN_CLASS = re.compile(r"relaygate_l_[0-9a-f]{12}")
#: Well-known master.cf service names of the standard ports.
_SERVICE_NAMES = {25: "smtp", 587: "submission"}


def artifact_kind(path: str) -> str:
    """How a relay uses a ``postfix/`` artifact: ``lmdb`` (build with postmap), ``cidr``
    (read as text), ``main.cf`` (postconf -e) or ``master.cf`` (postconf -P)."""
    name = path.removeprefix("postfix/")
    if name == "main.cf.fragment":
        return "main.cf"
    if name == "master.cf.fragment":
        return "master.cf"
    return "cidr" if name.endswith(".cidr") else "lmdb"


def service_name(port: int) -> str:
    """The master.cf service that serves ``port``: its /etc/services name or the number."""
    return _SERVICE_NAMES.get(int(port), str(int(port)))


def class_definition(name: str) -> str:
    """The value of one sender class: its own senders, else a clear refusal."""
    return f"check_sender_access lmdb:{MAP_DIR}/senders/{name}, {CLASS_FALLBACK}"


def login_class_definition(bindings: Iterable[tuple[str, str]]) -> str:
    """The value of one login class: client address (net/len) -> that record's sender class."""
    rules = ", ".join(f"{{{cidr} {sender_class}}}" for cidr, sender_class in bindings)
    return f"check_client_access cidr:{{ {rules} }}, {LOGIN_FALLBACK}"


def login_class_name(bindings: Iterable[tuple[str, str]]) -> str:
    """A stable name for a login's bindings: the same bindings always get the same class."""
    text = "\n".join(f"{cidr} {sender_class}" for cidr, sender_class in bindings)
    return f"relaygate_l_{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def main_cf(
    sender_classes: list[str],
    login_classes: dict[str, tuple[tuple[str, str], ...]],
    policy_port: int,
) -> dict[str, str]:
    """Every main.cf parameter the fragment sets, in order, from code constants."""
    settings = dict(PINNED)
    names = [*sender_classes, *login_classes]
    chunks = [names[i : i + CLASS_CHUNK] for i in range(0, len(names), CLASS_CHUNK)]
    settings["smtpd_restriction_classes"] = ", ".join(
        f"${CLASS_LIST}{number}" for number in range(1, len(chunks) + 1)
    )
    for number, chunk in enumerate(chunks, 1):
        settings[f"{CLASS_LIST}{number}"] = ", ".join(chunk)
    settings.update({name: class_definition(name) for name in sender_classes})
    settings.update(
        {name: login_class_definition(bindings) for name, bindings in login_classes.items()}
    )
    settings["smtpd_relay_restrictions"] = ", ".join(RELAY_RESTRICTIONS)
    settings[SUBMISSION_PARAMETER] = ", ".join(SUBMISSION_RESTRICTIONS)
    settings[END_OF_DATA] = end_of_data_restrictions(policy_port)
    return settings


def master_cf(relay_port: int, submission_port: int) -> dict[str, str]:
    """``postconf -P`` lines for the relay and submission services, from code constants."""
    relay = f"{service_name(relay_port)}/inet"
    submission = f"{service_name(submission_port)}/inet"
    return {
        f"{relay}/smtpd_sasl_auth_enable": "no",
        f"{submission}/smtpd_sasl_auth_enable": "yes",
        f"{submission}/smtpd_tls_security_level": "encrypt",
        f"{submission}/smtpd_tls_auth_only": "yes",
        f"{submission}/smtpd_relay_restrictions": f"${SUBMISSION_PARAMETER}",
    }


#: Reply text per status reason, from code; the data only selects one of them.
REASONS = {
    "spam": "sent spam",
    "phishing": "sent phishing",
    "compromised": "device compromised",
    "request": "at the owner's request",
    "inactive": "inactive",
    "investigation": "under investigation",
    "expired": "exception expired",
    "netreg": "NetReg reservation missing or changed",
    "approver": "approver not listed for the unit",
    "unspecified": "see the relay team",
}
STATUS_WORD = {Status.REVOKED: "revoked", Status.SUSPENDED: "suspended"}


def _reply(status: Status, reason: str, ticket: str | None, since: dt.date | None = None) -> str:
    text = f"{REJECT} relay access {STATUS_WORD[status]}: {REASONS[reason]}"
    if since is not None:  # a date object, formatted here: never text from data
        text += f" on {since.isoformat()}"
    checked = guards.ticket(ticket)
    return f"{text} ({checked})" if checked else text


def _is_v4_host(address: str) -> bool:
    return ":" not in address and "/" not in address


def sender_key(value: str) -> str:
    """A sender as a map key: a checked address, or the null sender's key."""
    return NULL_SENDER if value == NULL_SENDER else guards.mail(value)


def sender_classes(policy: Policy) -> dict[str, tuple[str, ...]]:
    """Every sender class the relay needs (legacy devices' and logins'), by name."""
    classes = {c.name: c.senders for c in policy.classes}
    for client in policy.authenticated:
        senders = tuple(sorted(client.senders))
        classes.setdefault(class_name(senders), senders)
    return dict(sorted(classes.items()))


def login_classes(policy: Policy) -> dict[str, dict[str, tuple[tuple[str, str], ...]]]:
    """Login -> {class name: bindings}: each active login bound to its records' addresses.

    A binding is (client net/len, sender class). Most specific address first, so
    a host inside another record's prefix gets its own record's senders.
    """
    by_login: dict[str, list[tuple[int, int, int, str, str]]] = {}
    for client in policy.authenticated:
        cidr = guards.cidr(client.address)
        sender_class = guards.class_name(class_name(tuple(sorted(client.senders))))
        network = client.network
        by_login.setdefault(guards.mail(client.account), []).append(
            (-network.prefixlen, network.version, network.first, cidr, sender_class)
        )
    result = {}
    for login in sorted(by_login):
        bindings = tuple((cidr, c) for *_, cidr, c in sorted(set(by_login[login])))
        result[login] = {login_class_name(bindings): bindings}
    return result


@target("postfix")
def render(policy: Policy, header: Header) -> Artifacts:
    classes = [
        (guards.class_name(name), [sender_key(s) for s in senders])
        for name, senders in sender_classes(policy).items()
    ]
    logins = login_classes(policy)
    login_definitions = {
        name: bindings for per_login in logins.values() for name, bindings in per_login.items()
    }
    legacy = [
        (guards.address(c.address), guards.class_name(c.sender_class), guards.name(c.name))
        for c in policy.legacy
    ]
    refused = [
        (
            guards.address(c.address),
            _reply(c.status, c.reason, c.ticket, c.since),
            guards.name(c.name),
        )
        for c in policy.refused
    ]
    refused_logins = [
        (guards.mail(c.account), _reply(c.status, c.reason, c.ticket, c.since), guards.name(c.name))
        for c in policy.refused
        if c.account
    ]
    account_names: dict[str, list[str]] = {}
    for client in policy.authenticated:
        account_names.setdefault(client.account, []).append(guards.name(client.name))
    common = {"header": header.lines("#"), "map_dir": MAP_DIR}
    site = policy.site
    artifacts: Artifacts = {
        "postfix/main.cf.fragment": render_template(
            "postfix/main.cf.fragment.j2",
            settings=main_cf(
                [name for name, _ in classes],
                dict(sorted(login_definitions.items())),
                site.volume_limits.port,
            ),
            **common,
        ),
        "postfix/master.cf.fragment": render_template(
            "postfix/master.cf.fragment.j2",
            settings=master_cf(site.relay_port, site.submission_port),
            relay_service=f"{service_name(site.relay_port)}/inet",
            relay_port=int(site.relay_port),
            submission_service=f"{service_name(site.submission_port)}/inet",
            submission_port=int(site.submission_port),
            **common,
        ),
        "postfix/legacy_clients": render_template(
            "postfix/map.j2",
            entries=[(a, c, n) for a, c, n in legacy if _is_v4_host(a)],
            what="legacy clients (IPv4 hosts) -> restriction class",
            **common,
        ),
        "postfix/legacy_clients.cidr": render_template(
            "postfix/map.j2",
            entries=[(guards.cidr(a), c, n) for a, c, n in legacy if not _is_v4_host(a)],
            what="legacy clients (prefixes and IPv6) -> restriction class",
            **common,
        ),
        "postfix/refused_clients": render_template(
            "postfix/map.j2",
            entries=[(a, r, n) for a, r, n in refused if _is_v4_host(a)],
            what="revoked and suspended clients (IPv4 hosts)",
            **common,
        ),
        "postfix/refused_clients.cidr": render_template(
            "postfix/map.j2",
            entries=[(guards.cidr(a), r, n) for a, r, n in refused if not _is_v4_host(a)],
            what="revoked and suspended clients (prefixes and IPv6)",
            **common,
        ),
        "postfix/refused_logins": render_template(
            "postfix/map.j2",
            entries=refused_logins,
            what="revoked and suspended SASL logins",
            **common,
        ),
        "postfix/logins": render_template(
            "postfix/map.j2",
            entries=[
                (login, next(iter(per_login)), " ".join(sorted(account_names[login])))
                for login, per_login in logins.items()
            ],
            what="SASL logins of active records -> login class (their addresses and senders)",
            **common,
        ),
    }
    for name, senders in classes:
        artifacts[f"postfix/senders/{name}"] = render_template(
            "postfix/map.j2",
            entries=[(s, OK, "") for s in sorted(senders)],
            what=f"senders allowed by restriction class {name}",
            **common,
        )
    return artifacts
