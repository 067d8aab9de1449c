"""End to end: a real relay obeys the compiled policy (Postfix, SASL, nftables, namespaces).

One lab (``tests.lab``) is built for the module from the example inventory:
the compiled maps, fragment and ruleset are deployed on a private Postfix in
a namespace of its own; devices send real SMTP from their own addresses in
segment namespaces; the sink behind the relay records what was really
delivered. The compiled postfwd ruleset runs in the real postfwd beside the
relay (every full message is asked about); tests/test_volume_limits.py
drives the limits themselves. Each scenario of issue 4 is its own test. The last test tears the
lab down and checks nothing is left; a session finalizer checks again.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import AS_OF, EXAMPLE, closing_line, require, require_postfix_lmdb
from tests.lab import Lab, LabError, Result, Session, leftovers, postfwd
from tests.lab.cases import run_matrix
from tests.lab.lab import TEMP_PARENT
from tests.lab.netns import lab_namespaces
from tests.lab.plan import Client
from tests.lab.relay import Relay

pytestmark = pytest.mark.integration

TODAY = dt.date.fromisoformat(AS_OF)
OUTSIDE = "victim@evil.example"
SHORT = 1.5  # seconds a dropped SYN is waited for; a reachable port answers in milliseconds


def require_lab_components() -> None:
    """Skip (off CI) or fail (in CI) unless everything a relay lab runs is here."""
    require(os.geteuid() == 0, "the lab needs root (network namespaces, nft, Postfix)")
    for tool, package in (
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("postfix", "postfix"),
        ("saslpasswd2", "sasl2-bin"),
    ):
        require(shutil.which(tool) is not None, f"{tool} is not installed ({package})")
    require_postfix_lmdb()
    # The compiled folder carries a postfwd ruleset: the lab runs it as the relay would.
    missing = postfwd.installed()
    require(missing is None, missing or "")


@pytest.fixture(scope="session")
def lab_runs() -> Iterator[list[Lab]]:
    """Every lab this session built; afterwards none may have left anything behind."""
    runs: list[Lab] = []
    yield runs
    left = [
        item
        for lab in runs
        for item in leftovers(lab.run_id, lab.root, lab.relay.started, lab.postfwd_started)
    ]
    assert left == [], "lab leftovers after the session:\n" + "\n".join(left)


@pytest.fixture(scope="module")
def lab(lab_runs: list[Lab]) -> Iterator[Lab]:
    require_lab_components()
    with Lab.running(EXAMPLE, TODAY) as built:
        lab_runs.append(built)
        yield built


# -- helpers ----------------------------------------------------------------


def _login(lab: Lab, client: Client) -> tuple[str, str]:
    assert client.account is not None, client.name
    account = lab.plan.account(client.account)
    return (account.login, account.password)


def _assert_delivered(lab: Lab, results: Sequence[Result]) -> None:
    """Each session was accepted and its message reached the sink exactly once, as sent."""
    lab.wait_delivered([r.session.token for r in results])
    for result in results:
        assert result.accepted, str(result)
        got = lab.delivered(result.session.token)
        assert [(m.mail_from, m.rcpt_tos) for m in got] == [
            (result.session.mail_from, result.session.rcpt_to)
        ], str(result)


#: The restriction class's answer to a sender outside the device's set.
NOT_REGISTERED = "Sender address rejected: sender not registered for this device"


def _assert_refused(
    lab: Lab, results: Sequence[Result], code: int, text: str, *, settle: bool = True
) -> None:
    """Every RCPT was refused with ``code`` and ``text``; nothing reached the sink.

    ``settle`` waits for an empty queue first, so anything the relay had
    accepted after all would be in the sink by the time it is read.
    """
    if settle:
        lab.settle()
    for result in results:
        assert result.connected, str(result)
        assert [c for c, _ in result.rcpt] == [code] * len(result.session.rcpt_to), str(result)
        assert all(text in reply for _, reply in result.rcpt), str(result)
        assert result.data is not None and result.data[0] == 554, str(result)
        assert lab.delivered(result.session.token) == [], str(result)


def _assert_dropped(results: Sequence[Result]) -> None:
    """The firewall dropped the SYN: the connection timed out (no reset, no banner)."""
    for result in results:
        assert (result.connected, result.error) == (False, "timeout"), str(result)


# -- 1 and 2: a legacy device and its senders --------------------------------


def test_legacy_device_with_its_own_sender_is_delivered(lab: Lab) -> None:
    # One IPv4 device (lmdb map) and the IPv6 one (cidr map).
    hodges = lab.plan.client("lib-hodges-3f-copier")
    shop = lab.plan.client("eng-me-shop-mfd")
    assert (hodges.source.version, shop.source.version) == (4, 6)
    results = lab.send(
        [
            Session(c.source, lab.plan.relay_port, c.senders[0], (OUTSIDE,), lab.token("own"))
            for c in (hodges, shop)
        ]
    )
    _assert_delivered(lab, results)


def test_legacy_device_with_a_sender_it_does_not_own_is_refused(lab: Lab) -> None:
    hodges = lab.plan.client("lib-hodges-3f-copier")
    senders = [
        lab.plan.client("lib-special-collections-scanner").senders[0],  # another device's
        lab.plan.client("lib-illiad").senders[0],  # an authenticated account's
        "ceo@evil.example",  # outside the sender domains
        "other@lib.example.edu",  # its own domain, not its address
        "",  # the null sender
    ]
    results = lab.send(
        [
            Session(hodges.source, lab.plan.relay_port, s, (OUTSIDE,), lab.token("forged"))
            for s in senders
        ]
    )
    # The restriction class's final "reject": the client is refused for this sender.
    _assert_refused(lab, results, 554, NOT_REGISTERED)


# -- 3: an address no record holds --------------------------------------------


def test_outsider_is_dropped_by_the_firewall(lab: Lab) -> None:
    outsider = lab.plan.outsider
    port_25 = [
        Session(a, lab.plan.relay_port, "probe@evil.example", (OUTSIDE,), timeout=SHORT)
        for a in outsider.all
    ]
    off_campus_587 = Session(
        outsider.off_campus,
        lab.plan.submission_port,
        "probe@evil.example",
        (OUTSIDE,),
        timeout=SHORT,
    )
    on_campus_587 = Session(
        outsider.campus_v4,
        lab.plan.submission_port,
        "probe@evil.example",
        (OUTSIDE,),
        lab.token("outsider-587"),
    )
    results = lab.send([*port_25, off_campus_587, on_campus_587])
    _assert_dropped(results[:-1])
    # Campus addresses may reach submission (nft), but cannot relay without a login.
    _assert_refused(lab, results[-1:], 554, "Recipient address rejected: Access denied")


def test_outsider_is_refused_by_postfix_alone(lab: Lab) -> None:
    with lab.relay.firewall_bypassed():
        assert lab.relay.tables() == []  # really no filter while the block runs
        results = lab.send(
            [
                Session(a, lab.plan.relay_port, "probe@evil.example", (OUTSIDE,), lab.token("out"))
                for a in lab.plan.outsider.all
            ]
        )
    assert lab.relay.tables() == ["inet relaygate"]
    _assert_refused(lab, results, 554, "Recipient address rejected: Access denied")


# -- 4: an authenticated device on the submission port -------------------------


def test_authenticated_device_relays_only_its_own_senders(lab: Lab) -> None:
    illiad = lab.plan.client("lib-illiad")
    login = _login(lab, illiad)
    port = lab.plan.submission_port
    own = [
        Session(illiad.source, port, s, (OUTSIDE,), lab.token("own"), login) for s in illiad.senders
    ]
    others = [
        lab.plan.client("med-redcap").senders[0],  # another account's
        lab.plan.client("lib-hodges-3f-copier").senders[0],  # a legacy device's
        "ceo@evil.example",  # nobody's
    ]
    forged = [
        Session(illiad.source, port, s, (OUTSIDE,), lab.token("forged"), login) for s in others
    ]
    results = lab.send([*own, *forged])
    assert len(own) == 2
    for result in results:
        assert result.auth == (235, "2.7.0 Authentication successful"), str(result)
    _assert_delivered(lab, results[: len(own)])
    _assert_refused(lab, results[len(own) :], 554, NOT_REGISTERED)


def test_authenticated_device_cannot_relay_without_logging_in(lab: Lab) -> None:
    illiad = lab.plan.client("lib-illiad")
    login, _ = _login(lab, illiad)
    port = lab.plan.submission_port
    sender = illiad.senders[0]
    results = lab.send(
        [
            Session(illiad.source, port, sender, (OUTSIDE,), lab.token("anon")),
            Session(illiad.source, port, sender, (OUTSIDE,), lab.token("bad"), (login, "wrong")),
        ]
    )
    assert "AUTH PLAIN LOGIN" in results[0].features  # mech_list of the lab's smtpd.conf
    assert results[1].auth is not None and results[1].auth[0] == 535, str(results[1])
    _assert_refused(lab, results, 554, "Recipient address rejected: Access denied")


def test_submission_offers_auth_only_after_starttls(lab: Lab) -> None:
    illiad = lab.plan.client("lib-illiad")
    login = _login(lab, illiad)
    port = lab.plan.submission_port
    plain, tls = lab.send(
        [
            Session(
                illiad.source,
                port,
                illiad.senders[0],
                (OUTSIDE,),
                lab.token("plain"),
                login,
                starttls=False,
            ),
            Session(illiad.source, port, illiad.senders[0], (OUTSIDE,), lab.token("tls"), login),
        ]
    )
    # Without STARTTLS: no AUTH offered; AUTH and MAIL are answered "530 STARTTLS first".
    assert "STARTTLS" in plain.features and not any(f.startswith("AUTH") for f in plain.features)
    assert plain.auth is not None and plain.auth[0] == 530, str(plain)
    assert plain.mail is not None and plain.mail[0] == 530, str(plain)
    # The same login after STARTTLS: AUTH offered and the message delivered.
    assert "AUTH PLAIN LOGIN" in tls.features, str(tls)
    _assert_delivered(lab, [tls])


def test_port_25_offers_no_authentication(lab: Lab) -> None:
    hodges = lab.plan.client("lib-hodges-3f-copier")
    illiad = lab.plan.client("lib-illiad")
    login = _login(lab, illiad)
    results = lab.send(
        [
            # A legacy device can reach port 25; a valid login is still refused there.
            Session(
                hodges.source,
                lab.plan.relay_port,
                illiad.senders[0],
                (OUTSIDE,),
                lab.token("auth25"),
                login,
            ),
            # An authenticated device's address cannot reach port 25 at all.
            Session(
                illiad.source, lab.plan.relay_port, illiad.senders[0], (OUTSIDE,), timeout=SHORT
            ),
        ]
    )
    assert results[0].connected and not any(f.startswith("AUTH") for f in results[0].features)
    assert results[0].auth == (503, "5.5.1 Error: authentication not enabled"), str(results[0])
    _assert_refused(lab, results[:1], 554, NOT_REGISTERED)
    _assert_dropped(results[1:])


def test_submission_port_relays_only_for_logged_in_clients(lab: Lab) -> None:
    # Port 587 has its own restrictions (relaygate_submission_relay_restrictions):
    # a legacy device's address grants nothing there.
    # site.yaml: "submission_port: 587  # authenticated submission (OAuth2 or SMTP AUTH)".
    # nft admits all of campus to 587, so Postfix alone must insist on a login there.
    hodges = lab.plan.client("lib-hodges-3f-copier")
    result = lab.send_one(
        Session(
            hodges.source,
            lab.plan.submission_port,
            hodges.senders[0],
            (OUTSIDE,),
            lab.token("legacy587"),
        )
    )
    _assert_refused(lab, [result], 554, "Access denied")


def test_port_25_sessions_log_no_warnings(lab: Lab) -> None:
    hodges = lab.plan.client("lib-hodges-3f-copier")
    start = len(lab.relay.log())
    result = lab.send_one(
        Session(
            hodges.source, lab.plan.relay_port, hodges.senders[0], (OUTSIDE,), lab.token("quiet")
        )
    )
    _assert_delivered(lab, [result])
    lab.settle()
    logged = lab.relay.log()[start:]
    assert f"disconnect from unknown[{hodges.source}]" in logged
    assert [line for line in logged.splitlines() if "warning:" in line] == []


# -- 5: revoked and suspended devices ------------------------------------------


def test_revoked_device_is_dropped_by_the_firewall(lab: Lab) -> None:
    rhodes = lab.plan.client("eng-rhodes-lab-mfd")
    assert rhodes.status.value == "revoked"
    results = lab.send(
        [
            Session(rhodes.source, port, rhodes.senders[0], (OUTSIDE,), timeout=SHORT)
            for port in (lab.plan.relay_port, lab.plan.submission_port)
        ]
    )
    _assert_dropped(results)


def test_revoked_device_is_refused_by_postfix_with_the_reason(lab: Lab) -> None:
    rhodes = lab.plan.client("eng-rhodes-lab-mfd")
    reason = "relay access revoked: sent spam (SEC-4412)"
    with lab.relay.firewall_bypassed():
        results = lab.send(
            [
                Session(
                    rhodes.source,
                    lab.plan.relay_port,
                    rhodes.senders[0],
                    (OUTSIDE,),
                    lab.token("revoked"),
                )
            ]
        )
    _assert_refused(lab, results, 554, f"Client host rejected: {reason}")
    assert f"reject: RCPT from unknown[{rhodes.source}]: 554 5.7.1" in lab.relay.log()
    assert f"{reason}; from=<{rhodes.senders[0]}>" in lab.relay.log()


def test_suspended_device_reaches_postfix_and_hears_the_reason(lab: Lab) -> None:
    # nft admits suspended legacy devices to port 25 precisely so that they
    # (and their owners, reading the device's log) learn why they are refused.
    clinic = lab.plan.client("med-clinic-copier")
    assert (clinic.status.value, clinic.source.version) == ("suspended", 6)
    reason = "relay access suspended: under investigation (SEC-4478)"
    results = lab.send(
        [
            Session(
                clinic.source,
                lab.plan.relay_port,
                clinic.senders[0],
                (OUTSIDE,),
                lab.token("suspended"),
            )
        ]
    )
    _assert_refused(lab, results, 554, f"Client host rejected: {reason}")
    assert f"{reason}; from=<{clinic.senders[0]}>" in lab.relay.log()


def test_retired_account_relays_nothing(lab: Lab) -> None:
    # A retired record appears in no map, but its login may linger in the
    # identity store (here the lab's sasldb): it must carry no sender at all.
    plant = lab.plan.client("fac-plant-ops-copier")
    assert plant.status.value == "retired"
    login = _login(lab, plant)
    result = lab.send_one(
        Session(
            plant.source,
            lab.plan.submission_port,
            plant.senders[0],
            (OUTSIDE,),
            lab.token("retired"),
            login,
        )
    )
    assert result.auth == (235, "2.7.0 Authentication successful"), str(result)
    _assert_refused(lab, [result], 554, "Recipient address rejected: Access denied")


# -- 6: a record removed, recompiled, redeployed ---------------------------------


def _edited_inventory(root: Path) -> Path:
    """The example with fac-energy-meter-gateway removed and fac-keyshop-mfd revoked."""
    inventory = root / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    (inventory / "devices" / "facilities" / "fac-energy-meter-gateway.yaml").unlink()
    keyshop = inventory / "devices" / "facilities" / "fac-keyshop-mfd.yaml"
    text = keyshop.read_text()
    assert text.count("\nstatus: active\n") == 1
    keyshop.write_text(
        text.replace(
            "\nstatus: active\n",
            "\nstatus: revoked\nstatus_reason: compromised\nstatus_date: 2026-11-28\n"
            "status_ticket: SEC-4501\n",
        )
    )
    return inventory


def test_removed_device_is_refused_after_redeploy_and_queued_mail_survives(
    lab: Lab, tmp_path: Path
) -> None:
    gateway = lab.plan.client("fac-energy-meter-gateway")
    keyshop = lab.plan.client("fac-keyshop-mfd")
    relay_port, submission = lab.plan.relay_port, lab.plan.submission_port
    login = _login(lab, keyshop)
    campus_host = lab.plan.outsider.campus_v4  # a campus address may reach submission
    baseline = lab.compiled
    edited = _edited_inventory(tmp_path)

    def gateway_session(label: str, timeout: float = 5.0) -> Session:
        return Session(
            gateway.source,
            relay_port,
            gateway.senders[0],
            (OUTSIDE,),
            lab.token(label),
            timeout=timeout,
        )

    def keyshop_session(source: Client | None, label: str, timeout: float = 5.0) -> Session:
        return Session(
            campus_host if source is None else source.source,
            submission,
            keyshop.senders[0],
            (OUTSIDE,),
            lab.token(label),
            login,
            timeout=timeout,
        )

    before = lab.send([gateway_session("before"), keyshop_session(keyshop, "before")])
    _assert_delivered(lab, before)
    old_class = next(
        line.split("\t")[1]
        for line in (baseline / "postfix" / "legacy_clients").read_text().splitlines()
        if line.startswith(f"{gateway.source}\t")
    )
    try:
        with lab.sink_down():
            waiting = lab.send_one(gateway_session("queued"))
            assert waiting.accepted, str(waiting)
            queued = lab.relay.wait_deferred(1)  # tried once, against the stopped sink
            assert [(q.sender, q.queue_name) for q in queued] == [
                (gateway.senders[0], "deferred")
            ], queued
            assert "Connection refused" in queued[0].reason

            lab.redeploy(edited, TODAY)
            assert lab.relay.check() == ""
            # The stale restriction class is gone from main.cf and from disk.
            assert old_class not in lab.relay.config.joinpath("main.cf").read_text()
            assert not (lab.relay.config / "relaygate" / "senders" / old_class).exists()

            after = lab.send(
                [
                    gateway_session("after", SHORT),  # no longer in the nft legacy set
                    keyshop_session(keyshop, "after", SHORT),  # its address is revoked in nft
                    keyshop_session(None, "after"),  # its login from another campus host
                ]
            )
            _assert_dropped(after[:2])
            assert after[2].auth == (235, "2.7.0 Authentication successful"), str(after[2])
            with lab.relay.firewall_bypassed():
                postfix_only = lab.send_one(gateway_session("after-postfix"))
            # Only the message sent before the redeploy waits in the queue: a
            # reload drops nothing, and nothing refused was queued.
            assert [q.queue_id for q in lab.relay.queued()] == [queued[0].queue_id]
            _assert_refused(
                lab,
                after[2:],
                554,
                "SASL login name rejected: relay access revoked: device compromised (SEC-4501)",
                settle=False,
            )
            _assert_refused(
                lab, [postfix_only], 554, "Recipient address rejected: Access denied", settle=False
            )
        lab.relay.flush()
        lab.wait_delivered([waiting.session.token])
        _assert_delivered(lab, [waiting])
        lab.settle()
    finally:
        lab.deploy(baseline)  # the maps, the ruleset and postfwd's rules
    restored = lab.send([gateway_session("restored"), keyshop_session(keyshop, "restored")])
    _assert_delivered(lab, restored)


# -- 7: open-relay probes ------------------------------------------------------


def _spellings(local: str, domain: str) -> list[str]:
    """Classic evasion spellings that try to route ``local@domain`` through the relay."""
    campus = "lib.example.edu"
    return [
        f'"{local}@{domain}"@{campus}',  # quoted local part
        f"{local}%{domain}@{campus}",  # the % hack
        f"{domain}!{local}",  # bang path
        f"{domain}!{local}@{campus}",  # bang path behind a campus domain
        f"@{campus}:{local}@{domain}",  # source route
        f"{local}@[192.0.2.1]",  # IP literal
        f"{local}@{domain}.",  # trailing dot
        f"{local}@{domain}",  # plain
    ]


def test_open_relay_probes_from_the_outsider_relay_nothing(lab: Lab) -> None:
    """No unregistered client relays anything to an outside domain, whatever the spelling.

    The one exception is RFC 5321's: Postfix accepts the bare recipient
    ``postmaster`` from anyone and it becomes the relay's own postmaster
    (postmaster@<relay fqdn>); with the lab's empty mydestination it goes to
    the sink, which shows it never names an outside domain.
    """
    outsider = lab.plan.outsider.campus_v4
    recipients = (*_spellings("victim", "evil.example"), "victim")
    senders = [
        "probe@evil.example",
        lab.plan.client("lib-hodges-3f-copier").senders[0],
        lab.plan.client("lib-illiad").senders[0],
        "",
    ]
    with lab.relay.firewall_bypassed():
        results = lab.send(
            [
                Session(outsider, lab.plan.relay_port, s, recipients, lab.token("probe"))
                for s in senders
            ]
        )
        postmaster = lab.send_one(
            Session(
                outsider,
                lab.plan.relay_port,
                "probe@evil.example",
                ("postmaster",),
                lab.token("postmaster"),
            )
        )
    _assert_refused(lab, results, 554, "Recipient address rejected: Access denied")
    assert postmaster.accepted, str(postmaster)
    lab.wait_delivered([postmaster.session.token])
    assert [m.rcpt_tos for m in lab.delivered(postmaster.session.token)] == [
        (f"postmaster@{lab.plan.relay_fqdn}",)
    ]


def test_open_relay_probes_from_a_registered_device(lab: Lab) -> None:
    """A registered legacy device relays only with its own sender, whatever the spelling.

    What "should not" means here: the relay's job is to carry campus devices'
    mail to any recipient, so a registered device with its own sender relays
    to outside recipients in every spelling (asserted: delivered). What it
    must never do is carry a sender the device does not own: another device's
    or account's sender, an outside sender, or its own local part moved to
    another mailbox (quoted, % hack, bang path, IP literal) are all refused.
    Spellings that Postfix reduces to the device's own address (source route,
    trailing dot, upper case, quoted local part) are its own sender, and the
    sink shows them arriving as exactly that address.
    """
    hodges = lab.plan.client("lib-hodges-3f-copier")
    own = hodges.senders[0]
    local, domain = own.split("@")
    port = lab.plan.relay_port
    foreign = [
        s
        for identity in (
            lab.plan.client("lib-special-collections-scanner").senders[0],
            lab.plan.client("lib-illiad").senders[0],
            "probe@evil.example",
        )
        for s in (*_spellings(*identity.split("@")), identity.upper())
    ]
    moved = [
        f'"{own}"@evil.example',
        f"{local}%evil.example@{domain}",
        f"evil.example!{local}",
        f"{local}@[{lab.plan.relay_address(4)}]",
    ]
    equivalent = [f"@evil.example:{own}", f"{own}.", own.upper(), f'"{local}"@{domain}']
    recipients = (*_spellings("victim", "evil.example"), "victim")

    def session(sender: str, to: tuple[str, ...], label: str) -> Session:
        return Session(hodges.source, port, sender, to, lab.token(label))

    results = lab.send(
        [session(s, (OUTSIDE,), "forged") for s in [*foreign, *moved]]
        + [session(s, (OUTSIDE,), "equivalent") for s in equivalent]
        + [session(own, recipients, "own")]
    )
    refused = results[: len(foreign) + len(moved)]
    accepted = results[len(refused) :]
    _assert_refused(lab, refused, 554, NOT_REGISTERED)
    lab.wait_delivered([r.session.token for r in accepted])
    for result in accepted:
        assert result.accepted, str(result)
        got = lab.delivered(result.session.token)
        assert [m.mail_from.lower() for m in got] == [own], str(result)
    assert len(lab.delivered(accepted[-1].session.token)[0].rcpt_tos) == len(recipients)


def test_open_relay_probes_from_an_authenticated_device(lab: Lab) -> None:
    """A login carries only its own senders, in any spelling of someone else's."""
    illiad = lab.plan.client("lib-illiad")
    login = _login(lab, illiad)
    foreign = [
        s
        for identity in (lab.plan.client("med-redcap").senders[0], "probe@evil.example")
        for s in (*_spellings(*identity.split("@")), identity.upper())
    ]
    results = lab.send(
        [
            Session(
                illiad.source,
                lab.plan.submission_port,
                s,
                (OUTSIDE,),
                lab.token("authprobe"),
                login,
            )
            for s in foreign
        ]
    )
    _assert_refused(lab, results, 554, NOT_REGISTERED)


