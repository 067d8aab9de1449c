"""A relay lab for the deploy tests: private Postfix relays, each in its own namespace.

Each relay "host" is a network namespace the test creates, a Postfix config folder of its
own (written from scratch, never /etc/postfix), and a Postfix master started inside the
namespace. Postfix listens on the relay port (25) and the submission port (587, Cyrus SASL
from a sasldb the lab made, STARTTLS with a self-signed certificate) on every address of
the namespace, and on 127.0.0.1:2525 with XCLIENT from loopback, so a test can present any
client address without a packet leaving the namespace. Beside each relay is a campus
namespace joined to it by a veth pair: it holds campus client addresses (a legacy device,
a revoked one, an unknown campus host) and reaches the relay's address, so its traffic
enters the relay through the firewall, never through loopback. nft rules are only ever
loaded inside the relay namespaces (by the playbook, through ``ip netns exec NS nft``).

Run as a script inside a namespace it performs one SMTP session and prints the reply as
JSON (``xclient PORT CLIENT SENDER RECIPIENT``; ``smtp HOST PORT SOURCE SENDER RECIPIENT
[LOGIN PASSWORD]`` from a campus address); the standard library is all it needs.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
PLAYBOOKS = ROOT / "playbooks"
XCLIENT_PORT = 2525
RELAY_PORT = 25
SUBMISSION_PORT = 587
RELAY_ADDRESS = "10.1.0.25"
RECIPIENT = "probe@example.net"
#: The health probe's login: an account of the example inventory, created in every sasldb.
PROBE_LOGIN = "svc-lib-illiad@example.edu"
PROBE_PASSWORD = "lab-probe-password"
#: Seconds a campus client waits for the relay to answer its SYN: over the lab's veth link
#: the kernel completes a handshake in microseconds, so a longer wait means dropped.
DROP_WAIT = 1.0

#: master.cf with the submission service (port 587, loopback only through inet_interfaces);
#: the same text as tests.postfix_instance.MASTER_CF, copied because this file also runs
#: as a script inside the relays' namespaces, where the tests package is not importable.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
submission inet n       -       n       -       -       smtpd
"""


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if check and done.returncode:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done


