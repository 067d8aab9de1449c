"""The lab: an inventory compiled and deployed on a real relay in namespaces.

Input: an inventory folder and "today" (``as_of``). ``Lab.build`` makes a
temporary folder ``/tmp/rgl-<run>-*``, compiles the inventory with
``relaygate compile``, creates the namespaces (relay, one per segment,
outsider), writes a private Postfix with SASL, starts the sink and Postfix in
the relay namespace, and deploys the compiled artifacts (maps, postconf,
nft ruleset). Output: a ``Lab`` whose ``send`` runs SMTP sessions from any
lab address and whose ``delivered`` reads what the sink received.

Invariants: ``close`` always runs everything it can (stop Postfix, stop the
sink, delete the namespaces, remove the folder) even when a step fails, and
raises afterwards naming every problem; ``leftovers`` says what of a run is
still there (a master process, a namespace, the folder), empty when nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaygate.cli import main as relaygate_main
from tests.lab import postfwd, sink
from tests.lab.netns import Address, LabError, Namespaces, lab_namespaces, new_run_id
from tests.lab.plan import LabPlan, load, make_plan
from tests.lab.postfwd import Postfwd
from tests.lab.relay import SINK_PORT, Relay

HERE = Path(__file__).resolve().parent
CLIENT_SCRIPT = HERE / "client.py"
SINK_SCRIPT = HERE / "sink.py"
TEMP_PARENT = Path(tempfile.gettempdir())


@dataclass(frozen=True)
class Session:
    """One SMTP conversation, from ``source`` to the relay."""

    source: Address
    port: int
    mail_from: str
    rcpt_to: tuple[str, ...]
    token: str = ""
    auth: tuple[str, str] | None = None
    timeout: float = 5.0
    data: bool = True
    starttls: bool = True

    def request(self, host: Address) -> dict[str, Any]:
        return {
            "host": str(host),
            "port": self.port,
            "source": str(self.source),
            "timeout": self.timeout,
            "auth": None if self.auth is None else {"user": self.auth[0], "password": self.auth[1]},
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "token": self.token,
            "subject": f"lab {self.token}",
            "data": self.data,
            "starttls": self.starttls,
        }


Reply = tuple[int, str]


@dataclass(frozen=True)
class Result:
    session: Session
    connected: bool
    error: str | None
    banner: Reply | None
    features: tuple[str, ...]
    auth: Reply | None
    mail: Reply | None
    rcpt: tuple[Reply, ...]
    data: Reply | None

    @property
    def accepted(self) -> bool:
        """The relay took the message: every RCPT and the end of DATA answered 250."""
        return (
            self.connected
            and bool(self.rcpt)
            and all(code == 250 for code, _ in self.rcpt)
            and self.data is not None
            and self.data[0] == 250
        )

    @property
    def refused(self) -> bool:
        """Connected, and no recipient was accepted (nothing can have been queued)."""
        return self.connected and all(code >= 400 for code, _ in self.rcpt)

    def __str__(self) -> str:
        fields = {
            "from": str(self.session.source),
            "port": self.session.port,
            "mail_from": self.session.mail_from,
            "rcpt_to": self.session.rcpt_to,
            "error": self.error,
            "auth": self.auth,
            "mail": self.mail,
            "rcpt": self.rcpt,
            "data": self.data,
            "starttls": self.session.starttls,
        }
        return json.dumps(fields)


def _reply(value: Any) -> Reply | None:
    return None if value is None else (int(value[0]), str(value[1]))


@dataclass
class Lab:
    run_id: str
    root: Path
    plan: LabPlan
    ns: Namespaces
    relay_ns: str
    client_ns: dict[Address, str]
    relay: Relay
    compiled: Path
    sink_file: Path
    sink_process: subprocess.Popen[bytes] | None = None
    #: The volume-limit daemon, when the compiled folder has a postfwd ruleset.
    postfwd: Postfwd | None = None
    _tokens: Iterator[int] = field(default_factory=itertools.count)
    closed: bool = False

    # -- life cycle -------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def running(cls, inventory: Path, as_of: dt.date) -> Iterator[Lab]:
        lab = cls.build(inventory, as_of)
        try:
            yield lab
        finally:
            lab.close()

    @classmethod
    def build(cls, inventory: Path, as_of: dt.date) -> Lab:
        run_id = new_run_id()
        root = Path(tempfile.mkdtemp(prefix=f"rgl-{run_id}-", dir=TEMP_PARENT))
        # Postfix daemons run as the postfix user and must reach the config,
        # queue, maps and sasldb below this folder.
        root.chmod(0o755)
        ns = Namespaces(run_id)
        try:
            plan = make_plan(load(inventory, as_of))
            compiled = root / "compiled"
            compile_inventory(inventory, as_of, compiled)
            relay_ns = ns.add("relay")
            lab = cls(
                run_id=run_id,
                root=root,
                plan=plan,
                ns=ns,
                relay_ns=relay_ns,
                client_ns={},
                relay=Relay(
                    ns,
                    relay_ns,
                    root,
                    hostname=plan.relay_fqdn,
                    relay_port=plan.relay_port,
                    submission_port=plan.submission_port,
                ),
                compiled=compiled,
                sink_file=root / "sink" / "messages.jsonl",
            )
        except BaseException:
            ns.destroy()
            shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            lab._wire()
            lab.relay.create(plan.accounts)
            lab.start_sink()
            lab.relay.deploy(compiled, reload=False)
            problems = lab.relay.check()
            if problems:
                raise LabError(f"postfix check is not silent: {problems}")
            if (compiled / postfwd.RULESET).exists():
                # Started before Postfix: the first message is already counted.
                lab.postfwd = Postfwd(ns, relay_ns, root, plan.volume_port)
                lab.postfwd.install(compiled)
                lab.postfwd.start()
            lab.relay.start()
        except BaseException:
            lab.close()
            raise
        return lab

    def _wire(self) -> None:
        self.ns.bridge(self.relay_ns, self.plan.relay_addresses)
        for role, addresses in self.plan.roles().items():
            namespace = self.ns.add(role)
            self.ns.attach(self.relay_ns, namespace, addresses, self.plan.relay_addresses)
            for address in addresses:
                self.client_ns[address] = namespace

    def close(self) -> None:
        """Tear everything down; raise afterwards if anything could not be removed."""
        if self.closed:
            return
        self.closed = True
        problems: list[str] = []
        try:
            problems += self.relay.stop()
        except Exception as error:  # keep tearing down; report at the end
            problems.append(f"postfix stop: {error}")
        if self.postfwd is not None:
            try:
                problems += self.postfwd.stop()
            except Exception as error:  # keep tearing down; report at the end
                problems.append(f"postfwd stop: {error}")
        problems += self.stop_sink()
        problems += self.ns.destroy()
        shutil.rmtree(self.root, ignore_errors=True)
        problems += leftovers(self.run_id, self.root, self.relay.started, self.postfwd_started)
        if problems:
            raise LabError("lab teardown left problems:\n" + "\n".join(problems))

    @property
    def postfwd_started(self) -> list[int]:
        """Every postfwd master this lab started (for ``leftovers``)."""
        return [] if self.postfwd is None else list(self.postfwd.started)

    # -- the sink ---------------------------------------------------------

    def start_sink(self) -> None:
        ready = self.root / "sink" / "ready"
        ready.parent.mkdir(exist_ok=True)
        self.sink_process = self.ns.popen(
            self.relay_ns,
            [
                sys.executable,
                str(SINK_SCRIPT),
                "--port",
                str(SINK_PORT),
                "--out",
                str(self.sink_file),
                "--ready",
                str(ready),
            ],
        )
        deadline = time.monotonic() + 15.0
        while not ready.exists():
            if self.sink_process.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the sink did not start (exit {self.sink_process.poll()})")
            time.sleep(0.05)

    def stop_sink(self) -> list[str]:
        process = self.sink_process
        if process is None:
            return []
        self.sink_process = None
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            return [f"the sink (pid {process.pid}) ignored SIGTERM"]
        return []

    @contextlib.contextmanager
    def sink_down(self) -> Iterator[None]:
        """The downstream is unreachable for the block: accepted mail waits in the queue."""
        problems = self.stop_sink()
        if problems:
            raise LabError("; ".join(problems))
        try:
            yield
        finally:
            self.start_sink()

    def delivered(self, token: str | None = None) -> list[sink.Delivered]:
        found = sink.read(self.sink_file)
        return found if token is None else [m for m in found if m.token == token]

    def wait_delivered(self, tokens: Sequence[str], timeout: float = 20.0) -> None:
        """Wait until each token reached the sink, or ``timeout``; callers assert afterwards."""
        deadline = time.monotonic() + timeout
        wanted = set(tokens)
        while time.monotonic() < deadline:
            seen = {m.token for m in self.delivered()}
            if wanted <= seen:
                return
            time.sleep(0.05)

    def settle(self) -> None:
        """Wait until the relay's queue is empty, so the sink shows everything delivered."""
        self.relay.wait_queue_empty()

    # -- clients ----------------------------------------------------------

    def token(self, label: str) -> str:
        return f"{label}-{self.run_id}-{next(self._tokens)}"

    def send(self, sessions: Sequence[Session]) -> list[Result]:
        """Run sessions, grouped by source namespace, and return results in input order."""
        results: dict[int, Result] = {}
        groups: dict[str, list[int]] = {}
        for index, session in enumerate(sessions):
            if session.source not in self.client_ns:
                raise LabError(f"{session.source} is not a lab address")
            groups.setdefault(self.client_ns[session.source], []).append(index)
        for namespace, indexes in groups.items():
            request = {
                "sessions": [
                    sessions[i].request(self.plan.relay_address(sessions[i].source.version))
                    for i in indexes
                ]
            }
            worst = sum(sessions[i].timeout * (3 + len(sessions[i].rcpt_to)) for i in indexes)
            done = self.ns.run(
                namespace,
                [sys.executable, str(CLIENT_SCRIPT)],
                stdin=json.dumps(request),
                timeout=worst + 30.0,
            )
            for i, raw in zip(indexes, json.loads(done.stdout), strict=True):
                results[i] = Result(
                    session=sessions[i],
                    connected=bool(raw["connected"]),
                    error=raw["error"],
                    banner=_reply(raw["banner"]),
                    features=tuple(raw["features"]),
                    auth=_reply(raw["auth"]),
                    mail=_reply(raw["mail"]),
                    rcpt=tuple(r for r in (_reply(x) for x in raw["rcpt"]) if r is not None),
                    data=_reply(raw["data"]),
                )
        return [results[i] for i in range(len(sessions))]

    def send_one(self, session: Session) -> Result:
        return self.send([session])[0]

    # -- redeploy ---------------------------------------------------------

    def redeploy(self, inventory: Path, as_of: dt.date) -> Path:
        """Compile ``inventory`` into a new folder and ``deploy`` it."""
        out = self.root / f"compiled-{next(self._tokens)}"
        compile_inventory(inventory, as_of, out)
        self.deploy(out)
        return out

    def deploy(self, compiled: Path) -> None:
        """Apply a compiled folder to the running lab, like the deploy.

        The postfwd ruleset is checked, switched and reloaded (SIGHUP, counters
        kept) before Postfix: a record the new maps admit already has its limit.
        Postfix's reload comes after it, and matters: an smtpd keeps its policy
        connection between messages, and the postfwd process at the other end
        answers from the ruleset it had when the connection opened; the reload
        ends those smtpd processes, so every message after it meets the new rules.
        """
        if self.postfwd is not None:
            self.postfwd.install(compiled)
            self.postfwd.reload()
        self.relay.deploy(compiled)
        self.compiled = compiled


