"""A relay lab for the deploy tests: private Postfix instances, each in its own namespace.

Each relay "host" is a network namespace the test creates, a Postfix config folder of its
own (written from scratch, never /etc/postfix), and a Postfix master started inside the
namespace, listening on 127.0.0.1:RELAY_PORT there. The lab's relay port allows XCLIENT
from loopback, so the tests can present any client address without a packet leaving the
namespace. nft rules are only ever loaded inside these namespaces (by the playbook, through
``ip netns exec NS nft``).

Run as a script inside a namespace (``ip netns exec NS python3 deploy_support.py xclient
PORT CLIENT SENDER RECIPIENT``) it performs one XCLIENT session and prints the RCPT reply
(or the MAIL reply when MAIL is refused) as JSON; the standard library is all it needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
PLAYBOOKS = ROOT / "playbooks"
RELAY_PORT = 2525
PROBE_PORT = 10025
SUBMISSION_PORT = 587
RECIPIENT = "probe@example.net"

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
    """One lab relay: a namespace, a Postfix config folder and its running master."""

    name: str
    namespace: str
    root: Path
    started: bool = False
    namespace_made: bool = False

    @property
    def config(self) -> Path:
        return self.root / "conf"

    @property
    def nft(self) -> str:
        return f"ip netns exec {self.namespace} nft"

    def host_vars(self, python: str) -> dict[str, object]:
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "relaygate_python": python,
            "relaygate_postfix_config": str(self.config),
            "relaygate_nft_cmd": self.nft,
            "relaygate_probe_exec": ["ip", "netns", "exec", self.namespace],
            "relaygate_relay_listen": [f"127.0.0.1:{RELAY_PORT}", f"127.0.0.1:{SUBMISSION_PORT}"],
            "relaygate_probe_listen": f"127.0.0.1:{PROBE_PORT}",
            "relaygate_probe_recipient": RECIPIENT,
        }

    def start(self) -> None:
        """Create the namespace and the Postfix instance, then start Postfix inside it."""
        run(["ip", "netns", "add", self.namespace])
        self.namespace_made = True
        run(["ip", "netns", "exec", self.namespace, "ip", "link", "set", "lo", "up"])
        (self.root / "queue").mkdir(parents=True)
        (self.root / "data").mkdir()
        self.config.mkdir()
        shutil.chown(self.root / "data", user="postfix")
        # The lab's relay port allows XCLIENT from loopback so the tests can present
        # device addresses; the role's own probe service is separate (PROBE_PORT).
        (self.config / "master.cf").write_text(
            MASTER_CF + f"127.0.0.1:{RELAY_PORT} inet n - n - - smtpd\n"
            "  -o smtpd_authorized_xclient_hosts=127.0.0.0/8\n"
        )
        (self.config / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.root / 'queue'}\n"
            f"data_directory = {self.root / 'data'}\n"
            "inet_interfaces = loopback-only\n"
            "mydestination =\n"
            "smtpd_peername_lookup = no\n"
            # Postfix writes its log only under maillog_file_prefixes; this machine has no syslog.
            f"maillog_file_prefixes = {self.root}\n"
            f"maillog_file = {self.root / 'maillog'}\n"
        )
        run(["postfix", "-c", str(self.config), "check"])
        run(["ip", "netns", "exec", self.namespace, "postfix", "-c", str(self.config), "start"])
        self.started = True
        wait_for_banner(self, RELAY_PORT)

    def stop(self) -> None:
        if self.started:
            run(["postfix", "-c", str(self.config), "stop"], check=False)
            self.started = False
        if self.namespace_made:
            run(["ip", "netns", "del", self.namespace], check=False)
            self.namespace_made = False

    def in_namespace(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.namespace, *argv])

    def xclient(self, client: str, sender: str, port: int = RELAY_PORT) -> tuple[int, str]:
        """The relay's answer to one message from ``client`` with envelope ``sender``."""
        done = self.in_namespace(
            sys.executable, str(HERE), "xclient", str(port), client, sender, RECIPIENT
        )
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

    def state_hash(self) -> str:
        """A hash of every file under the config folder (symlinks as targets) and of nft."""
        digest = hashlib.sha256()
        for path in sorted(self.config.rglob("*")):
            digest.update(str(path.relative_to(self.config)).encode())
            if path.is_symlink():
                digest.update(b"->" + os.readlink(path).encode())
            elif path.is_file():
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(self.nft_listing().encode())
        return digest.hexdigest()


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
    """Two (or more) relays and the inventory that describes them to Ansible."""

    root: Path
    relays: list[Relay] = field(default_factory=list)
    deployed: str | None = None  # which compiled folder the relays serve now (test bookkeeping)

    def inventory(self) -> Path:
        python = shutil.which("python3") or sys.executable
        hosts = {relay.name: relay.host_vars(python) for relay in self.relays}
        document = {"all": {"children": {"relays": {"hosts": hosts}}}}
        path = self.root / "inventory.json"
        # JSON is YAML: Ansible's yaml inventory plugin reads it.
        path.write_text(json.dumps(document, indent=2))
        return path

    def stop(self) -> None:
        for relay in self.relays:
            relay.stop()


def make_lab(root: Path, count: int = 2) -> Lab:
    lab = Lab(root)
    tag = uuid.uuid4().hex[:6]
    try:
        for index in range(count):
            name = f"relay-{chr(ord('a') + index)}"
            relay = Relay(name, f"rgdeploy-{tag}-{index}", root / name)
            lab.relays.append(relay)
            relay.start()
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


def playbook(
    name: str, inventory: Path | None, work: Path, *args: str, timeout: float = 300
) -> PlaybookRun:
    argv = [ansible_bin("ansible-playbook"), str(PLAYBOOKS / name)]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    done = subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        check=False,
        env=ansible_env(work),
        cwd=work,
        timeout=timeout,
    )
    return PlaybookRun(done.returncode, done.stdout, done.stderr)


# --- the in-namespace SMTP client ---------------------------------------------------------


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


def _main(argv: list[str]) -> int:
    if argv[0] == "banner":
        with smtplib.SMTP("127.0.0.1", int(argv[1]), timeout=5) as session:
            session.noop()
        return 0
    if argv[0] == "xclient":
        print(json.dumps(_xclient(int(argv[1]), argv[2], argv[3], argv[4])))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