@dataclass
class Relay:
    """One lab relay: a namespace, its campus namespace, a Postfix config folder, its master."""

    name: str
    namespace: str
    campus: str
    root: Path
    started: bool = False
    made: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "conf"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    @property
    def nft(self) -> str:
        return f"ip netns exec {self.namespace} nft"

    def host_vars(self, python: str) -> dict[str, object]:
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "relaygate_postfix_config": str(self.config),
            "relaygate_nft_cmd": self.nft,
            "relaygate_probe_exec": ["ip", "netns", "exec", self.campus],
            "relaygate_probe_python": python,
            "relaygate_probe_address": RELAY_ADDRESS,
            "relaygate_probe_recipient": RECIPIENT,
            "relaygate_probe_password": PROBE_PASSWORD,
            "relaygate_lock_timeout": 30,
            "relaygate_probe_timeout": 1,
            # postfwd (volume limits) runs in the relay's namespace, where its Postfix is; the
            # host already has the package, and a lab relay needs only a few servers.
            "relaygate_postfwd_package": False,
            "relaygate_postfwd_exec": ["ip", "netns", "exec", self.namespace],
            "relaygate_postfwd_run_dir": str(self.root / "postfwd"),
            # No systemd in the lab: no boot-time unit (tests render and verify it alone).
            "relaygate_postfwd_systemd": False,
            "relaygate_postfwd_args": [
                "--min_servers=1",
                "--min_spare_servers=1",
                "--max_spare_servers=2",
            ],
        }

    def start(self, campus_addresses: list[str]) -> None:
        """Create both namespaces, the link, the Postfix instance; start Postfix."""
        for namespace in (self.namespace, self.campus):
            run(["ip", "netns", "add", namespace])
            self.made.append(namespace)
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        run(
            [
                "ip",
                "-n",
                self.namespace,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                self.campus,
            ]
        )
        run(["ip", "-n", self.namespace, "addr", "add", f"{RELAY_ADDRESS}/32", "dev", "eth0"])
        run(["ip", "-n", self.namespace, "link", "set", "eth0", "up"])
        run(["ip", "-n", self.campus, "link", "set", "eth0", "up"])
        run(["ip", "-n", self.campus, "route", "add", f"{RELAY_ADDRESS}/32", "dev", "eth0"])
        self.add_campus_addresses(campus_addresses)
        for folder in ("queue", "data", "conf/sasl", "tls"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", user="postfix")
        (self.config / "master.cf").write_text(
            MASTER_CF
            + "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
            + "smtp      inet  n       -       n       -       -       smtpd\n"
            + f"127.0.0.1:{XCLIENT_PORT} inet n - n - - smtpd\n"
            "  -o smtpd_authorized_xclient_hosts=127.0.0.0/8\n"
        )
        self.make_certificate()
        sasl = self.config / "sasl"
        (self.config / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.root / 'queue'}\n"
            f"data_directory = {self.root / 'data'}\n"
            "inet_interfaces = all\n"
            "inet_protocols = all\n"
            "mydestination =\n"
            "alias_maps =\n"
            "alias_database =\n"
            "mynetworks = 127.0.0.0/8\n"
            "smtpd_peername_lookup = no\n"
            "smtp_dns_support_level = disabled\n"
            "smtpd_sasl_type = cyrus\n"
            f"cyrus_sasl_config_path = {sasl}\n"
            "smtpd_sasl_path = smtpd\n"
            "smtpd_sasl_security_options = noanonymous\n"
            "smtpd_tls_security_level = may\n"
            f"smtpd_tls_cert_file = {self.root / 'tls' / 'relay.pem'}\n"
            f"smtpd_tls_key_file = {self.root / 'tls' / 'relay.key'}\n"
            # Postfix writes its log only under maillog_file_prefixes; this machine has no syslog.
            f"maillog_file_prefixes = {self.root}\n"
            f"maillog_file = {self.maillog}\n"
        )
        sasldb = sasl / "sasldb2"
        (sasl / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
            f"sasldb_path: {sasldb}\nmech_list: PLAIN LOGIN\n"
        )
        user, _, realm = PROBE_LOGIN.rpartition("@")
        done = subprocess.run(
            ["saslpasswd2", "-p", "-f", str(sasldb), "-c", "-u", realm, user],
            input=PROBE_PASSWORD,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        shutil.chown(sasldb, group="postfix")
        sasldb.chmod(0o640)
        run(["postfix", "-c", str(self.config), "check"])
        self.in_namespace("postfix", "-c", str(self.config), "start")
        self.started = True
        wait_for_banner(self, XCLIENT_PORT)

    def make_certificate(self) -> None:
        tls = self.root / "tls"
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                f"/CN={self.name}.lab.invalid",
                "-keyout",
                str(tls / "relay.key"),
                "-out",
                str(tls / "relay.pem"),
            ]
        )
        (tls / "relay.key").chmod(0o600)

    def add_campus_addresses(self, addresses: list[str]) -> None:
        """Give the campus namespace these client addresses, routed to and from the relay."""
        have = run(["ip", "-n", self.campus, "-o", "addr", "show", "dev", "eth0"]).stdout
        for address in sorted(set(addresses)):
            if f" {address}/32 " in have:
                continue
            run(["ip", "-n", self.campus, "addr", "add", f"{address}/32", "dev", "eth0"])
            run(["ip", "-n", self.namespace, "route", "add", f"{address}/32", "dev", "eth0"])

    def stop(self) -> None:
        if self.started:
            run(["postfix", "-c", str(self.config), "stop"], check=False)
            self.started = False
        # Imported here: this file also runs as a script inside the namespaces.
        from tests.lab.netns import delete_namespace  # noqa: PLC0415 - see above

        problems = [p for namespace in reversed(self.made) for p in delete_namespace(namespace)]
        self.made.clear()
        assert not problems, problems

    def in_namespace(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.namespace, *argv])

    def xclient(self, client: str, sender: str, port: int = XCLIENT_PORT) -> tuple[int, str]:
        """The relay's answer to one message from ``client`` with envelope ``sender``."""
        done = self.in_namespace(
            sys.executable, str(HERE), "xclient", str(port), client, sender, RECIPIENT
        )
        code, text = json.loads(done.stdout)
        return int(code), str(text)

    def outside(self, source: str, port: int, sender: str, login: bool = False) -> tuple[int, str]:
        """One session from the campus namespace through the firewall (0: no connection)."""
        argv = [
            sys.executable,
            str(HERE),
            "smtp",
            RELAY_ADDRESS,
            str(port),
            source,
            sender,
            RECIPIENT,
        ]
        if login:
            argv += [PROBE_LOGIN, PROBE_PASSWORD]
        done = run(["ip", "netns", "exec", self.campus, *argv])
        code, text = json.loads(done.stdout)
        return int(code), str(text)

    def nft_listing(self) -> str:
        done = run(["ip", "netns", "exec", self.namespace, "nft", "list", "ruleset"])
        return done.stdout

    def nft_set(self, name: str) -> set[str]:
        """The elements of one set of table inet relaygate (addresses, no prefix length)."""
        done = self.in_namespace("nft", "-j", "list", "set", "inet", "relaygate", name)
        elements: set[str] = set()
        for item in json.loads(done.stdout)["nftables"]:
            for element in item.get("set", {}).get("elem", []):
                value = (
                    element.get("elem", {}).get("val", element)
                    if isinstance(element, dict)
                    else element
                )
                if isinstance(value, dict) and "prefix" in value:
                    value = value["prefix"]["addr"]
                elements.add(str(value))
        return elements

    def postconf(self, name: str) -> str:
        return run(["postconf", "-c", str(self.config), "-h", name]).stdout.strip()

    def live(self) -> str:
        """The generation main.cf serves the maps from."""
        found = set(
            re.findall(
                r"relaygate\.generations/([0-9a-f-]+)/", (self.config / "main.cf").read_text()
            )
        )
        assert len(found) == 1, found
        return found.pop()

    def state_hash(self) -> str:
        """A hash of every file under the config folder (symlinks as targets) and of nft."""
        digest = hashlib.sha256()
        for path in sorted(self.config.rglob("*")):
            if path.name == "relaygate.lock":
                continue  # holds the name of the last run that took it
            digest.update(str(path.relative_to(self.config)).encode())
            if path.is_symlink():
                digest.update(b"->" + os.readlink(path).encode())
            elif path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(self.nft_listing().encode())
        return digest.hexdigest()

    def log_problems(self) -> list[str]:
        """Warnings, errors and fatal lines of the relay's mail log."""
        if not self.maillog.exists():
            return []
        return [
            line
            for line in self.maillog.read_text(errors="replace").splitlines()
            if re.search(r"(warning|error|fatal|panic):", line)
        ]


