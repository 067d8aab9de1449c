"""A private Postfix relay inside the lab's relay namespace, deployed like production.

Input: a lab folder, the relay namespace, the site's ports and relay name, the
SASL accounts to create, and a folder of compiled artifacts
(``relaygate compile --out``). Output: a running Postfix (``postfix -c CONF``)
that listens on the relay port (no AUTH) and the submission port (STARTTLS
with a throwaway certificate, then Cyrus SASL PLAIN/LOGIN from a sasldb the
lab made), the services named as master.cf.fragment names them, relays everything it accepts to a
sink on 127.0.0.1 in the same namespace, and logs to a file in the lab folder.

Invariants:

- Nothing touches the host's /etc/postfix: main.cf and master.cf are written
  from scratch, every Postfix command gets ``-c CONF``, and every Postfix and
  nft command runs through ``Namespaces.run`` in the lab's own relay namespace.
- The compiled policy is applied only by ``deploy``, the way the deploy does
  it: maps are built beside the live ones and renamed into place, then the
  fragment is applied with ``postconf -e`` and classes it no longer defines
  are removed (``postconf -X``), the master.cf fragment with ``postconf -P``,
  then Postfix reloads, then the nft ruleset is
  loaded, and only then are map files nothing refers to deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from relaygate.render.postfix import service_name
from relaygate.render.postfix.effective import stale_parameters
from tests.lab.netns import LabError, Namespaces, namespace_pids
from tests.postfix_instance import BASE_MASTER_CF as MASTER_CF
from tests.postfix_instance import TLSMGR, self_signed_certificate

MAPS = "relaygate"
NFT_TABLE = ("inet", "relaygate")
SINK_PORT = 2525


@dataclass(frozen=True)
class Account:
    """A SASL login: ``user@realm``, as devices present it and as the maps name it."""

    login: str
    password: str

    @property
    def user(self) -> str:
        return self.login.rpartition("@")[0]

    @property
    def realm(self) -> str:
        return self.login.rpartition("@")[2]


@dataclass(frozen=True)
class QueuedMessage:
    queue_id: str
    queue_name: str
    sender: str
    reason: str


class Relay:
    """One Postfix instance in the relay namespace; every command goes through ``ns``."""

    def __init__(
        self,
        ns: Namespaces,
        namespace: str,
        root: Path,
        *,
        hostname: str,
        relay_port: int,
        submission_port: int,
    ) -> None:
        ns.own(namespace)
        self.ns = ns
        self.namespace = namespace
        self.root = root
        self.config = root / "conf"
        self.queue = root / "queue"
        self.data = root / "data"
        # Debian's Postfix (patch 07_sasl_config) reads smtpd.conf from
        # ${config_directory}/sasl whatever cyrus_sasl_config_path says
        # (checked with strace on 3.7.11); keep both pointing at one folder.
        self.sasl = self.config / "sasl"
        self.maillog = root / "log" / "maillog"
        self.hostname = hostname
        self.relay_port = relay_port
        self.submission_port = submission_port
        self.ruleset: Path | None = None
        self.master_pid: int | None = None
        #: Every master this relay started, for the leftover check after teardown.
        self.started: list[int] = []
        self._stages = 0

    # -- building ---------------------------------------------------------

    def create(self, accounts: Iterable[Account]) -> None:
        """Write the config, queue, data and SASL folders; create the sasldb."""
        for folder in (self.config, self.sasl, self.queue, self.maillog.parent):
            folder.mkdir(parents=True)
        self.data.mkdir()
        shutil.chown(self.data, user="postfix")
        # The services are named as master.cf.fragment names them (after the
        # site's ports); the deploy applies the fragment's -o settings to them.
        self.config.joinpath("master.cf").write_text(
            MASTER_CF
            + TLSMGR
            + f"{service_name(self.relay_port)} inet n - n - - smtpd\n"
            + f"{service_name(self.submission_port)} inet n - n - - smtpd\n"
            + "  -o syslog_name=postfix/submission\n"
        )
        key, cert = self_signed_certificate(self.config)
        self.config.joinpath("main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.queue}\n"
            f"data_directory = {self.data}\n"
            f"myhostname = {self.hostname}\n"
            "inet_interfaces = all\n"
            "inet_protocols = all\n"
            # Everything accepted is relayed, and only to the sink: there is no
            # local delivery and no DNS (the namespace has no resolver).
            "mydestination =\n"
            "relay_domains =\n"
            "local_recipient_maps =\n"
            "alias_maps =\n"
            "alias_database =\n"
            f"relayhost = [127.0.0.1]:{SINK_PORT}\n"
            "smtp_dns_support_level = disabled\n"
            # No reverse lookup: the namespace has no resolver, and a lookup
            # that waits for a timeout would slow every session.
            "smtpd_peername_lookup = no\n"
            # Before the first deploy mynetworks is the subnet default (the
            # lab's bridges); main.cf.fragment pins it to loopback.
            "smtpd_sasl_type = cyrus\n"
            f"cyrus_sasl_config_path = {self.sasl}\n"
            "smtpd_sasl_path = smtpd\n"
            "smtpd_sasl_security_options = noanonymous\n"
            # The site's TLS: STARTTLS offered everywhere; the submission
            # service requires it and allows AUTH only after it (master.cf.fragment).
            "smtpd_tls_security_level = may\n"
            f"smtpd_tls_cert_file = {cert}\n"
            f"smtpd_tls_key_file = {key}\n"
            f"maillog_file = {self.maillog}\n"
            f"maillog_file_prefixes = {self.root}\n"
            # A deferred message is retried by ``postqueue -f``, never by a
            # timer that could fire in the middle of a scenario.
            "minimal_backoff_time = 3600s\n"
            "maximal_backoff_time = 3600s\n"
        )
        sasldb = self.sasl / "sasldb2"
        self.sasl.joinpath("smtpd.conf").write_text(
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            f"sasldb_path: {sasldb}\n"
            "mech_list: PLAIN LOGIN\n"
        )
        for account in accounts:
            self.ns.run(
                self.namespace,
                ["saslpasswd2", "-p", "-f", str(sasldb), "-c", "-u", account.realm, account.user],
                stdin=account.password,
            )
        if sasldb.exists():
            # smtpd runs as postfix and reads the sasldb itself.
            shutil.chown(sasldb, group="postfix")
            sasldb.chmod(0o640)

    # -- commands ---------------------------------------------------------

    def postfix(self, *args: str, check: bool = True) -> str:
        done = self.ns.run(self.namespace, ["postfix", "-c", str(self.config), *args], check=check)
        return done.stdout + done.stderr

    def postconf(self, *args: str) -> str:
        return self.ns.run(self.namespace, ["postconf", "-c", str(self.config), *args]).stdout

    def postmap(self, *args: str) -> str:
        return self.ns.run(self.namespace, ["postmap", "-c", str(self.config), *args]).stdout

    def nft(self, *args: str, check: bool = True) -> str:
        done = self.ns.run(self.namespace, ["nft", *args], check=check)
        return done.stdout + done.stderr

    def check(self) -> str:
        """`postfix check` output; anything at all is a problem."""
        done = self.ns.run(
            self.namespace, ["postfix", "-c", str(self.config), "check"], check=False
        )
        text = (done.stdout + done.stderr).strip()
        return f"exit {done.returncode}: {text}" if done.returncode or text else ""

    def start(self) -> None:
        self.postfix("start")
        self.master_pid = self._read_master_pid()
        self.started.append(self.master_pid)

    def _read_master_pid(self) -> int:
        pid_file = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            text = pid_file.read_text().strip() if pid_file.exists() else ""
            if text.isdigit():
                return int(text)
            time.sleep(0.05)
        raise LabError(f"postfix master wrote no pid to {pid_file}\n{self.log()}")

    def stop(self) -> list[str]:
        """Stop Postfix and wait until its master is gone; the problems seen."""
        if self.master_pid is None:
            return []
        done = self.ns.run(self.namespace, ["postfix", "-c", str(self.config), "stop"], check=False)
        deadline = time.monotonic() + 10.0
        while _alive(self.master_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        problems = []
        if done.returncode != 0:
            problems.append(f"postfix stop exited {done.returncode}: {done.stderr.strip()}")
        if _alive(self.master_pid):
            problems.append(f"postfix master {self.master_pid} still runs after stop")
        else:
            self.master_pid = None
        return problems

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    # -- the deploy -------------------------------------------------------

    def deploy(self, compiled: Path, *, reload: bool = True) -> None:
        """Apply compiled artifacts the way the deploy does it (see the module docstring)."""
        source = compiled / "postfix"
        live = self.config / MAPS
        self._stages += 1
        stage = self.config / f".{MAPS}.stage{self._stages}"
        shutil.copytree(source, stage)
        # The whole folder is copied (as documented); lmdb maps are built from
        # every source except the cidr tables (read as text) and the fragment
        # (applied with postconf, kept beside the maps for reference).
        built: set[Path] = set()
        for path in sorted(stage.rglob("*")):
            relative = path.relative_to(stage)
            if path.is_dir():
                continue
            built.add(relative)
            if not path.name.endswith((".cidr", ".fragment")):
                self.postmap(f"lmdb:{path}")
                built.add(relative.with_name(relative.name + ".lmdb"))
        # Rename into place: each map switches in one step, and a class the
        # new fragment names exists before the fragment is applied.
        for relative in sorted(built):
            target = live / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / relative, target)
        shutil.rmtree(stage)

        fragment = [
            line
            for line in (source / "main.cf.fragment").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        for line in fragment:
            self.postconf("-e", line)
        # Classes the new fragment no longer defines would stay in main.cf as
        # unused parameters (and warnings): remove them.
        # (read from main.cf itself: ``postconf -n`` leaves out unused parameters)
        stale = stale_parameters(
            {"postfix/main.cf.fragment": (source / "main.cf.fragment").read_text()},
            self.config.joinpath("main.cf").read_text(),
        )
        if stale:
            self.postconf("-X", *stale)
        for line in (source / "master.cf.fragment").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                self.postconf("-P", line)
        if reload:
            self.reload()
        self.load_firewall(compiled / "nftables" / "relay.nft")
        for path in sorted(live.rglob("*"), reverse=True):
            relative = path.relative_to(live)
            if path.is_file() and relative not in built:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def reload(self) -> None:
        """`postfix reload`, then wait until no daemon of the old configuration serves."""
        before = self._daemons()
        self.postfix("reload")
        # After reload, daemons of the old generation finish their current
        # client and exit; one that is idle may still accept the next
        # connection for a moment. Wait until they are gone, so the next
        # session is answered by the new policy.
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if not (before & self._daemons()):
                return
            time.sleep(0.05)
        raise LabError(f"Postfix daemons {sorted(before & self._daemons())} survived reload")

    def _daemons(self) -> set[int]:
        """smtpd processes running in the relay namespace."""
        found: set[int] = set()
        for pid in namespace_pids(self.namespace):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name == "smtpd":
                found.add(pid)
        return found

    def load_firewall(self, ruleset: Path) -> None:
        self.nft("-f", str(ruleset))
        self.ruleset = ruleset

    @contextmanager
    def firewall_bypassed(self) -> Iterator[None]:
        """Remove the relaygate table for the block; load the last ruleset again afterwards."""
        if self.ruleset is None:
            raise LabError("no ruleset loaded")
        ruleset = self.ruleset
        self.nft("delete", "table", *NFT_TABLE)
        try:
            yield
        finally:
            self.load_firewall(ruleset)

    def tables(self) -> list[str]:
        listing = json.loads(self.nft("-j", "list", "tables"))
        return [
            f"{item['table']['family']} {item['table']['name']}"
            for item in listing["nftables"]
            if "table" in item
        ]

    # -- the queue --------------------------------------------------------

    def queued(self) -> list[QueuedMessage]:
        done = self.ns.run(self.namespace, ["postqueue", "-c", str(self.config), "-j"])
        messages = []
        for line in done.stdout.splitlines():
            item = json.loads(line)
            reasons = [r.get("delay_reason", "") for r in item.get("recipients", [])]
            messages.append(
                QueuedMessage(
                    queue_id=item["queue_id"],
                    queue_name=item["queue_name"],
                    sender=item["sender"],
                    reason="; ".join(r for r in reasons if r),
                )
            )
        return messages

    def wait_deferred(self, count: int, timeout: float = 15.0) -> list[QueuedMessage]:
        """Wait until ``count`` messages sit in the deferred queue (a delivery was tried)."""
        deadline = time.monotonic() + timeout
        while True:
            queued = self.queued()
            if len(queued) == count and all(q.queue_name == "deferred" for q in queued):
                return queued
            if time.monotonic() > deadline:
                raise LabError(f"expected {count} deferred messages, found {queued}")
            time.sleep(0.05)

    def flush(self) -> None:
        self.ns.run(self.namespace, ["postqueue", "-c", str(self.config), "-f"])

    def wait_queue_empty(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                raise LabError(f"queue not empty after {timeout}s: {self.queued()}")
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
