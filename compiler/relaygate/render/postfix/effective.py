"""Would a relay's effective settings widen the compiled policy? Every way they would.

Input: the compiled artifacts (``main.cf.fragment``, ``master.cf.fragment``) and
what the relay really runs with: ``postconf -n`` output (main.cf as set),
``postconf -P`` output (every ``-o`` of every master.cf service) and,
optionally, ``postconf -M`` output (the services). Output: a list of
problems, each one sentence naming the setting, where it is, what it is and
what relaygate compiled; empty when the relay enforces the compiled policy
as written. The deploy runs this before it reports a relay healthy.

What counts (each is a way the policy stops meaning what was reviewed):

- a parameter ``main.cf.fragment`` sets that is missing from main.cf or has
  another value (the relay policies, the classes, every pinned setting);
- a ``master.cf.fragment`` setting that is missing or different on its service;
- a ``-o`` override of any parameter ``main.cf.fragment`` sets, on any
  service that is reachable from the network, with another value (e.g. a
  port-25 ``-o smtpd_relay_restrictions=permit``, or an
  ``-o smtpd_end_of_data_restrictions=`` that drops the daily limit check);
  services bound to a loopback address only (a content filter's re-injection
  port) are the relay's own business;
- settings relaygate does not own but that hand relay decisions to someone
  else: XCLIENT or the proxy protocol for anything beyond loopback (a client
  could then claim any address or login), and rewriting of the envelope
  sender around the checks (``smtpd_command_filter``, ``canonical_maps``,
  ``sender_canonical_maps``, ``masquerade_domains``);
- with ``postconf -M``: a compiled service that does not exist (its port
  would not be served as compiled).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from relaygate.render.postfix import RETIRED, SUBMISSION_PARAMETER, syntax

_LOOPBACK_SERVICE = re.compile(r"(?:127\.[0-9.]+|\[::1\]|localhost):.+")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "[::1]", "127.0.0.0/8", "[::1]/128", "localhost"})


def _normal(value: str) -> str:
    """A value with Postfix's insignificant differences (commas, spacing) removed."""
    return " ".join(" ".join(token.split()) for token in syntax.tokens(value))


def _setting(name: str, value: str) -> str:
    return f"{name} = {value}" if value else f"{name} ="


def _loopback_only(value: str) -> bool:
    return all(item in _LOOPBACK_HOSTS for item in syntax.tokens(value))


def widenings(
    artifacts: Mapping[str, str],
    postconf_n: str,
    postconf_p: str,
    postconf_m: str | None = None,
) -> list[str]:
    """Every way the relay's effective settings would widen the compiled policy (docstring)."""
    compiled = syntax.parameters(artifacts["postfix/main.cf.fragment"])
    compiled_services = syntax.overrides(artifacts["postfix/master.cf.fragment"])
    have = syntax.parameters(postconf_n)
    have_services = syntax.overrides(postconf_p)
    problems: list[str] = []
    for name, want in compiled.items():
        got = have.get(name)
        if got is None:
            problems.append(
                f"main.cf: {name} is not set; relaygate compiled {_setting(name, want)}"
            )
        elif _normal(got) != _normal(want):
            problems.append(
                f"main.cf: {_setting(name, got)}; relaygate compiled {_setting(name, want)}"
            )
    for service, settings in sorted(compiled_services.items()):
        for name, want in settings.items():
            got = have_services.get(service, {}).get(name)
            if got is None:
                problems.append(
                    f"master.cf: {service} lacks -o {name}={want}, which relaygate compiled"
                )
            elif _normal(got) != _normal(want):
                problems.append(
                    f"master.cf: {service} has -o {name}={got}; relaygate compiled -o {name}={want}"
                )
    for service, settings in sorted(have_services.items()):
        if _LOOPBACK_SERVICE.fullmatch(service.rpartition("/")[0]):
            continue
        own = compiled_services.get(service, {})
        for name, got in sorted(settings.items()):
            if name in own or name not in compiled:
                continue
            if _normal(got) != _normal(compiled[name]):
                problems.append(
                    f"master.cf: {service} overrides -o {name}={got}, which replaces the"
                    f" compiled {_setting(name, compiled[name])} for that service"
                )
    problems += _hand_offs(have, have_services)
    if postconf_m is not None:
        present = {s.key for s in syntax.services(postconf_m)}
        for service in sorted(compiled_services):
            if service not in present:
                problems.append(
                    f"master.cf: no service {service}; its port is not served as compiled"
                )
    submission = [
        s
        for s, settings in compiled_services.items()
        if settings.get("smtpd_relay_restrictions") == f"${SUBMISSION_PARAMETER}"
    ]
    if len(submission) != 1:  # pragma: no cover - the renderer always writes exactly one
        problems.append("master.cf.fragment: no single submission service compiled")
    return problems


