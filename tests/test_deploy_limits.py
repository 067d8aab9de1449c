"""Volume limits on the relays: the deploy runs each relay's own postfwd, for real.

Two lab relays (tests/deploy_support.py: private Postfix instances, each in a network
namespace with a campus namespace beside it) get the relaygate role from a real
``ansible-playbook``; postfwd (Debian's postfwd2) runs inside each relay's namespace, where
its Postfix is, and every policy request and SMTP session below is sent from inside that
namespace. The tests share the lab (module scope) and run in file order; each states the
state it needs first.

The release each run applies is the example campus as ``relaygate release verify`` reads it
(authentic: compiled from a commit of a repository made here), with the policy wiring in
``main.cf.fragment`` and a postfwd ruleset written here: the deploy's behaviour (validate,
start, reload, gate, roll back) is what is tested, whatever limits a campus compiles. The
playbook sets these facts in its first play where deploy.yml would verify the folder (a
folder with a hand-written ruleset is, rightly, refused by that verification), then runs
the same role. A ruleset postfwd refuses cannot come out of the compiler; the relay's
postfwd being another version than the one the ruleset was compiled for is how it happens.
The last test runs deploy.yml itself with a compiled folder and its compiled ruleset.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2
import pytest
import yaml

from relaygate import release
from tests.conftest import require, require_postfix_lmdb
from tests.deploy_support import (
    PLAYBOOKS,
    RECIPIENT,
    XCLIENT_PORT,
    Lab,
    PlaybookRun,
    Relay,
    ansible_bin,
    ansible_env,
    make_lab,
    playbook,
)
from tests.test_deploy import base_and_revoked

pytestmark = pytest.mark.integration

PORT = 10040
POLICY_LINE = (
    "smtpd_end_of_data_restrictions = check_policy_service { inet:127.0.0.1:%d,"
    " default_action=DUNNO, try_limit=1, timeout=10s }\n"
)
HODGES = ("10.20.30.41", "hodges-scans@lib.example.edu")  # a legacy copier, allowed throughout
SCANNER = "10.20.30.57"  # legacy scanner, revoked in the "revoked" release
UNKNOWN = "10.0.0.2"
CAMPUS = [HODGES[0], SCANNER, "10.40.32.77", UNKNOWN, "10.80.34.17"]
# Rule keys the policy requests below use: addresses no Postfix session presents, so each
# test's counters are its own.
KEPT = "10.99.0.1"  # limit 2 in both rulesets: its counter must survive a reload
FRESH = "10.99.0.2"  # limit 1, only in RULES_B: proves the reload loaded the new rules


def rule(client: str, limit: int, name: str) -> str:
    return (
        f"id=lab-{name}; protocol_state==END-OF-MESSAGE; client_address=={client};"
        f" action=rate(client_address/{limit}/86400/450 4.7.1 {name} is over its limit of"
        f" {limit} messages a day)\n"
    )


RULES_A = "# lab ruleset A\n" + rule(HODGES[0], 500, "hodges") + rule(KEPT, 2, "kept")
RULES_B = RULES_A.replace("lab ruleset A", "lab ruleset B") + rule(FRESH, 1, "fresh")
# postfwd -C reads the first line and skips the second with a warning, going on with the rest:
# its exit code says nothing (1 either way), so the module reads what it says.
BROKEN = RULES_B + "id=lab-broken; this is not a rule ;;; action=\n"


# --- the policy repository and the releases ---------------------------------------------------


@dataclass(frozen=True)
class Releases:
    repo: Path
    base: dict[str, Any]  # the example campus, as `release verify` gives it
    revoked: dict[str, Any]  # the scanner revoked
    revoked_out: Path  # its compiled folder, for deploy.yml


def facts_of(out: Path, inventory: Path) -> dict[str, Any]:
    verified = release.verify_release(out, inventory)
    assert verified.ok, verified.problems
    return dict(verified.facts)


def with_limits(facts: dict[str, Any], ruleset: str) -> dict[str, Any]:
    """The release with this postfwd ruleset and main.cf's end-of-data policy check."""
    files = dict(facts["bundle"]["files"])
    files["postfwd/postfwd.cf"] = ruleset
    if "smtpd_end_of_data_restrictions" not in files["main.cf.fragment"]:
        files["main.cf.fragment"] += POLICY_LINE % PORT
    return {**facts, "bundle": {**facts["bundle"], "files": files}}


def without_limits(facts: dict[str, Any]) -> dict[str, Any]:
    """The release without postfwd's ruleset and without main.cf's policy check."""
    files = dict(facts["bundle"]["files"])
    files.pop("postfwd/postfwd.cf", None)
    files["main.cf.fragment"] = "".join(
        line
        for line in files["main.cf.fragment"].splitlines(keepends=True)
        if not line.startswith("smtpd_end_of_data_restrictions")
    )
    return {**facts, "bundle": {**facts["bundle"], "files": files}}


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    repo, base, revoked = base_and_revoked(tmp_path_factory.mktemp("limits-releases"))
    inventory = repo / "inventory"
    return Releases(repo, facts_of(base, inventory), facts_of(revoked, inventory), revoked)


