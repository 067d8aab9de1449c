"""Time and outside data never block other records.

An expired exception, a lost NetReg reservation or an approver who left
units.yaml is a warning: the record compiles to an explicit refusal with its
reason, and everything else, a revocation above all, still compiles. The
refusal is the same in every target (Postfix answers with the reason; nft and
the MOD ACLs treat the device exactly as a record suspended by hand, which is
compared directly), a real nft loads the ruleset, and a real Postfix built
from the output says so over SMTP while a valid device still relays.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from relaygate import compile as compile_
from relaygate.pipeline import validate
from tests import postfix_instance
from tests.conftest import AS_OF, EXAMPLE, CliResult, require, require_postfix_lmdb

DAY = dt.date.fromisoformat(AS_OF)
LIB = Path("devices") / "libraries"
EXPIRED = "10.20.30.41"  # lib-hodges-3f-copier, expired on 2026-06-15 below
REVOKED = "10.20.30.88"  # lib-gate-counter, revoked for spam below
VALID = "10.40.32.15"  # eng-perkins-2f-copier, untouched: the positive control


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _expire(root: Path) -> None:
    record = root / LIB / "lib-hodges-3f-copier.yaml"
    _edit(record, "approved_on: 2026-06-15", "approved_on: 2025-06-15")
    _edit(record, "expires_on: 2027-06-15", "expires_on: 2026-06-15")


def _lose_reservation(root: Path) -> None:
    netreg = root / "netreg.yaml"
    lines = netreg.read_text().splitlines(keepends=True)
    kept = [line for line in lines if f"address: {EXPIRED}," not in line]
    assert len(kept) == len(lines) - 1, "the reservation line was not found"
    netreg.write_text("".join(kept))


def _approver_leaves(root: Path) -> None:
    units = root / "units.yaml"
    _edit(units, "      - {name: Dr. Alex Dean, email: adean@example.edu, role: dean}\n", "")


#: How each kind of lapse is made, and the reason the relay then gives.
LAPSES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "expired": (_expire, "exception.expired", "exception expired on 2026-06-15"),
    "netreg": (
        _lose_reservation,
        "legacy.netreg-no-reservation",
        "NetReg reservation missing or changed",
    ),
    "approver": (
        _approver_leaves,
        "legacy.approver-not-listed",
        "approver not listed for the unit",
    ),
}


def _revoke(root: Path) -> None:
    _edit(
        root / LIB / "lib-gate-counter.yaml",
        "status: active",
        "status: revoked\nstatus_reason: spam\nstatus_date: 2026-11-29\nstatus_ticket: SEC-4620",
    )


def lapsed_inventory(tmp: Path, lapse: str) -> Path:
    root = tmp / "inventory"
    shutil.copytree(EXAMPLE, root)
    LAPSES[lapse][0](root)
    _revoke(root)
    return root


def _suspended_twin(tmp: Path, lapse: str) -> Path:
    """The lapsed inventory with the record suspended by hand (the lapse itself undone)."""
    root = tmp / "twin" / "inventory"
    shutil.copytree(EXAMPLE, root)
    _revoke(root)
    if lapse == "netreg":
        _lose_reservation(root)  # its record must not lapse: it is suspended anyway
    if lapse == "approver":
        _approver_leaves(root)
    record = root / LIB / "lib-hodges-3f-copier.yaml"
    _edit(
        record,
        "status: active",
        "status: suspended\nstatus_reason: expired\nstatus_date: 2026-06-15",
    )
    return root


def _set(nft: str, name: str) -> set[str]:
    block = re.search(rf"\tset {name} \{{\n(.*?)\n\t\}}", nft, re.S)
    assert block, f"set {name} not in relay.nft"
    return set(re.findall(r"^\t\t\t(\S+) comment ", block.group(1), re.M))


@pytest.mark.parametrize("lapse", sorted(LAPSES))
def test_a_lapse_compiles_to_a_refusal_beside_a_revocation(lapse: str, tmp_path: Path) -> None:
    root = lapsed_inventory(tmp_path, lapse)
    _, rule_id, reason = LAPSES[lapse]
    result = compile_.build(root, DAY)
    validation = result.validation
    assert validation.errors == 0, validation.findings
    lapsed_rules = {(Path(f.path).name, f.rule, str(f.severity)) for f in validation.findings}
    assert ("lib-hodges-3f-copier.yaml", rule_id, "warning") in lapsed_rules
    assert all(f.severity.value == "warning" for f in validation.findings)
    artifacts = result.artifacts
    assert artifacts is not None, "a lapse must not stop the compile"
    # Postfix: the lapsed device is refused with its reason, the revoked one as revoked,
    # and the valid device keeps its restriction class.
    refused = artifacts["postfix/refused_clients"]
    assert f"{EXPIRED}\tREJECT relay access suspended: {reason}\n" in refused
    assert f"{REVOKED}\tREJECT relay access revoked: sent spam (SEC-4620)\n" in refused
    legacy = artifacts["postfix/legacy_clients"]
    assert not re.search(rf"^{re.escape(EXPIRED)}\t", legacy, re.M)
    assert not re.search(rf"^{re.escape(REVOKED)}\t", legacy, re.M)
    assert re.search(rf"^{re.escape(VALID)}\trelaygate_s_", legacy, re.M)
    nft = artifacts["nftables/relay.nft"]
    assert f"{EXPIRED}/32" not in _set(nft, "legacy_v4")
    assert f"{REVOKED}/32" in _set(nft, "revoked_v4")
    assert f"{VALID}/32" in _set(nft, "legacy_v4")
    acls = {p: t for p, t in artifacts.items() if p.startswith("acl/")}
    for path, text in acls.items():
        assert REVOKED not in text, path
    assert VALID in artifacts["acl/ios/mod-engineering-v4.acl"]
    # Every target treats the lapsed record exactly as it treats a suspended one: the
    # same inventory with the record suspended by hand gives the same nft ruleset and
    # ACLs, and Postfix differs only in the reason it gives.
    twin = _suspended_twin(tmp_path, lapse)
    held = compile_.build(twin, DAY).artifacts
    assert held is not None
    for path in sorted(artifacts):
        if path.startswith(("nftables/", "acl/")):
            assert artifacts[path] == held[path], path
    ours, theirs = refused.splitlines(), held["postfix/refused_clients"].splitlines()
    differ = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    assert differ == [
        (
            f"{EXPIRED}\tREJECT relay access suspended: {reason}",
            f"{EXPIRED}\tREJECT relay access suspended: exception expired",
        )
    ]


def test_the_same_inventory_without_the_lapse_relays_the_device(tmp_path: Path) -> None:
    """Positive control for the refusal above: untouched, the device is a legacy client."""
    artifacts = compile_.build(EXAMPLE, DAY).artifacts
    assert artifacts is not None
    assert re.search(
        rf"^{re.escape(EXPIRED)}\trelaygate_s_", artifacts["postfix/legacy_clients"], re.M
    )
    assert EXPIRED not in artifacts["postfix/refused_clients"]


def test_compile_writes_everything_and_exits_0(
    tmp_path: Path, run_cli: Callable[..., CliResult]
) -> None:
    root = lapsed_inventory(tmp_path, "expired")
    out = tmp_path / "out"
    result = run_cli("compile", "--inventory", str(root), "--out", str(out), "--as-of", AS_OF)
    assert result.code == 0, result
    assert "warning exception.expired: expired on 2026-06-15 (as of 2026-11-29)" in result.stderr
    assert "0 errors, 1 warnings" in result.stderr, result
    text = (out / "postfix" / "refused_clients").read_text()
    assert f"{EXPIRED}\tREJECT relay access suspended: exception expired on 2026-06-15\n" in text
    validated = run_cli("validate", "--inventory", str(root), "--as-of", AS_OF)
    assert validated.code == 0, validated


def test_the_lapse_takes_effect_on_its_day(tmp_path: Path) -> None:
    """The day before the expiry the device relays; on the day it is refused."""
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    before = compile_.build(root, dt.date(2027, 6, 14)).artifacts
    on_the_day = compile_.build(root, dt.date(2027, 6, 15)).artifacts
    assert before is not None and on_the_day is not None
    assert EXPIRED not in before["postfix/refused_clients"]
    assert (
        f"{EXPIRED}\tREJECT relay access suspended: exception expired on 2027-06-15\n"
        in on_the_day["postfix/refused_clients"]
    )
    assert validate(root, dt.date(2027, 6, 15)).errors == 0


# --- a real Postfix ------------------------------------------------------------------


def _rcpt_reply(port: int, client: str, sender: str) -> str:
    """One transaction through XCLIENT (the client address the relay sees); the RCPT reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        stream = sock.makefile("rwb")

        def reply() -> str:
            line = stream.readline().decode()
            while line[3:4] == "-":
                line = stream.readline().decode()
            return line.strip()

        def say(command: str) -> str:
            stream.write(command.encode() + b"\r\n")
            stream.flush()
            return reply()

        reply()
        say("EHLO test.example")
        assert say(f"XCLIENT ADDR={client}").startswith("220"), client
        say("EHLO test.example")
        answer = say(f"MAIL FROM:<{sender}>")
        if answer.startswith("250"):
            answer = say("RCPT TO:<someone@elsewhere.example>")
        say("QUIT")
        return answer


