"""The compiled Postfix policy against a real Postfix: one regression test per hole.

Each test builds a private Postfix from ``relaygate compile`` output
(``tests.postfix_instance.RunningRelay``: maps built with postmap, the main.cf
fragment applied with ``postconf -e``, the master.cf fragment with
``postconf -P``, a throwaway certificate for STARTTLS) and sends real SMTP on
loopback; XCLIENT presents the client address, hostname and SASL login.
Every refusal has a positive control in the same relay, and where a test
shows that a pinned setting closes a hole, the same relay with the setting
put back to Postfix's default shows the hole (so the test could fail).
``relaygate query``'s evaluator is asked the same questions and must agree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import netaddr
import pytest

from relaygate import compile as compile_
from relaygate.policy import build_policy, class_name
from relaygate.render import Header
from relaygate.render.postfix import (
    NULL_SENDER,
    NULL_SENDER_SPELLINGS,
    PINNED,
    evaluate,
    service_name,
    syntax,
)
from relaygate.render.postfix.effective import missing_prerequisites, widenings
from relaygate.render.postfix.probes import health_probes
from relaygate.render.targets import render_all
from tests.conftest import AS_OF, EXAMPLE, require, require_postfix_lmdb
from tests.postfix_instance import RunningRelay, free_port

pytestmark = pytest.mark.integration

DAY = dt.date.fromisoformat(AS_OF)
HODGES = ("10.20.30.41", "hodges-scans@lib.example.edu")  # legacy copier, port 25
ILLIAD = ("10.20.50.16", "svc-lib-illiad@example.edu", "ill@lib.example.edu")  # login, 587
RETIRED = (
    "10.90.60.33",
    "svc-fac-plantops-copier@example.edu",
    "plantops-scans@facilities.example.edu",
)
NOT_REGISTERED = "sender not registered for this device"


def _require() -> None:
    require(os.geteuid() == 0, "needs root to run a private Postfix instance")
    require(shutil.which("openssl") is not None, "openssl is not installed (STARTTLS certificate)")
    require_postfix_lmdb()


def _compile(inventory: Path, out: Path) -> dict[str, str]:
    result = compile_.build(inventory, DAY)
    assert result.artifacts is not None, result.validation
    compile_.write(out, result.artifacts)
    return result.artifacts


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    _require()
    out = tmp_path_factory.mktemp("compiled") / "out"
    return out, _compile(EXAMPLE, out)


@pytest.fixture(scope="module")
def relay(compiled: tuple[Path, dict[str, str]]) -> Iterator[RunningRelay]:
    with RunningRelay(compiled[0], relay_port=25, submission_port=587) as running:
        yield running


def _simulated(artifacts: dict[str, str]) -> evaluate.Relay:
    return evaluate.Relay.from_artifacts(artifacts)


# -- item 1: only logins of active records; the null sender -------------------------


@pytest.mark.parametrize("spelling", NULL_SENDER_SPELLINGS)
def test_null_sender_is_refused_on_both_paths(
    relay: RunningRelay, compiled: tuple[Path, dict[str, str]], spelling: str
) -> None:
    simulated = _simulated(compiled[1])
    legacy = relay.relay(spelling, client=HODGES[0])
    login = relay.submit(spelling, client=ILLIAD[0], login=ILLIAD[1])
    for outcome in (legacy, login):
        assert outcome.refusal is not None and NOT_REGISTERED in outcome.refusal.text, outcome
        assert outcome.refusal.text.startswith("5.7.1 <>:"), outcome  # Postfix read it as null
    for client, login_name, service in (
        (HODGES[0], None, "smtp"),
        (ILLIAD[0], ILLIAD[1], "submission"),
    ):
        decision = simulated.decide(netaddr.IPAddress(client), spelling, login_name, service)
        assert decision.action == "REJECT" and NOT_REGISTERED in decision.reason, decision
    # Positive controls: the same clients with their own senders relay.
    assert relay.relay(HODGES[1], client=HODGES[0]).accepted
    assert relay.submit(ILLIAD[2], client=ILLIAD[0], login=ILLIAD[1]).accepted


def test_logins_of_no_active_record_relay_nothing(relay: RunningRelay) -> None:
    # A retired record's login, and a login no record has: the SASL backend may know
    # both (XCLIENT LOGIN stands in for a successful AUTH); the relay must not.
    for client, login, sender in (
        RETIRED,
        (ILLIAD[0], "nobody@example.edu", ILLIAD[2]),
        (ILLIAD[0], "nobody@example.edu", ""),
    ):
        outcome = relay.submit(sender, client=client, login=login)
        assert outcome.refusal is not None and "Access denied" in outcome.refusal.text, outcome
    assert relay.submit(ILLIAD[2], client=ILLIAD[0], login=ILLIAD[1]).accepted


def test_null_sender_opt_in_admits_only_that_record(tmp_path: Path) -> None:
    """A record that opts in (its sender class holds ``<>``) sends with the null sender;
    every other record is still refused it. Rendered from a policy whose class for
    the copier holds the null sender's key, as ``allow_null_sender`` compiles."""
    _require()
    result = compile_.build(EXAMPLE, DAY)
    assert result.validation.inventory is not None
    policy = build_policy(result.validation.inventory)
    copier = next(c for c in policy.legacy if c.address == HODGES[0])
    senders = (NULL_SENDER, HODGES[1])
    opted = dataclasses.replace(copier, sender_class=class_name(senders))
    policy = dataclasses.replace(
        policy,
        legacy=tuple(opted if c is copier else c for c in policy.legacy),
        classes=tuple(
            sorted(
                (*policy.classes, type(policy.classes[0])(class_name(senders), senders)),
                key=lambda c: c.name,
            )
        ),
    )
    artifacts = render_all(policy, Header(site="Example University"))
    assert f"{NULL_SENDER}\tOK" in artifacts[f"postfix/senders/{class_name(senders)}"]
    out = tmp_path / "out"
    compile_.write(out, artifacts)
    simulated = _simulated(artifacts)
    with RunningRelay(out, relay_port=25, submission_port=587) as opted_relay:
        for spelling in NULL_SENDER_SPELLINGS:
            assert opted_relay.relay(spelling, client=HODGES[0]).accepted, spelling
            other = opted_relay.relay(spelling, client="10.20.30.57")
            assert other.refusal is not None and NOT_REGISTERED in other.refusal.text
            assert simulated.decide(netaddr.IPAddress(HODGES[0]), spelling, None).action == "OK"
        assert opted_relay.relay(HODGES[1], client=HODGES[0]).accepted