# --- the lab and the playbook -----------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(releases: Releases) -> Iterator[Lab]:
    require(os.geteuid() == 0, "network namespaces and a Postfix instance need root")
    require_postfix_lmdb()
    for tool in ("ip", "nft", "openssl", "saslpasswd2", "git"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    require(
        shutil.which("postfwd2") is not None,
        "postfwd2 is not installed (Debian package postfwd): the volume-limit daemon",
    )
    require(Path(ansible_bin("ansible-playbook")).exists(), "ansible-playbook is not installed")
    # Not under tmp_path: pytest's folders are private to root, and Postfix and postfwd (which
    # drop to their own users) must reach their folders.
    root = Path(tempfile.mkdtemp(prefix="rglimits-lab-"))
    root.chmod(0o755)
    try:
        sources = releases.base["probe"]["sources"]
        built = make_lab(root, sorted({*CAMPUS, *sources}), count=2)
        try:
            yield built
        finally:
            built.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


APPLY = """\
- name: The release this test prepared (deploy.yml verifies the compiled folder here)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Keep it as the relay plays expect it
      ansible.builtin.set_fact:
        relaygate_release_result: "{{ lookup('ansible.builtin.file', 'release.json') | from_json }}"
        relaygate_release_run_id: "{{ lookup('ansible.builtin.file', 'run-id') }}"

- name: Apply it to the relays
  hosts: relays
  gather_facts: false
  roles:
    - role: relaygate
"""


def apply(
    lab: Lab, facts: dict[str, Any], *args: str, relays: list[Relay] | None = None
) -> PlaybookRun:
    """ansible-playbook with the relaygate role, the release given as verified facts."""
    work = lab.root / "ansible"
    work.mkdir(exist_ok=True)
    (work / "release.json").write_text(json.dumps(facts))
    (work / "run-id").write_text(f"limits-{time.time_ns()}")
    (work / "apply.yml").write_text(APPLY)
    inventory = lab.inventory(relays)
    argv = [ansible_bin("ansible-playbook"), str(work / "apply.yml"), "-i", str(inventory), *args]
    env = {**ansible_env(work), "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles")}
    done = subprocess.run(
        argv, capture_output=True, text=True, check=False, env=env, cwd=work, timeout=300
    )
    return PlaybookRun(done.returncode, done.stdout, done.stderr)


# --- looking at the daemon from inside a relay's namespace ------------------------------------

#: Sends END-OF-MESSAGE policy requests to 127.0.0.1:PORT, one connection each, and prints
#: each answer as it comes ("refused: ..." when nothing listens). Runs in the namespace.
POLICY_CLIENT = r"""
import json, socket, sys, time
port, client, count, every = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
for number in range(count):
    request = ("request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\n"
               "protocol_name=ESMTP\nclient_address=%s\nclient_name=unknown\n"
               "sender=lab@example.edu\nrecipient=probe@example.net\nrecipient_count=1\n"
               "instance=lab.%d.%d\nsize=%d\n\n" % (client, time.time_ns(), number, number))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(request.encode())
            data = b""
            while not data.endswith(b"\n\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        answer = data.decode().strip() or "closed"
    except OSError as error:
        answer = "refused: %s" % (error,)
    print(json.dumps(answer), flush=True)
    time.sleep(every)
"""


def ask(
    relay: Relay, client: str, count: int = 1, every: float = 0.0, port: int = PORT
) -> list[str]:
    """postfwd's answers to ``count`` END-OF-MESSAGE requests from ``client``."""
    done = relay.in_namespace(
        sys.executable, "-c", POLICY_CLIENT, str(port), client, str(count), str(every)
    )
    return [str(json.loads(line)) for line in done.stdout.splitlines()]


