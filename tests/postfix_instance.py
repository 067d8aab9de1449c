"""A private Postfix instance for tests: its own config, queue and data folders.

Nothing here reads or writes the host's /etc/postfix: main.cf and master.cf
are written from scratch into a temporary folder, and every Postfix command
is run with ``-c`` pointing at it.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaygate.render.postfix import service_name

#: The standard services, without chroot so temporary paths work as they are.
BASE_MASTER_CF = """\
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
"""
#: With the submission service that master.cf.fragment configures.
MASTER_CF = BASE_MASTER_CF + "submission inet n       -       n       -       -       smtpd\n"

POSTFIX_TOOLS = ("postfix", "postmap", "postconf")


def available() -> bool:
    return all(shutil.which(tool) for tool in POSTFIX_TOOLS)


class PostfixUnavailable(RuntimeError):
    """A Postfix capability is missing; the message says which command showed it, and how."""


def map_types() -> list[str]:
    """The lookup table types this Postfix supports (``postconf -m``).

    Runs against an empty private config folder, never the host's /etc/postfix: with
    Postfix installed as "No configuration" that folder holds no main.cf, and a bare
    ``postconf`` exits fatally there. Raises PostfixUnavailable with the command, its
    exit code and its stderr when the answer cannot be had.
    """
    missing = [tool for tool in POSTFIX_TOOLS if shutil.which(tool) is None]
    if missing:
        raise PostfixUnavailable(f"Postfix is not installed: {', '.join(missing)} not on PATH")
    with tempfile.TemporaryDirectory(prefix="relaygate-postconf-") as empty:
        for name in ("main.cf", "master.cf"):
            (Path(empty) / name).write_text("")
        argv = ["postconf", "-c", empty, "-m"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PostfixUnavailable(
            f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip() or '(no stderr)'}"
        )
    return done.stdout.split()


def lmdb_missing() -> str | None:
    """None when this Postfix has lmdb maps; otherwise the real reason it cannot be used."""
    try:
        types = map_types()
    except PostfixUnavailable as error:
        return str(error)
    if "lmdb" not in types:
        return f"postfix-lmdb is not installed: `postconf -m` lists {' '.join(types)}"
    return None


def command(*argv: str) -> str:
    """Run one command (a Postfix tool, always with ``-c``, or openssl); its stdout.

    A non-zero exit is an AssertionError naming the command, its exit code and its output.
    """
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(
            f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr}{done.stdout}".strip()
        )
    return done.stdout


def make_instance(root: Path) -> Path:
    """Create an instance under ``root`` (``conf``, ``queue``, and ``data`` owned by the
    postfix user) and return its config folder."""
    config = root / "conf"
    (root / "queue").mkdir(parents=True)
    (root / "data").mkdir()
    config.mkdir()
    shutil.chown(root / "data", user="postfix")
    (config / "master.cf").write_text(MASTER_CF)
    (config / "main.cf").write_text(
        "compatibility_level = 3.6\n"
        f"queue_directory = {root / 'queue'}\n"
        f"data_directory = {root / 'data'}\n"
        "inet_interfaces = loopback-only\n"
        "mydestination =\n"
        "maillog_file = /dev/stdout\n"
    )
    return config


def fragment_lines(path: Path) -> list[str]:
    """The settings of a compiled fragment: its lines that are neither blank nor comments."""
    return [
        line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def install_maps(compiled: Path, config: Path) -> None:
    """Copy the compiled Postfix folder into CONFIG/relaygate (replacing what an earlier
    install left there) and build the lmdb maps with postmap."""
    source = compiled / "postfix"
    target = config / "relaygate"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for path in sorted(target.rglob("*")):
        if path.is_file() and not path.name.endswith((".cidr", ".fragment", ".lmdb")):
            command("postmap", "-c", str(config), f"lmdb:{path}")


def apply_fragment(compiled: Path, config: Path) -> None:
    """Apply main.cf.fragment with one postconf -e, the way the deploy does."""
    settings = fragment_lines(compiled / "postfix" / "main.cf.fragment")
    if settings:
        command("postconf", "-c", str(config), "-e", *settings)


def apply_master_fragment(
    compiled: Path, config: Path, services: Mapping[str, str] | None = None
) -> None:
    """Apply master.cf.fragment with one postconf -P, the way the deploy does.

    With ``services``, each line's service (the compiled name, e.g. ``submission`` or a
    port number) is renamed to this instance's listener for it (e.g. ``127.0.0.1:40123``);
    a line naming a service not in ``services`` is an AssertionError.
    """
    lines = fragment_lines(compiled / "postfix" / "master.cf.fragment")
    if services is not None:
        renamed = []
        for line in lines:
            service, slash, rest = line.partition("/")
            if not slash or service not in services:
                raise AssertionError(
                    f"master.cf.fragment names a service this instance does not run: {line}"
                )
            renamed.append(f"{services[service]}/{rest}")
        lines = renamed
    if lines:
        command("postconf", "-c", str(config), "-P", *lines)


def renamed_services(
    relay_port: int, submission_port: int, relay: str, submission: str
) -> dict[str, str]:
    """The compiled master.cf names of the site's two services -> this instance's listeners
    (``relay`` and ``submission``, master.cf service names such as ``127.0.0.1:40123``)."""
    return {service_name(relay_port): relay, service_name(submission_port): submission}


def check(config: Path) -> str:
    """`postfix check` output; any output at all (warnings too) is a failure."""
    done = subprocess.run(
        ["postfix", "-c", str(config), "check"], capture_output=True, text=True, check=False
    )
    return (
        f"exit {done.returncode}: {done.stdout}{done.stderr}".strip()
        if (done.returncode or done.stdout or done.stderr)
        else ""
    )


def require_silent_check(config: Path) -> None:
    """AssertionError unless `postfix check` is silent (it exits 0 even when it warns)."""
    problems = check(config)
    if problems:
        raise AssertionError(f"postfix check is not silent: {problems}")


def query(config: Path, table: str, key: str) -> str | None:
    done = subprocess.run(
        ["postmap", "-c", str(config), "-q", key, table],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


# --- a running relay built from compiled artifacts ------------------------------------------

#: STARTTLS needs the TLS session cache manager; the base master.cf leaves it out.
TLSMGR = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
#: A recipient outside every domain the relay serves: a decision about it is a relay decision.
OUTSIDE = "someone@elsewhere.example"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def self_signed_certificate(folder: Path, name: str = "relay.test.invalid") -> tuple[Path, Path]:
    """A throwaway key and certificate (CN ``name``) for STARTTLS (openssl), readable by
    Postfix; returns (key, certificate)."""
    key, cert = folder / "relay.key", folder / "relay.pem"
    command(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    key.chmod(0o600)
    return key, cert


def listener_master_cf(listeners: Iterable[str], extra: str = "") -> str:
    """master.cf: the standard services, tlsmgr, an smtpd on each listener (a master.cf
    service name such as ``127.0.0.1:40123``), then ``extra`` as it is."""
    smtpd = "".join(f"{listener} inet n - n - - smtpd\n" for listener in listeners)
    return BASE_MASTER_CF + TLSMGR + smtpd + extra


def read_maillog(path: Path, lines: int | None = None) -> str:
    """The instance's maillog (its last ``lines`` lines when given); "" before it exists."""
    if not path.exists():
        return ""
    text = path.read_text(errors="replace")
    return text if lines is None else "\n".join(text.splitlines()[-lines:])