# -- item 11: a login only from its record's addresses ---------------------------------


def test_login_is_bound_to_its_records_address(
    relay: RunningRelay, compiled: tuple[Path, dict[str, str]]
) -> None:
    simulated = _simulated(compiled[1])
    own = relay.submit(ILLIAD[2], client=ILLIAD[0], login=ILLIAD[1])
    assert own.accepted, own
    for client in ("10.20.50.17", "10.99.0.1", HODGES[0], "2001:db8:1020:40::21"):
        elsewhere = relay.submit(ILLIAD[2], client=client, login=ILLIAD[1])
        assert elsewhere.refusal is not None, (client, elsewhere)
        assert "login not registered for this client address" in elsewhere.refusal.text
        decision = simulated.decide(netaddr.IPAddress(client), ILLIAD[2], ILLIAD[1], "submission")
        assert decision.action == "REJECT" and "login not registered" in decision.reason
    # A prefix record: every address inside it, none outside.
    zabbix = ("svc-oit-zabbix@example.edu", "monitoring@oit.example.edu")
    assert relay.submit(zabbix[1], client="10.5.10.20", login=zabbix[0]).accepted
    assert not relay.submit(zabbix[1], client="10.5.10.32", login=zabbix[0]).accepted
    # Its own address, someone else's sender: the sender class refuses.
    foreign = relay.submit(HODGES[1], client=ILLIAD[0], login=ILLIAD[1])
    assert foreign.refusal is not None and NOT_REGISTERED in foreign.refusal.text


# -- item 6: lookups that widen ----------------------------------------------------------


