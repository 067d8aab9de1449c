"""The volume-limit policy daemon of the lab: Debian's postfwd in the relay namespace.

Input: the lab folder, the relay namespace, the port Postfix asks
(``check_policy_service inet:127.0.0.1:PORT``) and a compiled folder whose
``postfwd/postfwd.cf`` is the ruleset. Output: a running postfwd (the
prefork ``postfwd2`` that Debian installs as ``postfwd``) listening on
127.0.0.1:PORT inside the relay namespace, started the way the deploy starts
it: ``--keep_rates`` (a reload keeps the counters), ``--cache=0`` (no request
cache: every message is counted), ``--nodns``, its master's pid file, cache socket and
live ruleset in the lab folder, and the packaged ``postfw`` user.

Invariants:

- Every postfwd command runs through ``Namespaces.run`` in the lab's relay
  namespace; the daemon's sockets (its port, its cache socket) exist only
  there and in the lab folder, never in the host's ``/var/tmp`` defaults.
- A ruleset is checked with postfwd itself (``postfwd -C``: it parses the
  file and prints every rule, and logs a warning for a line it ignores) and
  only then renamed over the live file; ``reload`` is a SIGHUP to the policy
  server, which never stops listening.
- postfwd's master starts its own session (it daemonizes), and its cache and
  policy processes stay in it: ``processes_of(masters)`` finds every
  process of a daemon the lab started, its master gone or not. (Their
  environment is no marker: postfwd renames its processes, and Perl
  overwrites the environment's memory to make room for the new name.)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.lab.netns import LabError, Namespaces

#: The unprivileged user the Debian package creates for the daemon.
USER = "postfw"
RULESET = Path("postfwd") / "postfwd.cf"

#: Waits until a TCP port answers inside the namespace it runs in (argv: port, seconds).
_WAIT_LISTENING = """
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError as error:
        if time.monotonic() > deadline:
            sys.exit(f"nothing answers on 127.0.0.1:{port}: {error}")
        time.sleep(0.05)