@pytest.mark.integration
def test_real_postfix_refuses_the_expired_device_with_its_reason(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root to run a private Postfix instance")
    require_postfix_lmdb()
    root = lapsed_inventory(tmp_path, "expired")
    result = compile_.build(root, DAY)
    assert result.artifacts is not None
    out = tmp_path / "out"
    compile_.write(out, result.artifacts)
    # tmp_path is 0700: the postfix user could not reach the instance's data folder there.
    instance = Path(tempfile.mkdtemp(prefix="relaygate-lapse-"))
    instance.chmod(0o755)
    config = postfix_instance.make_instance(instance / "pf")
    port, submission_port = postfix_instance.free_port(), postfix_instance.free_port()
    master = config / "master.cf"
    # Private ports instead of 25/587, which other instances on this machine may hold.
    lines = [x for x in master.read_text().splitlines() if not x.startswith("submission ")]
    lines += [
        f"127.0.0.1:{port} inet n - n - - smtpd",
        f"127.0.0.1:{submission_port} inet n - n - - smtpd",
    ]
    master.write_text("\n".join(lines) + "\n")
    postfix_instance.install_maps(out, config)
    postfix_instance.apply_fragment(out, config)
    for setting in (out / "postfix" / "master.cf.fragment").read_text().splitlines():
        if setting and not setting.startswith("#"):
            ours = setting.replace("submission/inet/", f"127.0.0.1:{submission_port}/inet/")
            subprocess.run(["postconf", "-c", str(config), "-P", ours], check=True)
    subprocess.run(
        ["postconf", "-c", str(config), "-e", "smtpd_authorized_xclient_hosts = 127.0.0.1"],
        check=True,
    )
    assert postfix_instance.check(config) == ""
    started = subprocess.run(
        ["postfix", "-c", str(config), "start"], capture_output=True, text=True, check=False
    )
    assert started.returncode == 0, started
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "smtpd did not start listening"
                time.sleep(0.2)
        expired = _rcpt_reply(port, EXPIRED, "hodges-scans@lib.example.edu")
        assert expired.startswith("554"), expired
        assert "relay access suspended: exception expired on 2026-06-15" in expired, expired
        revoked = _rcpt_reply(port, REVOKED, "gate-counts@lib.example.edu")
        assert revoked.startswith("554"), revoked
        assert "relay access revoked: sent spam (SEC-4620)" in revoked, revoked
        # Positive control: an untouched legacy device still relays with its own sender.
        valid = _rcpt_reply(port, VALID, "perkins-copier@eng.example.edu")
        assert valid.startswith("250"), valid
    finally:
        subprocess.run(["postfix", "-c", str(config), "stop"], capture_output=True, check=False)
        shutil.rmtree(instance, ignore_errors=True)


@pytest.mark.integration
def test_real_nft_loads_the_refusal(tmp_path: Path) -> None:
    """The lapsed device's ruleset loads in a namespace made here, holding it as suspended."""
    require(os.geteuid() == 0, "needs root to create a network namespace")
    require(shutil.which("nft") is not None, "nft is not installed (Debian package nftables)")
    require(shutil.which("ip") is not None, "ip is not installed (Debian package iproute2)")
    artifacts = compile_.build(lapsed_inventory(tmp_path, "expired"), DAY).artifacts
    assert artifacts is not None
    ruleset = tmp_path / "relay.nft"
    ruleset.write_text(artifacts["nftables/relay.nft"])
    namespace = f"relaygate-lapse-{os.getpid()}"
    made = subprocess.run(
        ["ip", "netns", "add", namespace], capture_output=True, text=True, check=False
    )
    require(made.returncode == 0, f"`ip netns add {namespace}` failed: {made.stderr.strip()}")
    try:

        def listed(name: str) -> str:
            return subprocess.run(
                ["ip", "netns", "exec", namespace, "nft", "list", "set", "inet", "relaygate", name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        loaded = subprocess.run(
            ["ip", "netns", "exec", namespace, "nft", "-f", str(ruleset)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert loaded.returncode == 0, loaded.stderr
        assert EXPIRED not in listed("legacy_v4")
        # Held wherever a record suspended by hand is held.
        twin = compile_.build(_suspended_twin(tmp_path, "expired"), DAY).artifacts
        assert twin is not None
        for name in ("suspended_v4", "revoked_v4"):
            held = f"{EXPIRED}/32" in _set(twin["nftables/relay.nft"], name)
            assert (EXPIRED in listed(name)) == held, name
        assert VALID in listed("legacy_v4")  # positive control: the valid device stays
        assert REVOKED in listed("revoked_v4")
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
