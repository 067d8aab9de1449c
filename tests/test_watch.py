"""activity watch, the abuse fast path: generated bursts against the example inventory.

The logs are written line by line the way Postfix writes them to a classic
syslog file (smtpd connect/client/disconnect, cleanup message-id, qmgr
``from=... (queue active)`` and ``removed``, smtp ``to=... status=sent``,
``reject: RCPT`` lines for refused recipients, with ``NOQUEUE`` before the
first accepted recipient of a transaction and the queue id after it). Every
flag has its control: the same log without the burst, or the burst one short
of the threshold, or outside the window, is not flagged.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from relaygate.lifecycle import watch
from relaygate.lifecycle.logs import timeline
from tests.conftest import ROOT, CliResult, require

Cli = Callable[..., CliResult]

DAY = dt.date(2026, 11, 29)
NOW = "2026-11-29 09:15:00"
GATE = "10.20.30.88"  # lib-gate-counter, auth none, active, a limit of 50 a day
BAS = "10.90.35.14"  # fac-bas-controller, auth none, active, a limit of 180 a day
HODGES = "10.20.30.41"  # lib-hodges-3f-copier, auth ip, active
RHODES = "10.40.32.77"  # eng-rhodes-lab-mfd, revoked (spam, 2026-10-02, SEC-4412)
REMINDERS = "svc-med-reminders@example.edu"  # med-appointment-reminders, credentials
PAPERCUT = "svc-oit-papercut@example.edu"  # oit-papercut-server, oauth2


def at(clock: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{DAY}T{clock}")


@dataclass
class Relay:
    """Classic syslog lines of one relay, as rsyslog writes Postfix's messages."""

    host: str = "smtp-relay-1"
    lines: list[str] = field(default_factory=list)
    queue: int = 0x4C000
    pid: int = 7000

    def log(self, when: dt.datetime, program: str, pid: int, text: str) -> None:
        self.lines.append(
            f"{when:%b} {when.day:2d} {when:%H:%M:%S} {self.host} postfix/{program}[{pid}]: {text}"
        )

    def session(
        self,
        when: dt.datetime,
        address: str,
        sender: str,
        recipients: list[str],
        rejected: list[str] = (),  # type: ignore[assignment]
        login: str | None = None,
    ) -> None:
        """One SMTP session, one transaction: accepted recipients first, then refused ones."""
        self.pid += 1
        pid, client = self.pid, f"unknown[{address}]"
        service = "submission/smtpd" if login else "smtpd"
        self.log(when, service, pid, f"connect from {client}")
        queue_id = ""
        if recipients:
            self.queue += 1
            queue_id = f"{self.queue:X}"
            auth = f", sasl_method=PLAIN, sasl_username={login}" if login else ""
            self.log(when, service, pid, f"{queue_id}: client={client}{auth}")
        for recipient in rejected:
            self.log(
                when,
                service,
                pid,
                f"{queue_id or 'NOQUEUE'}: reject: RCPT from {client}: 554 5.7.1 <{recipient}>:"
                f" Relay access denied; from=<{sender}> to=<{recipient}> proto=ESMTP"
                " helo=<device>",
            )
        if recipients:
            self.log(when, "cleanup", pid + 1, f"{queue_id}: message-id=<{queue_id}@device>")
            self.log(
                when,
                "qmgr",
                900,
                f"{queue_id}: from=<{sender}>, size=2048, nrcpt={len(recipients)} (queue active)",
            )
            for recipient in recipients:
                self.log(
                    when + dt.timedelta(seconds=1),
                    "smtp",
                    pid + 2,
                    f"{queue_id}: to=<{recipient}>, relay=mx.example.net[192.0.2.25]:25,"
                    " delay=0.4, delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
                )
            self.log(when + dt.timedelta(seconds=1), "qmgr", 900, f"{queue_id}: removed")
        total = len(recipients) + len(rejected)
        self.log(
            when + dt.timedelta(seconds=1),
            service,
            pid,
            f"disconnect from {client} ehlo=1 mail=1 rcpt={len(recipients)}/{total}"
            f" data={1 if recipients else 0} quit=1",
        )

    def burst(
        self,
        start: str,
        address: str,
        messages: int,
        per_message: int = 1,
        login: str | None = None,
        sender: str = "gate-counts@lib.example.edu",
        tag: str = "x",
    ) -> None:
        """``messages`` messages, one every 5 seconds, each to new recipients."""
        for number in range(messages):
            recipients = [f"{tag}{number}-{k}@victims.example.net" for k in range(per_message)]
            self.session(
                at(start) + dt.timedelta(seconds=5 * number),
                address,
                sender,
                recipients,
                login=login,
            )

    def policy_down(self, when: dt.datetime) -> None:
        self.log(
            when,
            "smtpd",
            self.pid,
            "warning: problem talking to server inet:127.0.0.1:10040: Connection refused",
        )

    def normal_day(self) -> None:
        """The other devices' ordinary mail, up to the end of the window."""
        for minute in range(0, 15, 3):
            self.session(
                at("09:00:00") + dt.timedelta(minutes=minute),
                HODGES,
                "hodges-scans@lib.example.edu",
                [f"staff{minute}@example.edu"],
            )
        self.session(
            at("09:10:00"), "10.5.30.7", "papercut@oit.example.edu", ["a@example.edu"],
            login=PAPERCUT,
        )  # fmt: skip
        self.session(at("09:14:59"), HODGES, "hodges-scans@lib.example.edu", ["last@example.edu"])

    def write(self, path: Path) -> Path:
        path.write_text("\n".join(self.lines) + "\n", encoding="utf-8")
        stamp = at("09:15:00").timestamp()
        os.utime(path, (stamp, stamp))
        return path


