"""End to end: each record's daily volume limit, enforced by the real postfwd on a real relay.

One lab (``tests.lab``) is built for the module from a copy of the example
inventory in which a few records carry a small ``volume_limit`` override, so a
burst reaches the limit in a handful of messages. The compiled
``postfwd/postfwd.cf`` runs in the real Debian postfwd inside the relay's
namespace (``--keep_rates``, on the site's port); Postfix asks it at the end of
each message (``smtpd_end_of_data_restrictions``, from the compiled main.cf
fragment). Devices send real SMTP from their own addresses; the sink behind the
relay shows what was really delivered.

Expected limits are written here as numbers (the overrides this module puts in
the records), and checked against ``relaygate.limits`` once, so the tests do
not take the compiler's word for them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relaygate import limits
from tests.conftest import AS_OF, EXAMPLE
from tests.lab import Lab, LabError, Result, Session, leftovers
from tests.lab import postfwd as lab_postfwd
from tests.lab.netns import Address
from tests.lab.plan import Client, load
from tests.test_lab import require_lab_components

pytestmark = pytest.mark.integration

TODAY = dt.date.fromisoformat(AS_OF)
OUTSIDE = "victim@evil.example"
NOT_REGISTERED = "Sender address rejected: sender not registered for this device"

#: record -> its per_day override in the lab's inventory.
LIMITS = {
    "lib-hodges-3f-copier": 3,  # legacy, IPv4
    "eng-me-shop-mfd": 2,  # legacy, IPv6
    "oit-zabbix-server": 2,  # authenticated, a /28: two of its addresses are used
    "eng-perkins-2f-copier": 2,  # legacy; raised by a redeploy
    "med-pathology-scanner": 1,  # legacy; unchanged by the redeploy
}
#: The redeploy's change.
RAISED = {"eng-perkins-2f-copier": 5}
#: Records with the site's default limit (far above what a test sends): the controls.
CONTROL_LEGACY = "fac-bas-controller"
CONTROL_LOGIN = "lib-illiad"
STEADY_SENDER = "med-lab-freezer-monitor"  # keeps sending through the redeploy
#: The steady sender's limit: far above what it can send while a redeploy runs, however
#: slow the machine (it sends at most one message per ``STEADY_INTERVAL`` seconds).
STEADY_LIMIT = 5000
STEADY_INTERVAL = 0.1


def _with_limits(source: Path, target: Path, limits: dict[str, int]) -> Path:
    shutil.copytree(source, target)
    for name, per_day in limits.items():
        (path,) = target.glob(f"devices/*/{name}.yaml")
        text = path.read_text()
        assert "volume_limit:" not in text, path
        path.write_text(
            text + "volume_limit:\n"
            f"  per_day: {per_day}\n"
            "  justification: a limit the lab test chose, to reach it or to stay far below it\n"
        )
    return target


@pytest.fixture(scope="module")
def inventories(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The lab's inventory, and the same with ``RAISED`` applied (the redeploy's)."""
    root = tmp_path_factory.mktemp("volume")
    steady = {STEADY_SENDER: STEADY_LIMIT}
    first = _with_limits(EXAMPLE, root / "inventory", {**LIMITS, **steady})
    second = _with_limits(EXAMPLE, root / "raised", {**LIMITS, **RAISED, **steady})
    return first, second


@pytest.fixture(scope="module")
def lab(inventories: tuple[Path, Path]) -> Iterator[Lab]:
    require_lab_components()
    with Lab.running(inventories[0], TODAY) as built:
        assert built.postfwd is not None, "the compiled folder has no postfwd/postfwd.cf"
        yield built


# -- helpers ------------------------------------------------------------------


def _port_and_login(lab: Lab, client: Client) -> tuple[int, tuple[str, str] | None]:
    if client.legacy:
        return lab.plan.relay_port, None
    assert client.account is not None, client.name
    account = lab.plan.account(client.account)
    return lab.plan.submission_port, (account.login, account.password)


def _messages(lab: Lab, client: Client, count: int, label: str) -> list[Session]:
    """``count`` messages from ``client``: its first sender, its port, its login if it has one."""
    port, login = _port_and_login(lab, client)
    return [
        Session(
            client.source,
            port,
            client.senders[0],
            (OUTSIDE,),
            lab.token(label),
            login,
            starttls=not client.legacy,  # port 25 needs none; 587 insists on it
        )
        for _ in range(count)
    ]