def wait_for_banner(relay: Relay, port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        done = run(
            [
                "ip",
                "netns",
                "exec",
                relay.namespace,
                sys.executable,
                str(HERE),
                "banner",
                str(port),
            ],
            check=False,
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{relay.name}: no SMTP banner on port {port}: {done.stderr}")
        time.sleep(0.2)


@dataclass
class Lab:
    """Three (or more) relays and the inventory that describes them to Ansible."""

    root: Path
    relays: list[Relay] = field(default_factory=list)
    deployed: str | None = None  # which compiled folder the relays serve now (test bookkeeping)
    extra: dict[str, object] = field(default_factory=dict)

    def inventory(self, relays: list[Relay] | None = None, **extra: object) -> Path:
        python = shutil.which("python3") or sys.executable
        hosts = {relay.name: relay.host_vars(python) for relay in relays or self.relays}
        relaygate = str(Path(sys.executable).parent / "relaygate")
        document = {
            "all": {
                "vars": {
                    "relaygate_release_cmd": [relaygate],
                    **self.extra,
                    **extra,
                },
                "children": {"relays": {"hosts": hosts}},
            }
        }
        path = self.root / f"inventory-{uuid.uuid4().hex[:8]}.json"
        # JSON is YAML: Ansible's yaml inventory plugin reads it.
        path.write_text(json.dumps(document, indent=2))
        return path

    def stop(self) -> None:
        for relay in self.relays:
            relay.stop()


def make_lab(root: Path, campus_addresses: list[str], count: int = 3) -> Lab:
    lab = Lab(root)
    tag = uuid.uuid4().hex[:6]
    try:
        for index in range(count):
            name = f"relay-{chr(ord('a') + index)}"
            relay = Relay(name, f"rgdeploy-{tag}-{index}", f"rgcampus-{tag}-{index}", root / name)
            lab.relays.append(relay)
            relay.start(campus_addresses)
    except BaseException:
        lab.stop()
        raise
    return lab


# --- running ansible-playbook ------------------------------------------------------------

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


@dataclass(frozen=True)
class PlaybookRun:
    code: int
    stdout: str
    stderr: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP: host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}."""
        result: dict[str, dict[str, int]] = {}
        recap = self.stdout.rpartition("PLAY RECAP")[2]
        for line in recap.splitlines():
            match = RECAP_LINE.match(line.strip())
            if match:
                counts = dict(part.split("=") for part in match["counts"].split())
                result[match["host"]] = {key: int(value) for key, value in counts.items()}
        return result

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def ansible_env(work: Path) -> dict[str, str]:
    """ansible-playbook's environment: every temp, cache and config path inside ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(
        {
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_HOME": str(work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(work / "local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(work / "remote-tmp"),
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(work / "facts"),
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_NOCOLOR": "true",
            "ANSIBLE_FORCE_COLOR": "false",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "false",
            "ANSIBLE_HOST_KEY_CHECKING": "false",
            "ANSIBLE_PIPELINING": "true",
            "ANSIBLE_DEPRECATION_WARNINGS": "false",
            "TMPDIR": str(work / "tmp"),
        }
    )
    (work / "tmp").mkdir(exist_ok=True)
    return env


