"""A private Postfix with an XCLIENT listener for each relay path.

Input: a folder for the instance and, per inventory, a compiled folder
(``relaygate compile --out``) and the site's two ports. Output: a running
Postfix on 127.0.0.1 with two smtpd listeners on free ports: one carries the
relay port's service (``smtp`` in the compiled master.cf fragment, or the
relay port's number), the other the submission service (``submission`` or
its port number). Both allow XCLIENT from 127.0.0.1, so one test process can
speak for any client address, hostname and login.

Invariants: nothing reads or writes the host's /etc/postfix (every command
has ``-c``); the compiled maps, main.cf.fragment and master.cf.fragment are
applied as the deploy applies them, on a base main.cf shaped like a Debian
relay's (``recipient_delimiter``, SMTPUTF8 and the lookup defaults left as a
stock relay has them, a certificate for STARTTLS). The base's only test
settings are XCLIENT from loopback, error limits high enough for hundreds of
refused transactions on one connection, no inflow pause (each accepted RCPT
opens a queue file that RSET discards, and nothing is ever delivered to give
the flow-control tokens back), and no local alias or recipient tables (no host
file is read); none of them is a relay policy parameter. ``deploy`` replaces
the whole configuration and reloads, and waits until no smtpd of the previous
configuration is left.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.postfix_instance import BASE_MASTER_CF

#: What a stock Debian relay has in main.cf before relaygate's fragment is applied,
#: plus the test-only settings (XCLIENT, error limits) the module docstring names.
BASE_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
myhostname = relay.example.edu
smtpd_banner = $myhostname ESMTP
# Debian's debconf default is '+'; '-' is the other common choice. The compiled policy
# must mean the same with either (issue: extension addresses).
recipient_delimiter = +-
smtpd_tls_cert_file = {root}/tls/cert.pem
smtpd_tls_key_file = {root}/tls/key.pem
smtpd_tls_security_level = may
smtpd_peername_lookup = no
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_soft_error_limit = 100000
smtpd_hard_error_limit = 100000
smtpd_error_sleep_time = 0
in_flow_delay = 0
smtpd_junk_command_limit = 1000000
"""

TLSMGR = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"


class RelayError(RuntimeError):
    """The private instance could not be configured or started."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RelayError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr}{done.stdout}")
    return done.stdout + done.stderr


class XclientRelay:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "conf"
        self.relay_port = free_port()
        self.submission_port = free_port()
        self.started = False
        for folder in (self.config, root / "queue", root / "data", root / "tls"):
            folder.mkdir(parents=True)
        shutil.chown(root / "data", user="postfix")
        _run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=relay.example.edu",
                "-keyout", str(root / "tls" / "key.pem"), "-out", str(root / "tls" / "cert.pem"),
            ]
        )  # fmt: skip

    def postconf(self, *args: str) -> str:
        return _run(["postconf", "-c", str(self.config), *args])

    def services(self, relay_port: int, submission_port: int) -> dict[str, str]:
        """Compiled service name -> our listener's master.cf name."""
        relay = f"127.0.0.1:{self.relay_port}"
        submission = f"127.0.0.1:{self.submission_port}"
        return {
            "smtp": relay,
            str(relay_port): relay,
            "submission": submission,
            str(submission_port): submission,
        }

    def deploy(self, compiled: Path, relay_port: int, submission_port: int) -> None:
        """Replace the configuration with the compiled folder's and (re)load it."""
        (self.config / "main.cf").write_text(BASE_MAIN_CF.format(root=self.root))
        (self.config / "master.cf").write_text(
            BASE_MASTER_CF
            + TLSMGR
            + f"127.0.0.1:{self.relay_port} inet n - n - - smtpd\n"
            + f"127.0.0.1:{self.submission_port} inet n - n - - smtpd\n"
        )
        maps = self.config / "relaygate"
        if maps.exists():
            shutil.rmtree(maps)
        shutil.copytree(compiled / "postfix", maps)
        for path in sorted(maps.rglob("*")):
            if path.is_file() and not path.name.endswith((".cidr", ".fragment")):
                _run(["postmap", "-c", str(self.config), f"lmdb:{path}"])
        main = _settings(compiled / "postfix" / "main.cf.fragment")
        if main:
            self.postconf("-e", *main)
        names = self.services(relay_port, submission_port)
        master = []
        for line in _settings(compiled / "postfix" / "master.cf.fragment"):
            service, slash, rest = line.partition("/")
            if not slash or service not in names:
                raise RelayError(f"master.cf.fragment names a service this test cannot map: {line}")
            master.append(f"{names[service]}/{rest}")
        if master:
            self.postconf("-P", *master)
        problems = _run(["postfix", "-c", str(self.config), "check"]).strip()
        if problems:
            raise RelayError(f"postfix check is not silent: {problems}")
        if self.started:
            before = self.smtpd()
            _run(["postfix", "-c", str(self.config), "reload"])
            deadline = time.monotonic() + 20
            while before & self.smtpd():
                if time.monotonic() > deadline:
                    raise RelayError(f"smtpd {sorted(before & self.smtpd())} survived reload")
                time.sleep(0.05)
        else:
            _run(["postfix", "-c", str(self.config), "start"])
            self.started = True
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 20
        for port in (self.relay_port, self.submission_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError as error:
                    if time.monotonic() > deadline:
                        raise RelayError(
                            f"nothing listens on {port}: {error}\n{self.log()}"
                        ) from error
                    time.sleep(0.1)

    def smtpd(self) -> set[int]:
        """smtpd processes of this instance (their MAIL_CONFIG names our config)."""
        marker = f"MAIL_CONFIG={self.config}".encode()
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "smtpd":
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                found.add(int(entry.name))
        return found

    def log(self, lines: int = 40) -> str:
        path = self.root / "maillog"
        if not path.exists():
            return "(no maillog)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                ["postfix", "-c", str(self.config), "stop"], capture_output=True, check=False
            )
            deadline = time.monotonic() + 10
            pid_file = self.root / "queue" / "pid" / "master.pid"
            while pid_file.exists() and time.monotonic() < deadline:
                text = pid_file.read_text().strip()
                if not text.isdigit() or not os.path.exists(f"/proc/{text}"):
                    break
                time.sleep(0.05)
            self.started = False


def _settings(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [
        line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