def _with_default(out: Path, name: str, value: str) -> RunningRelay:
    return RunningRelay(out, relay_port=25, submission_port=587, extra_main=(f"{name} = {value}",))


def test_client_hostname_does_not_match_an_address_key(
    relay: RunningRelay, compiled: tuple[Path, dict[str, str]]
) -> None:
    simulated = _simulated(compiled[1])
    spoof = {"client": "10.99.1.1", "name": f"mail.{HODGES[0]}"}
    refused = relay.relay(HODGES[1], **spoof)
    assert refused.refusal is not None and "Access denied" in refused.refusal.text, refused
    decision = simulated.decide(
        netaddr.IPAddress("10.99.1.1"), HODGES[1], None, client_name=spoof["name"]
    )
    assert decision.action == "REJECT"
    assert relay.relay(HODGES[1], client=HODGES[0], name="copier.lib.example.edu").accepted
    # The same relay with Postfix's default parent_domain_matches_subdomains: the hole.
    default = evaluate.DEFAULTS["parent_domain_matches_subdomains"]
    with _with_default(compiled[0], "parent_domain_matches_subdomains", default) as widened:
        assert widened.relay(HODGES[1], **spoof).accepted
    widened_params = dict(simulated.params, parent_domain_matches_subdomains=default)
    widened_sim = dataclasses.replace(simulated, params=widened_params)
    assert (
        widened_sim.decide(
            netaddr.IPAddress("10.99.1.1"), HODGES[1], None, client_name=spoof["name"]
        ).action
        == "OK"
    )


@pytest.mark.parametrize("delimiter", ["+", "-"])
def test_address_extensions_are_not_the_registered_sender(
    relay: RunningRelay, compiled: tuple[Path, dict[str, str]], delimiter: str
) -> None:
    local, domain = HODGES[1].split("@")
    tagged = f"{local}{delimiter}tag@{domain}"
    if delimiter == "-":  # hodges-scans: the first "-" makes "hodges" the base address
        tagged = f"{HODGES[1].replace('@', '-tag@')}"
    refused = relay.relay(tagged, client=HODGES[0])
    assert refused.refusal is not None and NOT_REGISTERED in refused.refusal.text
    login_tagged = ILLIAD[2].replace("@", f"{delimiter}x@")
    assert not relay.submit(login_tagged, client=ILLIAD[0], login=ILLIAD[1]).accepted
    with _with_default(compiled[0], "recipient_delimiter", delimiter) as widened:
        if delimiter == "+":
            assert widened.relay(tagged, client=HODGES[0]).accepted
            assert widened.submit(login_tagged, client=ILLIAD[0], login=ILLIAD[1]).accepted
        else:  # "-" strips at the first hyphen: hodges-scans-tag is looked up as hodges@
            assert widened.submit(login_tagged, client=ILLIAD[0], login=ILLIAD[1]).accepted
    simulated = _simulated(compiled[1])
    assert simulated.decide(netaddr.IPAddress(HODGES[0]), tagged, None).action == "REJECT"
    widened_sim = dataclasses.replace(
        simulated, params=dict(simulated.params, recipient_delimiter=delimiter)
    )
    assert (
        widened_sim.decide(
            netaddr.IPAddress(ILLIAD[0]), login_tagged, ILLIAD[1], "submission"
        ).action
        == "OK"
    )


def test_unicode_look_alike_senders_are_refused(
    relay: RunningRelay, compiled: tuple[Path, dict[str, str]]
) -> None:
    look_alike = HODGES[1].replace("s", "\u017f", 1)  # U+017F (long s) folds to "s"
    assert look_alike != HODGES[1] and look_alike.casefold() == HODGES[1]
    refused = relay.relay(look_alike, client=HODGES[0])
    assert refused.refusal is not None and NOT_REGISTERED in refused.refusal.text, refused
    smtputf8 = relay.relay(look_alike, client=HODGES[0], mail_parameters="SMTPUTF8")
    assert smtputf8.mail is not None and smtputf8.mail.code == 555, smtputf8
    simulated = _simulated(compiled[1])
    assert simulated.decide(netaddr.IPAddress(HODGES[0]), look_alike, None).action == "REJECT"
    assert relay.relay(HODGES[1].upper(), client=HODGES[0]).accepted  # ASCII case still folds
    with _with_default(compiled[0], "smtputf8_enable", "yes") as widened:
        assert widened.relay(look_alike, client=HODGES[0]).accepted
    widened_sim = dataclasses.replace(
        simulated, params=dict(simulated.params, smtputf8_enable="yes")
    )
    assert widened_sim.decide(netaddr.IPAddress(HODGES[0]), look_alike, None).action == "OK"