def test_login_relays_only_from_its_records_address(lab: Lab) -> None:
    """A valid login from another campus host (a legacy device's, any campus address) is
    refused: each login is bound to its record's addresses on the relay."""
    illiad = lab.plan.client("lib-illiad")
    login = _login(lab, illiad)
    port = lab.plan.submission_port
    elsewhere = [lab.plan.client("lib-hodges-3f-copier").source, lab.plan.outsider.campus_v4]
    results = lab.send(
        [
            Session(source, port, illiad.senders[0], (OUTSIDE,), lab.token("bound"), login)
            for source in [*elsewhere, illiad.source]
        ]
    )
    for result in results:
        assert result.auth == (235, "2.7.0 Authentication successful"), str(result)
    _assert_refused(
        lab, results[:-1], 554, "Client host rejected: login not registered for this client address"
    )
    _assert_delivered(lab, results[-1:])


def test_null_sender_is_refused_on_both_ports(lab: Lab) -> None:
    hodges = lab.plan.client("lib-hodges-3f-copier")
    illiad = lab.plan.client("lib-illiad")
    login = _login(lab, illiad)
    spellings = ["", '""', "@route:"]
    results = lab.send(
        [
            Session(hodges.source, lab.plan.relay_port, s, (OUTSIDE,), lab.token("n25"))
            for s in spellings
        ]
        + [
            Session(
                illiad.source, lab.plan.submission_port, s, (OUTSIDE,), lab.token("n587"), login
            )
            for s in spellings
        ]
    )
    _assert_refused(
        lab, results, 554, "<>: Sender address rejected: " + NOT_REGISTERED.split(": ")[1]
    )