def start_postfix(config: Path) -> None:
    """`postfix check` (silent) then `postfix start`; AssertionError naming what failed."""
    require_silent_check(config)
    command("postfix", "-c", str(config), "start")


def wait_listening(ports: Iterable[int], log: Callable[[], str], seconds: float = 20) -> None:
    """Return once something accepts on 127.0.0.1 at every port; after ``seconds`` in all,
    an AssertionError with the port, the error and ``log()``."""
    deadline = time.monotonic() + seconds
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"nothing listens on 127.0.0.1:{port}: {error}\n{log()}"
                    ) from error
                time.sleep(0.1)


def smtpd_processes(config: Path) -> set[int]:
    """smtpd processes of the instance at ``config`` (their MAIL_CONFIG names it)."""
    marker = f"MAIL_CONFIG={config}".encode()
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


def reload_postfix(config: Path, seconds: float = 20) -> None:
    """``postfix reload``, then wait until every smtpd that ran before it has ended (each
    new session meets the new configuration)."""
    before = smtpd_processes(config)
    command("postfix", "-c", str(config), "reload")
    deadline = time.monotonic() + seconds
    while left := before & smtpd_processes(config):
        if time.monotonic() > deadline:
            raise AssertionError(f"smtpd {sorted(left)} survived reload")
        time.sleep(0.05)


