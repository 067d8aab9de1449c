"""relaygate query: records by address or name, artifact lines, and the relay's answer.

The relay's answer is simulated from the compiled main.cf.fragment and maps;
the integration test checks the simulation against a real Postfix answering
real SMTP on loopback (XCLIENT presents the client address and login).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import netaddr
import pytest

from relaygate import compile as compile_
from relaygate import query
from relaygate.pipeline import display_path
from tests import postfix_instance
from tests.conftest import AS_OF, EXAMPLE, require, require_postfix_lmdb

DAY = dt.date.fromisoformat(AS_OF)


def ask(run_cli, *args: str, inventory: Path = EXAMPLE):  # type: ignore[no-untyped-def]
    return run_cli("query", "--inventory", str(inventory), "--as-of", AS_OF, *args)


def compiled_lines() -> dict[str, list[str]]:
    artifacts = compile_.build(EXAMPLE, DAY).artifacts
    assert artifacts is not None
    return {path: text.splitlines() for path, text in artifacts.items()}


def test_exact_address_shows_record_exception_and_artifact_lines(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = ask(run_cli, "10.20.30.41", "--format", "json")
    assert result.code == 0, result
    answer = json.loads(result.stdout)
    (match,) = answer["matches"]
    appears = match.pop("appears_in")
    assert match == {
        "name": "lib-hodges-3f-copier",
        "how": "exact address",
        "path": display_path(EXAMPLE / "devices/libraries/lib-hodges-3f-copier.yaml"),
        "unit": "libraries",
        "address": "10.20.30.41",
        "segment": "mod-libraries",
        "auth": "ip",
        "account": None,
        "status": "active",
        "status_reason": None,
        "exception": {
            "approver": "Dr. Alex Dean",
            "approver_email": "adean@example.edu",
            "role": "dean",
            "approved_on": "2026-06-15",
            "expires_on": "2027-06-15",
            "mod_ticket": "NS-12345",
            "acknowledgment_ref": "ACK-2026-5646",
        },
        "senders": ["hodges-scans@lib.example.edu"],
        "limit": {
            "per_day": 120,
            "source": "estimate",
            "how": "estimate 40 x 3 = 120",
            "counted_per": "address 10.20.30.41",
            "login_total": None,
        },
    }
    lines = compiled_lines()
    # Every reported line is really at that place in a fresh compile...
    for item in appears:
        assert lines[item["path"]][item["line"] - 1] == item["text"]
    # ...and every target mentions it.
    paths = {item["path"] for item in appears}
    assert {
        "postfix/legacy_clients",
        "postfix/main.cf.fragment",
        "nftables/relay.nft",
        "acl/ios/mod-libraries-v4.acl",
        "acl/junos/mod-libraries-v4.conf",
        "acl/aerleon/RELAYGATE.net",
        "postfwd/postfwd.cf",
    } <= paths
    legacy = [i["text"] for i in appears if i["path"] == "postfix/legacy_clients"]
    assert legacy == ["# lib-hodges-3f-copier", "10.20.30.41\trelaygate_s_0ac233217595"]
    assert answer["answers"] == []


def test_whole_word_matching_only() -> None:
    assert query.mentions("10.20.30.41\tx", "10.20.30.41")
    assert query.mentions("10.20.30.41/32 comment", "10.20.30.41")
    assert not query.mentions("10.20.30.41\tx", "10.20.30.4")
    assert not query.mentions("110.20.30.41", "10.20.30.41")
    assert not query.mentions("lib-illiad-2", "lib-illiad")
    assert query.mentions("# lib-illiad", "lib-illiad")


def test_address_inside_a_prefix_and_the_text_format(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = ask(run_cli, "10.5.10.20", "--sender", "monitoring@oit.example.edu")
    assert result.code == 0, result
    assert result.stdout.splitlines()[:9] == [
        "oit-zabbix-server (inside prefix 10.5.10.16/28)",
        f"  file:      {display_path(EXAMPLE / 'devices/oit/oit-zabbix-server.yaml')}",
        "  unit:      oit (Office of Information Technology)",
        "  kind:      server, Zabbix 7.0 server cluster",
        "  fqdn:      zabbix.oit.example.edu",
        "  address:   10.5.10.16/28",
        "  auth:      credentials (login svc-oit-zabbix@example.edu)",
        "  status:    active",
        "  senders:   monitoring@oit.example.edu",
    ]
    assert (
        "relay answer for MAIL FROM:<monitoring@oit.example.edu> from 10.5.10.20 to port 587"
        " as svc-oit-zabbix@example.edu: OK (OK from check_sender_access"
        " lmdb:postfix/senders/relaygate_s_5b1aa8611335)"
    ) in result.stdout
    # The login is bound to its record's prefix: the trace says so.
    assert (
        "  check_client_access cidr:{ {10.5.10.16/28 relaygate_s_5b1aa8611335} }:"
        " relaygate_s_5b1aa8611335"
    ) in result.stdout


def test_name_fqdn_and_account_find_the_same_record(run_cli) -> None:  # type: ignore[no-untyped-def]
    found = []
    for key in ("lib-illiad", "illiad.lib.example.edu", "svc-lib-illiad@example.edu"):
        result = ask(run_cli, key, "--format", "json")
        assert result.code == 0, result
        found.append([(m["name"], m["how"]) for m in json.loads(result.stdout)["matches"]])
    assert found == [
        [("lib-illiad", "name")],
        [("lib-illiad", "fqdn")],
        [("lib-illiad", "account")],
    ]


def test_revoked_record_shows_status_and_the_reject(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = ask(run_cli, "eng-rhodes-lab-mfd", "--sender", "rhodes-lab@eng.example.edu")
    assert result.code == 0, result
    assert "  status:    revoked (spam, 2026-10-02, SEC-4412)" in result.stdout
    assert (
        "relay answer for MAIL FROM:<rhodes-lab@eng.example.edu> from 10.40.32.77 to port 25"
        " without login: REJECT (relay access revoked: sent spam (SEC-4412))"
    ) in result.stdout
    assert "  check_client_access lmdb:postfix/refused_clients: REJECT relay access revoked:" in (
        result.stdout
    )


def test_nothing_covers_it_exits_1_and_still_answers(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = ask(run_cli, "10.99.0.1", "--sender", "hodges-scans@lib.example.edu")
    assert result.code == 1, result
    lines = result.stdout.splitlines()
    assert lines[0] == "no record covers 10.99.0.1"
    assert lines[1] == (
        "relay answer for MAIL FROM:<hodges-scans@lib.example.edu> from 10.99.0.1 to port 25"
        " without login: REJECT (Access denied)"
    )
    assert lines[-1] == "  reject"
    assert ask(run_cli, "no-such-device").code == 1


def test_invalid_inventory_still_finds_records(run_cli, inventory: Path) -> None:  # type: ignore[no-untyped-def]
    record = inventory / "devices" / "libraries" / "lib-gate-counter.yaml"
    # Outside every MOD segment: an error (a lost reservation alone would be a warning).
    record.write_text(record.read_text().replace("10.20.30.88", "10.20.31.89"))
    result = ask(run_cli, "10.20.31.89", "--sender", "x@lib.example.edu", inventory=inventory)
    assert result.code == 0, result
    assert result.stdout.splitlines()[:2] == [
        "note: the inventory has 1 errors; it was not compiled, so artifact lines and relay"
        " answers are not available",
        "lib-gate-counter (exact address)",
    ]
    assert "relay answer for" not in result.stdout


# The decisions the compiled policy must make; each case is checked against the simulation
# and, in the integration test, against a real Postfix.
ILLIAD = "svc-lib-illiad@example.edu"
CASES = [
    # client, login, sender, action, deciding restriction. A login means the
    # submission port (the only one offering AUTH); no login, the relay port.
    ("10.20.30.41", None, "hodges-scans@lib.example.edu", "OK", "senders"),
    ("10.20.30.41", None, "HODGES-SCANS@lib.example.edu", "OK", "senders"),
    ("10.20.30.41", None, "spc-scans@lib.example.edu", "REJECT", "class-fallback"),
    ("10.20.30.41", None, "ill@lib.example.edu", "REJECT", "class-fallback"),
    ("10.20.30.41", None, "", "REJECT", "class-fallback"),
    ("10.20.30.41", None, "hodges-scans+tag@lib.example.edu", "REJECT", "class-fallback"),
    ("10.20.30.41", None, "hodges-\u017fcans@lib.example.edu", "REJECT", "class-fallback"),
    ("10.20.30.57", None, "spc-scans@lib.example.edu", "OK", "senders"),
    ("2001:db8:1040:320::1f", None, "me-shop@eng.example.edu", "OK", "senders"),
    ("10.40.32.77", None, "rhodes-lab@eng.example.edu", "REJECT", "refused_clients"),
    ("2001:db8:1060:330::2a", None, "clinic-front-desk@med.example.edu", "REJECT", "refused"),
    ("10.20.50.16", None, "ill@lib.example.edu", "REJECT", "reject"),
    ("10.20.50.16", ILLIAD, "ill@lib.example.edu", "OK", "senders"),
    ("10.20.50.16", ILLIAD, "hodges-scans@lib.example.edu", "REJECT", "class-fallback"),
    ("10.20.50.16", ILLIAD, "", "REJECT", "class-fallback"),
    ("10.20.50.16", ILLIAD, '""', "REJECT", "class-fallback"),
    ("10.20.50.16", ILLIAD, "@route:", "REJECT", "class-fallback"),
    ("10.20.50.16", ILLIAD, "ill+x@lib.example.edu", "REJECT", "class-fallback"),
    # The login from an address that is not its record's (binding), and from a legacy device.
    ("10.20.50.17", ILLIAD, "ill@lib.example.edu", "REJECT", "login-fallback"),
    ("10.20.30.41", ILLIAD, "hodges-scans@lib.example.edu", "REJECT", "login-fallback"),
    # A login the SASL backend may know but no active record has (retired, unknown).
    (
        "10.90.60.33",
        "svc-fac-plantops-copier@example.edu",
        "plantops-scans@facilities.example.edu",
        "REJECT",
        "reject",
    ),
    ("10.20.50.16", "nobody@example.edu", "", "REJECT", "reject"),
    # Logins are looked up like addresses: case folds, an extension or a look-alike does not.
    ("10.20.50.16", ILLIAD.upper(), "ill@lib.example.edu", "OK", "senders"),
    ("10.20.50.16", "svc-lib-illiad+x@example.edu", "ill@lib.example.edu", "REJECT", "reject"),
    ("10.20.50.16", "\u017fvc-lib-illiad@example.edu", "ill@lib.example.edu", "REJECT", "reject"),
    ("10.99.0.1", None, "someone@example.edu", "REJECT", "reject"),
]


@pytest.mark.parametrize(("client", "login", "sender", "action", "where"), CASES)
def test_simulated_relay_decisions(
    client: str, login: str | None, sender: str, action: str, where: str
) -> None:
    artifacts = compile_.build(EXAMPLE, DAY).artifacts
    assert artifacts is not None
    if client == "2001:db8:1040:320::1f":
        sender = _me_shop_sender()
    service = "submission" if login else "smtp"
    relay = query.Relay.from_artifacts(artifacts)
    decision = relay.decide(netaddr.IPAddress(client), sender, login, service)
    assert decision.action == action, decision
    expected = {
        "senders": "check_sender_access lmdb:postfix/senders/",
        "class-fallback": "check_sender_access static:{REJECT sender not registered",
        "login-fallback": "check_client_access static:{REJECT login not registered",
        "reject": "reject",
        "refused_clients": "check_client_access lmdb:postfix/refused_clients",
        "refused": "check_client_access cidr:postfix/refused_clients.cidr",
    }[where]
    assert decision.restriction.startswith(expected), decision


def test_the_null_sender_skips_a_login_mismatch_check() -> None:
    """smtpd_check.c skips reject_sender_login_mismatch for the null sender: so does query.

    The compiled policy no longer uses that restriction; a relay whose own
    settings still do is evaluated the way Postfix evaluates it.
    """
    artifacts = compile_.build(EXAMPLE, DAY).artifacts
    assert artifacts is not None
    artifacts["postfix/sender_login"] = "ill@lib.example.edu\tsvc-lib-illiad@example.edu\n"
    artifacts["postfix/main.cf.fragment"] += (
        "smtpd_sender_login_maps = lmdb:${config_directory}/relaygate/sender_login\n"
        "relaygate_submission_relay_restrictions = reject_sender_login_mismatch,"
        " permit_sasl_authenticated, reject\n"
    )
    relay = query.Relay.from_artifacts(artifacts)
    client = netaddr.IPAddress("10.20.50.16")
    for spelling in ("", "<>", '<"">', "<@route:>"):
        null = relay.decide(client, spelling, "nobody@example.edu", "submission")
        assert (null.action, null.restriction) == ("OK", "permit_sasl_authenticated"), null
        assert "reject_sender_login_mismatch: skipped for the null sender" in null.trace
    owned = relay.decide(client, "ill@lib.example.edu", "nobody@example.edu", "submission")
    assert (owned.action, owned.restriction) == ("REJECT", "reject_sender_login_mismatch")


def _me_shop_sender() -> str:
    text = (EXAMPLE / "devices" / "engineering" / "eng-me-shop-mfd.yaml").read_text()
    return text.split("senders:\n  - ", 1)[1].split("\n", 1)[0]


def test_the_simulation_fails_closed_on_unknown_restrictions() -> None:
    artifacts = compile_.build(EXAMPLE, DAY).artifacts
    assert artifacts is not None
    artifacts["postfix/main.cf.fragment"] += "smtpd_relay_restrictions = check_policy_service x\n"
    artifacts["postfix/master.cf.fragment"] = ""
    with pytest.raises(query.InternalError, match="cannot simulate the restriction"):
        query.Relay.from_artifacts(artifacts).decide(
            netaddr.IPAddress("10.20.30.41"), "a@b.example", None
        )


@pytest.mark.integration
def test_real_postfix_agrees_with_the_simulation(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root to run a private Postfix instance")
    require_postfix_lmdb()
    out = tmp_path / "out"
    result = compile_.build(EXAMPLE, DAY)
    assert result.artifacts is not None
    compile_.write(out, result.artifacts)
    relay = query.Relay.from_artifacts(result.artifacts)
    with postfix_instance.RunningRelay(out, relay_port=25, submission_port=587) as real_relay:
        for client, login, case_sender, action, _where in CASES:
            sender = _me_shop_sender() if client == "2001:db8:1040:320::1f" else case_sender
            service = "submission" if login else "smtp"
            send = real_relay.submit if login else real_relay.relay
            real = send(sender, client=client, login=login)
            simulated = relay.decide(netaddr.IPAddress(client), sender, login, service)
            assert real.accepted == (simulated.action == "OK"), (client, login, sender, str(real))
            assert simulated.action == action
            refusal = real.refusal
            if simulated.action == "REJECT" and simulated.reason != "Access denied":
                # The reason text the simulation gives is the one Postfix sends.
                assert refusal is not None and simulated.reason in refusal.text, (real, simulated)


# --- daily limits -------------------------------------------------------------------------


def test_query_shows_the_limit_and_where_it_comes_from(run_cli) -> None:  # type: ignore[no-untyped-def]
    by_address = ask(run_cli, "10.20.30.41")
    assert by_address.code == 0, by_address
    assert (
        "  limit:     120/day (estimate 40 x 3 = 120), counted per address 10.20.30.41\n"
        in by_address.stdout
    )
    login = ask(run_cli, "svc-med-reminders@example.edu", "--format", "json")
    (match,) = json.loads(login.stdout)["matches"]
    assert match["limit"] == {
        "per_day": 4000,
        "source": "override",
        "how": "volume_limit override; computed would be 7500",
        "counted_per": "login svc-med-reminders@example.edu",
        "login_total": 4000,
    }
    floor = ask(run_cli, "lib-gate-counter")
    assert "  limit:     50/day (site floor 50 (estimate " in floor.stdout
    revoked = ask(run_cli, "eng-rhodes-lab-mfd", "--format", "json")
    (match,) = json.loads(revoked.stdout)["matches"]
    assert match["limit"]["per_day"] is None
    assert match["limit"]["counted_per"] == "revoked: the relay refuses it before DATA"