def _hand_offs(
    have: Mapping[str, str], have_services: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """Settings that let a client choose its own address or login, anywhere but loopback."""
    problems = []
    places: list[tuple[str, Mapping[str, str]]] = [("main.cf", have)]
    places += [
        (f"master.cf: {service}", settings)
        for service, settings in sorted(have_services.items())
        if not _LOOPBACK_SERVICE.fullmatch(service.rpartition("/")[0])
    ]
    for where, settings in places:
        xclient = settings.get("smtpd_authorized_xclient_hosts", "")
        if xclient and not _loopback_only(xclient):
            problems.append(
                f"{where}: smtpd_authorized_xclient_hosts = {xclient} lets those hosts claim any"
                " client address and login; allow loopback only"
            )
        proxy = settings.get("smtpd_upstream_proxy_protocol", "")
        if proxy:
            problems.append(
                f"{where}: smtpd_upstream_proxy_protocol = {proxy} takes the client address"
                " from a proxy header, which the compiled client checks would then trust"
            )
        for name, what in _REWRITES.items():
            value = settings.get(name, "")
            if value:
                problems.append(f"{where}: {name} = {value} {what}")
    return problems


#: Settings that change the envelope sender before or after the compiled checks read it,
#: so a message can leave with a sender its record does not own.
_REWRITES = {
    "smtpd_command_filter": "rewrites SMTP commands before the policy reads MAIL FROM",
    "sender_canonical_maps": "rewrites the envelope sender after the policy checked it",
    "canonical_maps": "rewrites the envelope sender after the policy checked it",
    "masquerade_domains": "rewrites sender domains after the policy checked them",
}


def missing_prerequisites(postconf_n: str, postconf_m: str) -> list[str]:
    """What the relay lacks for the compiled policy to work (it fails closed without it).

    The submission service requires STARTTLS before AUTH: without a certificate,
    or without the ``tlsmgr`` service, no device can log in there.
    """
    have = syntax.parameters(postconf_n)
    problems = []
    if not (have.get("smtpd_tls_cert_file") or have.get("smtpd_tls_chain_files")):
        problems.append(
            "main.cf: no smtpd_tls_cert_file or smtpd_tls_chain_files: the submission"
            " service offers AUTH only after STARTTLS, which needs a certificate"
        )
    if not any(s.command == "tlsmgr" for s in syntax.services(postconf_m)):
        problems.append("master.cf: no tlsmgr service: STARTTLS fails (454 TLS not available)")
    return problems


def stale_parameters(artifacts: Mapping[str, str], postconf_n: str) -> list[str]:
    """main.cf parameters to remove (``postconf -X``) after applying ``main.cf.fragment``:
    relaygate's own (``relaygate_*``: classes and class lists) that the fragment no longer
    sets, and parameters an older relaygate set that this one does not (``RETIRED``)."""
    compiled = syntax.parameters(artifacts["postfix/main.cf.fragment"])
    have = syntax.parameters(postconf_n)
    return sorted(
        name
        for name in have
        if name not in compiled and (name.startswith("relaygate_") or name in RETIRED)
    )