def stop_postfix(config: Path) -> None:
    """`postfix stop` for an instance made by make_instance, then wait (up to 10 s) until
    its master process is gone. Never fails: it is the clean-up."""
    subprocess.run(["postfix", "-c", str(config), "stop"], capture_output=True, check=False)
    pid_file = config.parent / "queue" / "pid" / "master.pid"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid = pid_file.read_text().strip()
        except OSError:
            return
        if not pid.isdigit() or not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.05)


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class Outcome:
    """What one SMTP transaction heard at each step (None: the step was not reached)."""

    features: tuple[str, ...]
    auth: Reply | None
    mail: Reply | None
    rcpt: Reply | None

    @property
    def accepted(self) -> bool:
        return self.rcpt is not None and self.rcpt.code == 250

    @property
    def refusal(self) -> Reply | None:
        """The reply that refused the transaction, or None when it was accepted."""
        for reply in (self.mail, self.rcpt):
            if reply is not None and reply.code >= 400:
                return reply
        return None

    def __str__(self) -> str:
        return f"auth={self.auth} mail={self.mail} rcpt={self.rcpt} features={self.features}"


def transaction(
    port: int,
    sender: str,
    *,
    client: str | None = None,
    name: str | None = None,
    login: str | None = None,
    auth: tuple[str, str] | None = None,
    starttls: bool = True,
    mail_parameters: str = "",
    recipient: str = OUTSIDE,
) -> Outcome:
    """One transaction to 127.0.0.1:``port``: STARTTLS if offered and wanted, XCLIENT
    (``client`` address, ``name`` hostname, ``login``) if any is given, AUTH PLAIN if
    ``auth``, then ``MAIL FROM:<sender>`` (sender as written) and one RCPT."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    stream: Any = raw.makefile("rwb")
    sock: Any = raw

    def reply() -> Reply:
        lines = [stream.readline().decode(errors="replace")]
        while lines[-1][3:4] == "-":
            lines.append(stream.readline().decode(errors="replace"))
        return Reply(int(lines[-1][:3]), " ".join(line[4:].strip() for line in lines))

    def say(command: str) -> Reply:
        stream.write(command.encode() + b"\r\n")
        stream.flush()
        return reply()

    try:
        reply()
        features = say("EHLO client.test.invalid").text.upper().split()
        if starttls and "STARTTLS" in features:
            if say("STARTTLS").code != 220:
                raise AssertionError("STARTTLS refused")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(raw, server_hostname="relay.test.invalid")
            stream = sock.makefile("rwb")
            features = say("EHLO client.test.invalid").text.upper().split()
        attributes = []
        if client is not None:
            attributes.append(f"ADDR={'IPV6:' + client if ':' in client else client}")
        if name is not None:
            attributes.append(f"NAME={name}")
        if login is not None:
            attributes.append(f"LOGIN={login}")
        if attributes:
            answer = say("XCLIENT " + " ".join(attributes))
            if answer.code != 220:
                raise AssertionError(f"XCLIENT {attributes}: {answer}")
            features = say("EHLO client.test.invalid").text.upper().split()
        auth_reply = None
        if auth is not None:
            token = base64.b64encode(f"\0{auth[0]}\0{auth[1]}".encode()).decode()
            auth_reply = say(f"AUTH PLAIN {token}")
        params = f" {mail_parameters}" if mail_parameters else ""
        mail = say(f"MAIL FROM:<{sender}>{params}")
        rcpt = say(f"RCPT TO:<{recipient}>") if mail.code == 250 else None
        say("QUIT")
        return Outcome(tuple(features), auth_reply, mail, rcpt)
    finally:
        sock.close()


class RunningRelay:
    """A private Postfix built from a compile's ``postfix/`` folder, deployed like the deploy
    does it (maps built, main.cf.fragment with postconf -e, master.cf.fragment with
    postconf -P). The relay and submission services listen on 127.0.0.1 at free ports
    (or on the site's own ports with ``site_ports``); XCLIENT is allowed from loopback;
    STARTTLS uses a throwaway certificate."""

    def __init__(
        self,
        compiled: Path,
        *,
        relay_port: int,
        submission_port: int,
        site_ports: bool = False,
        extra_main: tuple[str, ...] = (),
        extra_master: str = "",
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="relaygate-relay-"))
        self.root.chmod(0o755)
        self.config = self.root / "pf" / "conf"
        try:
            self._build(compiled, relay_port, submission_port, site_ports, extra_main, extra_master)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _build(
        self,
        compiled: Path,
        relay_port: int,
        submission_port: int,
        site_ports: bool,
        extra_main: tuple[str, ...],
        extra_master: str,
    ) -> None:
        self.config = make_instance(self.root / "pf")
        key, cert = self_signed_certificate(self.config)
        self.relay_port = relay_port if site_ports else free_port()
        self.submission_port = submission_port if site_ports else free_port()
        names = renamed_services(
            relay_port,
            submission_port,
            f"127.0.0.1:{self.relay_port}",
            f"127.0.0.1:{self.submission_port}",
        )
        if site_ports:
            names = {name: name for name in names}
        (self.config / "master.cf").write_text(listener_master_cf(names.values(), extra_master))
        install_maps(compiled, self.config)
        apply_fragment(compiled, self.config)
        apply_master_fragment(compiled, self.config, names)
        for setting in (
            "smtpd_authorized_xclient_hosts = 127.0.0.1",
            f"smtpd_tls_cert_file = {cert}",
            f"smtpd_tls_key_file = {key}",
            "smtpd_tls_security_level = may",
            "alias_maps =",
            "alias_database =",
            "local_recipient_maps =",
            "myhostname = relay.test.invalid",
            "relayhost = [127.0.0.1]:9",
            "smtpd_peername_lookup = no",
            f"maillog_file_prefixes = {self.root}",
            f"maillog_file = {self.root / 'maillog'}",
            *extra_main,
        ):
            self.postconf("-e", setting)

    def postconf(self, *args: str) -> str:
        return command("postconf", "-c", str(self.config), *args)

    def start(self) -> RunningRelay:
        """Start Postfix and wait until both services listen; on failure, stop and clean up."""
        try:
            start_postfix(self.config)
            wait_listening((self.relay_port, self.submission_port), self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def reload(self) -> None:
        reload_postfix(self.config)

    def log(self) -> str:
        return read_maillog(self.root / "maillog")

    def relay(self, sender: str, **options: Any) -> Outcome:
        return transaction(self.relay_port, sender, **options)

    def submit(self, sender: str, **options: Any) -> Outcome:
        return transaction(self.submission_port, sender, **options)

    def stop(self) -> None:
        stop_postfix(self.config)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RunningRelay:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