def _from(session: Session, source: Address) -> Session:
    """The same session from another address (a lab address of the same namespace)."""
    return Session(
        source,
        session.port,
        session.mail_from,
        session.rcpt_to,
        session.token,
        session.auth,
        starttls=session.starttls,
    )


def _over_limit(result: Result, who: str, limit: int) -> None:
    """Refused at the end of the message with 450 4.7.1, naming ``who`` and ``limit``."""
    assert result.connected and result.error is None, str(result)
    assert [code for code, _ in result.rcpt] == [250], str(result)
    assert result.data is not None, str(result)
    code, text = result.data
    assert (code, text.split()[0]) == (450, "4.7.1"), str(result)
    assert who in text, str(result)
    assert re.search(rf"(?<![\d.]){limit}(?![\d.])", text), str(result)


def _delivered(lab: Lab, results: Sequence[Result]) -> None:
    """Each session was accepted and reached the sink exactly once."""
    lab.wait_delivered([r.session.token for r in results])
    for result in results:
        assert result.accepted, str(result)
        got = lab.delivered(result.session.token)
        assert [m.mail_from for m in got] == [result.session.mail_from], str(result)


def _not_delivered(lab: Lab, results: Sequence[Result]) -> None:
    lab.settle()
    for result in results:
        assert lab.delivered(result.session.token) == [], str(result)


@dataclass(frozen=True)
class Burst:
    """``limit`` messages accepted, then one refused, from one record."""

    client: Client
    limit: int
    accepted: list[Result]
    refused: Result


def _burst(lab: Lab, name: str, label: str) -> Burst:
    client = lab.plan.client(name)
    limit = LIMITS[name]
    results = lab.send(_messages(lab, client, limit + 1, label))
    return Burst(client, limit, results[:limit], results[limit])


@pytest.fixture(scope="module")
def bursts(lab: Lab) -> dict[str, Burst]:
    """The two legacy devices of item a, each sent one message past its limit."""
    return {
        name: _burst(lab, name, "burst") for name in ("lib-hodges-3f-copier", "eng-me-shop-mfd")
    }


# -- the limits are the records' -------------------------------------------------


def test_the_lab_limits_are_the_records_overrides(lab: Lab, inventories: tuple[Path, Path]) -> None:

    inventory = load(inventories[0], TODAY)
    computed = {
        d.name: limits.record_limit(d, inventory.site.volume_limits).per_day
        for d in inventory.devices
    }
    assert {name: computed[name] for name in LIMITS} == LIMITS
    assert computed[STEADY_SENDER] == STEADY_LIMIT
    # The controls' limits (the site's floor or factor) are far above what they send here.
    assert min(computed[n] for n in (CONTROL_LEGACY, CONTROL_LOGIN, STEADY_SENDER)) >= 20
    ruleset = lab.postfwd.live.read_text() if lab.postfwd else ""
    for name in LIMITS:
        assert name in ruleset, name


# -- a: a legacy device is refused after its limit, others are not ---------------


def test_legacy_device_gets_4xx_after_its_limit(lab: Lab, bursts: dict[str, Burst]) -> None:
    for burst in bursts.values():
        _delivered(lab, burst.accepted)
        _over_limit(burst.refused, burst.client.name, burst.limit)
    _not_delivered(lab, [b.refused for b in bursts.values()])
    # Both address families: the IPv6 device is keyed by Postfix's spelling of its address.
    assert {b.client.source.version for b in bursts.values()} == {4, 6}


def test_other_devices_and_accounts_are_unaffected_by_the_burst(
    lab: Lab, bursts: dict[str, Burst]
) -> None:
    results = lab.send(
        _messages(lab, lab.plan.client(CONTROL_LEGACY), 2, "control")
        + _messages(lab, lab.plan.client(CONTROL_LOGIN), 2, "control")
    )
    _delivered(lab, results)
    # Positive control for the refusal: the burst devices are still refused now.
    again = lab.send([_messages(lab, b.client, 1, "again")[0] for b in bursts.values()])
    for burst, result in zip(bursts.values(), again, strict=True):
        _over_limit(result, burst.client.name, burst.limit)


# -- the attacker's view: the limit opens nothing -----------------------------------