# -- 8: every active record of the example ---------------------------------------


def test_every_active_record_is_exercised_both_ways(
    lab: Lab, request: pytest.FixtureRequest
) -> None:
    report = run_matrix(lab)
    closing_line(request.config, "lab", report.summary())
    assert report.failures == []
    active = [c for c in lab.plan.clients if c.status.value == "active"]
    assert (report.positive, report.negative) == (len(active), len(active)) == (31, 31)


def test_runner_refuses_namespaces_it_did_not_make(lab: Lab) -> None:
    # Every nft and Postfix command goes through Namespaces.run, which checks
    # ownership first: the host namespace and other runs' namespaces are refused.
    other_run = f"rgl-{'0' * 8}-relay"
    for namespace in ("", "host", other_run, lab.relay_ns + "x"):
        with pytest.raises(LabError, match="this lab did not make it"):
            lab.ns.run(namespace, ["nft", "list", "ruleset"])
    with pytest.raises(LabError, match="this lab did not make it"):
        Relay(lab.ns, other_run, lab.root, hostname="x", relay_port=25, submission_port=587)
    assert lab.ns.run(lab.relay_ns, ["nft", "list", "tables"]).stdout.strip() == (
        "table inet relaygate"
    )


# -- the end: nothing left behind -------------------------------------------------


def test_teardown_leaves_no_master_namespace_or_folder(lab: Lab) -> None:
    """Runs last in this file: tear the lab down now and look for anything left."""
    masters, daemons = list(lab.relay.started), lab.postfwd_started
    # The leftover check sees a running lab (so an empty answer below means something).
    running = leftovers(lab.run_id, lab.root, masters, daemons)
    assert any(item.startswith("namespace ") for item in running), running
    assert any(item.startswith("postfix master ") for item in running), running
    assert any(item.startswith("lab folder ") for item in running), running
    # The compiled folder has a postfwd ruleset: the lab runs the volume-limit daemon.
    assert len(daemons) == 1, daemons
    assert any(item.startswith("postfwd process ") for item in running), running
    # ... and it answered every message of the module: Postfix never fell back to
    # its default action (a refused connection or a timeout logs this warning).
    fallbacks = [line for line in lab.relay.log().splitlines() if "problem talking" in line]
    assert fallbacks == [], fallbacks
    lab.close()
    assert leftovers(lab.run_id, lab.root, masters, daemons) == []
    assert lab_namespaces(lab.run_id) == []
    assert list(TEMP_PARENT.glob(f"rgl-{lab.run_id}-*")) == []