def start_poller(relay: Relay, seconds: float) -> subprocess.Popen[str]:
    """Ask every 50 ms for ``seconds`` in the background (a reload must not be noticed)."""
    count = int(seconds / 0.05)
    argv = ["ip", "netns", "exec", relay.namespace, sys.executable, "-c", POLICY_CLIENT]
    return subprocess.Popen(
        [*argv, str(PORT), "192.0.2.7", str(count), "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


DUNNO = "action=DUNNO"


def over(name: str, limit: int) -> str:
    return f"action=450 4.7.1 {name} is over its limit of {limit} messages a day"


def state(relay: Relay) -> Path:
    return relay.config / "relaygate.generations" / "postfwd"


def daemon_pid(relay: Relay) -> int | None:
    """The relay's postfwd master, from its pidfile, if that process lives."""
    try:
        pid = int((relay.root / "postfwd" / "postfwd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() and process_tree(pid) else None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (zombies left out)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    if not Path(f"/proc/{pid}").exists():
        return []
    tree, pending = [pid], [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            tree.append(child)
            pending.append(child)
    return tree


def netns_of(pid: int) -> str:
    return subprocess.run(
        ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()


def kill_daemon(relay: Relay) -> None:
    """SIGKILL the relay's postfwd, master and children: a crash, no clean shutdown."""
    pid = daemon_pid(relay)
    assert pid is not None, f"{relay.name}: postfwd is not running"
    for process in process_tree(pid):
        os.kill(process, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}/stat").exists() for p in process_tree(pid)):
        assert time.monotonic() < deadline, "postfwd did not die"
        time.sleep(0.05)
    assert ask(relay, "192.0.2.9")[0].startswith("refused"), "something still listens"


#: Opens N SMTP sessions through the XCLIENT port as CLIENT, one message in each, in turn, and
#: keeps every session open; prints [code, text, seconds] per message, then holds until stdin
#: closes. Runs in the namespace.
SESSIONS = r"""
import json, smtplib, sys, time
port, client, sender, recipient, count = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                                           sys.argv[4], int(sys.argv[5]))
held = []
for number in range(count):
    session = smtplib.SMTP("127.0.0.1", port, timeout=60)
    session.ehlo("lab-test")
    assert session.docmd("XCLIENT", "ADDR=%s NAME=[UNAVAILABLE]" % client)[0] == 220
    session.ehlo_resp = None
    session.does_esmtp = False
    session.ehlo("lab-test")
    assert session.docmd("MAIL", "FROM:<%s>" % sender)[0] == 250
    assert session.docmd("RCPT", "TO:<%s>" % recipient)[0] == 250
    assert session.docmd("DATA")[0] == 354
    started = time.monotonic()
    session.send(b"Subject: held %d\r\n\r\nhello\r\n.\r\n" % number)
    code, text = session.getreply()
    print(json.dumps([code, text.decode(), time.monotonic() - started]), flush=True)
    held.append(session)
sys.stdin.read()
"""


def send(relay: Relay, client: str, sender: str) -> tuple[int, str, float]:
    """One message with DATA through the XCLIENT port: (code, text, seconds)."""
    process = in_namespace(relay, SESSIONS, str(XCLIENT_PORT), client, sender, RECIPIENT, "1")
    try:
        ((code, text, seconds),) = read_lines(process, 1)
    finally:
        process.communicate(timeout=60)  # closes stdin: the session ends
    return int(code), str(text), float(seconds)


def log_lines(relay: Relay, pattern: str) -> list[str]:
    if not relay.maillog.exists():
        return []
    return [
        line
        for line in relay.maillog.read_text(errors="replace").splitlines()
        if re.search(pattern, line)
    ]


def wait_for_log(relay: Relay, pattern: str, before: int, seconds: float = 5) -> list[str]:
    """The lines matching ``pattern`` once there are more than ``before`` (postlogd writes late)."""
    deadline = time.monotonic() + seconds
    while True:
        lines = log_lines(relay, pattern)
        if len(lines) > before or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def fatal(run: PlaybookRun, text: str) -> list[str]:
    """The hosts that failed with ``text`` in their message."""
    return sorted(
        match.group(1)
        for match in re.finditer(r"^fatal: \[([\w-]+)\]: FAILED! => (.*)$", run.stdout, re.M)
        if text in match.group(2)
    )


def recap_changed(run: PlaybookRun) -> dict[str, int]:
    return {host: counts["changed"] for host, counts in run.recap.items() if host != "localhost"}


# --- the deploy starts it, where Postfix runs -------------------------------------------------


@pytest.fixture(scope="module")
def first(lab: Lab, releases: Releases) -> PlaybookRun:
    """The first deploy with limits onto the fresh lab: both relays, ruleset A."""
    return apply(lab, with_limits(releases.base, RULES_A))


def test_first_deploy_starts_postfwd_in_the_relay_namespace(lab: Lab, first: PlaybookRun) -> None:
    assert first.code == 0, str(first)
    assert recap_changed(first) == {"relay-a": 1, "relay-b": 1}, str(first)
    assert first.stdout.count(f"started postfwd on 127.0.0.1:{PORT} (2 rules, --keep_rates)") == 2
    assert first.stdout.count(f"health gate: postfwd answers on 127.0.0.1:{PORT}") == 2
    pids = set()
    for relay in lab.relays:
        pid = daemon_pid(relay)
        assert pid is not None, f"{relay.name}: no live postfwd behind its pidfile"
        pids.add(pid)
        # Where the relay's Postfix is: its namespace, not the host's.
        assert all(netns_of(p) == relay.namespace for p in process_tree(pid))
        assert {Path(f"/proc/{p}").stat().st_uid for p in process_tree(pid)} == {
            pwd.getpwnam("postfw").pw_uid
        }
        # The daemon reads a copy of the live generation's ruleset at a path that stays.
        live = relay.config / "relaygate.generations" / relay.live() / "postfwd" / "postfwd.cf"
        assert live.read_text() == RULES_A
        assert (state(relay) / "postfwd.cf").read_text() == RULES_A
        assert "check_policy_service" in relay.postconf("smtpd_end_of_data_restrictions")
    assert len(pids) == 2
    # The rules are loaded: a client in no rule gets DUNNO, a limited one 450 after its limit.
    relay = lab.relays[0]
    assert ask(relay, "192.0.2.1") == [DUNNO]
    assert ask(relay, KEPT, 3) == [DUNNO, DUNNO, over("kept", 2)]
    # The other relay's counters are its own.
    assert ask(lab.relays[1], KEPT, 1) == [DUNNO]


def test_fast_revoke_leaves_the_daemon_alone(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """--tags revoke (relaygate_mode=revoke): no restart, no reload, counters kept; a daemon
    that is down stays down, with a warning (a revoke is not the time to start it)."""
    assert first.code == 0, str(first)
    running, down = lab.relays
    pid = daemon_pid(running)
    assert ask(running, KEPT, 3)[-1] == over("kept", 2)
    kill_daemon(down)
    done = apply(lab, with_limits(releases.revoked, RULES_A), "-e", "relaygate_mode=revoke")
    assert done.code == 0, str(done)
    assert recap_changed(done) == {"relay-a": 1, "relay-b": 1}, str(done)
    assert "postfwd" not in "".join(re.findall(r'"msg": \[(.*?)\]', done.stdout, re.S))
    assert daemon_pid(running) == pid
    assert ask(running, KEPT, 1) == [over("kept", 2)]  # same counters, same process
    assert ask(running, "192.0.2.1") == [DUNNO]
    # Ansible prints a module's warnings on stderr, once per relay that has one.
    assert done.stderr.count("[WARNING]: postfwd (the volume limits) is not running") == 1
    assert "A revoke does not touch it; a full deploy starts it." in done.stderr
    assert daemon_pid(down) is None
    assert ask(down, "192.0.2.1")[0].startswith("refused")


# --- a ruleset postfwd refuses never reaches the relay ----------------------------------------


def relay_module() -> ModuleType:
    """The Ansible module's file, imported (its helpers are plain functions and classes)."""
    path = PLAYBOOKS / "roles" / "relaygate" / "library" / "relaygate_relay.py"
    spec = importlib.util.spec_from_file_location("relaygate_relay_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("ruleset", "said"),
    [
        (RULES_B, None),
        (BROKEN, "read 3 of 4 rules: warning: ignoring invalid postfwd/postfwd.cf line 5"),
        (RULES_A + "id=lab-noaction; client_address==10.99.0.4\n", "contains no action"),
        (RULES_A + "&&UNDEFINED\n", "undefined macro"),
        ("# nothing but a comment\n", "read 0 of 0 rules: warning: critical: no rules found"),
    ],
    ids=["good", "a line postfwd skips", "a rule without action", "a macro", "no rule"],
)
def test_postfwd_itself_validates_the_ruleset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ruleset: str, said: str | None
) -> None:
    """postfwd -C exits 1 for a good ruleset too: what it says decides, read by the module."""
    require(shutil.which("postfwd2") is not None, "postfwd2 is not installed (package postfwd)")
    module = relay_module()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    class Relay_:
        folder = tmp_path

    params = {
        "postfwd_exec": [],
        "postfwd_cmd": "postfwd2",
        "postfwd_user": "postfw",
        "postfwd_args": [],
        "postfwd_wait": 1.0,
        "postfwd_run_dir": str(tmp_path / "run"),
    }
    daemon = module.Postfwd(Relay_(), params)
    if said is None:
        assert daemon.validate(ruleset.encode()) == 3
        return
    with pytest.raises(module.Refused) as refused:
        daemon.validate(ruleset.encode())
    assert "postfwd refuses postfwd/postfwd.cf" in str(refused.value)
    assert said in str(refused.value)
    assert list(scratch.iterdir()) == []  # its copy for postfwd -C is gone


def test_a_ruleset_postfwd_refuses_stops_the_run_before_the_switch(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """Refused before any change: same generation, same daemon, same rules, same counters."""
    assert first.code == 0, str(first)
    relay = lab.relays[0]
    assert ask(relay, KEPT, 1) in ([DUNNO], [over("kept", 2)])  # state from the earlier test
    before = {r.name: (r.live(), r.state_hash(), daemon_pid(r)) for r in lab.relays}
    refused = apply(lab, with_limits(releases.revoked, BROKEN))
    assert refused.code != 0, str(refused)
    assert fatal(refused, "postfwd refuses postfwd/postfwd.cf") == ["relay-a", "relay-b"]
    assert "nothing was changed, the relay keeps its generation" in refused.stdout
    assert "Rolled back" not in refused.stdout  # nothing to roll back: it stopped before
    assert {r.name: (r.live(), r.state_hash(), daemon_pid(r)) for r in lab.relays} == before
    # The old daemon config still answers, with its rules and counters.
    assert ask(relay, "192.0.2.1") == [DUNNO]
    assert ask(relay, FRESH, 2) == [DUNNO, DUNNO]  # ruleset B's rule is not loaded
    assert ask(relay, KEPT, 1) == [over("kept", 2)]


#: A stand-in that takes the policy port and never answers: it accepts and holds every
#: connection. Runs in the namespace; prints "listening" once it holds the port.
SILENT = r"""
import socket, sys
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
held = []
while True:
    held.append(s.accept())
"""


def deploy_over_a_stand_in(
    lab: Lab, relay: Relay, script: str, facts: dict[str, Any], answers: str | None = None
) -> tuple[PlaybookRun, int]:
    """Start ``script`` (a stand-in that takes the policy port and prints "listening") in
    ``relay``'s namespace, deploy ``facts`` to that relay alone (postfwd given 2 s to come
    up), then kill the stand-in. With ``answers``, the stand-in first answers one policy
    request with it. Asserts what every such deploy must show: the run failed, the relay
    rolled back its main.cf and its live generation is the one before. Returns the run and
    the stand-in's pid, for each test's own assertions about why the gate failed."""
    live = relay.live()
    stand_in = in_namespace(relay, script, str(PORT))
    try:
        assert stand_in.stdout is not None and stand_in.stdout.readline().strip() == "listening"
        if answers is not None:
            assert ask(relay, "192.0.2.1") == [answers]  # it answers as postfwd would
        failed = apply(lab, facts, "-e", "relaygate_postfwd_wait=2", relays=[relay])
    finally:
        stand_in.kill()
        stand_in.communicate()
    assert failed.code != 0, str(failed)
    assert fatal(failed, "Rolled back: restored main.cf") == [relay.name], str(failed)
    assert relay.live() == live
    return failed, stand_in.pid


def test_a_daemon_that_does_not_answer_fails_the_gate_and_rolls_back(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """Something else holds the port and never answers: the gate fails, the relay rolls back."""
    assert first.code == 0, str(first)
    relay = lab.relays[1]
    assert daemon_pid(relay) is None, "the revoke test leaves postfwd down here"
    failed, _ = deploy_over_a_stand_in(lab, relay, SILENT, with_limits(releases.revoked, RULES_B))
    assert fatal(failed, "does not answer a policy request with DUNNO") == ["relay-b"], str(failed)
    assert fatal(failed, "restored postfwd.cf") == ["relay-b"], str(failed)
    assert (state(relay) / "postfwd.cf").read_text() == RULES_A
    # Down, as the revoke test left it (the next test's deploy starts it again).
    if daemon_pid(relay) is not None:
        kill_daemon(relay)


def test_a_new_ruleset_reloads_without_a_gap_and_keeps_the_counters(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """The positive control of the refusal: the same release with a ruleset postfwd reads."""
    assert first.code == 0, str(first)
    relay = lab.relays[0]
    ask(relay, KEPT, 3)  # over its limit of 2, whatever the earlier tests did
    pids = [daemon_pid(r) for r in lab.relays]
    generations = [r.live() for r in lab.relays]
    poller = start_poller(relay, 90)  # stopped when the deploy ends
    try:
        done = apply(lab, with_limits(releases.revoked, RULES_B))
    finally:
        poller.terminate()
        out, _ = poller.communicate(timeout=30)
    assert done.code == 0, str(done)
    assert recap_changed(done) == {"relay-a": 1, "relay-b": 1}, str(done)
    assert done.stdout.count("reloaded postfwd (SIGHUP; 3 rules, counters kept)") == 1
    # The policy switched (a new generation) and the daemon is the same process...
    assert [r.live() for r in lab.relays] != generations
    assert daemon_pid(relay) == pids[0]
    # ...and the one the revoke and gate tests left down is started again, said so loudly.
    assert pids[1] is None
    assert daemon_pid(lab.relays[1]) is not None
    assert "started postfwd on 127.0.0.1:10040 (3 rules, --keep_rates)" in done.stdout
    assert "postfwd: not running (stopped or crashed; mail was not limited)" in done.stdout
    assert done.stderr.count("[WARNING]: postfwd (the volume limits) was not running") == 1
    # ...that never stopped listening while the run reloaded it (a HUP to postfwd's master
    # closes the port for seconds: "Connection refused"). A request in flight at the instant
    # of the reload may be cut (its child is replaced); Postfix then applies DUNNO and warns.
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) > 20, "the poller did not run through the deploy"
    cut = [a for a in answers if a != DUNNO]
    assert all("reset by peer" in a or a == "closed" for a in cut), cut
    assert len(cut) <= 2, cut
    # New rules: FRESH has a limit of 1 now. An unchanged rule keeps its counter.
    assert ask(relay, FRESH, 2) == [DUNNO, over("fresh", 1)]
    assert ask(relay, KEPT, 1) == [over("kept", 2)]
    # The same release again (planned in check mode, as a real run plans it): nothing to do,
    # the running, answering daemon is neither reloaded nor restarted.
    pids = [daemon_pid(r) for r in lab.relays]
    again = apply(lab, with_limits(releases.revoked, RULES_B), "--check", "--diff")
    assert again.code == 0, str(again)
    assert recap_changed(again) == {"relay-a": 0, "relay-b": 0}, str(again)
    assert [daemon_pid(r) for r in lab.relays] == pids


# --- the daemon down: mail flows, loudly ------------------------------------------------------


def test_daemon_down_mail_keeps_flowing_with_a_warning(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    assert first.code == 0, str(first)
    relay = lab.relays[1]
    assert daemon_pid(relay) is not None, "the earlier tests leave postfwd running here"
    problem = rf"warning: problem talking to server 127\.0\.0\.1:{PORT}"
    # Positive control: with the daemon up, a legitimate message goes through quietly.
    before = len(log_lines(relay, problem))
    code, text, _ = send(relay, *HODGES)
    assert code == 250, text
    time.sleep(0.5)
    assert len(log_lines(relay, problem)) == before
    kill_daemon(relay)
    # Down: the message is still accepted, at once (try_limit=1: no retry, no stall)...
    code, text, seconds = send(relay, *HODGES)
    assert code == 250, text
    # (A stall would be the 10 s timeout; the margin is for a slow machine.)
    assert seconds < 8, f"the end of DATA took {seconds:.1f} s with the daemon down"
    # ...and Postfix says why, loudly, in the mail log.
    lines = wait_for_log(relay, problem, before)
    assert len(lines) > before, "no 'problem talking to server' warning in the mail log"
    assert re.search(r"postfix/smtpd\[\d+\]: warning: problem talking to server", lines[-1])


# --- deploy.yml with the compiled ruleset -----------------------------------------------------


def test_deploy_yml_brings_the_compiled_ruleset_to_every_relay(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """The whole playbook: the folder verified on the controller, its ruleset on the relays."""
    assert first.code == 0, str(first)
    compiled = (releases.revoked_out / "postfwd" / "postfwd.cf").read_text()
    require(
        "postfwd/postfwd.cf" in releases.revoked["bundle"]["files"],
        "relaygate release verify does not put postfwd/postfwd.cf in the release bundle"
        " (relaygate.release.bundle_files), so deploy.yml cannot carry the limits",
    )
    assert releases.revoked["bundle"]["files"]["postfwd/postfwd.cf"] == compiled
    running = lab.relays[0]
    pid = daemon_pid(running)
    assert pid is not None
    if daemon_pid(lab.relays[1]) is not None:
        kill_daemon(lab.relays[1])
    inventory = lab.inventory(relaygate_release_inventory=str(releases.repo / "inventory"))
    done = playbook(
        "deploy.yml",
        inventory,
        lab.root / "ansible-deploy",
        "-e",
        f"relaygate_out={releases.revoked_out}",
        "-e",
        "relaygate_serial=2",
    )
    assert done.code == 0, str(done)
    rules = len(re.findall(r"^id=", compiled, re.M))
    assert f"reloaded postfwd (SIGHUP; {rules} rules, counters kept)" in done.stdout, str(done)
    assert f"started postfwd on 127.0.0.1:{PORT} ({rules} rules, --keep_rates)" in done.stdout
    assert daemon_pid(running) == pid
    for relay in lab.relays:
        assert (state(relay) / "postfwd.cf").read_text() == compiled
        assert ask(relay, "192.0.2.1") == [DUNNO]
    # A second deploy.yml changing nothing, daemon included: tests/test_deploy.py's
    # idempotence test (its lab runs postfwd too).


# --- enough policy servers: sessions held open never starve the check -----------------------

HELD = "hodges-held"
RULES_HELD = "# lab ruleset held\n" + rule(HODGES[0], 2, HELD) + rule(KEPT, 2, "kept")
#: Small process limits for the lab relay's smtpd services (master.cf maxproc), so the daemon's
#: server count is small and every one of its servers can be held in a second or two (the
#: relay port keeps room for the health gate's 6 parallel sessions).
SMALL_LIMITS = {"smtp/inet": 8, "submission/inet": 4, f"127.0.0.1:{XCLIENT_PORT}/inet": 4}

#: Opens N connections to the policy port, sends one END-OF-MESSAGE request on each and keeps
#: them open (as an idle smtpd process keeps its policy connection); prints each answer
#: ("no answer" after the timeout), then holds until stdin closes. Runs in the namespace.
HOLDER = r"""
import json, socket, sys
port, count, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = []
for number in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\n"
               "protocol_name=ESMTP\nclient_address=192.0.2.%d\nclient_name=unknown\n"
               "sender=lab@example.edu\nrecipient=probe@example.net\nrecipient_count=1\n"
               "instance=hold.%d\nsize=1\n\n" % (number % 250 + 1, number)).encode())
    data = b""
    try:
        while not data.endswith(b"\n\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        print(json.dumps(data.decode().strip() or "closed"), flush=True)
    except socket.timeout:
        print(json.dumps("no answer"), flush=True)
    held.append(s)
sys.stdin.read()
"""


def in_namespace(relay: Relay, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", relay.namespace, sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_lines(process: subprocess.Popen[str], count: int) -> list[Any]:
    assert process.stdout is not None
    lines = []
    for _ in range(count):
        line = process.stdout.readline()
        assert line, f"the helper ended early: {process.stderr.read() if process.stderr else ''}"
        lines.append(json.loads(line))
    return lines


def release_helper(process: subprocess.Popen[str]) -> None:
    """Close its stdin (it lets go of what it holds) and reap it, pipes closed."""
    try:
        process.communicate("", timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def set_process_limits(relay: Relay, limits: dict[str, int | str]) -> None:
    """master.cf maxproc of the named services (``-``: default_process_limit); Postfix reloads."""
    fields = [f"{service}/process_limit={limit}" for service, limit in limits.items()]
    subprocess.run(["postconf", "-c", str(relay.config), "-F", *fields], check=True)
    relay.in_namespace("postfix", "-c", str(relay.config), "reload")
    time.sleep(1)  # the reloaded master restarts its listeners


def daemon_words(relay: Relay) -> list[str]:
    pid = daemon_pid(relay)
    assert pid is not None, f"{relay.name}: postfwd is not running"
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()


def test_sessions_held_open_cannot_starve_the_limit(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """A device holding sessions open (each smtpd keeps its policy connection) must not use up
    postfwd's servers: the module runs one per smtpd process the relay may run, plus a
    margin, so with every one of them held the limited device's next message still gets
    its 450 at once (not, after the 10 s timeout, the DUNNO that lets it pass)."""
    assert first.code == 0, str(first)
    relay = lab.relays[0]
    set_process_limits(relay, dict(SMALL_LIMITS))
    holders: list[subprocess.Popen[str]] = []
    try:
        done = apply(lab, with_limits(releases.revoked, RULES_HELD), relays=[relay])
        assert done.code == 0, str(done)
        smtpd = sum(SMALL_LIMITS.values())  # 16 smtpd processes at most
        servers = smtpd + 10
        assert f"up to {servers} policy servers for {smtpd} smtpd processes" in done.stdout
        words = daemon_words(relay)
        assert f"--max_servers={servers}" in words, words
        # Every smtpd process the relay may run holds a policy connection: the other services'
        # (and the margin's) as held connections, the XCLIENT service's as the device's own
        # sessions. That is every server postfwd may run.
        others = servers - SMALL_LIMITS[f"127.0.0.1:{XCLIENT_PORT}/inet"]
        holder = in_namespace(relay, HOLDER, str(PORT), str(others), "5")
        holders.append(holder)
        assert read_lines(holder, others) == [DUNNO] * others
        device = in_namespace(relay, SESSIONS, str(XCLIENT_PORT), *HODGES, RECIPIENT, "4")
        holders.append(device)
        results = read_lines(device, 4)
        # Its limit (2) delivered: the positive control...
        assert [r[0] for r in results[:2]] == [250, 250], results
        # ...then 450 naming it, at once, in the 3rd and 4th session with all servers held.
        for code, text, seconds in results[2:]:
            assert code == 450, results
            assert f"{HELD} is over its limit of 2 messages a day" in text, results
            # (Starved, it would wait for the 10 s timeout; the margin is for a slow machine.)
            assert seconds < 8, f"the end of DATA took {seconds:.1f} s: {results}"
        # The control that the holding is real: one connection more than the servers postfwd
        # may run gets no answer (the starvation the server count prevents).
        extra = in_namespace(relay, HOLDER, str(PORT), "1", "2")
        holders.append(extra)
        assert read_lines(extra, 1) == ["no answer"]
    finally:
        for process in holders:
            release_helper(process)
        set_process_limits(relay, dict.fromkeys(SMALL_LIMITS, "-"))


def test_a_relay_with_an_unlimited_smtpd_service_is_refused(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """maxproc 0 (no limit) on an smtpd service: no server count is enough, so the deploy
    refuses the relay before any change; with a maxproc the same release deploys."""
    assert first.code == 0, str(first)
    relay = lab.relays[0]
    if daemon_pid(relay) is None:
        assert apply(lab, with_limits(releases.revoked, RULES_HELD), relays=[relay]).code == 0
    service = f"127.0.0.1:{XCLIENT_PORT}/inet"
    set_process_limits(relay, {service: 0})
    try:
        before = (relay.live(), relay.state_hash(), daemon_pid(relay), daemon_words(relay))
        refused = apply(lab, with_limits(releases.revoked, RULES_B), relays=[relay])
        assert refused.code != 0, str(refused)
        assert fatal(refused, f"master.cf {service} maxproc is 0 (no limit)") == ["relay-a"]
        assert f"Set a maxproc (master.cf column 7) for {service}. Nothing was changed" in (
            refused.stdout
        )
        assert "Rolled back" not in refused.stdout
        assert (relay.live(), relay.state_hash(), daemon_pid(relay), daemon_words(relay)) == before
    finally:
        set_process_limits(relay, {service: "-"})
    # The positive control: the same release, the service limited again (by the default).
    done = apply(lab, with_limits(releases.revoked, RULES_B), relays=[relay])
    assert done.code == 0, str(done)
    assert (state(relay) / "postfwd.cf").read_text() == RULES_B
    assert f"--max_servers={3 * 100 + 10}" in daemon_words(relay)


# --- the listener on the policy port must be the relay's own postfwd -------------------------

#: A rogue policy server: answers every request with action=DUNNO (so the DUNNO check alone
#: passes), as any local process that took the port first could, and then answer anything.
ROGUE = r"""
import socket, sys, threading
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("listening", flush=True)
def serve(conn):
    data = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
        while b"\n\n" in data:
            _, data = data.split(b"\n\n", 1)
            conn.sendall(b"action=DUNNO\n\n")
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def test_a_rogue_listener_on_the_policy_port_fails_the_gate(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """The relay's postfwd is down and another process answers DUNNO on its port: the DUNNO
    check passes, the listener check (its pid is not the pidfile's process tree) fails the
    gate and the relay rolls back. Without the rogue, the same release deploys."""
    assert first.code == 0, str(first)
    relay = lab.relays[1]
    if daemon_pid(relay) is not None:
        kill_daemon(relay)
    failed, rogue = deploy_over_a_stand_in(
        lab, relay, ROGUE, with_limits(releases.revoked, RULES_HELD), answers=DUNNO
    )
    # The DUNNO check passed (the rogue answers it); the listener's pid failed the gate.
    assert fatal(failed, "is not the relay's postfwd") == ["relay-b"], str(failed)
    assert re.search(rf"127\.0\.0\.1:{PORT} held by pid {rogue} \(\S*python", failed.stdout)
    # The positive control: the rogue gone, the same release deploys, the gate names the
    # listener's pids (all the relay's postfwd).
    done = apply(lab, with_limits(releases.revoked, RULES_HELD), relays=[relay])
    assert done.code == 0, str(done)
    match = re.search(
        r"only the relay's postfwd listens on 127\.0\.0\.1:\d+ \(pids ([\d, ]+);", done.stdout
    )
    assert match, str(done)
    pid = daemon_pid(relay)
    assert pid is not None
    listening = {int(p) for p in match.group(1).split(", ")}
    assert listening and listening <= set(process_tree(pid)), (listening, process_tree(pid))
    assert ask(relay, KEPT, 3) == [DUNNO, DUNNO, over("kept", 2)]


# --- postfwd at boot: the role's systemd unit runs the module's command line ---------------

UNIT = PLAYBOOKS / "roles" / "relaygate" / "templates" / "relaygate-postfwd.service.j2"


def render_unit(relay: Relay, folder: Path) -> Path:
    """The role's unit template, rendered with this lab relay's variables and the role's
    defaults (as the template task renders it)."""
    defaults = yaml.safe_load((PLAYBOOKS / "roles/relaygate/defaults/main.yml").read_text())
    variables = {**defaults, **relay.host_vars(sys.executable)}
    text = (
        jinja2.Environment(undefined=jinja2.StrictUndefined)
        .from_string(UNIT.read_text())
        .render(**variables)
    )
    path = folder / f"{defaults['relaygate_postfwd_unit']}.service"
    path.write_text(text)
    return path


def unit_fields(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            fields[key] = value
    return fields


def test_the_boot_unit_is_valid_and_orders_postfwd_before_postfix(lab: Lab, tmp_path: Path) -> None:
    relay = lab.relays[0]
    path = render_unit(relay, tmp_path)
    fields = unit_fields(path)
    assert fields["Before"] == "postfix.service"
    assert fields["Type"] == "forking"
    assert fields["PIDFile"] == str(relay.root / "postfwd" / "postfwd.pid")
    env = relay.config / "relaygate.generations" / "postfwd" / "postfwd.env"
    assert fields["EnvironmentFile"] == str(env)
    assert fields["ConditionPathExists"] == str(env)
    assert fields["ExecStart"] == "postfwd2 $RELAYGATE_POSTFWD_ARGS"
    assert "postfix.service" in fields["WantedBy"].split()
    require(
        shutil.which("systemd-analyze") is not None,
        "systemd-analyze is not installed (Debian package systemd): the unit is not verified",
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if path.name in line]
    assert done.returncode == 0 and not said, done.stdout + done.stderr
    # The check can fail: a unit with a typo is refused.
    broken = tmp_path / "broken" / path.name
    broken.parent.mkdir()
    broken.write_text(path.read_text().replace("Type=forking", "Type=forkin"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "forkin" in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_boot_unit_starts_the_module_s_own_instance(
    lab: Lab, releases: Releases, first: PlaybookRun, tmp_path: Path
) -> None:
    """What systemd does at boot, done by hand (the lab has no systemd): the unit's
    ExecStartPre and ExecStart, $RELAYGATE_POSTFWD_ARGS from the file the module wrote. The
    daemon it starts is the one the module knows: the next deploy finds nothing to do."""
    assert first.code == 0, str(first)
    relay = lab.relays[1]
    release = with_limits(releases.revoked, RULES_HELD)
    assert apply(lab, release, relays=[relay]).code == 0
    running = daemon_words(relay)
    fields = unit_fields(render_unit(relay, tmp_path))
    env = Path(fields["EnvironmentFile"])
    values = dict(
        line.split("=", 1) for line in env.read_text().splitlines() if not line.startswith("#")
    )
    # systemd splits an unbraced $VAR at whitespace into words.
    program, variable = fields["ExecStart"].split()
    words = [program, *values[variable.lstrip("$")].split()]
    assert running[-(len(words) - 1) :] == words[1:], (running, words)
    assert f"--port={PORT}" in words and any(w.startswith("--max_servers=") for w in words)
    kill_daemon(relay)  # the reboot
    shutil.rmtree(relay.root / "postfwd")
    assert fields["ExecStartPre"].startswith("+")  # as root, before User= applies
    subprocess.run(fields["ExecStartPre"][1:].split(), check=True)
    # User=, Group=, AmbientCapabilities=CAP_NET_BIND_SERVICE, as setpriv does them.
    assert fields["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    as_unit = [
        "setpriv",
        f"--reuid={fields['User']}",
        f"--regid={fields['Group']}",
        "--init-groups",
        "--inh-caps=+net_bind_service",
        "--ambient-caps=+net_bind_service",
    ]
    subprocess.run(
        ["ip", "netns", "exec", relay.namespace, *as_unit, *words], check=True, timeout=30
    )
    deadline = time.monotonic() + 10
    while ask(relay, "192.0.2.1") != [DUNNO]:
        assert time.monotonic() < deadline, "the unit's postfwd does not answer"
        time.sleep(0.2)
    pid = daemon_pid(relay)
    assert pid is not None and Path(fields["PIDFile"]).read_text().split()[0] == str(pid)
    again = apply(lab, release, relays=[relay])
    assert again.code == 0, str(again)
    assert recap_changed(again) == {"relay-b": 0}, str(again)
    assert daemon_pid(relay) == pid
    # A release without limits stops the daemon and removes the file: nothing starts at boot.
    plain = apply(lab, without_limits(releases.revoked), relays=[relay])
    assert plain.code == 0, str(plain)
    assert daemon_pid(relay) is None
    assert not env.exists()


def test_postfwd_binds_a_privileged_policy_port(
    lab: Lab, releases: Releases, first: PlaybookRun
) -> None:
    """A policy port below 1024 (no unprivileged local process can take it first): the
    daemon runs as its user with CAP_NET_BIND_SERVICE only, and binds it; back on the
    unprivileged port, the same."""
    assert first.code == 0, str(first)
    relay = lab.relays[0]
    low = 940
    facts = with_limits(releases.revoked, RULES_HELD)
    files = dict(facts["bundle"]["files"])
    files["main.cf.fragment"] = files["main.cf.fragment"].replace(
        f"inet:127.0.0.1:{PORT},", f"inet:127.0.0.1:{low},"
    )
    assert f"inet:127.0.0.1:{low}," in files["main.cf.fragment"]
    done = apply(lab, {**facts, "bundle": {**facts["bundle"], "files": files}}, relays=[relay])
    assert done.code == 0, str(done)
    assert f"only the relay's postfwd listens on 127.0.0.1:{low}" in done.stdout, str(done)
    pid = daemon_pid(relay)
    assert pid is not None and f"--port={low}" in daemon_words(relay)
    tree = process_tree(pid)
    assert {Path(f"/proc/{p}").stat().st_uid for p in tree} == {pwd.getpwnam("postfw").pw_uid}
    assert ask(relay, KEPT, 3, port=low) == [DUNNO, DUNNO, over("kept", 2)]
    assert ask(relay, "192.0.2.1")[0].startswith("refused")  # not on the old port any more
    back = apply(lab, with_limits(releases.revoked, RULES_HELD), relays=[relay])
    assert back.code == 0, str(back)
    assert f"restarted postfwd on 127.0.0.1:{PORT}" in back.stdout, str(back)
    assert ask(relay, "192.0.2.1") == [DUNNO]