def test_the_fragment_pins_every_setting_the_policy_depends_on(
    compiled: tuple[Path, dict[str, str]],
) -> None:
    fragment = compiled[1]["postfix/main.cf.fragment"]
    for name, value in PINNED.items():
        assert f"\n{name} ={' ' + value if value else ''}\n" in fragment, name


# -- item 10: AUTH only after STARTTLS on submission, never on port 25; local mail ----------


def test_auth_only_after_starttls_and_never_on_the_relay_port(relay: RunningRelay) -> None:
    plain = relay.submit(ILLIAD[2], starttls=False)
    assert "STARTTLS" in plain.features and not any(f.startswith("AUTH") for f in plain.features)
    assert plain.mail is not None and plain.mail.code == 530, plain  # encrypt: TLS first
    tls = relay.submit(ILLIAD[2])
    assert any(f.startswith("AUTH") for f in tls.features), tls
    for starttls in (False, True):
        port_25 = relay.relay(HODGES[1], starttls=starttls, auth=("x@example.edu", "secret"))
        assert not any(f.startswith("AUTH") for f in port_25.features), port_25
        assert port_25.auth is not None and port_25.auth.code == 503, port_25


def test_local_mail_relays_and_campus_clients_without_a_record_do_not(
    relay: RunningRelay,
) -> None:
    # Loopback SMTP (no XCLIENT): the relay's own mail, through permit_mynetworks.
    assert relay.relay("root@relay.test.invalid").accepted
    assert relay.relay("").accepted  # the relay's own bounces
    # The same connection presenting a campus address without a record: refused.
    for client in ("10.99.0.1", "10.20.30.99", "2001:db8:1020:310::99"):
        outcome = relay.relay("someone@lib.example.edu", client=client)
        assert outcome.refusal is not None and "Access denied" in outcome.refusal.text, outcome
    # sendmail(1) -> pickup: local submission never meets smtpd's restrictions.
    done = subprocess.run(
        [
            "sendmail",
            "-C",
            str(relay.config),
            "-f",
            "cron@relay.test.invalid",
            "someone@elsewhere.example",
        ],
        input="Subject: local\n\nfrom cron\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    queue = subprocess.run(
        ["postqueue", "-c", str(relay.config), "-j"], capture_output=True, text=True, check=True
    )
    assert "cron@relay.test.invalid" in queue.stdout or "cron@relay.test.invalid" in relay.log()


# -- item 4: the site's ports reach Postfix ------------------------------------------------


def test_site_ports_reach_every_target(tmp_path: Path) -> None:
    _require()
    inventory = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    relay_port, submission_port = free_port(), free_port()
    site = inventory / "site.yaml"
    text = site.read_text()
    assert "relay_port: 25 " in text and "submission_port: 587 " in text
    site.write_text(
        text.replace("relay_port: 25 ", f"relay_port: {relay_port} ").replace(
            "submission_port: 587 ", f"submission_port: {submission_port} "
        )
    )
    out = tmp_path / "out"
    artifacts = _compile(inventory, out)
    master = artifacts["postfix/master.cf.fragment"]
    assert "submission/" not in master and "smtp/" not in master
    assert f"{submission_port}/inet/smtpd_sasl_auth_enable=yes" in master
    assert f"{relay_port}/inet/smtpd_sasl_auth_enable=no" in master
    assert f"tcp dport {relay_port} ip saddr @legacy_v4 accept" in artifacts["nftables/relay.nft"]
    assert f"eq {relay_port}" in artifacts["acl/ios/mod-libraries-v4.acl"]
    assert service_name(relay_port) == str(relay_port)
    # The fragment applies as it is to services named after the ports, and they obey it.
    with RunningRelay(
        out, relay_port=relay_port, submission_port=submission_port, site_ports=True
    ) as ported:
        assert ported.relay(HODGES[1], client=HODGES[0]).accepted
        assert not ported.relay(ILLIAD[2], client=ILLIAD[0]).accepted
        assert ported.submit(ILLIAD[2], client=ILLIAD[0], login=ILLIAD[1]).accepted
        plain = ported.submit(ILLIAD[2], starttls=False)
        assert plain.mail is not None and plain.mail.code == 530


