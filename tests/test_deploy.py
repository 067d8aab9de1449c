"""The Ansible deploy (playbooks/), run for real against three lab relays.

Each relay is a private Postfix instance with its own config folder, started inside a
network namespace this module creates, with a campus namespace beside it whose traffic
reaches the relay through its firewall (tests/deploy_support.py). ``ansible-playbook``
runs as a subprocess with ``ansible_connection=local`` and loads nft only through
``ip netns exec``. The compiled folders come from a git repository of the example
inventory made here, so the controller can prove each one is what a commit compiles to.
The tests of a module share one lab (module scope) to stay within a few minutes; each
states the policy it needs first (``ensure``), so any one of them can run alone. The
deploy's guards (health gate, overrides, drift, revoke, mass change) are in
tests/test_deploy_guards.py, on a lab of their own (built by ``make_outputs`` and
``running_lab`` here): `make test` runs each file on one worker, so the two labs work
side by side.

Fault injection runs a copy of the playbooks whose module reads two environment variables
(RELAYGATE_TEST_KILL_AT, RELAYGATE_TEST_PAUSE_AT; ``deploy_support.fault_playbooks``): the
module process dies by SIGKILL, or holds its lock, at a named step - the worst a killed
controller or a concurrent run can do. The module shipped reads neither.

Also here, without root: the release check, the MOD ACL change package, syntax checks,
the CI jobs and ansible-lint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from relaygate import compile as compile_
from relaygate import release
from tests import postfix_instance
from tests.conftest import AS_OF, EXAMPLE, ROOT, require, require_postfix_lmdb
from tests.deploy_support import (
    FAULT_HOOK,
    FAULT_SEAM,
    PLAYBOOKS,
    PROBE_LOGIN,
    RELAY_PORT,
    SUBMISSION_PORT,
    Lab,
    PlaybookRun,
    Relay,
    ansible_bin,
    ansible_env,
    fault_playbooks,
    finish,
    make_lab,
    playbook,
    start_playbook,
)

HODGES = ("10.20.30.41", "hodges-scans@lib.example.edu")  # legacy copier, allowed throughout
SCANNER = ("10.20.30.57", "spc-scans@lib.example.edu")  # legacy scanner; revoked in "revoked"
RHODES = "10.40.32.77"  # revoked in the example inventory itself
UNKNOWN = "10.0.0.2"  # a campus address no record names
CAMPUS = [HODGES[0], SCANNER[0], RHODES, UNKNOWN, "10.80.34.17"]
DROPPED = 0  # Relay.outside: no connection (the firewall dropped it)


# --- the policy repository and its compiled folders ------------------------------------------


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.edu", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit_and_compile(repo: Path, message: str, out: Path) -> Path:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    inventory = repo / "inventory"
    result = compile_.build(
        inventory, dt.date.fromisoformat(AS_OF), compile_.inventory_commit(inventory)
    )
    assert result.artifacts is not None, [str(f) for f in result.validation.findings]
    compile_.write(out, result.artifacts)
    return out


def revoke(inventory: Path, unit: str, name: str) -> None:
    record = inventory / "devices" / unit / f"{name}.yaml"
    text = record.read_text()
    assert "\nstatus: active\n" in text
    record.write_text(
        text.replace(
            "\nstatus: active\n",
            "\nstatus: revoked\nstatus_reason: spam\nstatus_date: 2026-11-28\n"
            "status_ticket: SEC-5001\n",
        )
    )


def remanifest(out: Path, path: str) -> None:
    """Record a hand-edited artifact in manifest.json, as if the compiler had written it."""
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    data = (out / path).read_bytes()
    manifest["artifacts"][path] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Outputs:
    repo: Path  # the policy repository (its inventory/ is the trusted checkout)
    base: Path  # the example campus
    revoked: Path  # lib-special-collections-scanner revoked
    mass: Path  # only five devices left
    revoke_extra: Path  # five devices left and the scanner revoked: a revoke with extras
    tampered: Path  # "base" with a sender added to a map and the manifest re-hashed

    @property
    def inventory(self) -> Path:
        return self.repo / "inventory"


def base_and_revoked(root: Path) -> tuple[Path, Path, Path]:
    """A policy repository in ``root`` with two commits, the example campus and then its
    scanner revoked, and the folders compiled from them: (repo, base, revoked)."""
    require(shutil.which("git") is not None, "git is not installed")
    repo = root / "repo"
    shutil.copytree(EXAMPLE, repo / "inventory")
    git(repo, "init", "-q")
    base = commit_and_compile(repo, "the example campus", root / "base")
    revoke(repo / "inventory", "libraries", "lib-special-collections-scanner")
    revoked = commit_and_compile(repo, "revoke the scanner", root / "revoked")
    return repo, base, revoked


def make_outputs(root: Path) -> Outputs:
    """The policy repository in ``root`` and the folders compiled from its commits."""
    repo, base, revoked = base_and_revoked(root)
    keep = sorted((repo / "inventory" / "devices").rglob("*.yaml"))
    for record in keep:
        if record.stem != "lib-special-collections-scanner" and record not in keep[:5]:
            record.unlink()
    revoke_extra = commit_and_compile(repo, "keep five devices", root / "revoke-extra")
    revoke_back = (
        repo / "inventory" / "devices" / "libraries" / "lib-special-collections-scanner.yaml"
    )
    revoke_back.unlink()
    mass = commit_and_compile(repo, "drop the scanner too", root / "mass")
    tampered = root / "tampered"
    shutil.copytree(base, tampered)
    senders = tampered / "postfix" / "senders"
    first = sorted(senders.iterdir())[0]
    first.write_text(first.read_text() + "ceo@example.edu\tOK\n")
    remanifest(tampered, f"postfix/senders/{first.name}")
    return Outputs(repo, base, revoked, mass, revoke_extra, tampered)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    return make_outputs(tmp_path_factory.mktemp("deploy-outputs"))


# --- the lab ---------------------------------------------------------------------------------


@contextlib.contextmanager
def running_lab(outputs: Outputs) -> Iterator[Lab]:
    """Three lab relays (tests/deploy_support.py), stopped and removed afterwards."""
    require(os.geteuid() == 0, "network namespaces and a Postfix instance need root")
    require_postfix_lmdb()
    for tool in ("ip", "nft", "openssl", "saslpasswd2", "git"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    # Not under tmp_path: pytest's folders are private to root, and the Postfix master
    # (running as the postfix user) must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="rgdeploy-lab-"))
    root.chmod(0o755)
    try:
        # The campus namespaces hold every address the health probe sends from.
        facts = release.verify_release(outputs.base, None, probe_login=PROBE_LOGIN).facts
        built = make_lab(root, sorted({*CAMPUS, *facts["probe"]["sources"]}), count=3)
        try:
            yield built
        finally:
            built.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def deploy_first(lab: Lab, outputs: Outputs) -> PlaybookRun:
    """The first deploy of the example campus onto the fresh lab, all relays in one batch."""
    done = deploy(lab, outputs, outputs.base, "-e", "relaygate_serial=3")
    lab.deployed = str(outputs.base) if done.code == 0 else None
    return done


# The module's lab (tests/test_deploy_guards.py has the same three fixtures, for its own).
@pytest.fixture(scope="module")
def lab(outputs: Outputs) -> Iterator[Lab]:
    with running_lab(outputs) as built:
        yield built


@pytest.fixture(scope="module")
def first_deploy(lab: Lab, outputs: Outputs) -> PlaybookRun:
    return deploy_first(lab, outputs)


def deploy(
    lab: Lab,
    outputs: Outputs,
    out: Path,
    *args: str,
    relays: list[Relay] | None = None,
    env: dict[str, str] | None = None,
    work: str = "ansible",
    **extra: object,
) -> PlaybookRun:
    inventory = lab.inventory(relays, relaygate_release_inventory=str(outputs.inventory), **extra)
    if "revoke" in args:  # --tags revoke
        FAST_REVOKED.update(r.namespace for r in relays or lab.relays)
    return playbook(
        "deploy.yml", inventory, lab.root / work, "-e", f"relaygate_out={out}", *args, env=env
    )


def deployed(
    lab: Lab,
    outputs: Outputs,
    out: Path,
    *args: str,
    changed: int | None = None,
    relays: list[Relay] | None = None,
    **options: Any,
) -> PlaybookRun:
    """Deploy ``out`` and assert the run succeeded; with ``changed``, also that the recap of
    every relay deployed to shows no failed task and exactly ``changed`` changes."""
    done = deploy(lab, outputs, out, *args, relays=relays, **options)
    assert done.code == 0, str(done)
    if changed is not None:
        for relay in relays or lab.relays:
            counts = done.recap[relay.name]
            assert counts["failed"] == 0 and counts["changed"] == changed, (relay.name, done)
    return done


def refused(
    lab: Lab,
    outputs: Outputs,
    out: Path,
    *args: str,
    says: tuple[str, ...] = (),
    relays: list[Relay] | None = None,
    **options: Any,
) -> PlaybookRun:
    """Deploy ``out`` and assert the run failed, its output saying each of ``says``."""
    done = deploy(lab, outputs, out, *args, relays=relays, **options)
    assert done.code != 0, str(done)
    for text in says:
        assert text in done.stdout, f"expected {text!r} in:\n{done}"
    return done


#: Relays (by namespace) a fast revoke (``--tags revoke``) may have changed: main.cf still
#: names the generation it served, so ``ensure`` redeploys them in full.
FAST_REVOKED: set[str] = set()


def ensure(
    lab: Lab,
    first_deploy: PlaybookRun,
    outputs: Outputs,
    out: Path,
    relays: list[Relay] | None = None,
) -> None:
    """Bring the relays a test uses (all by default) to the policy compiled in ``out``:
    in one deploy, of the relays not on it."""
    assert first_deploy.code == 0, f"the first deploy failed:\n{first_deploy}"
    generation = release.verify_release(out, None).facts["generation"]
    behind = [
        r
        for r in relays or lab.relays
        if r.namespace in FAST_REVOKED or not r.live().startswith(generation)
    ]
    if not behind:
        lab.deployed = str(out)
        return
    lab.deployed = None
    deployed(
        lab,
        outputs,
        out,
        "-e",
        "relaygate_allow_mass_change=true",
        "-e",
        "relaygate_serial=3",
        relays=behind,
    )
    FAST_REVOKED.difference_update(r.namespace for r in behind)
    lab.deployed = str(out)


def senders_of(out: Path, address: str) -> list[str]:
    """The senders the compiled maps allow for a legacy client address."""
    for line in (out / "postfix" / "legacy_clients").read_text().splitlines():
        if line.startswith(f"{address}\t"):
            sender_class = line.split("\t")[1]
            senders = (out / "postfix" / "senders" / sender_class).read_text().splitlines()
            return [s.split("\t")[0] for s in senders if s and not s.startswith("#")]
    return []


def hashes(lab: Lab) -> dict[str, str]:
    return {relay.name: relay.state_hash() for relay in lab.relays}


def outside_policy(relay: Relay) -> dict[str, int]:
    """What a campus client sees through the firewall, for the cases the tests care about."""
    return {
        "hodges own": relay.outside(HODGES[0], RELAY_PORT, HODGES[1])[0],
        "hodges foreign": relay.outside(HODGES[0], RELAY_PORT, SCANNER[1])[0],
        "scanner own": relay.outside(SCANNER[0], RELAY_PORT, SCANNER[1])[0],
        "unknown": relay.outside(UNKNOWN, RELAY_PORT, HODGES[1])[0],
        "rhodes": relay.outside(RHODES, RELAY_PORT, HODGES[1])[0],
    }


BASE_POLICY = {"hodges own": 250, "hodges foreign": 554, "scanner own": 250}
REVOKED_POLICY = {"hodges own": 250, "hodges foreign": 554, "scanner own": DROPPED}


# --- first deploy, idempotence, check mode ----------------------------------------------------


@pytest.mark.integration
def test_first_deploy_applies_the_policy_on_every_relay_seen_from_the_campus(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    assert first_deploy.code == 0, str(first_deploy)
    recap = first_deploy.recap
    for relay in lab.relays:
        assert recap[relay.name]["failed"] == 0 and recap[relay.name]["changed"] == 1, recap
        seen = outside_policy(relay)
        # Through the firewall: the device with its own sender relays; the same device with
        # another record's sender, an unknown campus host and a revoked device do not.
        assert seen == {**BASE_POLICY, "unknown": DROPPED, "rhodes": DROPPED}, seen
        # 587 is open to campus: Postfix answers (and refuses to relay without a login).
        assert 500 <= relay.outside(UNKNOWN, SUBMISSION_PORT, "")[0] < 600
        code, text = relay.xclient(RHODES, HODGES[1])
        assert code == 554 and "relay access revoked: sent spam" in text
        # main.cf names the generation itself: no symlink, nothing for postfix check to warn of.
        assert relay.live() in relay.postconf("smtpd_relay_restrictions")
        assert not (relay.config / "relaygate").exists()
        assert postfix_instance.check(relay.config) == ""
        assert relay.log_problems() == [], relay.log_problems()
        assert relay.nft_set("revoked_v4") == {RHODES}
        assert list((relay.config / "relaygate.generations" / "runs").iterdir()) == []
    assert "recompiled and identical" in first_deploy.stdout


@pytest.mark.integration
def test_second_deploy_and_check_mode_change_nothing(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs, outputs.base)
    before = hashes(lab)
    again = deployed(lab, outputs, outputs.base, "-e", "relaygate_serial=3", changed=0)
    for host, counts in again.recap.items():  # the controller's play too
        assert counts["changed"] == 0 and counts["failed"] == 0, (host, again.recap)
    dry = deployed(lab, outputs, outputs.base, "--check", "-e", "relaygate_serial=3", changed=0)
    assert all(c["changed"] == 0 for c in dry.recap.values()), str(dry)
    assert hashes(lab) == before


@pytest.mark.integration
def test_check_diff_shows_each_file_and_set_and_changes_nothing(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs, outputs.base)
    before = hashes(lab)
    dry = deployed(
        lab, outputs, outputs.revoked, "--check", "--diff", "-e", "relaygate_serial=3", changed=1
    )
    assert hashes(lab) == before
    for relay in lab.relays:
        assert relay.outside(*SCANNER[:1], RELAY_PORT, SCANNER[1])[0] == 250  # nothing applied
    # Native diff: one per file (before/after headers) and one per nft set.
    assert "--- before: relaygate.generations/live/legacy_clients" in dry.stdout
    assert "-10.20.30.57\trelaygate_s_" in dry.stdout
    assert "+10.20.30.57\tREJECT relay access revoked: sent spam (SEC-5001)" in dry.stdout
    revoked_set = dry.stdout.partition("+++ after: nft set revoked_v4 (new)")[2]
    assert revoked_set and revoked_set.split("+++")[0].count("+10.20.30.57") == 1


# --- 1. the lock ---------------------------------------------------------------------------


@pytest.mark.integration
def test_concurrent_runs_one_holds_the_lock_the_other_fails_and_one_policy_results(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    relay = lab.relays[0]
    ensure(lab, first_deploy, outputs, outputs.base, [relay])
    inventory_a = lab.inventory([relay], relaygate_release_inventory=str(outputs.inventory))
    release_a = lab.root / "release-run-a"
    release_a.unlink(missing_ok=True)
    # Run A holds the relay (and its lock) right after its snapshot until B has ended.
    run_a = start_playbook(
        "deploy.yml",
        inventory_a,
        lab.root / "ansible-a",
        "-e",
        f"relaygate_out={outputs.revoked}",
        env={"RELAYGATE_TEST_PAUSE_AT": f"snapshot:{release_a}"},
    )
    lock = relay.config / "relaygate.lock"
    runs = relay.config / "relaygate.generations" / "runs"
    deadline = time.monotonic() + 60

    def snapshots() -> list[str]:
        return (
            [p.name for p in runs.iterdir() if not p.name.startswith(".")] if runs.is_dir() else []
        )

    while not snapshots() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert snapshots(), "run A never took its snapshot"
    run_id_a = snapshots()[0]  # the snapshot is named by the run
    try:
        run_b = refused(
            lab,
            outputs,
            outputs.base,
            says=("is locked by another relaygate run", f"run {run_id_a}"),
            relays=[relay],
            work="ansible-b",
            relaygate_lock_timeout=1,
        )
    finally:
        release_a.write_text("go on")
        result_a = finish(run_a)
        lab.deployed = None
    assert result_a.code == 0, str(result_a)
    assert "Nothing was changed on this relay" in run_b.stdout
    assert run_b.recap[relay.name]["failed"] == 1 and run_b.recap[relay.name]["changed"] == 0
    # One consistent policy: A's, committed under A's name; B left nothing behind.
    assert outside_policy(relay) | {"unknown": 0, "rhodes": 0} == {
        **REVOKED_POLICY,
        "unknown": 0,
        "rhodes": 0,
    }
    assert list(runs.iterdir()) == []
    previous = relay.config / "relaygate.generations" / "previous"
    assert (previous / "main.cf").is_file()
    assert f"run {run_id_a}" in lock.read_text()


# --- 6. no window of a broken relay ---------------------------------------------------------------


@pytest.mark.integration
def test_killing_the_run_at_any_step_leaves_a_working_relay_on_old_or_new_policy(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    assert first_deploy.code == 0, str(first_deploy)
    relay = lab.relays[1]
    lab.deployed = None
    base = release.verify_release(outputs.base, None).facts["generation"]
    for step in ("master-switched", "main-switched", "nft", "reloaded"):
        # Always a real change: to the policy main.cf does not serve now. Each run starts
        # from the state the killed one left (its lock released, its snapshot stale).
        target = outputs.revoked if relay.live().startswith(base) else outputs.base
        refused(lab, outputs, target, relays=[relay], env={"RELAYGATE_TEST_KILL_AT": step})
        seen = outside_policy(relay)
        # Working, on one of the two policies, and never "451 Server configuration error".
        assert seen["hodges own"] == 250 and seen["hodges foreign"] == 554, (step, seen)
        assert seen["scanner own"] in (250, DROPPED), (step, seen)
        assert relay.xclient(*HODGES)[0] == 250, step
        assert relay.xclient(*SCANNER)[0] in (250, 554), step
    # The next run takes the lock the dead one held, gates the relay and converges.
    again = deployed(lab, outputs, target, relays=[relay])
    assert "ended without finishing" in again.stdout
    want = REVOKED_POLICY if target == outputs.revoked else BASE_POLICY
    assert {k: v for k, v in outside_policy(relay).items() if k in want} == want
    assert postfix_instance.check(relay.config) == ""
    assert [p.name for p in (relay.config / "relaygate.generations" / "runs").iterdir()] == []


@pytest.mark.integration
def test_no_session_sees_a_configuration_error_during_a_switch(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    relay = lab.relays[2]
    ensure(lab, first_deploy, outputs, outputs.base, [relay])
    replies: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            replies.append(relay.xclient(*HODGES))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        deployed(lab, outputs, outputs.revoked, relays=[relay], changed=1)
    finally:
        stop.set()
        thread.join()
    lab.deployed = None
    assert len(replies) > 10, replies
    assert all(code == 250 for code, _ in replies), [r for r in replies if r[0] != 250][:5]


# --- 3. authenticity ----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_tampered_and_rehashed_folder_is_refused_before_any_relay(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    assert first_deploy.code == 0
    before = hashes(lab)
    done = refused(lab, outputs, outputs.tampered, says=("differs from what the inventory at",))
    assert set(done.recap) == {"localhost"}, done.recap
    assert hashes(lab) == before


def test_release_verify_refuses_what_the_reviewed_inventory_does_not_compile_to(
    outputs: Outputs, tmp_path: Path
) -> None:
    assert release.verify_release(outputs.base, outputs.inventory).ok
    tampered = release.verify_release(outputs.tampered, outputs.inventory)
    assert not tampered.ok, tampered.problems
    assert any(p.startswith("postfix/senders/relaygate_s_") for p in tampered.problems)
    # The checksums alone pass it: that is why the recompile exists.
    assert release.verify_release(outputs.tampered, None).ok
    # A commit the trusted ref does not contain (a side branch nobody merged).
    side = tmp_path / "repo"
    shutil.copytree(outputs.repo, side)
    git(side, "checkout", "-q", "-b", "side")
    (side / "inventory" / "units.yaml").write_text(
        (side / "inventory" / "units.yaml").read_text() + "\n"
    )
    unmerged = commit_and_compile(side, "unreviewed", tmp_path / "unmerged")
    git(side, "checkout", "-q", "master" if "master" in git(side, "branch") else "main")
    result = release.verify_release(unmerged, side / "inventory", trusted_ref="HEAD")
    assert not result.ok and "not contained in the trusted ref" in result.problems[0]
    # A dirty inventory (compiled from uncommitted changes).
    (side / "inventory" / "units.yaml").write_text(
        (side / "inventory" / "units.yaml").read_text() + "\n"
    )
    dirty = compile_.build(
        side / "inventory",
        dt.date.fromisoformat(AS_OF),
        compile_.inventory_commit(side / "inventory"),
    )
    assert dirty.artifacts is not None
    compile_.write(tmp_path / "dirty", dirty.artifacts)
    result = release.verify_release(tmp_path / "dirty", side / "inventory")
    assert not result.ok and "is not a clean commit" in result.problems[0]


def _no_manifest(out: Path) -> None:
    (out / "manifest.json").unlink()


def _not_relaygate(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tool"] = "something-else"
    (out / "manifest.json").write_text(json.dumps(manifest))


def _invalid_manifest(out: Path) -> None:
    (out / "manifest.json").write_text("{not json")


def _extra_file(out: Path) -> None:
    (out / "postfix" / "senders" / "relaygate_s_000000000000").write_text("evil@example.edu\tOK\n")


def _missing_file(out: Path) -> None:
    (out / "postfix" / "refused_clients").unlink()


def _symlink(out: Path) -> None:
    target = out / "postfix" / "refused_clients"
    target.unlink()
    target.symlink_to(out / "postfix" / "legacy_clients")


def _one_byte(out: Path) -> None:
    target = out / "nftables" / "relay.nft"
    target.write_bytes(target.read_bytes().replace(b"drop", b"DROP", 1))


def _permit_all_rehashed(out: Path) -> None:
    target = out / "postfix" / "legacy_clients.cidr"
    target.write_text(target.read_text() + "10.0.0.0/8\tOK\n")
    remanifest(out, "postfix/legacy_clients.cidr")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_no_manifest, "no manifest.json"),
        (_not_relaygate, "not written by relaygate"),
        (_invalid_manifest, "manifest.json: not valid JSON"),
        (_extra_file, "postfix/senders/relaygate_s_000000000000: not in the manifest"),
        (_missing_file, "postfix/refused_clients: listed in the manifest but missing"),
        (_symlink, "postfix/refused_clients: a symlink"),
        (_one_byte, "nftables/relay.nft: changed after compiling"),
        (_permit_all_rehashed, "10.0.0.0/8 maps to 'OK', not a class the fragment defines"),
    ],
    ids=[
        "no-manifest",
        "not-relaygate",
        "invalid-json",
        "extra",
        "missing",
        "symlink",
        "byte",
        "rehashed-ok",
    ],
)
def test_release_check_refuses_folders_the_compiler_did_not_write(
    outputs: Outputs, tmp_path: Path, mutate: object, expected: str
) -> None:
    out = tmp_path / "out"
    shutil.copytree(outputs.base, out)
    assert release.verify_release(out, outputs.inventory).ok
    assert callable(mutate)
    mutate(out)
    result = release.verify_release(out, outputs.inventory)
    assert not result.ok
    assert any(expected in problem for problem in result.problems), result.problems


def test_release_facts_hold_the_allow_entries_and_the_probe(outputs: Outputs) -> None:
    result = release.verify_release(outputs.base, outputs.inventory, probe_login=PROBE_LOGIN)
    facts = result.facts
    entries = facts["allow_entries"]
    assert sum(e.startswith("legacy\t") for e in entries) == 14
    # Logins: sender -> login (sender_login) or login -> its class (logins), as compiled.
    assert sum(e.startswith(("sender\t", "login\t")) for e in entries) >= 17
    assert any(e.startswith(f"legacy\t{HODGES[0]}\trelaygate_s_") for e in entries)
    probe = facts["probe"]
    assert probe["ports"] == {"relay": 25, "submission": 587}
    whys = {(c["why"], c["source"], c["expect"]) for c in probe["full"]}
    assert ("legacy device, its own sender", HODGES[0], "accept") in whys
    assert ("legacy device, a foreign sender", HODGES[0], "refuse") in whys
    assert ("legacy device, the null sender", HODGES[0], "refuse") in whys
    assert ("unknown campus client", UNKNOWN, "refuse") in whys
    assert ("campus client reaches submission", UNKNOWN, "greet") in whys
    assert ("revoked or suspended client", RHODES, "refuse") in whys
    assert [c["source"] for c in probe["revoke"]] == [RHODES]
    assert {HODGES[0], UNKNOWN, RHODES} <= set(probe["sources"])
    # Same files, same generation: the compile date is not part of the identity.
    again = release.verify_release(outputs.base, None).facts["generation"]
    assert facts["generation"] == again
    assert facts["generation"] != release.verify_release(outputs.revoked, None).facts["generation"]


# --- 7. pre-flight ---------------------------------------------------------------------------


@pytest.mark.integration
def test_preflight_refuses_a_relay_that_is_down_short_of_disk_or_already_warning(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    relay = lab.relays[2]
    ensure(lab, first_deploy, outputs, outputs.base, [relay])
    before = relay.state_hash()
    refused(
        lab,
        outputs,
        outputs.revoked,
        says=("less than min_free_mb=1000000000",),
        relays=[relay],
        relaygate_min_free_mb=10**9,
    )
    main_cf = relay.config / "main.cf"
    original = main_cf.read_text()
    main_cf.write_text(original + "relaygate_leftover = 1\n")
    try:
        warned = refused(
            lab,
            outputs,
            outputs.revoked,
            says=(
                "postfix check already warns before any change",
                "unused parameter: relaygate_leftover=1",
            ),
            relays=[relay],
        )
        assert "Rolled back" not in warned.stdout  # refused before, not undone after
    finally:
        main_cf.write_text(original)
    assert relay.state_hash() == before
    relay.in_namespace("postfix", "-c", str(relay.config), "stop")
    try:
        refused(lab, outputs, outputs.revoked, says=("Postfix is not running",), relays=[relay])
        assert relay.state_hash() == before
    finally:
        relay.in_namespace("postfix", "-c", str(relay.config), "start")
    # Positive control, and no warning of relaygate's in postfix check or the mail log.
    log_size = relay.maillog.stat().st_size
    deployed(lab, outputs, outputs.revoked, relays=[relay], changed=1)
    lab.deployed = None
    assert postfix_instance.check(relay.config) == ""
    new_lines = relay.maillog.read_bytes()[log_size:].decode(errors="replace")
    assert "warning" not in new_lines and "fatal" not in new_lines, new_lines


# --- 10. CI jobs and routers ---------------------------------------------------------------------


def test_deploy_fails_when_the_relays_group_matches_no_host(
    outputs: Outputs, tmp_path: Path
) -> None:
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    relaygate = str(Path(sys.executable).parent / "relaygate")
    settings = {
        "relaygate_out": str(outputs.base),
        "relaygate_release_cmd": [relaygate],
        "relaygate_release_inventory": str(outputs.inventory),
    }
    done = playbook("deploy.yml", None, tmp_path, "-e", json.dumps(settings))
    assert done.code != 0, str(done)
    assert "The inventory has no host in the relays group" in done.stdout
    assert "recompiled and identical" in done.stdout  # the folder was verified first


def test_ci_deploy_jobs_pass_an_inventory_with_relays() -> None:
    github = yaml.safe_load((ROOT / ".github" / "workflows" / "relaygate-deploy.yml").read_text())
    gitlab = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    (job,) = github["jobs"].values()
    (step,) = [s for s in job["steps"] if "ansible-playbook" in s.get("run", "")]
    named = {step["env"]["ANSIBLE_INVENTORY"], gitlab["deploy"]["variables"]["ANSIBLE_INVENTORY"]}
    assert named == {"playbooks/inventory/example.yml"}
    inventory = yaml.safe_load((ROOT / named.pop()).read_text())
    assert inventory["all"]["children"]["relays"]["hosts"]


# --- the MOD ACL change package and the IOS playbook ---------------------------------------------


def acl_package(out: Path, package: str, work: Path, *args: str) -> PlaybookRun:
    inventory = str(out.parent / "repo" / "inventory")
    relaygate = str(Path(sys.executable).parent / "relaygate")
    return playbook(
        "mod_acl_package.yml",
        None,
        work,
        "-e",
        f"relaygate_out={out}",
        "-e",
        f"relaygate_acl_package_dir={package}",
        "-e",
        json.dumps(
            {"relaygate_release_cmd": [relaygate], "relaygate_release_inventory": inventory}
        ),
        *args,
    )


def test_mod_acl_change_package_holds_the_new_acl_the_previous_one_and_their_diff(
    outputs: Outputs, tmp_path: Path
) -> None:
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    work = tmp_path / "ansible"
    package = work / "package"  # relative to the folder ansible-playbook runs in
    first = acl_package(outputs.base, "package", work)
    assert first.code == 0, str(first)
    assert first.recap["localhost"]["changed"] == 1
    libraries = package / "mod-libraries"
    assert (libraries / "ios" / "mod-libraries-v4.acl").read_bytes() == (
        outputs.base / "acl" / "ios" / "mod-libraries-v4.acl"
    ).read_bytes()
    again = acl_package(outputs.base, "package", work)
    assert again.recap["localhost"]["changed"] == 0, str(again)
    dry = acl_package(outputs.revoked, "package", work, "--check", "--diff")
    assert dry.recap["localhost"]["changed"] == 1, str(dry)
    assert "host 10.20.30.57" in dry.stdout
    changed = acl_package(outputs.revoked, "package", work)
    assert changed.code == 0, str(changed)
    diff = (libraries / "CHANGE.diff").read_text()
    assert "- permit tcp host 10.20.30.57 host 10.1.0.25 eq 25" in diff
    assert (libraries / "previous" / "ios" / "mod-libraries-v4.acl").read_bytes() == (
        outputs.base / "acl" / "ios" / "mod-libraries-v4.acl"
    ).read_bytes()


def cisco_env(tmp_path: Path) -> dict[str, str] | None:
    env = ansible_env(tmp_path)
    done = subprocess.run(
        [ansible_bin("ansible-galaxy"), "collection", "list", "cisco.ios"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    return env if done.returncode == 0 and "cisco.ios" in done.stdout else None


def ios_commands(want: list[dict[str, object]], running: str) -> list[str]:
    """The commands cisco.ios.ios_acls state replaced sends to a router showing ``running``.

    No router exists here (the one mock of this module): the collection's own comparison
    runs with the router's answer to ``show running-config`` given as text.
    """
    from ansible_collections.cisco.ios.plugins.module_utils.network.ios.argspec.acls import (  # noqa: PLC0415
        acls as argspec,
    )
    from ansible_collections.cisco.ios.plugins.module_utils.network.ios.config.acls import (  # noqa: PLC0415
        acls as config,
    )

    class Module:
        def __init__(self, params: dict[str, object]) -> None:
            defaults = {k: v.get("default") for k, v in argspec.AclsArgs.argument_spec.items()}
            self.params = {**defaults, **params}
            self.check_mode = False
            self._diff = False

        def fail_json(self, **result: object) -> None:
            raise AssertionError(result)

    have = config.Acls(Module({"state": "parsed", "running_config": running})).before

    class Offline(config.Acls):  # type: ignore[misc]
        def gather_current(self) -> object:
            return have

        def _get_connection(self) -> None:
            return None

    facts = config.Facts
    config.Facts = lambda module: None
    try:
        acls = Offline(Module({"state": "replaced", "config": want}))
    finally:
        config.Facts = facts
    acls.generate_commands()
    return list(acls.commands)


def shown_by_ios(acl: str) -> str:
    """An ACL as IOS shows it: entries numbered, well-known ports by name."""
    lines, sequence = [], 0
    for line in acl.splitlines():
        if line.startswith("!"):
            continue
        if line.startswith(" ") and not line.startswith(" remark"):
            sequence += 10
            lines.append(f" {sequence}{line}".replace(" eq 25", " eq smtp"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_ios_playbook_replaces_acls_idempotently_from_a_relative_package(
    outputs: Outputs, tmp_path: Path
) -> None:
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    env = cisco_env(tmp_path)
    if env is None:
        # The one skip allowed in CI: the relay deploy needs no collection.
        pytest.skip("cisco.ios collection not installed; mod_acl_ios.yml not run")
    work = tmp_path / "work"
    made = acl_package(outputs.base, "package", work)
    assert made.code == 0, str(made)
    # The playbook's read stage needs no device: it numbers and parses the package found
    # through a relative path, and shows the config that state replaced will send.
    done = playbook(
        "mod_acl_ios.yml",
        PLAYBOOKS / "inventory" / "example.yml",
        work,
        "-e",
        "relaygate_acl_package_dir=package",
        "--tags",
        "parse",
        env=env,
    )
    assert done.code == 0, str(done)
    head = "ok: [mod-rtr-1.example.edu] => {"
    block = done.stdout[done.stdout.index(head) + len(head) - 1 :]
    want = json.loads(block[: block.index("\n}\n") + 2])["relaygate_acl_config"]
    names = [acl["name"] for family in want for acl in family["acls"]]
    assert "RELAYGATE-MOD-LIBRARIES-V4" in names and "RELAYGATE-MOD-MEDICINE-V6" in names
    running = "".join(
        shown_by_ios(
            (
                outputs.base / "acl" / "ios" / f"{name.lower().removeprefix('relaygate-')}.acl"
            ).read_text()
        )
        for name in names
    )
    # A router that holds the package: a second run sends nothing.
    assert ios_commands(want, running) == []
    # Positive control: a router whose ACL differs gets exactly the differing entries.
    stale = running.replace("host 10.20.30.41", "host 10.20.30.42")
    commands = ios_commands(want, stale)
    assert "10 permit tcp host 10.20.30.41 host 10.1.0.25 eq smtp" in commands, commands
    assert "no 10 permit tcp host 10.20.30.42 host 10.1.0.25 eq smtp" in commands, commands
    assert not any(c.startswith("no ip access-list") for c in commands), commands


# --- syntax and lint ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["deploy.yml", "mod_acl_package.yml", "mod_acl_ios.yml"])
def test_playbooks_pass_the_syntax_check(name: str, tmp_path: Path) -> None:
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    env = ansible_env(tmp_path)
    if name == "mod_acl_ios.yml" and cisco_env(tmp_path) is None:
        pytest.skip("cisco.ios collection not installed; mod_acl_ios.yml not syntax-checked")
    done = subprocess.run(
        [
            ansible_bin("ansible-playbook"),
            "--syntax-check",
            "-i",
            str(PLAYBOOKS / "inventory" / "example.yml"),
            str(PLAYBOOKS / name),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"playbook: {PLAYBOOKS / name}" in done.stdout


def test_roles_declare_their_arguments() -> None:
    for role in ("relaygate", "relaygate_release"):
        spec = PLAYBOOKS / "roles" / role / "meta" / "argument_specs.yml"
        assert "argument_specs:" in spec.read_text() and "main:" in spec.read_text()


def test_the_module_documents_every_argument_it_takes(tmp_path: Path) -> None:
    require(Path(ansible_bin("ansible-doc")).exists(), "ansible-doc is not installed")
    library = PLAYBOOKS / "roles" / "relaygate" / "library"
    done = subprocess.run(
        [ansible_bin("ansible-doc"), "--json", "-M", str(library), "relaygate_relay"],
        capture_output=True,
        text=True,
        check=False,
        env=ansible_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    documented = set(json.loads(done.stdout)["relaygate_relay"]["doc"]["options"])
    source = (library / "relaygate_relay.py").read_text()
    spec = source[source.index("argument_spec={") : source.index("required_if=")]
    taken = set(re.findall(r'^\s+"([a-z_]+)": \{"type"', spec, re.M))
    assert taken and documented == taken, documented ^ taken


def test_ansible_lint_production_profile_passes(tmp_path: Path) -> None:
    lint = Path(sys.executable).parent / "ansible-lint"
    require(lint.exists(), "ansible-lint is not installed")
    env = ansible_env(tmp_path)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["NO_COLOR"] = "1"
    done = subprocess.run(
        [str(lint), "-c", str(PLAYBOOKS / ".ansible-lint"), str(PLAYBOOKS)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=PLAYBOOKS.parent,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


def test_deploy_lab_master_cf_matches_the_shared_one() -> None:
    # deploy_support keeps its own copy (it also runs as a script in the namespaces).
    from tests import deploy_support  # noqa: PLC0415 - the module under comparison

    assert deploy_support.MASTER_CF == postfix_instance.MASTER_CF


def test_the_shipped_module_has_no_test_hook_and_the_fault_copy_has_one() -> None:
    """The module on a relay reads no test variable; the copy the fault tests run does."""
    module = Path("roles") / "relaygate" / "library" / "relaygate_relay.py"
    shipped = (PLAYBOOKS / module).read_text()
    assert "RELAYGATE_TEST" not in shipped and "os.environ" not in shipped
    copy = (fault_playbooks() / module).read_text()
    assert copy.count("RELAYGATE_TEST_KILL_AT") == 1 and copy.count("RELAYGATE_TEST_PAUSE_AT") == 1
    # Everything else is the shipped module, line for line.
    assert copy.replace(FAULT_HOOK, "") == FAULT_SEAM.sub("", shipped)