def ansible_bin(tool: str) -> str:
    beside = Path(sys.executable).parent / tool
    return str(beside) if beside.exists() else (shutil.which(tool) or tool)


#: The shipped module's fault seam (it does nothing) ...
FAULT_SEAM = re.compile(
    r"    def fault\(self, step: str\) -> None:\n        \"\"\".*?\"\"\"\n", re.S
)
#: ... and what the tests' copy of the module does there, as the environment says:
#: RELAYGATE_TEST_KILL_AT=STEP dies by SIGKILL after STEP, like a controller killed there;
#: RELAYGATE_TEST_PAUSE_AT=STEP:FILE holds the relay (and its lock) there until FILE exists.
FAULT_HOOK = """\
    def fault(self, step: str) -> None:
        if os.environ.get("RELAYGATE_TEST_KILL_AT") == step:
            os.kill(os.getpid(), signal.SIGKILL)
        where, _, until = os.environ.get("RELAYGATE_TEST_PAUSE_AT", "").partition(":")
        if where == step:
            deadline = time.monotonic() + 120
            while not os.path.exists(until) and time.monotonic() < deadline:
                time.sleep(0.05)
"""
FAULT_VARIABLES = ("RELAYGATE_TEST_KILL_AT", "RELAYGATE_TEST_PAUSE_AT")


