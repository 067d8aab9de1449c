"""Postfix target: access maps, restriction classes and a main.cf fragment.

Artifacts (under ``postfix/``), all read by Postfix from
``${config_directory}/relaygate/`` on the relay:

- ``main.cf.fragment``: ``name = value`` lines the deploy applies with
  ``postconf -e``. Relay policy lives only in ``smtpd_relay_restrictions``
  (port 25: refused clients, legacy clients, reject; no SASL there) and in
  ``relaygate_submission_relay_restrictions`` (port 587: refused clients and
  logins, ``reject_sender_login_mismatch``, logged-in clients, reject), never
  in ``mynetworks``.
- ``master.cf.fragment``: ``postconf -P`` lines that make the submission
  service use its restrictions and offer AUTH.
- ``legacy_clients`` (lmdb source): IPv4 host -> restriction class.
  ``legacy_clients.cidr``: IPv4 prefixes and every IPv6 entry -> class
  (indexed maps match IPv6 by string form only; cidr compares values).
- ``senders/<class>`` (lmdb source): the senders one class allows -> OK.
  Postfix ignores a lookup table on the right-hand side of an access map,
  which is why each distinct sender set is a named restriction class.
- ``sender_login`` (lmdb source): sender -> the accounts that own it, used by
  ``reject_sender_login_mismatch``.
- ``refused_clients`` / ``refused_clients.cidr`` / ``refused_logins``:
  revoked and suspended devices -> REJECT with a short reason.
"""

from __future__ import annotations

import datetime as dt

from relaygate.model import Status
from relaygate.policy import Policy
from relaygate.render import Artifacts, Header, guards, render_template, target

MAP_DIR = "${config_directory}/relaygate"
OK = "OK"
REJECT = "REJECT"
#: The submission service's restrictions live in this parameter; the service
#: uses it with ``-o smtpd_relay_restrictions=$relaygate_submission_relay_restrictions``.
SUBMISSION_PARAMETER = "relaygate_submission_relay_restrictions"
#: The service ``master.cf.fragment`` configures (``postconf -P``).
SUBMISSION_SERVICE = "submission/inet"
_REFUSED_CLIENTS = (
    f"check_client_access lmdb:{MAP_DIR}/refused_clients",
    f"check_client_access cidr:{MAP_DIR}/refused_clients.cidr",
)
#: Port 25: refused clients first, then legacy clients (each bound to its
#: sender class), then nothing else. No SASL here: port 25 offers no AUTH.
RELAY_RESTRICTIONS = (
    *_REFUSED_CLIENTS,
    f"check_client_access lmdb:{MAP_DIR}/legacy_clients",
    f"check_client_access cidr:{MAP_DIR}/legacy_clients.cidr",
    "reject",
)
#: Port 587: refused clients and logins, then only a logged-in client using a
#: sender its login owns. A legacy device's address grants nothing here.
SUBMISSION_RESTRICTIONS = (
    *_REFUSED_CLIENTS,
    f"check_sasl_access lmdb:{MAP_DIR}/refused_logins",
    "reject_sender_login_mismatch",
    "permit_sasl_authenticated",
    "reject",
)
#: What a restriction class answers for a sender outside its set.
CLASS_FALLBACK = "check_sender_access static:{REJECT sender not registered for this device}"


def class_definition(name: str) -> str:
    """The value of one restriction class: its own senders, else a clear refusal."""
    return f"check_sender_access lmdb:{MAP_DIR}/senders/{name}, {CLASS_FALLBACK}"


def main_cf(classes: list[str]) -> dict[str, str]:
    """Every main.cf parameter the fragment sets, in order, from code constants."""
    settings = {"smtpd_restriction_classes": ", ".join(classes)}
    settings.update({name: class_definition(name) for name in classes})
    settings["smtpd_sender_login_maps"] = f"lmdb:{MAP_DIR}/sender_login"
    settings["smtpd_relay_restrictions"] = ", ".join(RELAY_RESTRICTIONS)
    settings[SUBMISSION_PARAMETER] = ", ".join(SUBMISSION_RESTRICTIONS)
    return settings


#: ``postconf -P`` lines for the submission service.
MASTER_CF = {
    f"{SUBMISSION_SERVICE}/smtpd_sasl_auth_enable": "yes",
    f"{SUBMISSION_SERVICE}/smtpd_relay_restrictions": f"${SUBMISSION_PARAMETER}",
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


@target("postfix")
def render(policy: Policy, header: Header) -> Artifacts:
    classes = [
        (guards.class_name(c.name), [guards.mail(s) for s in c.senders]) for c in policy.classes
    ]
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
    logins = [
        (guards.mail(sender), ",".join(guards.mail(a) for a in accounts))
        for sender, accounts in policy.sender_logins.items()
    ]
    common = {"header": header.lines("#"), "map_dir": MAP_DIR}
    artifacts: Artifacts = {
        "postfix/main.cf.fragment": render_template(
            "postfix/main.cf.fragment.j2",
            settings=main_cf([name for name, _ in classes]),
            **common,
        ),
        "postfix/master.cf.fragment": render_template(
            "postfix/master.cf.fragment.j2", settings=MASTER_CF, **common
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
        "postfix/sender_login": render_template(
            "postfix/map.j2",
            entries=[(s, a, "") for s, a in logins],
            what="sender address -> owning accounts (smtpd_sender_login_maps)",
            **common,
        ),
    }
    for name, senders in classes:
        artifacts[f"postfix/senders/{name}"] = render_template(
            "postfix/map.j2",
            entries=[(s, OK, "") for s in senders],
            what=f"senders allowed by restriction class {name}",
            **common,
        )
    return artifacts