def test_odd_senders_and_logins_against_a_limited_device_are_refused_as_before(
    lab: Lab, bursts: dict[str, Burst]
) -> None:
    hodges = bursts["lib-hodges-3f-copier"].client
    own = hodges.senders[0]
    local, domain = own.split("@")
    port = lab.plan.relay_port

    def session(sender: str, label: str) -> Session:
        return Session(hodges.source, port, sender, (OUTSIDE,), lab.token(label), starttls=False)

    null = ["", '""', "@route:"]
    foreign = [lab.plan.client(CONTROL_LEGACY).senders[0], "ceo@evil.example", f"other@{domain}"]
    # Spellings Postfix reduces to the device's own sender: the maps accept them,
    # the limit (keyed by the client address, not the sender) still refuses.
    equivalent = [own.upper(), f"@evil.example:{own}", f"{own}.", f'"{local}"@{domain}']
    plant = lab.plan.client("fac-plant-ops-copier")  # retired: its login is in no record
    assert plant.account is not None and plant.status.value == "retired"
    unknown_login = lab.plan.account(plant.account)
    results = lab.send(
        [session(s, "null") for s in null]
        + [session(s, "foreign") for s in foreign]
        + [session(s, "equivalent") for s in equivalent]
        + [
            Session(
                hodges.source,
                lab.plan.submission_port,
                own,
                (OUTSIDE,),
                lab.token("nologin"),
                (unknown_login.login, unknown_login.password),
            )
        ]
    )
    refused_at_rcpt = results[: len(null) + len(foreign)]
    for result in refused_at_rcpt:
        assert [c for c, _ in result.rcpt] == [554], str(result)
        assert NOT_REGISTERED in result.rcpt[0][1], str(result)
    for result in results[len(refused_at_rcpt) : -1]:
        _over_limit(result, hodges.name, LIMITS[hodges.name])
    login = results[-1]
    assert login.auth is not None and login.auth[0] == 235, str(login)
    assert [c for c, _ in login.rcpt] == [554], str(login)
    assert "Access denied" in login.rcpt[0][1], str(login)
    _not_delivered(lab, results)


# -- b: an account's limit follows its login ------------------------------------------


def test_an_accounts_limit_follows_its_login_not_its_address(lab: Lab) -> None:
    zabbix = lab.plan.client("oit-zabbix-server")
    assert not zabbix.legacy and zabbix.other_source is not None
    limit = LIMITS[zabbix.name]
    first = lab.send(_messages(lab, zabbix, limit, "login"))
    _delivered(lab, first)
    # The same login from another address of its record: over the login's limit.
    elsewhere = _from(_messages(lab, zabbix, 1, "login-elsewhere")[0], zabbix.other_source)
    # Another login from its own address, and a legacy device: not limited.
    illiad = lab.plan.client(CONTROL_LOGIN)
    others = _messages(lab, illiad, 1, "other-login") + _messages(
        lab, lab.plan.client(CONTROL_LEGACY), 1, "legacy"
    )
    # Another record's login from the limited record's address: refused by the
    # login-address binding (RCPT, 554), never by the limit, never accepted.
    assert illiad.account is not None
    illiad_login = lab.plan.account(illiad.account)
    borrowed = Session(
        zabbix.source,
        lab.plan.submission_port,
        illiad.senders[0],
        (OUTSIDE,),
        lab.token("borrowed"),
        (illiad_login.login, illiad_login.password),
    )
    over, *controls, borrowed_result = lab.send([elsewhere, *others, borrowed])
    assert zabbix.account is not None
    _over_limit(over, zabbix.account, limit)
    assert over.data is not None and zabbix.name in over.data[1], str(over)
    _delivered(lab, controls)
    assert [c for c, _ in borrowed_result.rcpt] == [554], str(borrowed_result)
    assert "login not registered for this client address" in borrowed_result.rcpt[0][1]
    _not_delivered(lab, [over, borrowed_result])
    # And no other spelling of the login gets a message through from its first address:
    # each is refused, at AUTH (this lab's sasldb takes only the exact login) or over the
    # limit. That postfwd counts a login's spellings on one counter is proven against the
    # daemon itself in tests/test_postfwd.py, where the login is not gated by a backend.
    account = lab.plan.account(zabbix.account)
    spellings = [account.login, account.login.upper(), f"{account.user}@{account.realm.upper()}"]
    again = lab.send(
        [
            Session(
                zabbix.source,
                lab.plan.submission_port,
                zabbix.senders[0],
                (OUTSIDE,),
                lab.token("login-again"),
                (login, account.password),
            )
            for login in spellings
        ]
    )
    _over_limit(again[0], zabbix.account, limit)
    for result in again[1:]:
        assert not result.accepted, str(result)
        assert result.auth is not None, str(result)
        if result.auth[0] == 235:  # the backend took the spelling: the limit still holds
            _over_limit(result, zabbix.account, limit)
    _not_delivered(lab, again)