# -- item 7: effective settings that widen the compiled policy ------------------------------


def test_an_override_that_widens_the_policy_is_detected(tmp_path: Path) -> None:
    _require()
    inventory = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    relay_port, submission_port = free_port(), free_port()
    site = inventory / "site.yaml"
    site.write_text(
        site.read_text()
        .replace("relay_port: 25 ", f"relay_port: {relay_port} ")
        .replace("submission_port: 587 ", f"submission_port: {submission_port} ")
    )
    out = tmp_path / "out"
    artifacts = _compile(inventory, out)
    with RunningRelay(
        out, relay_port=relay_port, submission_port=submission_port, site_ports=True
    ) as running:

        def effective() -> list[str]:
            return widenings(
                artifacts,
                running.postconf("-n"),
                running.postconf("-P"),
                running.postconf("-M"),
            )

        # Positive control: the relay as deployed widens nothing and lacks nothing.
        assert effective() == []
        assert missing_prerequisites(running.postconf("-n"), running.postconf("-M")) == []
        assert not running.relay("ceo@evil.example", client=HODGES[0]).accepted
        compiled = syntax.parameters(artifacts["postfix/main.cf.fragment"])
        service = f"{relay_port}/inet"
        # The override of the issue, as written in master.cf (Postfix would not start
        # smtpd with it, so it is only read back, not reloaded): detected.
        running.postconf("-P", f"{service}/smtpd_relay_restrictions=permit")
        assert effective() == [
            f"master.cf: {service} overrides -o smtpd_relay_restrictions=permit, which replaces"
            f" the compiled smtpd_relay_restrictions = {compiled['smtpd_relay_restrictions']}"
            " for that service"
        ]
        running.postconf("-PX", f"{service}/smtpd_relay_restrictions")
        assert effective() == []
        for name, value in (
            ("smtpd_relay_restrictions", "check_client_access,static:{OK},reject"),
            ("mynetworks", "127.0.0.0/8,10.0.0.0/8"),
        ):
            running.postconf("-P", f"{service}/{name}={value}")
            running.reload()
            # The hole is real: a legacy device now relays with any sender...
            assert running.relay("ceo@evil.example", client=HODGES[0]).accepted, name
            # ...and the check names it.
            found = effective()
            assert found == [
                f"master.cf: {service} overrides -o {name}={value}, which replaces the"
                f" compiled {name} = {compiled[name]} for that service"
            ], found
            running.postconf("-PX", f"{service}/{name}")
            running.reload()
            assert not running.relay("ceo@evil.example", client=HODGES[0]).accepted
        for setting, expected in (
            ("recipient_delimiter = +", "main.cf: recipient_delimiter = +;"),
            ("smtpd_authorized_xclient_hosts = 10.0.0.0/8", "smtpd_authorized_xclient_hosts"),
        ):
            running.postconf("-e", setting)
            assert any(expected in p for p in effective()), (setting, effective())
        running.postconf(
            "-e", "recipient_delimiter =", "smtpd_authorized_xclient_hosts = 127.0.0.1"
        )
        assert effective() == []
        running.postconf("-P", f"{submission_port}/inet/smtpd_tls_auth_only=no")
        assert effective() == [
            f"master.cf: {submission_port}/inet has -o smtpd_tls_auth_only=no;"
            " relaygate compiled -o smtpd_tls_auth_only=yes"
        ]


# -- item 5: suspended legacy devices reach Postfix through every target ----------------------


