"""The postfwd target: its ruleset, its guards, its verifier, and the real postfwd 1.35.

The integration tests start Debian's postfwd on a loopback port with the compiled
ruleset and ask it what Postfix asks at END-OF-MESSAGE (the policy delegation
protocol over a socket), so every fact the renderer's docstring states about
postfwd is exercised here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaygate import compile as compile_
from relaygate.errors import RenderRefused
from relaygate.limits import Limit, Source
from relaygate.pipeline import validate
from relaygate.policy import build_policy
from relaygate.render import postfwd
from relaygate.render.postfix import effective, syntax
from relaygate.verify import verify
from tests.conftest import AS_OF, EXAMPLE, require, require_postfix_lmdb
from tests.lab.postfwd import end_session
from tests.postfix_instance import OUTSIDE, RunningRelay, free_port

DAY = dt.date.fromisoformat(AS_OF)
COPIER = "10.20.30.41"  # lib-hodges-3f-copier, legacy
SCANNER = "10.20.30.57"  # lib-special-collections-scanner, legacy
LOGIN = "svc-lib-hodges-mfd@example.edu"  # lib-hodges-1f-mfd, authenticated


def _artifacts(root: Path = EXAMPLE) -> dict[str, str]:
    result = compile_.build(root, DAY)
    assert result.artifacts is not None, [f.as_text() for f in result.validation.findings]
    return result.artifacts


def _rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("id=")]


# --- the ruleset -------------------------------------------------------------------------


def test_one_rule_per_login_then_the_stop_then_one_per_legacy_device() -> None:
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    policy = build_policy(inventory)
    rules = _rules(_artifacts()["postfwd/postfwd.cf"])
    logins, legacy = len(policy.login_limits), len(policy.legacy)
    assert len(rules) == logins + 1 + legacy
    assert rules[logins] == (
        "id=relaygate-authenticated; protocol_state==END-OF-MESSAGE; sasl_username=~.+;"
        " action=DUNNO"
    )
    assert all("; sasl_username==" in r for r in rules[:logins])
    assert all("; client_address==" in r for r in rules[logins + 1 :])
    manifest = json.loads(_artifacts()["manifest.json"])
    assert manifest["counts"]["postfwd"] == {"logins": logins, "legacy": legacy}
    assert "postfwd/postfwd.cf" in manifest["artifacts"]
    assert (
        "id=legacy-lib-hodges-3f-copier; protocol_state==END-OF-MESSAGE;"
        " client_address==10.20.30.41; action=rate(client_address/120/86400/450 4.7.1 device"
        " lib-hodges-3f-copier reached its limit of 120 messages per day)"
    ) in rules
    assert (
        "id=login-svc-med-reminders@example.edu; protocol_state==END-OF-MESSAGE;"
        " sasl_username==svc-med-reminders@example.edu; action=rate(sasl_username/4000/86400/450"
        " 4.7.1 login svc-med-reminders@example.edu of med-appointment-reminders reached its"
        " limit of 4000 messages per day)"
    ) in rules


def test_refused_and_retired_records_get_no_rule() -> None:
    text = _artifacts()["postfwd/postfwd.cf"]
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    inactive = [d.name for d in inventory.devices if d.status != "active"]
    assert inactive  # the example has suspended, revoked and retired records
    for name in inactive:
        assert f" {name} " not in text, name
    assert " lib-hodges-3f-copier " in text  # positive control


def test_main_cf_asks_the_daemon_once_per_message_on_the_site_port() -> None:
    settings = syntax.parameters(_artifacts()["postfix/main.cf.fragment"])
    assert settings["smtpd_end_of_data_restrictions"] == (
        "check_policy_service { inet:127.0.0.1:10040, default_action=DUNNO, try_limit=1,"
        " timeout=10s }"
    )


@pytest.mark.parametrize(
    "field",
    [
        ("name", "copier; action=REJECT"),
        ("name", "copier)"),
        ("address", "10.20.30.41; sasl_username==x"),
        ("address", "10.20.30.0/24"),
    ],
)
def test_renderer_refuses_what_its_guards_refuse(field: tuple[str, str]) -> None:
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    policy = build_policy(inventory)
    name, value = field
    bad = dataclasses.replace(policy.legacy[0], **{name: value})
    postfwd.legacy_rules(policy)  # positive control: the real policy renders
    with pytest.raises(RenderRefused):
        postfwd.legacy_rules(dataclasses.replace(policy, legacy=(bad,)))


def test_renderer_refuses_a_limit_below_one() -> None:
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    policy = build_policy(inventory)
    zero = Limit(0, Source.OVERRIDE, 1, "3", 50)
    bad = dataclasses.replace(policy.legacy[0], limit=zero)
    with pytest.raises(RenderRefused):
        postfwd.legacy_rules(dataclasses.replace(policy, legacy=(bad,)))


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (
            "client_address/120/86400",
            "client_address/1200/86400",
            "postfwd/postfwd.cf: 10.20.30.41 is limited to 1200 a day, the records say 120",
        ),
        (
            "id=relaygate-authenticated; protocol_state==END-OF-MESSAGE; sasl_username=~.+;"
            " action=DUNNO\n",
            "",
            "postfwd/postfwd.cf: 0 authenticated stop rules, expected 1",
        ),
        (
            "id=legacy-lib-gate-counter;",
            "id=legacy-lib-gate-counter; client_name==x;",
            "postfwd/postfwd.cf:",  # a line of another shape
        ),
    ],
)
def test_verify_catches_a_tampered_ruleset(old: str, new: str, problem: str) -> None:
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    artifacts = _artifacts()
    assert verify(inventory.effective(), artifacts) == []  # positive control
    text = artifacts["postfwd/postfwd.cf"]
    assert old in text
    tampered = {**artifacts, "postfwd/postfwd.cf": text.replace(old, new, 1)}
    problems = verify(inventory.effective(), tampered)
    semantic = [p for p in problems if "fresh render" not in p]
    assert any(p.startswith(problem) for p in semantic), problems


def test_the_limit_check_names_every_extra_missing_and_wrong_limit_in_order() -> None:
    """``postfwd.check`` against limits that differ from the ruleset in every way at once."""
    text = _artifacts()["postfwd/postfwd.cf"]
    rules = postfwd.read_rules(text, [])
    logins = {r.key: r.limit for r in rules if r.item == "sasl_username" and r.limit is not None}
    legacy = {r.key: r.limit for r in rules if r.item == "client_address" and r.limit is not None}
    assert len(logins) > 2 and len(legacy) > 2
    assert postfwd.check(text, logins, legacy) == []  # positive control: the records' limits
    first_login, second_login = sorted(logins)[:2]
    wrong = {**logins, first_login: logins[first_login] + 1}
    del wrong[second_login]
    extra = {**legacy, "10.255.255.254": 7}
    assert postfwd.check(text, wrong, extra) == [
        "postfwd/postfwd.cf: 10.255.255.254 has no limit rule",
        f"postfwd/postfwd.cf: {first_login} is limited to {logins[first_login]} a day,"
        f" the records say {logins[first_login] + 1}",
        f"postfwd/postfwd.cf: {second_login} has a limit but no active record grants it",
    ]


def test_widenings_flag_an_override_that_drops_the_volume_check() -> None:
    artifacts = _artifacts()
    main = "".join(
        f"{p.name} = {p.value}\n"
        for p in syntax.parameter_lines(artifacts["postfix/main.cf.fragment"])
    )
    master = "".join(
        f"{o.key}/{o.name} = {o.value}\n"
        for o in syntax.override_lines(artifacts["postfix/master.cf.fragment"])
    )
    services = "smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n"
    assert effective.widenings(artifacts, main, master, services) == []  # positive control
    compiled = syntax.parameters(main)["smtpd_end_of_data_restrictions"]
    for service in ("smtp/inet", "submission/inet"):
        got = effective.widenings(
            artifacts, main, master + f"{service}/smtpd_end_of_data_restrictions =\n", services
        )
        assert got == [
            f"master.cf: {service} overrides -o smtpd_end_of_data_restrictions=, which replaces"
            f" the compiled smtpd_end_of_data_restrictions = {compiled} for that service"
        ]
    # A fail-closed daemon (451 when it is down) is a change of the compiled value too.
    changed = main.replace("default_action=DUNNO", "default_action=451")
    assert effective.widenings(artifacts, changed, master, services) == [
        "main.cf: smtpd_end_of_data_restrictions = "
        + compiled.replace("default_action=DUNNO", "default_action=451")
        + f"; relaygate compiled smtpd_end_of_data_restrictions = {compiled}"
    ]
    # main.cf's own smtpd_policy_service_* defaults do not matter: the check sets
    # default_action, try_limit and timeout itself.
    defaults = main + "smtpd_policy_service_default_action = 451 4.3.5 down\n"
    assert effective.widenings(artifacts, defaults, master, services) == []


# --- the real postfwd --------------------------------------------------------------------


def _require_postfwd() -> None:
    require(
        shutil.which("postfwd") is not None, "postfwd is not installed (apt-get install postfwd)"
    )
    require(os.geteuid() == 0, "postfwd is started as root and drops to nobody")


def _check_with_postfwd(path: Path) -> tuple[list[str], list[str]]:
    """(parsed rule lines, warning lines) of ``postfwd -C -f path``."""
    run = subprocess.run(
        ["postfwd", "-C", "-f", str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    lines = [
        line
        for line in (run.stdout + run.stderr).splitlines()
        if line and "Redundant argument in printf" not in line  # Perl 5.36 noise in postfwd
    ]
    return [x for x in lines if x.startswith("Rule ")], [
        x for x in lines if not x.startswith("Rule ")
    ]


@pytest.mark.integration
def test_postfwd_parses_every_compiled_rule() -> None:
    _require_postfwd()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "postfwd.cf")
        text = _artifacts()["postfwd/postfwd.cf"]
        path.write_text(text)
        parsed, warnings = _check_with_postfwd(path)
        assert warnings == []
        assert len(parsed) == len(_rules(text))
        assert 'id->"legacy-lib-hodges-3f-copier"' in "\n".join(parsed)
        # Negative control: a malformed line is reported, so the check above can fail.
        path.write_text(text + "id=broken; client_address==10.0.0.1\n")
        _, warnings = _check_with_postfwd(path)
        assert any("contains no action" in w for w in warnings), warnings


class Daemon:
    """A postfwd started by the test on a loopback port, with the deploy's flags."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.config = folder / "postfwd.cf"
        run = folder / "run"
        run.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(run, nobody.pw_uid, nobody.pw_gid)
        self.pidfile = run / "postfwd.pid"
        self.process = subprocess.Popen(
            [
                "postfwd",
                "-f",
                str(self.config),
                "-i",
                "127.0.0.1",
                "-p",
                str(port),
                "-u",
                "nobody",
                "-g",
                "nogroup",
                "--pidfile",
                str(self.pidfile),
                "--nodns",
                "--cache=0",
                "--keep_rates",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("postfwd did not start listening")

    def ask(self, client: str, login: str = "") -> str:
        """What postfwd answers for one message at END-OF-MESSAGE (as Postfix asks)."""
        request = {
            "request": "smtpd_access_policy",
            "protocol_state": "END-OF-MESSAGE",
            "protocol_name": "ESMTP",
            "client_address": client,
            "client_name": "unknown",
            "helo_name": "device.example.edu",
            "sender": "someone@example.edu",
            "recipient": "",
            "recipient_count": "1",
            "size": "1200",
            "sasl_method": "PLAIN" if login else "",
            "sasl_username": login,
            "queue_id": "",
            "instance": "1",
        }
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            connection.sendall("".join(f"{k}={v}\n" for k, v in request.items()).encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n\n"):
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk
        return answer.decode().strip().removeprefix("action=")

    def reload(self) -> None:
        pid = int(self.pidfile.read_text().strip())
        os.kill(pid, signal.SIGHUP)
        time.sleep(2)

    def stop(self) -> None:
        """End the whole daemon: its master and every process of its session (the cache
        daemon too, which a SIGTERM to the master alone has been seen to leave behind)."""
        if self.pidfile.exists():
            master = int(self.pidfile.read_text().strip())
            self.pidfile.unlink()
            problems = end_session(master)
            assert not [p for p in problems if "survived" in p], problems
        self.process.terminate()
        self.process.wait(timeout=30)


def _logged(relay: RunningRelay, text: str, seconds: float = 10.0) -> None:
    """Wait for ``text`` in the relay's maillog (postlogd writes it a moment after smtpd)."""
    deadline = time.monotonic() + seconds
    while text not in relay.log():
        if time.monotonic() > deadline:
            warnings = [line for line in relay.log().splitlines() if "warning:" in line]
            raise AssertionError(f"{text!r} not logged within {seconds} s; warnings: {warnings}")
        time.sleep(0.1)


@pytest.fixture
def small_limits(tmp_path: Path) -> Path:
    """The example inventory with factor 1, floor 1, tiny estimates for two records and
    a free port for postfwd (the site's 10040 may be in use on a shared machine)."""
    root = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, root)
    site = root / "site.yaml"
    text = site.read_text()
    site.write_text(
        text.replace("  factor: 3 ", "  factor: 1 ")
        .replace("  floor: 50 ", "  floor: 1  ")
        .replace("  port: 10040 ", f"  port: {free_port()} ")
    )
    for path, volume in (
        ("libraries/lib-hodges-3f-copier.yaml", 2),
        ("libraries/lib-hodges-1f-mfd.yaml", 3),
    ):
        record = root / "devices" / path
        lines = [
            f"volume_per_day: {volume}" if line.startswith("volume_per_day:") else line
            for line in record.read_text().splitlines()
        ]
        record.write_text("\n".join(lines) + "\n")
    return root


def _site_port(root: Path) -> int:
    site = validate(root, DAY).inventory
    assert site is not None
    return site.site.volume_limits.port


@pytest.fixture
def daemon(small_limits: Path) -> Iterator[Daemon]:
    _require_postfwd()
    folder = Path(tempfile.mkdtemp(prefix="relaygate-postfwd-"))
    folder.chmod(0o755)  # postfwd runs as nobody and re-reads the file on reload
    (folder / "postfwd.cf").write_text(_artifacts(small_limits)["postfwd/postfwd.cf"])
    running = Daemon(folder, _site_port(small_limits))
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(folder)


@pytest.mark.integration
def test_real_postfwd_counts_each_device_and_each_login_on_its_own(
    daemon: Daemon, small_limits: Path
) -> None:
    over_copier = "450 4.7.1 device lib-hodges-3f-copier reached its limit of 2 messages per day"
    # The request that creates the counter counts: limit 2 admits exactly 2 messages.
    assert [daemon.ask(COPIER) for _ in range(3)] == ["DUNNO", "DUNNO", over_copier]
    assert daemon.ask(COPIER) == over_copier  # a refused message does not reset anything
    assert daemon.ask(SCANNER) == "DUNNO"  # another device is unaffected
    # IPv6: the address as Postfix writes it (compressed, lower case) is the key.
    v6 = "2001:db8:1040:320::1f"  # eng-me-shop-mfd, 10 a day with factor 1
    over_v6 = "450 4.7.1 device eng-me-shop-mfd reached its limit of 10 messages per day"
    assert [daemon.ask(v6) for _ in range(11)] == ["DUNNO"] * 10 + [over_v6]
    # A login's limit follows the login: from the exhausted copier's address it still
    # gets its own 3 messages, and no more from any address.
    over_login = (
        f"450 4.7.1 login {LOGIN} of lib-hodges-1f-mfd reached its limit of 3 messages per day"
    )
    assert [daemon.ask(COPIER, LOGIN) for _ in range(3)] == ["DUNNO"] * 3
    assert daemon.ask("10.20.30.200", LOGIN) == over_login
    assert daemon.ask(COPIER, LOGIN.upper()) == over_login  # case does not escape the counter
    # An authenticated login the ruleset does not know is not limited (Postfix refused it
    # before DATA), and it never counts against the address it comes from.
    assert daemon.ask(SCANNER, "someone-else@example.edu") == "DUNNO"
    # A limit change deploys with a reload: the changed rule starts a new counter,
    # the unchanged one keeps counting (--keep_rates).
    copier = small_limits / "devices" / "libraries" / "lib-hodges-3f-copier.yaml"
    copier.write_text(copier.read_text().replace("volume_per_day: 2\n", "volume_per_day: 4\n"))
    daemon.config.write_text(_artifacts(small_limits)["postfwd/postfwd.cf"])
    daemon.reload()
    assert daemon.ask("10.20.30.200", LOGIN) == over_login
    over_new = "450 4.7.1 device lib-hodges-3f-copier reached its limit of 4 messages per day"
    assert [daemon.ask(COPIER) for _ in range(5)] == ["DUNNO"] * 4 + [over_new]


def _message(port: int, client: str, sender: str) -> str:
    """One message through a relay on 127.0.0.1:``port`` from ``client`` (XCLIENT): the
    reply to the end of DATA, or to the first refused command."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        stream = connection.makefile("rwb")

        def reply() -> str:
            lines = [stream.readline().decode(errors="replace")]
            while lines[-1][3:4] == "-":
                lines.append(stream.readline().decode(errors="replace"))
            return lines[-1].strip()

        def say(command: str) -> str:
            stream.write(command.encode() + b"\r\n")
            stream.flush()
            return reply()

        reply()
        say("EHLO device.test.invalid")
        assert say(f"XCLIENT ADDR={client}").startswith("220")
        say("EHLO device.test.invalid")
        for command in (f"MAIL FROM:<{sender}>", f"RCPT TO:<{OUTSIDE}>", "DATA"):
            answer = say(command)
            if not answer.startswith(("250", "354")):
                return answer
        answer = say(f"From: {sender}\r\nSubject: limit test\r\n\r\nhello\r\n.")
        say("QUIT")
        return answer


@pytest.mark.integration
def test_real_postfix_asks_postfwd_per_message_and_keeps_flowing_without_it(
    daemon: Daemon, small_limits: Path, tmp_path: Path
) -> None:
    require_postfix_lmdb()
    out = tmp_path / "out"
    compile_.write(out, _artifacts(small_limits))
    site = validate(small_limits, DAY).inventory
    assert site is not None
    # main.cf's own policy-service defaults say "fail closed"; the compiled check's
    # attributes win (the messages below are accepted with postfwd down).
    closed = (
        "smtpd_policy_service_default_action = 451 4.3.5 policy service down",
        "smtpd_policy_service_try_limit = 5",
    )
    with RunningRelay(out, relay_port=25, submission_port=587, extra_main=closed) as relay:
        shown = relay.postconf("-n", "smtpd_end_of_data_restrictions").strip()
        assert shown == (
            "smtpd_end_of_data_restrictions = check_policy_service { inet:127.0.0.1:"
            f"{daemon.port}, default_action=DUNNO, try_limit=1, timeout=10s }}"
        )
        copier = [
            _message(relay.relay_port, COPIER, "hodges-scans@lib.example.edu") for _ in range(3)
        ]
        assert [a[:3] for a in copier] == ["250", "250", "450"], copier
        assert copier[2] == (
            "450 4.7.1 <END-OF-MESSAGE>: End-of-data rejected: device lib-hodges-3f-copier"
            " reached its limit of 2 messages per day"
        )
        scanner = _message(relay.relay_port, SCANNER, "spc-scans@lib.example.edu")
        assert scanner.startswith("250"), scanner  # another device is unaffected
        # The daemon goes away: mail keeps flowing, and smtpd says so loudly.
        problem = f"warning: problem talking to server 127.0.0.1:{daemon.port}: "
        assert problem not in relay.log()  # with the daemon up, no warning
        daemon.stop()
        down = _message(relay.relay_port, SCANNER, "spc-scans@lib.example.edu")
        assert down.startswith("250"), down
        # postfwd died under smtpd's open connection. smtpd's words depend on timing: it
        # reads end-of-file ("Application error"), its write meets a reset ("Connection
        # reset by peer"), or it saw the idle connection close and reconnected ("Connection
        # refused"). Either way it says so, and the message above was accepted...
        _logged(relay, problem)
        # ...and a new smtpd (after a reload) finds nobody listening: "Connection refused".
        refused = problem + "Connection refused"
        before = relay.log().count(refused)
        relay.reload()
        again = _message(relay.relay_port, SCANNER, "spc-scans@lib.example.edu")
        assert again.startswith("250"), again
        deadline = time.monotonic() + 10
        while relay.log().count(refused) == before:
            assert time.monotonic() < deadline, f"no new {refused!r} after the reload"
            time.sleep(0.1)
        # ...while the relay policy (the maps) still refuses a sender the device does not own.
        foreign = _message(relay.relay_port, SCANNER, "hodges-scans@lib.example.edu")
        assert foreign.startswith("554"), foreign
