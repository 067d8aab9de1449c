"""Hostile input: the corpus in tests/hostile/, action words in names, and verifier canaries.

Anyone on campus can open a pull request, so every byte of ``inventory/`` is
untrusted. Three suites here:

1. The hostile corpus, ``tests/hostile/<family>/<case>/``: the overlay format
   of ``tests/test_cases.py`` (``remove.txt``, ``inventory/``, ``setup.py``,
   ``expected.txt`` with the exact findings and ``# xfail:`` for a case that
   documents a compiler bug), organised by attack family. Each case must be
   refused with exactly its findings, by ``relaygate.compile.build`` (no
   artifacts) and by ``relaygate compile --out DIR`` (exit 1, DIR never
   created), within ``TIME_LIMIT`` seconds, never with an internal error.
   A case whose only findings are of time or outside data (an approver
   units.yaml does not list, a NetReg mismatch) compiles instead, with the
   record refused in every target, and fails the pull request that adds it.
2. Action words that are valid names (``ok``, ``relay``, ``permit``...) and
   valid tickets (``OK-1``): accepted, and they change exactly the places a
   name or a ticket is printed, nothing else.
3. Canaries for the cross-target verifier: deliberately broken artifacts,
   each of which ``relaygate.verify.verify`` must report. A canary marked
   xfail documents a breakage the verifier does not see yet.
4. Canaries for the deploy: the verification play of ``playbooks/deploy.yml``
   (a real ``ansible-playbook`` on localhost, no relay in its inventory) must
   refuse a compiled folder whose artifacts or manifest were changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from relaygate import compile as compile_
from relaygate.addresses import canonical_text
from relaygate.findings import Finding
from relaygate.model import LAPSE_REASONS
from relaygate.pipeline import touched
from relaygate.rules import RULES
from relaygate.verify import verify
from tests.conftest import AS_OF, EXAMPLE, CliResult, closing_line, require
from tests.test_cases import (
    build_inventory,
    case_dirs,
    case_params,
    finding_line,
    needs_unprivileged,
    read_expected,
    rule_of,
)

HOSTILE = Path(__file__).resolve().parent / "hostile"
DAY = dt.date.fromisoformat(AS_OF)
#: Attack families, each a folder of cases; a folder not listed here is an error.
FAMILIES = ("yaml", "addresses", "injection", "deception", "structure", "policy")
MIN_CASES_PER_FAMILY = 5
#: No hostile input may keep the compiler busy longer than this (seconds).
TIME_LIMIT = 10.0

T = TypeVar("T")


def _params() -> list[object]:
    params: list[object] = []
    for family in FAMILIES:
        params += case_params(HOSTILE / family, prefix=f"{family}/")
    return params


def within(seconds: float, function: Callable[[], T]) -> T:
    """``function()``, or a test failure if it has not returned after ``seconds``.

    It runs in a daemon thread so a hang fails this test instead of the run.
    """
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = function()
        except BaseException as error:  # re-raised in the test's own thread
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: a hostile input must not hang the compiler")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _lines(findings: list[Finding], root: Path) -> list[str]:
    return [finding_line(f, root) for f in findings]


@pytest.mark.parametrize("case", _params())
def test_hostile_case_is_refused_exactly(
    case: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Callable[..., CliResult],
) -> None:
    expected, _ = read_expected(case)
    assert expected, f"{case.name}: expected.txt lists no finding"
    assert not needs_unprivileged(case), "the hostile runner validates in process, as root"
    root = build_inventory(case, tmp_path)
    monkeypatch.chdir(root)  # finding paths are shown relative to the working directory

    started = time.monotonic()
    result = within(TIME_LIMIT, lambda: compile_.build(root, DAY))
    assert _lines(result.validation.findings, root) == expected
    if result.validation.errors == 0 and result.validation.lapsed:
        _refused_and_failed_in_review(result)
        return
    assert result.artifacts is None, "a hostile inventory compiled to artifacts"
    assert result.validation.errors > 0

    out = tmp_path / "out"
    cli = run_cli("compile", "--inventory", str(root), "--as-of", AS_OF, "--out", str(out))
    elapsed = time.monotonic() - started
    assert cli.code == 1, cli
    assert not out.exists(), "compile wrote an output folder for a hostile inventory"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")], cli
    assert "nothing was written" in cli.stderr, cli
    printed = [line for line in cli.stderr.splitlines() if line.startswith(tuple(expected))]
    assert len(printed) == len(expected), cli
    for line, want in zip(printed, expected, strict=True):
        assert line.startswith(f"{want} ("), (line, want)
    assert elapsed < 2 * TIME_LIMIT, f"build and compile took {elapsed:.1f} s"


def _refused_and_failed_in_review(result: compile_.CompileResult) -> None:
    """Only lapses: the records are refused everywhere, and a change adding them fails."""
    validation = result.validation
    assert all(f.rule in LAPSE_REASONS for f in validation.findings), validation.findings
    artifacts = result.artifacts
    assert artifacts is not None
    refused = artifacts["postfix/refused_clients"] + artifacts["postfix/refused_clients.cidr"]
    allowed = artifacts["postfix/legacy_clients"] + artifacts["postfix/legacy_clients.cidr"]
    for device in validation.devices:
        if device.source in validation.lapsed:
            address = canonical_text(device.network)
            assert f"\n{address}\tREJECT relay access suspended: " in refused, device.name
            assert not any(line.startswith(f"{address}\t") for line in allowed.splitlines())
    reviewed = touched(validation.findings, set(validation.lapsed))
    assert all(f.is_error for f in reviewed), reviewed


def test_hostile_corpus_is_organised_by_family() -> None:
    folders = sorted(
        p.name for p in HOSTILE.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
    )
    assert folders == sorted(FAMILIES), "every folder of tests/hostile/ is a family in FAMILIES"
    for family in FAMILIES:
        cases = case_dirs(HOSTILE / family)
        assert len(cases) >= MIN_CASES_PER_FAMILY, f"{family}: only {len(cases)} cases"
        for case in cases:
            expected, _ = read_expected(case)
            assert expected, f"{family}/{case.name}: expected.txt lists no finding"
            comments = [
                line
                for line in (case / "expected.txt").read_text(encoding="utf-8").splitlines()
                if line.startswith("# ") and not line.startswith("# xfail:")
            ]
            assert comments, f"{family}/{case.name}: say in a comment what the attack is"
            unknown = {rule_of(line) for line in expected} - set(RULES)
            assert not unknown, f"{family}/{case.name}: unknown rule ids {sorted(unknown)}"
            # An error, or only lapses (refused on the relay, an error in review).
            assert any(" error " in line for line in expected) or all(
                rule_of(line) in LAPSE_REASONS for line in expected
            ), f"{case.name}: no error"


def test_hostile_corpus_summary(request: pytest.FixtureRequest) -> None:
    counts = {family: len(case_dirs(HOSTILE / family)) for family in FAMILIES}
    xfail = sum(
        1 for family in FAMILIES for case in case_dirs(HOSTILE / family) if read_expected(case)[1]
    )
    total = sum(counts.values())
    assert total == len(_params())
    summary = ", ".join(f"{family} {count}" for family, count in counts.items())
    # Shown in `pytest -q` output, not only on failure.
    closing_line(
        request.config,
        "hostile corpus",
        f"hostile corpus: {summary} ({total} cases, {xfail} documenting a known bug)",
    )


# --- action words that are valid names and tickets --------------------------------------

RENAMED = "devices/libraries/lib-hodges-3f-copier.yaml"
OLD_NAME = "lib-hodges-3f-copier"
OLD_TICKET = "NS-12345"


@pytest.mark.parametrize(
    ("name", "ticket"),
    [
        ("ok", "OK-1"),
        ("relay", "RELAY-25"),
        ("permit", "PERMIT-0"),
        ("accept", "ACCEPT-1"),
        ("reject", "REJECT-1"),
        ("discard", "DUNNO-1"),
        ("12345", "A1-200"),
    ],
)
def test_action_words_in_names_and_tickets_change_only_comments(
    name: str, ticket: str, inventory: Path
) -> None:
    """A name or ticket that is an action word is printed where names and tickets go, only.

    The renamed inventory must compile to exactly the baseline artifacts with the
    old name and ticket replaced: no map value, verdict or rule may change.
    """
    baseline = compile_.build(EXAMPLE, DAY).artifacts
    assert baseline is not None
    record = inventory / RENAMED
    text = record.read_text(encoding="utf-8")
    assert text.count(f"name: {OLD_NAME}\n") == 1 and text.count(OLD_TICKET) == 1
    record.unlink()
    (record.parent / f"{name}.yaml").write_text(
        # quoted: a plain 12345 is a number, and the schema wants text
        text.replace(f"name: {OLD_NAME}\n", f'name: "{name}"\n').replace(OLD_TICKET, ticket),
        encoding="utf-8",
    )
    result = compile_.build(inventory, DAY)
    assert result.artifacts is not None, [f.as_text() for f in result.validation.findings]
    assert result.validation.inventory is not None
    assert verify(result.validation.inventory, result.artifacts) == []
    changed = {
        path: text.replace(OLD_NAME, name).replace(OLD_TICKET, ticket)
        for path, text in baseline.items()
        if path != compile_.MANIFEST
    }
    got = {path: text for path, text in result.artifacts.items() if path != compile_.MANIFEST}
    assert sorted(got) == sorted(changed)
    differing = [path for path in sorted(got) if got[path] != changed[path]]
    assert differing == [], differing
    assert any(name in text for text in got.values())


# --- canaries: broken artifacts the verifier must catch ----------------------------------

Mutation = Callable[[str], str]


def _append(line: str) -> Mutation:
    return lambda text: text + line + "\n"


def _drop(needle: str) -> Mutation:
    def mutate(text: str) -> str:
        lines = text.splitlines(keepends=True)
        kept = [line for line in lines if needle not in line]
        assert len(kept) < len(lines), f"{needle!r} not found"
        return "".join(kept)

    return mutate


def _sub(old: str, new: str) -> Mutation:
    def mutate(text: str) -> str:
        assert old in text, f"{old!r} not found"
        return text.replace(old, new, 1)

    return mutate


LEGACY_CLASS = "relaygate_s_0ac233217595"  # the class of lib-hodges-3f-copier
OTHER_CLASS = "relaygate_s_ff2e10143ed9"  # the class of eng-me-shop-mfd
NFT_V4 = '\t\t\t10.20.30.41/32 comment "lib-hodges-3f-copier",\n'
NFT_V6 = '\t\t\t2001:db8:1040:320::1f/128 comment "eng-me-shop-mfd",\n'
IOS = "acl/ios/mod-libraries-v4.acl"
JUNOS = "acl/junos/mod-libraries-v4.conf"
FRAGMENT = "postfix/main.cf.fragment"
NFT = "nftables/relay.nft"


CANARIES = [
    # an OK line for everyone, in every Postfix map that grants relay
    pytest.param(
        "postfix/legacy_clients.cidr", _append("0.0.0.0/0\tOK"), "0.0.0.0/0", id="cidr-ok-all"
    ),
    pytest.param("postfix/legacy_clients", _append("0.0.0.0/0\tOK"), "'OK'", id="lmdb-ok-all"),
    pytest.param(
        "postfix/legacy_clients.cidr", _append("::/0\tRELAY"), "::/0", id="cidr-relay-all-v6"
    ),
    pytest.param(
        "postfix/legacy_clients.cidr", _append("0.0.0.0/0 OK"), "malformed", id="cidr-space-ok"
    ),
    pytest.param(
        "postfix/legacy_clients", _append(" 0.0.0.0/0\tOK"), "continuation", id="continuation"
    ),
    pytest.param(
        f"postfix/senders/{LEGACY_CLASS}",
        _append("attacker@example.edu\tOK"),
        "may send as",
        id="sender-added-to-class",
    ),
    pytest.param(
        f"postfix/senders/{LEGACY_CLASS}",
        _sub("\tOK", "\t200"),
        "not OK",
        id="sender-digits-action",
    ),
    pytest.param(
        "postfix/refused_clients", _sub("\tREJECT ", "\tPERMIT "), "not a REJECT", id="refused-ok"
    ),
    pytest.param(
        "postfix/logins",
        _append("svc-attacker@example.edu\trelaygate_l_f6c72afc50d0"),
        "svc-attacker@example.edu is present",
        id="login-added",
    ),
    pytest.param(
        "postfix/main.cf.fragment",
        _sub("{10.20.50.16/32 relaygate_s_", "{0.0.0.0/0 relaygate_s_"),
        "login svc-lib-illiad@example.edu may relay",
        id="login-from-anywhere",
    ),
    pytest.param(
        "postfix/main.cf.fragment",
        _sub("relaygate_classes_1 = ", "relaygate_classes_1 = permit_everything, "),
        "restriction class 'permit_everything' is not a relaygate class",
        id="class-list-extra",
    ),
    pytest.param(
        "postfix/main.cf.fragment",
        _sub("recipient_delimiter =\n", "recipient_delimiter = +\n"),
        "sets recipient_delimiter",
        id="delimiter-unpinned",
    ),
    # a missing device, in each target
    pytest.param(
        "postfix/legacy_clients", _drop("10.20.30.41\t"), "10.20.30.41 is missing", id="miss-lmdb"
    ),
    pytest.param(
        "postfix/legacy_clients.cidr",
        _drop("2001:db8:1040:320::1f/128\t"),
        "2001:db8:1040:320::1f is missing",
        id="miss-cidr-v6",
    ),
    pytest.param(
        NFT, _sub(NFT_V4, ""), "nftables legacy set: 10.20.30.41 is missing", id="miss-nft"
    ),
    pytest.param(NFT, _sub(NFT_V6, ""), "2001:db8:1040:320::1f is missing", id="miss-nft-v6"),
    pytest.param(
        IOS,
        _drop("host 10.20.30.41 "),
        "IOS ACL mod-libraries: 10.20.30.41 is missing",
        id="miss-ios",
    ),
    pytest.param(
        JUNOS,
        _sub("10.20.30.41/32;", "10.20.30.0/32;"),
        "Junos filter mod-libraries: 10.20.30.41 is missing",
        id="miss-junos",
    ),
    pytest.param(
        "acl/aerleon/RELAYGATE.net",
        _drop("10.20.30.41/32  #"),
        "Aerleon groups: 10.20.30.41 is missing",
        id="miss-aerleon",
    ),
    pytest.param(
        "postfix/refused_clients",
        _drop("10.40.32.77\t"),
        "postfix refused clients: 10.40.32.77 is missing",
        id="miss-refused",
    ),
    pytest.param(
        NFT,
        _sub('\t\t\t10.40.32.77/32 comment "eng-rhodes-lab-mfd",\n', ""),
        "nftables revoked set: 10.40.32.77 is missing",
        id="miss-nft-revoked",
    ),
    # an extra device, in each target
    pytest.param(
        "postfix/legacy_clients",
        _append(f"10.20.30.99\t{LEGACY_CLASS}"),
        "10.20.30.99 is present",
        id="extra-lmdb",
    ),
    pytest.param(
        NFT,
        _sub(NFT_V4, NFT_V4 + '\t\t\t10.20.30.99/32 comment "x",\n'),
        "10.20.30.99 is present",
        id="extra-nft",
    ),
    pytest.param(
        NFT,
        _sub(NFT_V6, NFT_V6 + '\t\t\t2001:db8:1020:310::99/128 comment "x",\n'),
        "2001:db8:1020:310::99 is present",
        id="extra-nft-v6",
    ),
    pytest.param(
        NFT,
        _sub(NFT_V4, NFT_V4 + '\t\t\t10.0.0.0/8 comment "x",\n'),
        "10.0.0.0/8 is present",
        id="extra-nft-prefix",
    ),
    pytest.param(
        IOS,
        _sub(
            " remark no other SMTP",
            " permit tcp host 10.20.30.99 host 10.1.0.25 eq 25\n remark no other SMTP",
        ),
        "IOS ACL mod-libraries: 10.20.30.99 is present",
        id="extra-ios",
    ),
    pytest.param(
        IOS,
        _sub(
            " remark no other SMTP",
            " permit tcp 10.20.30.0 0.0.0.255 host 10.1.0.25 eq 25\n remark no other SMTP",
        ),
        "10.20.30.0/24 is present",
        id="extra-ios-wildcard",
    ),
    pytest.param(
        "acl/aerleon/RELAYGATE.net",
        _sub("    10.20.30.41/32  #", "    10.20.30.0/24  # x\n    10.20.30.41/32  #"),
        "Aerleon groups: 10.20.30.0/24 is present",
        id="extra-aerleon",
    ),
    # senders swapped between classes: the binding, and the sender map itself
    pytest.param(
        "postfix/legacy_clients",
        _sub(f"10.20.30.41\t{LEGACY_CLASS}", f"10.20.30.41\t{OTHER_CLASS}"),
        "10.20.30.41 may send as",
        id="swap-binding",
    ),
    pytest.param(
        "postfix/legacy_clients",
        _sub(f"10.20.30.41\t{LEGACY_CLASS}", "10.20.30.41\trelaygate_s_000000000000"),
        "not a defined class",
        id="undefined-class",
    ),
    # the main.cf fragment: relay restrictions, extra parameters, class definitions
    pytest.param(
        FRAGMENT,
        _sub("legacy_clients.cidr, reject\n", "legacy_clients.cidr, permit\n"),
        "main.cf.fragment sets smtpd_relay_restrictions",
        id="relay-restrictions-permit",
    ),
    pytest.param(
        FRAGMENT,
        _sub("smtpd_relay_restrictions = ", "smtpd_relay_restrictions = permit, "),
        "main.cf.fragment sets smtpd_relay_restrictions",
        id="early-permit",
    ),
    pytest.param(
        FRAGMENT,
        _sub("smtpd_relay_restrictions = ", "smtpd_relay_restrictions = permit_mynetworks, "),
        "main.cf.fragment sets smtpd_relay_restrictions",
        id="permit-mynetworks",
    ),
    pytest.param(
        FRAGMENT,
        _append("mynetworks = 0.0.0.0/0"),
        "main.cf.fragment sets mynetworks",
        id="mynetworks",
    ),
    pytest.param(
        FRAGMENT,
        _append("smtpd_authorized_xclient_hosts = 0.0.0.0/0"),
        "main.cf.fragment sets smtpd_authorized_xclient_hosts",
        id="extra-parameter",
    ),
    pytest.param(
        FRAGMENT,
        _sub(f"relaygate/senders/{LEGACY_CLASS},", f"relaygate/senders/{OTHER_CLASS},"),
        f"main.cf.fragment sets {LEGACY_CLASS}",
        id="class-definition-swapped",
    ),
    pytest.param(
        FRAGMENT,
        _sub("check_sender_access static:{REJECT sender not registered for this device}", "permit"),
        "main.cf.fragment sets relaygate_s_",
        id="class-permits-any-sender",
    ),
    pytest.param(
        "postfix/master.cf.fragment",
        _sub("smtpd_sasl_auth_enable=yes", "smtpd_sasl_auth_enable=no"),
        "master.cf.fragment",
        id="submission-without-auth",
    ),
    # once blind spots (nft rules, IOS denies, Junos terms, Aerleon hosts, refused logins)
    pytest.param(
        NFT,
        _sub('\t\tiif "lo" accept\n', '\t\tiif "lo" accept\n\t\ttcp dport 25 accept\n'),
        "tcp dport 25 accept",
        id="nft-extra-accept",
    ),
    pytest.param(
        NFT,
        _sub("table inet relaygate\ndelete", "flush ruleset\ntable inet relaygate\ndelete"),
        "flush ruleset",
        id="nft-flush-ruleset",
    ),
    pytest.param(
        NFT,
        _sub(NFT_V4, NFT_V4.replace("10.20.30.41/32", "010.20.30.41/32")),
        "010.20.30.41",
        id="nft-octal-element",
    ),
    pytest.param(
        IOS,
        _sub(
            " remark no other SMTP", " permit tcp any host 10.1.0.25 eq 25\n remark no other SMTP"
        ),
        "any",
        id="ios-permit-any",
    ),
    pytest.param(
        IOS,
        _drop(" deny tcp any any eq 25"),
        "deny",
        id="ios-deny-removed",
    ),
    pytest.param(
        JUNOS,
        _sub(
            "            term deny-other-smtp {",
            "            term open {\n                from {\n                    protocol tcp;\n"
            "                    destination-port 25;\n                }\n"
            "                then accept;\n            }\n            term deny-other-smtp {",
        ),
        "open",
        id="junos-accept-without-source",
    ),
    pytest.param(
        "acl/aerleon/RELAYGATE.net",
        _sub("RELAYGATE_RELAY_HOSTS =\n", "RELAYGATE_RELAY_HOSTS =\n    0.0.0.0/0  # x\n"),
        "RELAYGATE_RELAY_HOSTS",
        id="aerleon-relay-hosts",
    ),
    pytest.param(
        "postfix/refused_logins",
        _append("svc-lib-illiad@example.edu\tOK"),
        "refused_logins",
        id="refused-logins-ok",
    ),
]


@pytest.fixture(scope="module")
def compiled_example() -> tuple[object, dict[str, str]]:
    result = compile_.build(EXAMPLE, DAY)
    assert result.artifacts is not None and result.validation.inventory is not None
    assert verify(result.validation.inventory, result.artifacts) == []
    return result.validation.inventory, result.artifacts


@pytest.mark.parametrize(("path", "mutate", "expected"), CANARIES)
def test_verifier_catches_a_broken_artifact(
    path: str,
    mutate: Mutation,
    expected: str,
    compiled_example: tuple[object, dict[str, str]],
) -> None:
    inventory, artifacts = compiled_example
    broken = dict(artifacts)
    broken[path] = mutate(artifacts[path])
    assert broken[path] != artifacts[path], "the mutation did not apply"
    problems = verify(inventory, broken)  # type: ignore[arg-type]
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize("path", ["postfix/legacy_clients", NFT, IOS, JUNOS, FRAGMENT])
def test_verifier_catches_a_missing_artifact(
    path: str, compiled_example: tuple[object, dict[str, str]]
) -> None:
    inventory, artifacts = compiled_example
    broken = {p: t for p, t in artifacts.items() if p != path}
    problems = verify(inventory, broken)  # type: ignore[arg-type]
    assert problems, f"removing {path} went unnoticed"


def test_the_canaries_cover_every_target() -> None:
    covered = {str(p.values[0]).split("/")[0] for p in CANARIES}
    assert covered == {"postfix", "nftables", "acl"}


# --- canaries: the deploy's release check refuses tampered output ---------------------------

DEPLOY = Path(__file__).resolve().parent.parent / "playbooks" / "deploy.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def _rewrite_manifest(out: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = out / compile_.MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _tamper_artifact(out: Path) -> None:
    # OK for a whole campus /8 (0.0.0.0/0 would also cover the release check's probe
    # range, 192.0.2.0/24, and make it crash rather than decide)
    target = out / "postfix" / "legacy_clients.cidr"
    target.write_text(target.read_text(encoding="utf-8") + "10.0.0.0/8\tOK\n", encoding="utf-8")


def _tamper_manifest_hash(out: Path) -> None:
    def change(manifest: dict[str, Any]) -> None:
        manifest["artifacts"]["nftables/relay.nft"]["sha256"] = "0" * 64

    _rewrite_manifest(out, change)


def _tamper_manifest_listing(out: Path) -> None:
    _rewrite_manifest(out, lambda manifest: manifest["artifacts"].pop("postfix/legacy_clients"))


def _tamper_artifact_and_manifest(out: Path) -> None:
    _tamper_artifact(out)
    data = (out / "postfix" / "legacy_clients.cidr").read_bytes()

    def change(manifest: dict[str, Any]) -> None:
        manifest["artifacts"]["postfix/legacy_clients.cidr"] = {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    _rewrite_manifest(out, change)


def _release_check(out: Path, tmp_path: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
    """Only the deploy's verification play: localhost, no relay in the inventory."""
    env = {
        **os.environ,
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            str(DEPLOY),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"relaygate_out={out}",
            "-e",
            f"relaygate_release_inventory={inventory}",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("tamper", "refusal"),
    [
        pytest.param(None, None, id="untouched"),
        pytest.param(
            _tamper_artifact,
            "postfix/legacy_clients.cidr: changed after compiling",
            id="artifact-changed",
        ),
        pytest.param(
            _tamper_manifest_hash,
            "nftables/relay.nft: changed after compiling",
            id="manifest-hash-edited",
        ),
        pytest.param(
            _tamper_manifest_listing,
            "postfix/legacy_clients: not in the manifest",
            id="manifest-entry-removed",
        ),
        pytest.param(
            _tamper_artifact_and_manifest,
            "postfix/legacy_clients.cidr",
            # The checksums match; the entry itself is refused (an OK is not a class).
            id="artifact-and-manifest-rewritten",
        ),
    ],
)
def test_deploy_release_check_refuses_tampered_output(
    tamper: Callable[[Path], None] | None, refusal: str | None, tmp_path: Path
) -> None:
    require(DEPLOY.is_file(), f"{DEPLOY} is missing")
    require(
        ANSIBLE_PLAYBOOK.is_file(), "ansible-playbook is not installed (pip install '.[deploy]')"
    )
    require(shutil.which("git") is not None, "git is not installed")
    # The controller recompiles the reviewed inventory at the manifest's commit: the example
    # is committed to a repository of its own and compiled from there.
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo / "inventory")
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "example"]):
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.edu", *argv],
            check=True,
            capture_output=True,
        )
    inventory = repo / "inventory"
    out = tmp_path / "out"
    result = compile_.build(inventory, DAY, compile_.inventory_commit(inventory))
    assert result.artifacts is not None
    compile_.write(out, result.artifacts)
    if tamper is not None:
        tamper(out)
    run = _release_check(out, tmp_path, inventory)
    transcript = f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    if refusal is None:
        # Verified (recompiled and identical), then refused for want of relays: the
        # inventory names none, and a deploy that touches nothing is no success.
        assert "recompiled and identical" in run.stdout, transcript
        assert "The inventory has no host in the relays group" in run.stdout, transcript
        assert run.returncode != 0, transcript
        return
    assert run.returncode != 0, transcript
    assert refusal in run.stdout, transcript
    assert "no relay was touched" in run.stdout, transcript
