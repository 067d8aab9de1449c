"""The Ansible deploy (playbooks/), run for real against two lab relays.

Each relay is a private Postfix instance with its own config folder, started inside a
network namespace this module creates (tests/deploy_support.py); ``ansible-playbook`` runs
as a subprocess with ``ansible_connection=local`` and loads nft only through
``ip netns exec``. The tests share one lab (module scope) to stay within a few minutes;
each states the policy it needs first (``ensure``), so any one of them can run alone.

Also here, without root: the controller's release check refuses every kind of bad output
folder, the MOD ACL change package, syntax checks and ansible-lint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from relaygate import compile as compile_
from tests import postfix_instance
from tests.conftest import AS_OF, EXAMPLE, require, require_postfix_lmdb
from tests.deploy_support import (
    PLAYBOOKS,
    Lab,
    PlaybookRun,
    Relay,
    ansible_bin,
    ansible_env,
    make_lab,
    playbook,
)

HODGES = ("10.20.30.41", "hodges-scans@lib.example.edu")  # legacy copier, allowed throughout
SCANNER = ("10.20.30.57", "spc-scans@lib.example.edu")  # legacy scanner; revoked in "revoked"
RHODES = "10.40.32.77"  # revoked in the example inventory itself
UNKNOWN = "192.0.2.77"  # no record anywhere
RELEASE_SCRIPT = PLAYBOOKS / "roles" / "relaygate_release" / "files" / "relaygate_release.py"


# --- compiled folders ----------------------------------------------------------------------------


def compile_inventory(inventory: Path, out: Path) -> Path:
    result = compile_.build(inventory, dt.date.fromisoformat(AS_OF), None)
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
    base: Path  # the example campus
    revoked: Path  # the example with lib-special-collections-scanner revoked
    mass: Path  # only five devices left
    broken: Path  # "revoked" plus a fragment line that makes `postfix check` warn


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    root = tmp_path_factory.mktemp("deploy-outputs")
    base = compile_inventory(EXAMPLE, root / "base")
    inventory = root / "inventory-revoked"
    shutil.copytree(EXAMPLE, inventory)
    revoke(inventory, "libraries", "lib-special-collections-scanner")
    revoked = compile_inventory(inventory, root / "revoked")
    few = root / "inventory-few"
    shutil.copytree(EXAMPLE, few)
    for record in sorted((few / "devices").rglob("*.yaml"))[5:]:
        record.unlink()
    mass = compile_inventory(few, root / "mass")
    broken = root / "broken"
    shutil.copytree(revoked, broken)
    fragment = broken / "postfix" / "main.cf.fragment"
    # A restriction class nobody references: Postfix warns "unused parameter" (exit 0).
    first_class = sorted((broken / "postfix" / "senders").iterdir())[0].name
    fragment.write_text(
        fragment.read_text() + "relaygate_s_dead = check_sender_access "
        f"lmdb:${{config_directory}}/relaygate/senders/{first_class}, reject\n"
    )
    remanifest(broken, "postfix/main.cf.fragment")
    return Outputs(base, revoked, mass, broken)


def senders_of(out: Path, address: str) -> list[str]:
    """The senders the compiled maps allow for a legacy client address."""
    for line in (out / "postfix" / "legacy_clients").read_text().splitlines():
        if line.startswith(f"{address}\t"):
            sender_class = line.split("\t")[1]
            senders = (out / "postfix" / "senders" / sender_class).read_text().splitlines()
            return [s.split("\t")[0] for s in senders if s and not s.startswith("#")]
    return []


# --- the lab -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require(os.geteuid() == 0, "network namespaces and a Postfix instance need root")
    require_postfix_lmdb()
    require(
        shutil.which("ip") is not None and shutil.which("nft") is not None,
        "ip or nft is not installed",
    )
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    # Not under tmp_path: pytest's folders are private to root, and the Postfix master
    # (running as the postfix user) must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="rgdeploy-lab-"))
    root.chmod(0o755)
    try:
        built = make_lab(root)
        try:
            yield built
        finally:
            built.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def deploy(lab: Lab, out: Path, *args: str) -> PlaybookRun:
    work = lab.root / "ansible"
    return playbook("deploy.yml", lab.inventory(), work, "-e", f"relaygate_out={out}", *args)


@pytest.fixture(scope="module")
def first_deploy(lab: Lab, outputs: Outputs) -> PlaybookRun:
    """The first deploy of the example campus onto the fresh lab, both relays in one batch."""
    done = deploy(lab, outputs.base, "-e", "relaygate_serial=2")
    lab.deployed = str(outputs.base) if done.code == 0 else None
    return done


def ensure(lab: Lab, first_deploy: PlaybookRun, out: Path) -> None:
    """Bring both relays to the policy compiled in ``out`` (skip when they serve it)."""
    assert first_deploy.code == 0, f"the first deploy failed:\n{first_deploy}"
    if lab.deployed == str(out):
        return
    done = deploy(lab, out, "-e", "relaygate_allow_mass_change=true", "-e", "relaygate_serial=2")
    assert done.code == 0, str(done)
    lab.deployed = str(out)


def answer(relay: Relay, client: str, sender: str) -> int:
    return relay.xclient(client, sender)[0]


def hashes(lab: Lab) -> dict[str, str]:
    return {relay.name: relay.state_hash() for relay in lab.relays}


# --- 1. first deploy -----------------------------------------------------------------------------


@pytest.mark.integration
def test_first_deploy_applies_the_policy_on_every_relay(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    assert first_deploy.code == 0, str(first_deploy)
    recap = first_deploy.recap
    for relay in lab.relays:
        assert recap[relay.name]["failed"] == 0 and recap[relay.name]["changed"] > 0, recap
        # A device with its own sender relays; the policy binds both address and sender.
        assert answer(relay, *HODGES) == 250
        assert answer(relay, HODGES[0], SCANNER[1]) == 554
        assert answer(relay, *SCANNER) == 250
        assert answer(relay, UNKNOWN, HODGES[1]) == 554
        code, text = relay.xclient(RHODES, HODGES[1])
        assert code == 554 and "relay access revoked: sent spam" in text
        live = os.readlink(relay.config / "relaygate")
        assert live.startswith("relaygate.generations/"), live
        assert "relaygate/legacy_clients" in relay.postconf("smtpd_relay_restrictions")
        assert postfix_instance.check(relay.config) == ""
        assert relay.nft_set("legacy_v4") >= {HODGES[0], SCANNER[0]}
        assert relay.nft_set("revoked_v4") == {RHODES}
        # The probe service the role added answers only on the namespace's loopback.
        assert "127.0.0.1:10025" in (relay.config / "master.cf").read_text()
    assert "Health gate" in first_deploy.stdout


# --- 2. idempotence ------------------------------------------------------------------------------


@pytest.mark.integration
def test_second_deploy_of_the_same_output_changes_nothing(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs.base)
    before = hashes(lab)
    again = deploy(lab, outputs.base, "-e", "relaygate_serial=2")
    assert again.code == 0, str(again)
    recap = again.recap
    assert set(recap) == {"localhost", *(r.name for r in lab.relays)}, recap
    for host, counts in recap.items():
        assert counts["changed"] == 0 and counts["failed"] == 0, (host, counts)
        assert counts["ok"] > 0
    assert hashes(lab) == before


# --- 3. --check --diff ---------------------------------------------------------------------------


@pytest.mark.integration
def test_check_diff_shows_the_changes_and_changes_nothing(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs.base)
    before = hashes(lab)
    dry = deploy(lab, outputs.revoked, "--check", "--diff", "-e", "relaygate_serial=2")
    assert dry.code == 0, str(dry)
    assert hashes(lab) == before
    for relay in lab.relays:
        assert dry.recap[relay.name]["changed"] == 1, dry.recap  # "would change", reported
        assert answer(relay, *SCANNER) == 250  # still allowed: nothing was applied
    # The diff names the device that loses access and the line that refuses it.
    assert '"-10.20.30.57\\trelaygate_s_' in dry.stdout
    assert '"+10.20.30.57\\tREJECT relay access revoked: sent spam (SEC-5001)"' in dry.stdout


# --- 4. a broken artifact ------------------------------------------------------------------------


@pytest.mark.integration
def test_broken_artifact_fails_on_the_first_relay_rolls_it_back_and_spares_the_rest(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs.base)
    first, second = lab.relays
    before = hashes(lab)
    failed = deploy(lab, outputs.broken)
    assert failed.code != 0, str(failed)
    recap = failed.recap
    assert recap[first.name]["failed"] == 1 and recap[first.name]["rescued"] == 1, recap
    assert recap[second.name]["failed"] == 0 and recap[second.name]["changed"] == 0, recap
    assert "unused parameter: relaygate_s_dead" in failed.stdout
    assert "Rolled back: restored main.cf" in failed.stdout
    # Byte for byte as before: main.cf, master.cf, maps, generations, nft.
    assert hashes(lab) == before
    # The first relay still serves the previous policy (the broken one revoked the scanner).
    assert answer(first, *SCANNER) == 250
    assert answer(first, UNKNOWN, HODGES[1]) == 554
    assert "relaygate_s_dead" not in (first.config / "main.cf").read_text()
    # The second relay never ran a deploy task.
    assert "Plan what changes on this relay" in failed.stdout
    assert f"ok: [{second.name}]" not in failed.stdout.partition("Roll the new policy")[2]


# --- 6. a tampered output folder -----------------------------------------------------------------


@pytest.mark.integration
def test_tampered_output_is_refused_before_any_relay_changes(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs, tmp_path: Path
) -> None:
    ensure(lab, first_deploy, outputs.base)
    tampered = tmp_path / "tampered"
    shutil.copytree(outputs.base, tampered)
    target = tampered / "postfix" / "legacy_clients"
    data = bytearray(target.read_bytes())
    data[data.index(b"10.20.30.41") + 10] = ord("2")  # one byte: .41 becomes .42
    target.write_bytes(bytes(data))
    before = hashes(lab)
    refused = deploy(lab, tampered)
    assert refused.code != 0, str(refused)
    assert "postfix/legacy_clients: changed after compiling" in refused.stdout
    assert set(refused.recap) == {"localhost"}, refused.recap  # no relay play ever started
    assert hashes(lab) == before


# --- 7. the fast revoke path ---------------------------------------------------------------------


@pytest.mark.integration
def test_revoke_tag_pushes_only_the_refused_maps_and_nft_to_every_relay(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    ensure(lab, first_deploy, outputs.base)
    classes = {relay.name: relay.postconf("smtpd_restriction_classes") for relay in lab.relays}
    revoked = deploy(lab, outputs.revoked, "--tags", "revoke")
    # Neither base nor revoked: the base generation with the revoke applied.
    lab.deployed = f"revoke:{outputs.revoked}" if revoked.code == 0 else None
    assert revoked.code == 0, str(revoked)
    assert "Read the allow entries" not in revoked.stdout  # only the revoke play ran
    for relay in lab.relays:
        assert revoked.recap[relay.name]["changed"] > 0, revoked.recap
        code, text = relay.xclient(*SCANNER)
        assert code == 554 and "relay access revoked: sent spam (SEC-5001)" in text
        assert answer(relay, *HODGES) == 250
        assert SCANNER[0] in relay.nft_set("revoked_v4")
        assert SCANNER[0] not in relay.nft_set("legacy_v4")
        # Only the refused maps and the ruleset moved: the allow map and main.cf did not.
        assert f"{SCANNER[0]}\t" in (relay.config / "relaygate" / "legacy_clients").read_text()
        assert relay.postconf("smtpd_restriction_classes") == classes[relay.name]


# --- 5. the mass-change guard --------------------------------------------------------------------


@pytest.mark.integration
def test_mass_change_guard_stops_before_any_relay_changes_unless_allowed(
    lab: Lab, first_deploy: PlaybookRun, outputs: Outputs
) -> None:
    # After the revoke test the relays still hold the example's 33 allow entries (a revoke
    # does not touch the allow maps): no need to deploy the example again first.
    if lab.deployed != f"revoke:{outputs.revoked}":
        ensure(lab, first_deploy, outputs.base)
    before = hashes(lab)
    stopped = deploy(lab, outputs.mass)
    assert stopped.code != 0, str(stopped)
    assert "Mass change refused: 28 of 33 allow entries" in stopped.stdout
    assert "relaygate_allow_mass_change=true" in stopped.stdout
    assert "Plan what changes on this relay" not in stopped.stdout
    assert hashes(lab) == before
    links = {relay.name: os.readlink(relay.config / "relaygate") for relay in lab.relays}
    main_cf = {relay.name: (relay.config / "main.cf").read_bytes() for relay in lab.relays}
    allowed = deploy(
        lab, outputs.mass, "-e", "relaygate_allow_mass_change=true", "-e", "relaygate_serial=2"
    )
    lab.deployed = str(outputs.mass) if allowed.code == 0 else None
    assert allowed.code == 0, str(allowed)
    assert "mass change allowed" in allowed.stdout
    survivor = "10.80.34.17"  # bus-ap-mfd, one of the five records left
    for relay in lab.relays:
        assert answer(relay, *HODGES) == 554
        assert answer(relay, survivor, senders_of(outputs.mass, survivor)[0]) == 250
        # The previous generation of every file is kept for rollback.
        previous = relay.config / "relaygate.generations" / "previous"
        assert (previous / "link").read_text() == links[relay.name]
        assert (relay.config / links[relay.name] / "legacy_clients.lmdb").is_file()
        assert (previous / "main.cf").read_bytes() == main_cf[relay.name]
        assert os.readlink(relay.config / "relaygate") != links[relay.name]


# --- the controller's release check, without a relay ---------------------------------------------


def load_release() -> ModuleType:
    spec = importlib.util.spec_from_file_location("relaygate_release", RELEASE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    (out / "postfix" / "sender_login").unlink()


def _symlink(out: Path) -> None:
    target = out / "postfix" / "refused_logins"
    target.unlink()
    target.symlink_to(out / "postfix" / "sender_login")


def _one_byte(out: Path) -> None:
    target = out / "nftables" / "relay.nft"
    target.write_bytes(target.read_bytes().replace(b"drop", b"DROP", 1))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_no_manifest, "no manifest.json"),
        (_not_relaygate, "not written by relaygate"),
        (_invalid_manifest, "manifest.json: not valid JSON"),
        (_extra_file, "postfix/senders/relaygate_s_000000000000: not in the manifest"),
        (_missing_file, "postfix/sender_login: listed in the manifest but missing"),
        (_symlink, "postfix/refused_logins: a symlink"),
        (_one_byte, "nftables/relay.nft: changed after compiling"),
    ],
    ids=["no-manifest", "not-relaygate", "invalid-json", "extra", "missing", "symlink", "byte"],
)
def test_release_check_refuses_folders_the_compiler_did_not_write(
    outputs: Outputs, tmp_path: Path, mutate: Callable[[Path], None], expected: str
) -> None:
    out = tmp_path / "out"
    shutil.copytree(outputs.base, out)
    release = load_release()
    assert release.verify(out)["ok"] is True
    mutate(out)
    result = release.verify(out)
    assert result["ok"] is False
    assert any(expected in problem for problem in result["problems"]), result["problems"]


def test_release_check_extracts_allow_entries_and_probe_cases(outputs: Outputs) -> None:
    release = load_release()
    result = release.verify(outputs.base)
    entries = result["allow_entries"]
    assert sum(e.startswith("legacy\t") for e in entries) == 14
    assert sum(e.startswith("sender\t") for e in entries) == 19
    assert f"legacy\t{HODGES[0]}\trelaygate_s_0ac233217595" in entries
    probe = result["probe"]
    assert {"client": HODGES[0], "sender": HODGES[1], "expect": "accept"} in probe
    assert {"client": HODGES[0], "sender": release.PROBE_SENDER, "expect": "refuse"} in probe
    assert {"client": "192.0.2.1", "sender": HODGES[1], "expect": "refuse"} in probe
    assert {"client": RHODES, "sender": HODGES[1], "expect": "refuse"} in probe
    assert [case["client"] for case in result["revoke_probe"]] == [RHODES, "2001:db8:1060:330::2a"]
    assert set(result["bundle"]["files"]) >= {"main.cf.fragment", "relay.nft", "legacy_clients"}
    # Same files, same generation: the compile date is not part of the identity.
    assert result["generation"] == release.verify(outputs.base)["generation"]
    assert result["generation"] != release.verify(outputs.revoked)["generation"]


# --- the MOD ACL change package ------------------------------------------------------------------


def acl_package(out: Path, package: Path, work: Path, *args: str) -> PlaybookRun:
    return playbook(
        "mod_acl_package.yml",
        None,
        work,
        "-e",
        f"relaygate_out={out}",
        "-e",
        f"relaygate_acl_package_dir={package}",
        *args,
    )


def test_mod_acl_change_package_holds_the_new_acl_the_previous_one_and_their_diff(
    outputs: Outputs, tmp_path: Path
) -> None:
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    package = tmp_path / "package"
    work = tmp_path / "ansible"
    first = acl_package(outputs.base, package, work)
    assert first.code == 0, str(first)
    assert first.recap["localhost"]["changed"] == 1
    libraries = package / "mod-libraries"
    assert (libraries / "ios" / "mod-libraries-v4.acl").read_bytes() == (
        outputs.base / "acl" / "ios" / "mod-libraries-v4.acl"
    ).read_bytes()
    assert (libraries / "junos" / "mod-libraries-v4.conf").is_file()
    assert sorted(p.name for p in package.iterdir()) == [
        "mod-admin",
        "mod-engineering",
        "mod-facilities",
        "mod-libraries",
        "mod-medicine",
    ]
    again = acl_package(outputs.base, package, work)
    assert again.recap["localhost"]["changed"] == 0, str(again)
    medicine_diff = (package / "mod-medicine" / "CHANGE.diff").read_text()
    dry = acl_package(outputs.revoked, package, work, "--check", "--diff")
    assert dry.recap["localhost"]["changed"] == 1, str(dry)
    assert "host 10.20.30.57" in dry.stdout
    assert (libraries / "ios" / "mod-libraries-v4.acl").read_bytes() == (
        outputs.base / "acl" / "ios" / "mod-libraries-v4.acl"
    ).read_bytes()
    changed = acl_package(outputs.revoked, package, work)
    assert changed.code == 0, str(changed)
    diff = (libraries / "CHANGE.diff").read_text()
    assert "-- previous/ios/mod-libraries-v4.acl" in diff
    assert "- permit tcp host 10.20.30.57 host 10.1.0.25 eq 25" in diff
    assert "+ permit" not in diff
    assert (libraries / "previous" / "ios" / "mod-libraries-v4.acl").read_bytes() == (
        outputs.base / "acl" / "ios" / "mod-libraries-v4.acl"
    ).read_bytes()
    assert "10.20.30.57" not in (libraries / "ios" / "mod-libraries-v4.acl").read_text()
    # A segment the change did not touch keeps its package as it was.
    assert (package / "mod-medicine" / "CHANGE.diff").read_text() == medicine_diff


# --- syntax and lint -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["deploy.yml", "mod_acl_package.yml"])
def test_playbooks_pass_the_syntax_check(name: str, tmp_path: Path) -> None:
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
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
        env=ansible_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"playbook: {PLAYBOOKS / name}" in done.stdout


def cisco_ios_installed(env: dict[str, str]) -> bool:
    done = subprocess.run(
        [ansible_bin("ansible-galaxy"), "collection", "list", "cisco.ios"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    return done.returncode == 0 and "cisco.ios" in done.stdout


def test_cisco_ios_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    env = ansible_env(tmp_path)
    # Keep the machine's collection paths: the network team installs cisco.ios there.
    env.pop("ANSIBLE_HOME")
    for key in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"):
        if key in os.environ:
            env[key] = os.environ[key]
    if not cisco_ios_installed(env):
        # The one skip allowed in CI: the relay deploy needs no collection, and CI has no
        # Galaxy access. ansible-lint still lints this playbook (with a mocked module).
        pytest.skip(
            "cisco.ios collection not installed (ansible-galaxy collection install -r "
            "playbooks/collections/requirements.yml); mod_acl_ios.yml not syntax-checked"
        )
    done = subprocess.run(
        [
            ansible_bin("ansible-playbook"),
            "--syntax-check",
            "-i",
            str(PLAYBOOKS / "inventory" / "example.yml"),
            str(PLAYBOOKS / "mod_acl_ios.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr


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