def fault_playbooks() -> Path:
    """A copy of playbooks/ whose module obeys ``FAULT_VARIABLES`` (made once per process).

    The module shipped reads no test variable; only this copy, which the fault tests
    run, stops at its ``fault`` points.
    """
    target = Path(tempfile.gettempdir()) / f"relaygate-fault-playbooks-{os.getpid()}"
    if not target.exists():
        building = target.with_name(f"{target.name}.{uuid.uuid4().hex}")
        shutil.copytree(PLAYBOOKS, building)
        module = building / "roles" / "relaygate" / "library" / "relaygate_relay.py"
        text, count = FAULT_SEAM.subn(FAULT_HOOK, module.read_text())
        assert count == 1, f"{module}: the fault seam was not found once ({count})"
        module.write_text(text)
        building.rename(target)
        atexit.register(shutil.rmtree, target, True)
    return target


def playbook_argv(
    name: str, inventory: Path | None, *args: str, env: dict[str, str] | None = None
) -> list[str]:
    """ansible-playbook's command line; with a fault variable in ``env``, the fault copy."""
    faults = any(key in (env or {}) for key in FAULT_VARIABLES)
    playbooks = fault_playbooks() if faults else PLAYBOOKS
    argv = [ansible_bin("ansible-playbook"), str(playbooks / name)]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    return [*argv, *args]


def playbook(
    name: str,
    inventory: Path | None,
    work: Path,
    *args: str,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> PlaybookRun:
    done = subprocess.run(
        playbook_argv(name, inventory, *args, env=env),
        capture_output=True,
        text=True,
        check=False,
        env={**ansible_env(work), **(env or {})},
        cwd=work,
        timeout=timeout,
    )
    return PlaybookRun(done.returncode, done.stdout, done.stderr)


def start_playbook(
    name: str, inventory: Path | None, work: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ansible-playbook without waiting (concurrent runs); ``finish`` collects it."""
    return subprocess.Popen(
        playbook_argv(name, inventory, *args, env=env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ansible_env(work), **(env or {})},
        cwd=work,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> PlaybookRun:
    stdout, stderr = process.communicate(timeout=timeout)
    return PlaybookRun(process.returncode, stdout, stderr)


# --- the in-namespace SMTP clients ------------------------------------------------------


def _xclient(port: int, client: str, sender: str, recipient: str) -> tuple[int, str]:
    address = f"IPV6:{client}" if ":" in client else client
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as session:
        session.ehlo("lab-test")
        code, text = session.docmd("XCLIENT", f"ADDR={address} NAME=[UNAVAILABLE]")
        if code != 220:
            return code, text.decode()
        session.ehlo_resp = None
        session.does_esmtp = False
        session.ehlo("lab-test")
        code, text = session.docmd("MAIL", f"FROM:<{sender}>")
        if code == 250:
            code, text = session.docmd("RCPT", f"TO:<{recipient}>")
        session.docmd("RSET")
    return code, text.decode()


def _smtp(
    host: str, port: int, source: str, sender: str, recipient: str, login: list[str]
) -> tuple[int, str]:
    """One session from ``source``: (0, reason) when the connection is dropped or refused."""
    try:
        session = smtplib.SMTP(timeout=DROP_WAIT, source_address=(source, 0))
        code, text = session.connect(host, port)
    except OSError as error:
        return 0, f"no connection: {error}"
    session.sock.settimeout(10)
    session._host = host  # for STARTTLS (connect() does not set it)
    if code != 220:
        return code, text.decode()
    session.ehlo("lab-test")
    if login:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        session.starttls(context=context)
        session.ehlo("lab-test")
        session.login(login[0], login[1])
    code, text = session.docmd("MAIL", f"FROM:<{sender}>")
    if code == 250:
        code, text = session.docmd("RCPT", f"TO:<{recipient}>")
    session.docmd("RSET")
    session.quit()
    return code, text.decode()


def _main(argv: list[str]) -> int:
    if argv[0] == "banner":
        with smtplib.SMTP("127.0.0.1", int(argv[1]), timeout=5) as session:
            session.noop()
        return 0
    if argv[0] == "xclient":
        print(json.dumps(_xclient(int(argv[1]), argv[2], argv[3], argv[4])))
        return 0
    if argv[0] == "smtp":
        print(json.dumps(_smtp(argv[1], int(argv[2]), argv[3], argv[4], argv[5], argv[6:8])))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