# -- e: the refusal is in the relay's log -------------------------------------------


def test_the_refusal_is_logged_by_postfix_with_the_device(
    lab: Lab, bursts: dict[str, Burst]
) -> None:
    log = lab.relay.log().splitlines()
    for burst in bursts.values():
        refusals = [
            line
            for line in log
            if f"reject: END-OF-MESSAGE from unknown[{burst.client.source}]: 450 4.7.1" in line
        ]
        assert refusals, f"no END-OF-MESSAGE refusal of {burst.client.name} in the maillog"
        first = refusals[0]
        assert burst.client.name in first, first
        assert f"from=<{burst.client.senders[0]}>" in first, first
        assert re.search(rf"(?<![\d.]){burst.limit}(?![\d.])", first.split(": 450 ")[1]), first


def test_ingest_and_query_see_the_refusal(
    lab: Lab, bursts: dict[str, Burst], inventories: tuple[Path, Path], tmp_path: Path, run_cli: Any
) -> None:
    """The relay's log, read by ``activity ingest``: ``query`` shows the 450 as the
    device's last rejection (the log up to that line, so nothing later hides it)."""
    burst = bursts["lib-hodges-3f-copier"]
    log = lab.relay.log().splitlines(keepends=True)
    marker = f"reject: END-OF-MESSAGE from unknown[{burst.client.source}]: 450 4.7.1"
    end = next(i for i, line in enumerate(log) if marker in line)
    maillog = tmp_path / "maillog"
    maillog.write_text("".join(log[: end + 1]))
    store = tmp_path / "activity.sqlite"
    # The lab's log carries the real date; the inventory's "today" is AS_OF.
    day = str(max(TODAY, dt.date.today()))
    inventory = str(inventories[0])
    ingested = run_cli(
        "activity", "ingest", "--inventory", inventory, "--db", str(store), "--as-of", day,
        str(maillog),
    )  # fmt: skip
    assert ingested.code == 0, str(ingested)
    queried = run_cli(
        "query", burst.client.name, "--inventory", inventory, "--db", str(store),
        "--as-of", AS_OF, "--format", "json",
    )  # fmt: skip
    assert queried.code == 0, str(queried)
    (record,) = json.loads(queried.stdout)["matches"]
    rejected = record["activity"]["last_rejected"]
    assert rejected["sender"] == burst.client.senders[0], rejected
    assert rejected["reason"].startswith(f"END-OF-MESSAGE from unknown[{burst.client.source}]: 450")
    assert burst.client.name in rejected["reason"], rejected


# -- c: a limit change deploys without dropping mail ----------------------------------