def test_suspended_device_hears_why_and_every_target_lets_it_through(
    relay: RunningRelay, compiled: tuple[Path, dict[str, str]]
) -> None:
    clinic = "2001:db8:1060:330::2a"
    reason = "relay access suspended: under investigation (SEC-4478)"
    artifacts = compiled[1]
    # nft admits it to the relay port, and so does its segment's ACL (IOS, Junos, Aerleon).
    assert f'{clinic}/128 comment "med-clinic-copier"' in artifacts["nftables/relay.nft"]
    assert "tcp dport 25 ip6 saddr @suspended_v6 accept" in artifacts["nftables/relay.nft"]
    assert (
        f" permit tcp host {clinic} host 2001:db8:1001::25 eq 25"
        in (artifacts["acl/ios/mod-medicine-v6.acl"])
    )
    assert f"{clinic}/128;" in artifacts["acl/junos/mod-medicine-v6.conf"]
    assert f"    {clinic}/128" in artifacts["acl/aerleon/RELAYGATE.net"]
    # Postfix then refuses it with the reason, and query says the same.
    outcome = relay.relay("clinic-front-desk@med.example.edu", client=clinic)
    assert outcome.refusal is not None and f"Client host rejected: {reason}" in outcome.refusal.text
    decision = _simulated(artifacts).decide(
        netaddr.IPAddress(clinic), "clinic-front-desk@med.example.edu", None
    )
    assert (decision.action, decision.reason) == ("REJECT", reason)
    # Positive control: an active legacy device in the same segment relays.
    assert relay.relay("pathology-scans@med.example.edu", client="10.60.33.20").accepted


# -- item 7: health probes that a widened relay fails -----------------------------------------


def test_health_probes_pass_on_the_compiled_relay_and_catch_an_override(tmp_path: Path) -> None:
    _require()
    inventory = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    relay_port, submission_port = free_port(), free_port()
    site = inventory / "site.yaml"
    site.write_text(
        site.read_text()
        .replace("relay_port: 25 ", f"relay_port: {relay_port} ")
        .replace("submission_port: 587 ", f"submission_port: {submission_port} ")
    )
    out = tmp_path / "out"
    artifacts = _compile(inventory, out)
    probes = health_probes(artifacts, relay_port, submission_port)
    assert sum(p.accept for p in probes) == 2 and len(probes) == 13, probes

    def failing(running: RunningRelay) -> list[str]:
        wrong = []
        for probe in probes:
            send = running.submit if probe.port == submission_port else running.relay
            outcome = send(probe.sender, client=probe.client, login=probe.login)
            if outcome.accepted != probe.accept:
                wrong.append(probe.what)
        return wrong

    with RunningRelay(
        out, relay_port=relay_port, submission_port=submission_port, site_ports=True
    ) as running:
        assert failing(running) == []  # positive control
        original = syntax.overrides(running.postconf("-P"))
        for service, name, value, caught in (
            (
                relay_port,
                "smtpd_relay_restrictions",
                "check_client_access,static:{OK},reject",
                [
                    "legacy device, a foreign sender",
                    "legacy device, null sender",
                    "legacy device, its sender with an extension",
                    "legacy device, a look-alike of its sender",
                    "unknown client",
                    "refused client",
                ],
            ),
            (
                submission_port,
                "smtpd_relay_restrictions",
                "permit_sasl_authenticated,reject",
                [
                    "login, a foreign sender",
                    "login, another address",
                    "unknown login",
                    "login, null sender",
                ],
            ),
            (
                relay_port,
                "recipient_delimiter",
                "+",
                ["legacy device, its sender with an extension"],
            ),
            (relay_port, "smtputf8_enable", "yes", ["legacy device, a look-alike of its sender"]),
        ):
            running.postconf("-P", f"{service}/inet/{name}={value}")
            running.reload()
            assert failing(running) == caught, (service, name)
            # Put back what the deploy set (the compiled -o), or nothing.
            compiled_value = original.get(f"{service}/inet", {}).get(name)
            if compiled_value is None:
                running.postconf("-PX", f"{service}/inet/{name}")
            else:
                running.postconf("-P", f"{service}/inet/{name}={compiled_value}")
            running.reload()
        assert failing(running) == []