"""


def installed() -> str | None:
    """Why postfwd cannot run here (the missing piece), or None."""
    if shutil.which("postfwd") is None:
        return "postfwd is not installed (Debian package postfwd)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"the user {USER!r} does not exist (the postfwd package creates it)"
    return None


class Postfwd:
    """One postfwd in the relay namespace; ``start``, ``install`` + ``reload``, ``stop``."""

    def __init__(self, ns: Namespaces, namespace: str, root: Path, port: int) -> None:
        ns.own(namespace)
        self.ns = ns
        self.namespace = namespace
        self.root = root
        self.port = port
        self.folder = root / "postfwd"
        self.live = self.folder / "postfwd.cf"
        self.pid_file = self.folder / "postfwd.pid"
        self.cache_socket = self.folder / "cache.socket"
        self.master_pid: int | None = None
        #: Every master this lab started, for the leftover check after teardown.
        self.started: list[int] = []
        self._stages = 0

    # -- the ruleset ------------------------------------------------------

    def check(self, ruleset: Path) -> list[str]:
        """What postfwd itself says is wrong with ``ruleset`` (empty: it parsed every line)."""
        done = self.ns.run(
            self.namespace, ["postfwd", "--file", str(ruleset), "--showconfig"], check=False
        )
        # --showconfig always exits 1; a rule postfwd could not parse is a
        # "[LOG warning]" line ("ignoring invalid ... line N"), a missing file too.
        printed = done.stdout.splitlines()
        problems = [line for line in printed if line.startswith("[LOG")]
        rules = sum(line.startswith("Rule ") for line in printed)
        # One rule a line (a line starting with white space would continue the last).
        written = sum(
            bool(line.strip()) and not line.startswith(("#", " ", "\t"))
            for line in ruleset.read_text().splitlines()
        )
        if rules == 0 or rules != written:
            problems.append(f"postfwd read {rules} rules of the {written} in {ruleset}")
        return problems

    def install(self, compiled: Path) -> None:
        """Check the compiled ruleset with postfwd, then rename it over the live one."""
        source = compiled / RULESET
        self.folder.mkdir(exist_ok=True)
        self._stages += 1
        stage = self.folder / f".postfwd.cf.stage{self._stages}"
        shutil.copyfile(source, stage)
        stage.chmod(0o644)
        problems = self.check(stage)
        if problems:
            stage.unlink()
            raise LabError(f"postfwd refuses {source}:\n" + "\n".join(problems))
        os.replace(stage, self.live)

    # -- the daemon -------------------------------------------------------

    def start(self) -> None:
        """Start postfwd on the live ruleset and wait until it answers on its port."""
        # The daemon drops to the postfw user: its cache socket lives here.
        shutil.chown(self.folder, user=USER)
        self.ns.run(
            self.namespace,
            [
                "postfwd",
                f"--file={self.live}",
                "--interface=127.0.0.1",
                f"--port={self.port}",
                "--keep_rates",
                "--cache=0",
                "--nodns",  # the namespace has no resolver; no rule needs DNS
                f"--pidfile={self.pid_file}",
                f"--cache_socket=unix::{self.cache_socket}",
                f"--user={USER}",
                f"--group={USER}",
                # Few workers: the lab sends one session at a time.
                "--min_servers=2",
                "--min_spare_servers=1",
                "--max_spare_servers=2",
                "--max_servers=10",
            ],
        )
        self.master_pid = self._read_pid()
        self.started.append(self.master_pid)
        self.wait_listening()

    def _read_pid(self) -> int:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            text = self.pid_file.read_text().strip() if self.pid_file.exists() else ""
            if text.isdigit():
                return int(text)
            time.sleep(0.05)
        raise LabError(f"postfwd wrote no pid to {self.pid_file}")

    def wait_listening(self, timeout: float = 15.0) -> None:
        done = self.ns.run(
            self.namespace,
            [sys.executable, "-c", _WAIT_LISTENING, str(self.port), str(timeout)],
            check=False,
            timeout=timeout + 10.0,
        )
        if done.returncode != 0:
            raise LabError(f"postfwd does not answer: {done.stderr.strip()}")

    def reload(self) -> None:
        """SIGHUP to the policy server: it rereads the ruleset and goes on listening.

        As the deploy does it: to postfwd's policy server (the master's child
        named ``postfwd2::policy``), not to the master (``postfwd --reload``),
        whose HUP also wakes its watchdog, which may respawn a policy server it
        finds busy, with the port closed for the respawn delay. The counters
        live in the cache daemon and survive (``--keep_rates``).
        """
        server = self.policy_server()
        if server is None:
            raise LabError(f"postfwd (master {self.master_pid}) has no single policy server")
        os.kill(server, signal.SIGHUP)

    def policy_server(self) -> int | None:
        """The pid of the running policy server, None unless there is exactly one."""
        if self.master_pid is None:
            return None
        found = [p for p in _children(self.master_pid) if _cmdline(p).rstrip().endswith("::policy")]
        return found[0] if len(found) == 1 else None

    def stop(self) -> list[str]:
        """SIGTERM to the master (it ends its process group), then SIGKILL to whatever of
        its session is left after 5 s; the problems seen.

        A master busy respawning its policy server can ignore SIGTERM for a while,
        and a policy server has been seen to outlive its master: the session is
        what the lab started, so all of it goes. A problem is a master that was
        already gone, or a process that survived SIGKILL.
        """
        pid = self.master_pid
        if pid is None:
            return []
        self.master_pid = None
        return end_session(pid)


def end_session(master: int) -> list[str]:
    """SIGTERM to a postfwd master, then SIGKILL to whatever of its session is left after
    5 s; the problems seen (a master already gone, a process that survived SIGKILL)."""
    problems = []
    try:
        os.kill(master, signal.SIGTERM)
    except ProcessLookupError:
        problems.append(f"postfwd master {master} was already gone")
    for kill in (False, True):
        for process in processes_of([master]) if kill else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and processes_of([master]):
            time.sleep(0.05)
    problems += [f"postfwd process {p} survived SIGKILL" for p in processes_of([master])]
    return problems


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, ... ([] if gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # pid (comm) state ppid ...: comm may hold spaces and parentheses.
    return text.rpartition(")")[2].split()


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == parent:
                found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """``pid`` runs and is a postfwd process (a reused pid of another program is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"postfwd" in cmdline


def processes_of(masters: Sequence[int]) -> list[int]:
    """Processes of the postfwd daemons whose masters were ``masters`` (their sessions)."""
    wanted = set(masters)
    if not wanted:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[3]) in wanted and alive(int(entry.name)):
                found.append(int(entry.name))
    return sorted(found)