class SteadySender(threading.Thread):
    """Sends a message every ``STEADY_INTERVAL`` seconds from a device far below its limit."""

    def __init__(self, lab: Lab, client: Client) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.client = client
        self.stop = threading.Event()
        self.sent: list[tuple[float, float, Result]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                start = time.monotonic()
                (result,) = self.lab.send(_messages(self.lab, self.client, 1, "steady"))
                self.sent.append((start, time.monotonic(), result))
                self.stop.wait(STEADY_INTERVAL)
        except BaseException as error:  # reported by the test
            self.error = error


def test_a_limit_change_deploys_without_dropping_mail(
    lab: Lab, inventories: tuple[Path, Path]
) -> None:
    perkins = lab.plan.client("eng-perkins-2f-copier")
    pathology = lab.plan.client("med-pathology-scanner")
    before = {name: _burst(lab, name, "before") for name in (perkins.name, pathology.name)}
    for burst in before.values():
        _delivered(lab, burst.accepted)
        _over_limit(burst.refused, burst.client.name, burst.limit)
    problems_before = lab.relay.log().count("problem talking to server")
    assert lab.postfwd is not None
    daemon = (lab.postfwd.master_pid, lab.postfwd.policy_server())
    assert daemon[1] is not None

    sender = SteadySender(lab, lab.plan.client(STEADY_SENDER))
    sender.start()
    time.sleep(0.5)
    started = time.monotonic()
    lab.redeploy(inventories[1], TODAY)
    finished = time.monotonic()
    time.sleep(0.5)
    sender.stop.set()
    sender.join(timeout=30)
    assert sender.error is None, repr(sender.error)
    during = [r for s, e, r in sender.sent if s < finished and e > started]
    # The sender stayed far below its limit, so a refusal below is the deploy's doing.
    assert len(sender.sent) < STEADY_LIMIT // 2, len(sender.sent)
    assert during, "no message was in flight during the redeploy"
    # Every message the sender sent, before, during and after, was accepted and delivered.
    _delivered(lab, [r for _, _, r in sender.sent])
    # The daemon answered throughout: Postfix never fell back to its default action,
    # and the same master and policy server serve after the reload (no restart).
    assert lab.relay.log().count("problem talking to server") == problems_before
    assert (lab.postfwd.master_pid, lab.postfwd.policy_server()) == daemon

    # The raised limit: postfwd keys a counter by its rule and limit, so a changed
    # limit starts a new count: the device gets its new limit in full.
    raised = RAISED[perkins.name]
    after = lab.send(_messages(lab, perkins, raised + 1, "raised"))
    _delivered(lab, after[:raised])
    _over_limit(after[raised], perkins.name, raised)
    # An unchanged limit keeps its count across the reload (--keep_rates).
    (still,) = lab.send(_messages(lab, pathology, 1, "kept"))
    _over_limit(still, pathology.name, LIMITS[pathology.name])
    _not_delivered(lab, [after[raised], still])


# -- d: the daemon down ------------------------------------------------------------------


def test_mail_keeps_flowing_when_the_daemon_is_down(lab: Lab, bursts: dict[str, Burst]) -> None:
    assert lab.postfwd is not None
    hodges = bursts["lib-hodges-3f-copier"].client
    start = len(lab.relay.log())
    assert lab.postfwd.stop() == []
    try:
        began = time.monotonic()
        results = lab.send(
            _messages(lab, lab.plan.client(CONTROL_LEGACY), 1, "down")
            + _messages(lab, hodges, 1, "down-limited")
            + [
                Session(
                    lab.plan.outsider.campus_v4,
                    lab.plan.submission_port,
                    "probe@evil.example",
                    (OUTSIDE,),
                    lab.token("down-outsider"),
                )
            ]
        )
        elapsed = time.monotonic() - began
    finally:
        lab.postfwd.start()
    # No stall: a refused connection to the daemon costs milliseconds, not the 10 s timeout.
    assert elapsed < 8.0, elapsed
    # Mail keeps flowing, the limited device's too (the documented failure mode) ...
    _delivered(lab, results[:2])
    # ... while the relay policy itself (Postfix maps) is still enforced.
    outsider = results[2]
    assert [c for c, _ in outsider.rcpt] == [554], str(outsider)
    assert "Access denied" in outsider.rcpt[0][1], str(outsider)
    _not_delivered(lab, [outsider])
    warning = f"warning: problem talking to server 127.0.0.1:{lab.plan.volume_port}"
    deadline = time.monotonic() + 10  # postlogd writes a moment after smtpd
    while warning not in lab.relay.log()[start:] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert warning in lab.relay.log()[start:]
    # Restarted, the daemon enforces again; its counts start over (a restart,
    # unlike a reload, keeps nothing: no --save_rates), and it answers every time.
    warned = lab.relay.log().count("problem talking to server")
    limit = LIMITS[hodges.name]
    back = lab.send(_messages(lab, hodges, limit + 1, "back"))
    _delivered(lab, back[:limit])
    _over_limit(back[limit], hodges.name, limit)
    assert lab.relay.log().count("problem talking to server") == warned


# -- the lab checks a ruleset with postfwd before switching ---------------------------------


def test_a_ruleset_postfwd_refuses_is_never_switched_in(lab: Lab, tmp_path: Path) -> None:
    assert lab.postfwd is not None
    live = lab.postfwd.live.read_text()
    bad = tmp_path / "compiled"
    (bad / "postfwd").mkdir(parents=True)
    # A rule without an action: postfwd warns that it ignores it.
    (bad / "postfwd" / "postfwd.cf").write_text(live + "id=broken; client_address==10.9.9.9\n")
    with pytest.raises(LabError, match=r"line \d+\): contains no action and will be ignored"):
        lab.postfwd.install(bad)
    assert lab.postfwd.live.read_text() == live
    # Positive control: the same ruleset without the broken line is taken.
    (bad / "postfwd" / "postfwd.cf").write_text(live)
    lab.postfwd.install(bad)
    assert lab.postfwd.live.read_text() == live


# -- why the deploy reloads Postfix after postfwd ------------------------------------------

#: A policy client inside the relay namespace (argv: port). Each stdin line is
#: "held ADDRESS" (ask on one connection kept open, as smtpd keeps its own) or
#: "fresh ADDRESS" (ask on a new connection); each answer is printed on a line.
_POLICY_CLIENT = """
import socket, sys
port = int(sys.argv[1])
def ask(conn, client):
    conn.sendall(("request=smtpd_access_policy\\nprotocol_state=END-OF-MESSAGE\\n"
        "protocol_name=ESMTP\\nclient_address=" + client + "\\nclient_name=unknown\\n"
        "sender=probe@example.edu\\nrecipient=\\nrecipient_count=1\\nsize=100\\n"
        "sasl_username=\\n\\n").encode())
    data = b""
    while not data.endswith(b"\\n\\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return "closed"
        data += chunk
    return data.decode().strip()
held = socket.create_connection(("127.0.0.1", port), timeout=10)
for line in sys.stdin:
    how, client = line.split()
    if how == "held":
        print(ask(held, client), flush=True)
    else:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as fresh:
                print(ask(fresh, client), flush=True)
        except ConnectionError as error:
            print("no answer: " + type(error).__name__, flush=True)
"""


def test_a_postfwd_reload_reaches_an_open_policy_connection_only_when_it_reopens(
    lab: Lab, tmp_path: Path
) -> None:
    """smtpd keeps its policy connection between messages; the postfwd process at the
    other end answers from the ruleset it had when the connection opened. So a reload
    of postfwd alone is not enough: ``Lab.deploy`` (as the deploy) reloads Postfix
    after it, which ends those smtpd processes and their connections."""
    assert lab.postfwd is not None
    probe = "192.0.2.99"  # TEST-NET-1: in no record
    live = lab.postfwd.live.read_text()
    compiled = tmp_path / "compiled"
    (compiled / "postfwd").mkdir(parents=True)
    ruleset = compiled / "postfwd" / "postfwd.cf"
    rule = f"id=lab-probe; client_address=={probe}; action=450 4.7.1 lab probe rule\n"
    client = subprocess.Popen(
        lab.ns.command(lab.relay_ns, [sys.executable, "-c", _POLICY_CLIENT, str(lab.postfwd.port)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdin is not None and client.stdout is not None

    def ask(how: str) -> str:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(f"{how} {probe}\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    try:
        assert ask("held") == "action=DUNNO"
        ruleset.write_text(rule + live)
        lab.postfwd.install(compiled)
        lab.postfwd.reload()
        deadline = time.monotonic() + 10.0
        # Until the reload is done, a fresh connection is answered by the old ruleset, or
        # (reset or closed by a policy process that is ending) not at all.
        while (fresh := ask("fresh")) in ("action=DUNNO", "closed") or fresh.startswith(
            "no answer: "
        ):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert fresh == "action=450 4.7.1 lab probe rule"  # the new ruleset
        assert ask("held") == "action=DUNNO"  # the old one, on the connection kept open
    finally:
        client.stdin.close()
        client.wait(timeout=15)
        client.stdout.close()
        ruleset.write_text(live)
        lab.postfwd.install(compiled)
        lab.postfwd.reload()


# -- the end: nothing left behind ---------------------------------------------------------


def test_teardown_stops_postfwd(lab: Lab) -> None:
    assert lab.postfwd is not None
    daemons = lab.postfwd_started
    assert daemons
    running = leftovers(lab.run_id, lab.root, lab.relay.started, daemons)
    # The running daemon's master, cache and policy processes (its session).
    assert len([item for item in running if item.startswith("postfwd process ")]) >= 3, running
    lab.close()
    assert leftovers(lab.run_id, lab.root, lab.relay.started, daemons) == []
    assert lab_postfwd.processes_of(daemons) == []