def compile_inventory(inventory: Path, as_of: dt.date, out: Path) -> str:
    """Run ``relaygate compile`` in process; its output, or LabError when it fails."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = relaygate_main(
            ["compile", "--inventory", str(inventory), "--out", str(out), "--as-of", str(as_of)]
        )
    if code != 0:
        raise LabError(f"relaygate compile exited {code}\n{stdout.getvalue()}{stderr.getvalue()}")
    return stdout.getvalue()


def leftovers(
    run_id: str, root: Path, masters: Sequence[int], daemons: Sequence[int] = ()
) -> list[str]:
    """What of one lab run is still there: namespaces, the folder, Postfix processes
    (``masters``: the Postfix masters it started) and postfwd processes (``daemons``:
    the postfwd masters it started)."""
    found = [f"namespace {name} still exists" for name in lab_namespaces(run_id)]
    if root.exists():
        found.append(f"lab folder {root} still exists")
    found += [f"lab folder {path} still exists" for path in TEMP_PARENT.glob(f"rgl-{run_id}-*")]
    found += [f"postfix master {pid} still runs" for pid in masters if _is_postfix_master(pid)]
    found += [
        f"process {pid} still runs with MAIL_CONFIG in {root}" for pid in _processes_under(root)
    ]
    found += [f"postfwd process {pid} still runs" for pid in postfwd.processes_of(daemons)]
    return sorted(set(found))


def _is_postfix_master(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "master"
    except OSError:
        return False


def _processes_under(root: Path) -> list[int]:
    """Processes whose environment names a config folder below ``root`` (Postfix daemons)."""
    marker = f"MAIL_CONFIG={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(marker) for item in environ.split(b"\0")):
            found.append(int(entry.name))
    return found
