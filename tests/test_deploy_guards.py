"""The deploy's guards, run for real against three lab relays of their own.

The same lab, policy repository and helpers as tests/test_deploy.py: the health gate
from the campus side with batches, the login probes, a master.cf override, drift in a
live map, the fast revoke and its guard, STARTTLS without a certificate, the mass-change
guard. Each test states the policy it needs first (``ensure``), so any one of them can
run alone. A file of its own so that `make test` (one file per worker) runs this lab
beside test_deploy.py's.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from relaygate import release
from tests.deploy_support import (
    PROBE_LOGIN,
    RELAY_PORT,
    SUBMISSION_PORT,
    Lab,
    PlaybookRun,
    finish,
    start_playbook,
)
from tests.test_deploy import (
    DROPPED,
    FAST_REVOKED,
    HODGES,
    SCANNER,
    Outputs,
    deploy,
    deploy_first,
    deployed,
    ensure,
    hashes,
    make_outputs,
    outside_policy,
    refused,
    running_lab,
    senders_of,
)


# This module's own policy repository and lab (the same as tests/test_deploy.py builds).
@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    return make_outputs(tmp_path_factory.mktemp("deploy-outputs"))


@pytest.fixture(scope="module")
def lab(outputs: Outputs) -> Iterator[Lab]:
    with running_lab(outputs) as built:
        yield built


@pytest.fixture(scope="module")
def first_deploy(lab: Lab, outputs: Outputs) -> PlaybookRun:
    return deploy_first(lab, outputs)


# --- 2. the health gate from the campus side; 8. batches -------------------------------------


@pytest.mark.integration
def test_a_firewall_closing_submission_fails_the_gate_and_the_batch_ends_consistent(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs, outputs.base)
    first, broken, last = lab.relays
    # A firewall that passes every check but closes 587 to campus (a table of the relay
    # host's own, beside relaygate's).
    before = hashes(lab)
    broken.in_namespace("nft", "add table inet sitefw")
    broken.in_namespace(
        "nft", "add chain inet sitefw input { type filter hook input priority 10 ; }"
    )
    broken.in_namespace("nft", f"add rule inet sitefw input tcp dport {SUBMISSION_PORT} drop")
    try:
        done = refused(
            lab,
            outputs,
            outputs.revoked,
            "-e",
            "relaygate_serial=2",
            says=(
                "campus client reaches submission",
                "expected greet, got refuse",
                "Rolled back: restored main.cf",
            ),
        )
    finally:
        broken.in_namespace("nft", "delete table inet sitefw")
        lab.deployed = None
    recap = done.recap
    # An honest recap: the relay that failed says so, its batch partner committed, the
    # next batch was not touched.
    assert recap[broken.name]["failed"] == 1 and recap[broken.name]["changed"] == 0, recap
    assert recap[first.name]["failed"] == 0 and recap[first.name]["changed"] == 1, recap
    assert last.name not in recap or recap[last.name]["changed"] == 0, recap
    assert broken.state_hash() == before[broken.name]
    assert last.state_hash() == before[last.name]
    assert outside_policy(first)["scanner own"] == DROPPED  # new policy, committed
    assert outside_policy(broken)["scanner own"] == 250  # old policy, working
    previous = first.config / "relaygate.generations" / "previous" / "main.cf"
    assert previous.is_file()


@pytest.mark.integration
def test_login_probes_check_submission_and_agree_with_a_campus_client(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    relay = lab.relays[0]
    ensure(lab, first_deploy, outputs, outputs.base, [relay])
    facts = release.verify_release(outputs.revoked, outputs.inventory, probe_login=PROBE_LOGIN)
    cases = [c for c in facts.facts["probe"]["full"] if c["login"]]
    assert [(c["why"], c["expect"]) for c in cases][:3] == [
        ("login, its own sender", "accept"),
        ("login, a foreign sender", "refuse"),
        ("login, the null sender", "refuse"),
    ]
    # Where the relay binds logins to their records' addresses, also from another one.
    assert all(c["expect"] == "refuse" for c in cases[3:]), cases
    done = deploy(lab, outputs, outputs.revoked, relays=[relay], relaygate_probe_login=PROBE_LOGIN)
    lab.deployed = None
    own = next(c for c in cases if c["expect"] == "accept")
    foreign = next(c for c in cases if c["why"] == "login, a foreign sender")
    # Positive and negative controls from a campus client (not the probe).
    assert relay.outside(own["source"], SUBMISSION_PORT, own["sender"], login=True)[0] == 250
    code = relay.outside(own["source"], SUBMISSION_PORT, foreign["sender"], login=True)[0]
    assert 500 <= code < 600, code
    null = relay.outside(own["source"], SUBMISSION_PORT, "", login=True)[0]
    if null == 250:
        # The compiled policy lets a login relay with the null sender: the gate must refuse it.
        assert done.code != 0 and "login, the null sender" in done.stdout, str(done)
        assert "expected refuse, got accept" in done.stdout
    else:
        assert done.code == 0, str(done)


@pytest.mark.integration
def test_a_master_cf_override_of_compiled_policy_is_refused_before_any_change(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs, outputs.base)
    relay = lab.relays[2]
    master = relay.config / "master.cf"
    original = master.read_text()
    subprocess.run(
        [
            "postconf",
            "-c",
            str(relay.config),
            "-P",
            "smtp/inet/smtpd_relay_restrictions=permit",
        ],
        check=True,
    )
    try:
        before = relay.state_hash()
        # Found on the controller (the module checks it again under the lock).
        refused(
            lab,
            outputs,
            outputs.revoked,
            says=(
                "its settings would widen the compiled policy",
                "smtp/inet overrides -o smtpd_relay_restrictions=permit",
            ),
            relays=[relay],
        )
        assert relay.state_hash() == before
    finally:
        master.write_text(original)
    # XCLIENT from anywhere on the relay port: any client could claim a device's address.
    # Stopped on the controller, before any relay changes.
    subprocess.run(
        [
            "postconf",
            "-c",
            str(relay.config),
            "-P",
            "smtp/inet/smtpd_authorized_xclient_hosts=0.0.0.0/0",
        ],
        check=True,
    )
    try:
        before = hashes(lab)
        done = refused(
            lab,
            outputs,
            outputs.revoked,
            says=(
                "its settings would widen the compiled policy",
                "smtpd_authorized_xclient_hosts = 0.0.0.0/0",
            ),
        )
        assert "Apply the release to this relay" not in done.stdout
        assert hashes(lab) == before
    finally:
        master.write_text(original)
    # Positive control: the same relay without the override takes the same release.
    deployed(lab, outputs, outputs.revoked, relays=[relay], changed=1)
    lab.deployed = None


# --- 4. drift --------------------------------------------------------------------------------


@pytest.mark.integration
def test_an_entry_added_to_a_live_lmdb_map_is_detected_and_repaired(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    relay = lab.relays[0]
    ensure(lab, first_deploy, outputs, outputs.base, [relay])
    intruder = "10.0.0.99"
    live = relay.config / "relaygate.generations" / relay.live() / "legacy_clients"
    klass = (live.read_text().split(f"{HODGES[0]}\t")[1]).split("\n")[0]
    subprocess.run(
        ["postmap", "-c", str(relay.config), "-i", f"lmdb:{live}"],
        input=f"{intruder} {klass}\n",
        text=True,
        check=True,
    )
    assert relay.xclient(intruder, HODGES[1])[0] == 250  # the drift is live
    dry = deployed(lab, outputs, outputs.base, "--check", relays=[relay], changed=1)
    assert "legacy_clients.lmdb: entry '10.0.0.99" in dry.stdout
    deployed(lab, outputs, outputs.base, relays=[relay], changed=1)
    assert relay.xclient(intruder, HODGES[1])[0] == 554
    assert relay.xclient(*HODGES)[0] == 250
    deployed(lab, outputs, outputs.base, relays=[relay], changed=0)


# --- 5. the fast revoke ----------------------------------------------------------------------


@pytest.mark.integration
def test_revoke_refuses_extra_changes_unless_allowed(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs, outputs.base)
    before = hashes(lab)
    refused(
        lab,
        outputs,
        outputs.revoke_extra,
        "--tags",
        "revoke",
        says=("the release changes more than refusals", "legacy allow entry", "nft set legacy_v4"),
    )
    assert hashes(lab) == before
    for relay in lab.relays:
        assert len(relay.nft_set("legacy_v4")) == 13  # the allow set was not cut
    deployed(
        lab,
        outputs,
        outputs.revoke_extra,
        "--tags",
        "revoke",
        "-e",
        "relaygate_allow_revoke_extra=true",
    )
    lab.deployed = None
    for relay in lab.relays:
        assert relay.outside(SCANNER[0], RELAY_PORT, SCANNER[1])[0] == DROPPED
        assert len(relay.nft_set("legacy_v4")) == 13  # still only the refusal was applied
        assert relay.outside(*HODGES[:1], RELAY_PORT, HODGES[1])[0] == 250


@pytest.mark.integration
def test_revoke_adds_elements_swaps_refused_maps_and_is_fast_on_three_relays(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs, outputs.base)
    tables = {r.name: r.in_namespace("nft", "-a", "list", "tables").stdout for r in lab.relays}
    handles = {
        r.name: r.in_namespace("nft", "-a", "list", "chain", "inet", "relaygate", "input").stdout
        for r in lab.relays
    }
    classes = {r.name: r.postconf("smtpd_restriction_classes") for r in lab.relays}
    started = time.monotonic()
    FAST_REVOKED.update(r.namespace for r in lab.relays)
    process = start_playbook(
        "deploy.yml",
        lab.inventory(relaygate_release_inventory=str(outputs.inventory)),
        lab.root / "ansible",
        "-e",
        f"relaygate_out={outputs.revoked}",
        "--tags",
        "revoke",
    )
    refused_at: dict[str, float] = {}
    while len(refused_at) < len(lab.relays) and time.monotonic() - started < 60:
        for relay in lab.relays:
            if relay.name not in refused_at and relay.nft_set("revoked_v4") >= {SCANNER[0]}:
                refused_at[relay.name] = time.monotonic() - started
        time.sleep(0.05)
    done = finish(process)
    lab.deployed = f"revoke:{outputs.revoked}" if done.code == 0 else None
    assert done.code == 0, str(done)
    print(f"time to refused on every relay: {max(refused_at.values()):.2f} s")
    assert max(refused_at.values()) < 10.0, refused_at
    for relay in lab.relays:
        assert done.recap[relay.name]["changed"] == 1, done.recap
        code, text = relay.xclient(*SCANNER)
        assert code == 554 and "relay access revoked: sent spam (SEC-5001)" in text
        assert relay.outside(SCANNER[0], RELAY_PORT, SCANNER[1])[0] == DROPPED
        assert relay.outside(*HODGES[:1], RELAY_PORT, HODGES[1])[0] == 250
        # No full reload: the table and its rules keep their handles; the allow set is
        # untouched; main.cf's classes are the live ones.
        assert relay.in_namespace("nft", "-a", "list", "tables").stdout == tables[relay.name]
        chain = relay.in_namespace("nft", "-a", "list", "chain", "inet", "relaygate", "input")
        assert chain.stdout == handles[relay.name]
        assert SCANNER[0] in relay.nft_set("legacy_v4")
        assert relay.postconf("smtpd_restriction_classes") == classes[relay.name]


# --- 10 (issue 12). STARTTLS needs a certificate ---------------------------------------------


@pytest.mark.integration
def test_auth_only_after_starttls_without_a_certificate_is_refused(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    relay = lab.relays[1]
    ensure(lab, first_deploy, outputs, outputs.base, [relay])
    subprocess.run(
        [
            "postconf",
            "-c",
            str(relay.config),
            "-P",
            "submission/inet/smtpd_tls_auth_only=yes",
        ],
        check=True,
    )
    certificate = relay.root / "tls" / "relay.pem"
    kept = certificate.read_bytes()
    certificate.unlink()
    try:
        before = relay.state_hash()
        refused(
            lab,
            outputs,
            outputs.revoked,
            says=("offers AUTH only after STARTTLS but has no certificate",),
            relays=[relay],
        )
        assert relay.state_hash() == before
    finally:
        certificate.write_bytes(kept)
    deployed(lab, outputs, outputs.revoked, relays=[relay], changed=1)
    lab.deployed = None
    subprocess.run(
        ["postconf", "-c", str(relay.config), "-PX", "submission/inet/smtpd_tls_auth_only"],
        check=True,
    )
    subprocess.run(["postfix", "-c", str(relay.config), "reload"], check=True)


# --- the mass-change guard -------------------------------------------------------------------


@pytest.mark.integration
def test_mass_change_guard_stops_before_any_relay_changes_unless_allowed(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs, outputs.base)
    before = hashes(lab)
    stopped = refused(lab, outputs, outputs.mass)
    now = set(release.verify_release(outputs.base, None).facts["allow_entries"])
    after = set(release.verify_release(outputs.mass, None).facts["allow_entries"])
    lost = len(now - after)
    assert lost / len(now) > 0.3  # the five-device folder drops most of the allow entries
    assert f"Mass change refused: {lost} of {len(now)} allow entries" in stopped.stdout
    assert hashes(lab) == before
    lab.deployed = None
    deployed(
        lab,
        outputs,
        outputs.mass,
        "-e",
        "relaygate_allow_mass_change=true",
        "-e",
        "relaygate_serial=3",
        changed=1,
    )
    lab.deployed = str(outputs.mass)
    survivor = "10.80.34.17"  # bus-ap-mfd, one of the five records left
    for relay in lab.relays:
        assert relay.xclient(*HODGES)[0] == 554
        assert relay.xclient(survivor, senders_of(outputs.mass, survivor)[0])[0] == 250