@pytest.fixture
def campus(tmp_path: Path) -> Path:
    """The example inventory (with its schemas) in a folder of its own; the tests run there."""
    root = tmp_path / "campus"
    shutil.copytree(ROOT / "inventory", root / "inventory")
    shutil.copytree(ROOT / "schemas", root / "schemas")
    return root


@pytest.fixture
def watch_cli(campus: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(campus)

    def run(log: Path, *args: str) -> CliResult:
        return run_cli("activity", "watch", str(log.relative_to(campus)), "--now", NOW, *args)

    return run


def test_a_legacy_burst_is_flagged_with_the_commands_that_stop_it(
    watch_cli: Cli, campus: Path
) -> None:
    relay = Relay()
    relay.normal_day()
    relay.burst("09:02:00", GATE, 150)
    log = relay.write(campus / "mail.log")
    result = watch_cli(log)
    assert result.code == 1, result
    out = result.stdout
    assert (
        "flagged: lib-gate-counter (libraries, 10.20.30.88, auth none, active)\n"
        "  over: 150 messages accepted in 15 min (threshold 100)\n"
        "  over: 150 distinct recipients (threshold 50)\n"
        "  over: 150 messages accepted in 15 min, more than its daily volume limit of 50 (the"
        " policy service did not refuse them)\n"
        "  measured: 150 messages, 0 of 150 recipients rejected (0%), 150 distinct recipients,"
        " 2026-11-29 09:02:00 .. 09:14:26 on smtp-relay-1\n"
        "  volume limit: 50 messages a day (site floor 50 (estimate 2 x 3 = 6)); the window's"
        " 150 are 300% of it\n"
        "  to stop it:\n"
        "    relaygate suspend lib-gate-counter --reason compromised --ticket TICKET"
        " --date 2026-11-29\n"
        '    git commit -m "Suspend lib-gate-counter: compromised (TICKET)"'
        " inventory/devices/libraries/lib-gate-counter.yaml\n"
        "    relaygate compile --out build/relay --as-of 2026-11-29\n"
        "    relaygate deploy --out build/relay -i DEPLOY_INVENTORY --tags revoke\n"
    ) in out, result
    # The control: the copier and the print server in the same log, at their usual volume.
    assert "lib-hodges-3f-copier" not in out, result
    assert "papercut" not in out, result
    assert out.endswith(
        "1 clients over a threshold (1 need action) of 3 with mail in the window\n"
    ), result
    assert "fast revoke (--tags revoke) applies new refusals only, suspensions included" in out
    # Nothing was edited without --apply.
    record = campus / "inventory/devices/libraries/lib-gate-counter.yaml"
    assert "status: active" in record.read_text()


def test_the_same_log_without_the_burst_flags_nothing(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 0, result
    assert "flagged" not in result.stdout
    assert result.stdout.endswith(
        "0 clients over a threshold (0 need action) of 2 with mail in the window\n"
    ), result


def test_an_account_is_flagged_by_its_login_not_its_address(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    # The reminders account, from its own prefix and from an address of the copier's: both
    # its mail (the login decides), and none of it the copier's legacy use.
    relay.burst("09:05:00", "10.60.50.9", 20, per_message=3, login=REMINDERS, tag="a")
    relay.burst("09:06:00", HODGES, 20, per_message=3, login=REMINDERS.upper(), tag="b")
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 1, result
    out = result.stdout
    assert (
        "flagged: med-appointment-reminders (medicine, svc-med-reminders@example.edu,"
        " auth credentials, active)\n"
        "  over: 120 distinct recipients (threshold 50)\n"
        "  measured: 40 messages, 0 of 120 recipients rejected (0%), 120 distinct recipients,"
    ) in out, result
    assert "  from: 10.20.30.41, 10.60.50.9\n" in out, result
    # Its limit is the login's (relaygate.limits): the record's override of 4000 a day.
    assert (
        "  volume limit: 4000 messages a day (the login's: the sum of its active records'"
        " (med-appointment-reminders 4000)); the window's 40 are 1% of it\n"
    ) in out, result
    assert "relaygate suspend med-appointment-reminders --reason compromised" in out
    assert "lib-hodges-3f-copier" not in out, result


def test_rejects_after_auth_are_the_logins(tmp_path: Path) -> None:
    """A reject in a transaction carries the queue id; a NOQUEUE one, the session's login."""
    relay = Relay()
    smtpd = "submission/smtpd"
    client = "unknown[10.9.9.9]"

    def refuse(when: str, queue_id: str, recipient: str, pid: int = 7001) -> None:
        text = (
            f"{queue_id}: reject: RCPT from {client}: 554 5.7.1 <{recipient}>: Relay access"
            f" denied; from=<s@example.edu> to=<{recipient}> proto=ESMTP helo=<d>"
        )
        relay.log(at(when), smtpd, pid, text)

    relay.log(at("09:00:00"), smtpd, 7001, f"connect from {client}")
    refuse("09:00:00", "NOQUEUE", "before-auth@x.net")  # no login known yet in this session
    relay.log(at("09:00:01"), smtpd, 7001,
              f"4D001: client={client}, sasl_method=PLAIN, sasl_username={REMINDERS}")  # fmt: skip
    refuse("09:00:01", "4D001", "in-transaction@x.net")
    relay.log(at("09:00:01"), "qmgr", 900,
              "4D001: from=<s@example.edu>, size=10, nrcpt=1 (queue active)")  # fmt: skip
    refuse("09:00:02", "NOQUEUE", "second-transaction@x.net")
    refuse("09:00:02", "NOQUEUE", "other-process@x.net", pid=7002)
    relay.log(at("09:00:03"), smtpd, 7001, f"disconnect from {client} ehlo=1 quit=1")
    relay.log(at("09:00:04"), smtpd, 7001, f"connect from {client}")
    refuse("09:00:04", "NOQUEUE", "next-session@x.net")
    path = tmp_path / "mail.log"
    path.write_text("\n".join(relay.lines) + "\n")
    read = timeline.read([path], timeline.Settings(reference=DAY))
    rejected = [(e.login, e.recipient) for e in read.events if e.kind == "rejected"]
    assert rejected == [
        (None, "before-auth@x.net"),
        (REMINDERS, "in-transaction@x.net"),
        (REMINDERS, "second-transaction@x.net"),
        (None, "other-process@x.net"),
        (None, "next-session@x.net"),
    ]
    accepted = [(e.address, e.login, e.count) for e in read.events if e.kind == "accepted"]
    assert accepted == [("10.9.9.9", REMINDERS, 1)]


def test_a_burst_before_the_window_is_not_flagged(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.burst("08:40:00", GATE, 150)  # 08:40:00 .. 08:52:25, ends 22 minutes before NOW
    relay.normal_day()
    log = relay.write(campus / "mail.log")
    result = watch_cli(log)
    assert result.code == 0, result
    assert "lib-gate-counter" not in result.stdout
    # Control: a window that reaches back to it flags it.
    wider = watch_cli(log, "--window", "40m")
    assert wider.code == 1, wider
    assert "flagged: lib-gate-counter" in wider.stdout
    assert "150 messages accepted in 40 min (threshold 100)" in wider.stdout
    # The window's start is exclusive: 30 minutes (after 08:45:00) keep 89 of the messages,
    # and 90 deliveries (that of the message of 08:45:00 is logged at 08:45:01).
    partial = watch_cli(log, "--window", "30m")
    assert "  measured: 89 messages, 0 of 89 recipients rejected (0%), 90 distinct" in (
        partial.stdout
    ), partial
    assert "messages accepted in 30 min (threshold 100)" not in partial.stdout, partial


def test_the_window_ends_at_the_latest_log_time_without_now(
    campus: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(campus)
    relay = Relay()
    relay.burst("08:40:00", GATE, 150)
    log = relay.write(campus / "mail.log")  # its last line 08:52:26; mtime gives the year
    result = run_cli("activity", "watch", str(log), "--as-of", str(DAY))
    assert result.code == 1, result
    assert "the 15 minutes up to 2026-11-29 08:52:26 (the latest log time)" in result.stdout
    assert "classic syslog years from the file's modification time (2026-11-29)" in result.stdout


@pytest.mark.parametrize(
    ("threshold", "over"),
    [
        ("max_messages", True),
        ("max_messages", False),
        ("max_rejected_ratio", True),
        ("max_rejected_ratio", False),
        ("max_distinct_recipients", True),
        ("max_distinct_recipients", False),
        ("volume_limit", True),
        ("volume_limit", False),
    ],
)
def test_each_threshold_triggers_on_its_own(
    watch_cli: Cli, campus: Path, threshold: str, over: bool
) -> None:
    relay = Relay()
    extra = 1 if over else 0
    if threshold == "max_messages":  # to one recipient: no other threshold moves
        for number in range(100 + extra):
            relay.session(at("09:01:00") + dt.timedelta(seconds=5 * number), BAS,
                          "gate-counts@lib.example.edu", ["counts@lib.example.edu"])  # fmt: skip
    elif threshold == "max_rejected_ratio":  # 10 accepted; 10 (+1) refused: 50% (52%)
        for number in range(10):
            relay.session(at("09:01:00") + dt.timedelta(seconds=number), BAS,
                          "gate-counts@lib.example.edu", ["counts@lib.example.edu"])  # fmt: skip
        for number in range(10 + extra):
            relay.session(at("09:03:00") + dt.timedelta(seconds=number), BAS,
                          "gate-counts@lib.example.edu", [], [f"r{number}@x.net"])  # fmt: skip
    elif threshold == "volume_limit":  # lib-gate-counter's limit: 50 a day (the site floor)
        for number in range(50 + extra):
            relay.session(at("09:01:00") + dt.timedelta(seconds=5 * number), GATE,
                          "gate-counts@lib.example.edu", ["counts@lib.example.edu"])  # fmt: skip
    else:  # 5 messages to 10 recipients each: 50 (51) distinct
        relay.burst("09:01:00", BAS, 5, per_message=10)
        if over:
            relay.session(at("09:02:00"), BAS, "gate-counts@lib.example.edu", ["one@x.net"])
    result = watch_cli(relay.write(campus / "mail.log"))
    flagged = [line for line in result.stdout.splitlines() if line.startswith("  over: ")]
    if not over:
        assert result.code == 0, result
        assert flagged == [], result
        return
    assert result.code == 1, result
    expected = {
        "max_messages": "  over: 101 messages accepted in 15 min (threshold 100)",
        "max_rejected_ratio": "  over: 11 of 21 recipients rejected (52%; threshold 50% from 10"
        " rejected on)",
        "max_distinct_recipients": "  over: 51 distinct recipients (threshold 50)",
        "volume_limit": "  over: 51 messages accepted in 15 min, more than its daily volume"
        " limit of 50 (the policy service did not refuse them)",
    }
    assert flagged == [expected[threshold]], result


def test_one_refusal_of_one_is_not_a_ratio(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    relay.session(at("09:05:00"), GATE, "gate-counts@lib.example.edu", [], ["typo@x.net"])
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 0, result
    # Control: the minimum lowered to one, the same refusal is a flag.
    low = watch_cli(campus / "mail.log", "--min-rejected", "1")
    assert low.code == 1, low
    assert "  over: 1 of 1 recipients rejected (100%; threshold 50% from 1 rejected on)" in (
        low.stdout
    )


def _site_with(campus: Path, block: str) -> None:
    site = campus / "inventory/site.yaml"
    site.write_text(site.read_text() + block)


def test_site_thresholds_and_options(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.burst("09:01:00", GATE, 11)
    log = relay.write(campus / "mail.log")
    assert watch_cli(log).code == 0  # the schema's defaults: 100 messages
    _site_with(campus, "abuse_watch: {max_messages: 10, window_minutes: 20}\n")
    result = watch_cli(log)
    assert result.code == 1, result
    assert "thresholds (site.yaml abuse_watch over defaults): more than 10 messages" in (
        result.stdout
    )
    assert "the 20 minutes up to 2026-11-29 09:15:00 (--now)" in result.stdout
    # An option overrides the site.
    option = watch_cli(log, "--max-messages", "11")
    assert option.code == 0, option
    assert "(options over site.yaml abuse_watch over defaults)" in option.stdout


def test_a_site_block_that_fails_its_schema_is_an_input_error(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.burst("09:01:00", GATE, 3)
    _site_with(campus, "abuse_watch: {max_rejected_ratio: 2}\n")
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 2, result
    assert "abuse_watch" in result.stderr and "schema.range" in result.stderr, result


def test_the_schema_defaults_are_the_thresholds() -> None:
    limits = watch.thresholds(None, {})
    assert (limits.window_minutes, limits.max_messages, limits.max_rejected_ratio) == (15, 100, 0.5)
    assert (limits.min_rejected, limits.max_distinct_recipients) == (10, 50)


def _validate(campus: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from relaygate.cli import main; sys.exit(main())",
         "validate", "--as-of", str(DAY)],
        cwd=campus, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_apply_suspends_once(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    relay.burst("09:02:00", GATE, 150)
    log = relay.write(campus / "mail.log")
    record = campus / "inventory/devices/libraries/lib-gate-counter.yaml"
    before = record.read_text()
    refused = watch_cli(log, "--apply")
    assert refused.code == 2 and "--apply needs --ticket" in refused.stderr, refused
    assert record.read_text() == before
    result = watch_cli(log, "--apply", "--ticket", "SEC-4700")
    assert result.code == 1, result
    assert "+status: suspended\n+status_reason: compromised\n+status_date: 2026-11-29\n" in (
        result.stdout
    ), result
    assert "+status_ticket: SEC-4700\n" in result.stdout
    assert (
        "inventory/devices/libraries/lib-gate-counter.yaml: suspended (compromised, SEC-4700,"
        " 2026-11-29)\n"
    ) in result.stdout
    assert "--apply: 1 records suspended in the working tree; nothing committed or deployed" in (
        result.stdout
    )
    assert "  then:\n    git commit" in result.stdout, result
    data = YAML(typ="safe").load(record.read_text())
    assert (data["status"], data["status_reason"], data["status_ticket"]) == (
        "suspended",
        "compromised",
        "SEC-4700",
    )
    assert str(data["status_date"]) == "2026-11-29"
    # Only those lines changed, and the inventory is valid.
    assert (
        record.read_text().replace(
            "status: suspended\nstatus_reason: compromised\nstatus_date: 2026-11-29\n"
            "status_ticket: SEC-4700\n",
            "status: active\n",
        )
        == before
    )
    checked = _validate(campus)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # A second run edits nothing: the record is reported as suspended, the mail of the window
    # as accepted anyway (the suspension has not been deployed).
    suspended = record.read_text()
    again = watch_cli(log, "--apply", "--ticket", "SEC-4700")
    assert again.code == 1, again
    assert record.read_text() == suspended
    assert "--apply: 0 records suspended" in again.stdout, again
    assert (
        "flagged: lib-gate-counter (libraries, 10.20.30.88, auth none, suspended (compromised,"
        " 2026-11-29, SEC-4700))\n"
    ) in again.stdout, again
    assert (
        "lib-gate-counter is already suspended in the inventory, yet 150 messages" in again.stdout
    )
    assert "relaygate suspend" not in again.stdout
    # No git repository here: nothing was committed anywhere.
    assert not (campus / ".git").exists()


def test_a_revoked_device_is_reported_not_suspended(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    for number in range(30):  # refused: the revocation is deployed
        relay.session(at("09:03:00") + dt.timedelta(seconds=number), RHODES,
                      "rhodes@eng.example.edu", [], [f"v{number}@x.net"])  # fmt: skip
    result = watch_cli(relay.write(campus / "mail.log"), "--apply", "--ticket", "SEC-4701")
    assert result.code == 0, result
    assert (
        "flagged: eng-rhodes-lab-mfd (engineering, 10.40.32.77, auth ip, revoked (spam,"
        " 2026-10-02, SEC-4412))\n"
    ) in result.stdout, result
    assert "eng-rhodes-lab-mfd is already revoked: every attempt was refused" in result.stdout
    assert "--apply: 0 records suspended" in result.stdout
    assert "1 clients over a threshold (0 need action)" in result.stdout
    # Control: when its mail is accepted, the revocation has not reached the relay: action.
    relay.burst("09:05:00", RHODES, 120, sender="rhodes@eng.example.edu")
    accepted = watch_cli(relay.write(campus / "mail.log"))
    assert accepted.code == 1, accepted
    assert "the refusal has not reached the relay" in accepted.stdout


def test_policy_service_unreachable_is_a_loud_warning(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    relay.policy_down(at("08:30:00"))  # before the window: counted, not an alarm by itself
    log = relay.write(campus / "mail.log")
    quiet = watch_cli(log)
    assert quiet.code == 0, quiet
    assert "WARNING" not in quiet.stdout
    relay.policy_down(at("09:06:00"))
    relay.policy_down(at("09:07:30"))
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 1, result
    line = next(x for x in result.stdout.splitlines() if x.startswith("WARNING"))
    number = relay.lines.index(next(x for x in relay.lines if "09:06:00" in x and "warning" in x))
    assert line == (
        f"WARNING mail.log:{number + 1}:0: error watch.policy-service-unreachable: smtp-relay-1"
        " could not reach the policy service inet:127.0.0.1:10040 2 times in the window"
        " (2026-11-29 09:06:00 .. 2026-11-29 09:07:30): the volume limits are NOT enforced"
        " while it is down (mail keeps flowing); 1 more such lines before the window"
        " (check the policy daemon (postfwd) on that relay: systemctl status postfwd; mail kept"
        " flowing meanwhile, so run activity watch over that time)"
    ), result
    assert "the policy service was unreachable 2 times" in result.stdout


def test_unknown_clients_and_odd_files_are_findings(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    relay.burst("09:01:00", "10.99.0.5", 120, sender="x@example.edu")  # no record
    relay.burst("09:02:00", "127.0.0.1", 200, sender="amavis@example.edu")  # re-injection
    for number in range(20):  # an unknown client the relay refuses: no action
        relay.session(at("09:03:00"), "10.99.0.6", "y@example.edu", [], [f"z{number}@x.net"])
    log = relay.write(campus / "mail.log")
    empty = campus / "empty.log"
    empty.write_text("")
    other = campus / "auth.log"
    other.write_text("Nov 29 09:00:00 smtp-relay-1 sshd[1]: Accepted publickey for root\n")
    result = watch_cli(log, str(empty), str(other))
    assert result.code == 1, result
    out = result.stdout
    assert "empty.log:0:0: warning watch.log-unusable: the file is empty" in out, result
    assert "auth.log:0:0: warning watch.log-unusable: none of its 1 lines" in out, result
    assert "flagged: 10.99.0.5 (no record covers this address; unauthenticated)\n" in out
    assert "the relay ACCEPTED mail from a client no record covers" in out
    assert "flagged: 10.99.0.6 (no record covers this address; unauthenticated)\n" in out
    assert "every attempt was refused by the relay; nothing to suspend" in out
    assert "127.0.0.1" not in out
    assert "relaygate suspend" not in out
    assert "2 clients over a threshold (1 need action) of 4 with mail in the window" in out


def test_nothing_readable_is_an_input_error(watch_cli: Cli, campus: Path) -> None:
    empty = campus / "empty.log"
    empty.write_text("")
    result = watch_cli(empty)
    assert result.code == 2, result
    assert "no Postfix line in the logs: nothing to watch" in result.stderr
    journal = campus / "system.journal"
    journal.write_bytes(b"LPKSHHRH" + bytes(64))
    relay = Relay()
    relay.normal_day()
    both = watch_cli(relay.write(campus / "mail.log"), str(journal))
    assert both.code == 2, both
    assert "system.journal:0:0: error watch.log-unreadable: cannot be read: a binary systemd" in (
        both.stdout
    ), both
    assert "0 clients over a threshold" in both.stdout  # the readable log was still watched


def test_a_bad_window_is_a_usage_error(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.normal_day()
    log = relay.write(campus / "mail.log")
    for bad in ("0m", "25h", "soon"):
        result = watch_cli(log, "--window", bad)
        assert result.code == 2, (bad, result)
    assert watch_cli(log, "--window", "2h").code == 0


# --- the real relay logs (../shared/logs) -------------------------------------------------

SHARED_LOGS = ROOT.parent / "shared" / "logs"
#: The flags a correct reading needs (the shared logs' README).
_FLAGS = {
    "lightmeter-mail": ["--year", "2021"],
    "lightmeter-": ["--year", "2020"],
    "derived-": ["--year", "2020"],
    "fail2ban-": ["--year", "2005"],
    "helga-journal-json": ["--tz", "Europe/Berlin"],
}


def _flags(name: str) -> list[str]:
    return next((flags for prefix, flags in _FLAGS.items() if name.startswith(prefix)), [])


def test_real_logs_are_watched_without_false_flags(
    campus: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(SHARED_LOGS.is_dir(), f"the real relay logs are not at {SHARED_LOGS}")
    monkeypatch.chdir(campus)
    names = sorted(p.name for p in SHARED_LOGS.iterdir() if p.name != "README.md")
    assert len(names) >= 19
    for name in names:
        result = run_cli("activity", "watch", str(SHARED_LOGS / name), *_flags(name))
        # None of them is a campus relay of the example: every client is unknown, and none
        # passes the default thresholds in its last 15 minutes.
        assert result.code == 0, (name, result)
        assert "flagged" not in result.stdout, (name, result)
        assert result.stdout.endswith("with mail in the window\n"), (name, result)
    # The MX of helga over a whole day, with thresholds a mail server's day passes: it is
    # read (every format gives the same events) and flags its busiest clients only.
    day = run_cli("activity", "watch", str(SHARED_LOGS / "helga-rfc3339-20k.log.gz"),
                  "--window", "24h", "--max-messages", "5")  # fmt: skip
    assert day.code == 1, day
    assert "flagged: SASL login vmail@uhu-banane.net (no record has this account)" in day.stdout
    assert "  over: 6 messages accepted in 1440 min (threshold 5)" in day.stdout
    assert "1 clients over a threshold (1 need action) of 62 with mail in the window" in day.stdout


def test_the_watch_rule_ids_are_listed(run_cli: Cli) -> None:
    listed = run_cli("rules")
    assert listed.code == 0, listed
    for rule_id in ("watch.policy-service-unreachable", "watch.log-unreadable"):
        assert f"\n{rule_id} " in listed.stdout, listed
    assert "\nwatch.log-unusable " in listed.stdout


def _rfc3339(line: str) -> str:
    """A classic line of DAY as rsyslog's high-precision format writes it."""
    return f"{DAY}T{line[7:15]}.000000+01:00 {line[16:]}"


def _journal_json(line: str) -> str:
    """A classic line of DAY as ``journalctl -o json`` exports it (the instant in UTC)."""
    host, rest = line[16:].split(" ", 1)
    tag, message = rest.split(": ", 1)
    moment = dt.datetime.fromisoformat(f"{DAY}T{line[7:15]}+00:00")
    return json.dumps(
        {
            "__REALTIME_TIMESTAMP": str(int(moment.timestamp() * 1_000_000)),
            "_HOSTNAME": host,
            "SYSLOG_IDENTIFIER": tag.split("[")[0],
            "MESSAGE": message,
        }
    )


@pytest.mark.parametrize("style", ["rfc3339", "journal-json"])
def test_every_format_on_standard_input_gives_the_same_flag(campus: Path, style: str) -> None:
    relay = Relay()
    relay.normal_day()
    relay.burst("09:02:00", GATE, 150)
    convert = _rfc3339 if style == "rfc3339" else _journal_json
    text = "".join(convert(line) + "\n" for line in relay.lines)
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from relaygate.cli import main; sys.exit(main())",
         "activity", "watch", "-", "--now", NOW, "--tz", "UTC"],
        cwd=campus, input=text, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "<stdin>: read: " in done.stdout
    assert (
        "flagged: lib-gate-counter (libraries, 10.20.30.88, auth none, active)\n"
        "  over: 150 messages accepted in 15 min (threshold 100)\n"
        "  over: 150 distinct recipients (threshold 50)\n"
        "  over: 150 messages accepted in 15 min, more than its daily volume limit of 50 (the"
        " policy service did not refuse them)\n"
        "  measured: 150 messages, 0 of 150 recipients rejected (0%), 150 distinct recipients,"
        " 2026-11-29 09:02:00 .. 09:14:26 on smtp-relay-1\n"
    ) in done.stdout, done.stdout
    assert "lib-hodges-3f-copier" not in done.stdout


def test_an_unreadable_record_is_said_and_its_mail_is_unknown(watch_cli: Cli, campus: Path) -> None:
    record = campus / "inventory/devices/libraries/lib-gate-counter.yaml"
    record.write_text(record.read_text().replace("status: active", "status: hacked"))
    relay = Relay()
    relay.burst("09:02:00", GATE, 150)
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 1, result
    assert (
        "note: 1 records cannot be read (run relaygate validate); their mail shows as from"
        " unknown clients: devices/libraries/lib-gate-counter.yaml\n"
    ) in result.stdout, result
    assert "flagged: 10.20.30.88 (no record covers this address; unauthenticated)" in (
        result.stdout
    )


def _compiled(campus: Path, out: str) -> dict[str, bytes]:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from relaygate.cli import main; sys.exit(main())",
         "compile", "--out", out, "--as-of", str(DAY)],
        cwd=campus, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return {p.name: p.read_bytes() for p in (campus / out).rglob("*") if p.is_file()}


def test_the_fast_revoke_takes_the_suspension_watch_prints(
    watch_cli: Cli, campus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the watch says: `--tags revoke` applies a suspension, nothing else is in the way.

    The relay module's own check (``revoke_extras``: changes beyond new refusals refuse a
    revoke run) compares the release before and after ``--apply``.
    """
    library = ROOT / "playbooks/roles/relaygate/library/relaygate_relay.py"
    spec = importlib.util.spec_from_file_location("relaygate_relay_module", library)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = _compiled(campus, "before")
    relay = Relay()
    relay.burst("09:02:00", GATE, 150)
    relay.burst("09:03:00", "10.5.30.7", 60, per_message=2, login=PAPERCUT, tag="p")
    result = watch_cli(relay.write(campus / "mail.log"), "--apply", "--ticket", "SEC-4702")
    assert "--apply: 2 records suspended" in result.stdout, result
    after = _compiled(campus, "after")
    assert module.revoke_extras(before, after) == []
    assert (
        b"10.20.30.88\tREJECT relay access suspended: device compromised (SEC-4702)"
        in (after["refused_clients"])
    )
    assert PAPERCUT.encode() in after["refused_logins"]
    # Control: a change beyond refusals is one the fast path refuses.
    widened = dict(after, legacy_clients=after["legacy_clients"] + b"10.99.0.7\tOK\n")
    assert module.revoke_extras(before, widened) != []


def test_refusals_over_the_volume_limit_are_counted_and_flagged(
    watch_cli: Cli, campus: Path
) -> None:
    relay = Relay()
    relay.normal_day()
    for number in range(12):  # accepted: under every threshold and under its limit
        relay.session(at("09:01:00") + dt.timedelta(seconds=number), GATE,
                      "gate-counts@lib.example.edu", ["counts@lib.example.edu"])  # fmt: skip
    log = relay.write(campus / "mail.log")
    assert watch_cli(log).code == 0  # the control: the same device below its limit
    for number in range(3):  # then the policy service refuses, after DATA
        relay.queue += 1
        queue_id = f"{relay.queue:X}"
        when = at("09:05:00") + dt.timedelta(seconds=number)
        relay.log(when, "smtpd", 7500 + number, f"{queue_id}: client=unknown[{GATE}]")
        relay.log(
            when, "smtpd", 7500 + number,
            f"{queue_id}: reject: END-OF-MESSAGE from unknown[{GATE}]: 450 4.7.1"
            " <END-OF-MESSAGE>: End-of-data rejected: device lib-gate-counter reached its limit"
            " of 50 messages per day; from=<gate-counts@lib.example.edu>"
            " to=<counts@lib.example.edu> proto=ESMTP helo=<gate>",
        )  # fmt: skip
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 1, result
    assert (
        "  over: 3 messages refused over its daily volume limit of 50 (it reached the limit:"
        " the policy service holds it back, 4xx, until the day passes)\n"
        "  measured: 12 messages, 3 of 15 recipients rejected (3 over the volume limit) (20%),"
        " 1 distinct recipients,"
    ) in result.stdout, result


def test_apply_with_a_malformed_ticket_leaves_the_record(watch_cli: Cli, campus: Path) -> None:
    relay = Relay()
    relay.burst("09:02:00", GATE, 150)
    log = relay.write(campus / "mail.log")
    record = campus / "inventory/devices/libraries/lib-gate-counter.yaml"
    before = record.read_text()
    result = watch_cli(log, "--apply", "--ticket", "sec 1")
    assert result.code == 1, result
    assert record.read_text() == before
    assert "the edit would make the record invalid; nothing was written" in result.stderr, result
    assert "--apply: 0 records suspended" in result.stdout, result


@pytest.mark.parametrize(
    "forged",
    [
        # The words in the sender: smtpd logs them after the reject's fixed head.
        '450 4.7.1 <"x 450 4.7.1 reached its limit of 1"@lib.example.edu>: Sender address'
        ' rejected: not registered; from=<"x 450 4.7.1 reached its limit of 1"@lib.example.edu>'
        " to=<counts@lib.example.edu> proto=ESMTP helo=<gate>",
        # A whole forged END-OF-MESSAGE head inside a RCPT reject's sender.
        '554 5.7.1 <counts@lib.example.edu>: Relay access denied; from=<"x: reject:'
        " END-OF-MESSAGE from unknown[10.20.30.88]: 450 4.7.1 <END-OF-MESSAGE>: End-of-data"
        ' rejected: device lib-gate-counter reached its limit of 1 messages per day;"@x.example>'
        " to=<counts@lib.example.edu> proto=ESMTP helo=<gate>",
    ],
)
def test_words_a_sender_controls_never_count_as_the_limit(
    watch_cli: Cli, campus: Path, forged: str
) -> None:
    relay = Relay()
    relay.normal_day()
    relay.log(
        at("09:05:00"), "smtpd", 7600, f"NOQUEUE: reject: RCPT from unknown[{GATE}]: {forged}"
    )
    result = watch_cli(relay.write(campus / "mail.log"))
    assert result.code == 0, result  # one ordinary refusal: below every threshold
    assert "over its daily volume limit" not in result.stdout, result
    # Control: the policy service's own refusal, naming another device, is not this one's.
    relay.log(
        at("09:06:00"), "smtpd", 7601,
        f"NOQUEUE: reject: END-OF-MESSAGE from unknown[{GATE}]: 450 4.7.1 <END-OF-MESSAGE>:"
        " End-of-data rejected: device lib-hodges-3f-copier reached its limit of 120 messages"
        " per day; from=<gate-counts@lib.example.edu> to=<counts@lib.example.edu> proto=ESMTP"
        " helo=<gate>",
    )  # fmt: skip
    assert watch_cli(relay.write(campus / "mail.log")).code == 0
    # Control: the same refusal naming the gate counter itself flags it.
    relay.log(
        at("09:07:00"), "smtpd", 7602,
        f"NOQUEUE: reject: END-OF-MESSAGE from unknown[{GATE}]: 450 4.7.1 <END-OF-MESSAGE>:"
        " End-of-data rejected: device lib-gate-counter reached its limit of 50 messages"
        " per day; from=<gate-counts@lib.example.edu> to=<counts@lib.example.edu> proto=ESMTP"
        " helo=<gate>",
    )  # fmt: skip
    flagged = watch_cli(relay.write(campus / "mail.log"))
    assert flagged.code == 1, flagged
    assert "1 messages refused over its daily volume limit of 50" in flagged.stdout, flagged
