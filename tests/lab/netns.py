"""Network namespaces and veth links for the lab, made and removed by one owner.

Input: a run id and, per namespace, the addresses it must hold. Output: named
namespaces ``rgl-<run>-<role>`` wired to one bridge inside the relay namespace.

Invariants:

- Every namespace name starts with ``rgl-<run>-`` and is recorded in the
  owner's ``created`` set the moment ``ip netns add`` succeeds; ``run`` refuses
  any namespace not in that set, so a lab command can never reach the host's
  namespace or another run's.
- Links are created directly inside the namespaces (``ip -n NS link add ...
  peer ... netns OTHER``): nothing is added to, or routed through, the host
  namespace, and no address exists outside the lab namespaces.
- ``destroy`` kills the processes still inside each namespace (the lab started
  them all), then deletes the namespace; it never raises, and reports what it
  could not remove.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "rgl-"
BRIDGE = "br0"
CLIENT_LINK = "eth0"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class LabError(RuntimeError):
    """The lab could not be built or a lab command failed."""


def new_run_id() -> str:
    """A short random id: namespaces of parallel runs never share a name."""
    return secrets.token_hex(4)


def lab_namespaces(run_id: str | None = None) -> list[str]:
    """Namespaces named like a lab's (``rgl-``), of one run when ``run_id`` is given."""
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    start = PREFIX if run_id is None else f"{PREFIX}{run_id}-"
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(start))


@dataclass
class Namespaces:
    """The namespaces of one lab run; the only object that may create or enter them."""

    run_id: str
    created: list[str] = field(default_factory=list)
    _links: int = 0

    def name(self, role: str) -> str:
        return f"{PREFIX}{self.run_id}-{role}"

    def add(self, role: str) -> str:
        name = self.name(role)
        self._ip("netns", "add", name)
        self.created.append(name)
        self.run(name, ["ip", "link", "set", "lo", "up"])
        return name

    def own(self, namespace: str) -> None:
        """Refuse to act in a namespace this run did not create."""
        if namespace not in self.created or not namespace.startswith(self.name("")):
            raise LabError(f"refusing to run in namespace {namespace!r}: this lab did not make it")

    def command(self, namespace: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` inside ``namespace`` (after checking ownership)."""
        self.own(namespace)
        return ["ip", "netns", "exec", namespace, *argv]

    def run(
        self,
        namespace: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.command(namespace, argv),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise LabError(
                f"in {namespace}: {' '.join(argv)} exited {done.returncode}\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def popen(self, namespace: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command(namespace, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _ip(self, *args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabError(f"ip {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")

    def bridge(self, relay: str, addresses: Sequence[Address]) -> None:
        """Give the relay namespace a bridge holding the relay's own addresses."""
        self.own(relay)
        self._ip("-n", relay, "link", "add", BRIDGE, "type", "bridge")
        for address in addresses:
            self._ip("-n", relay, "addr", "add", _host(address), "dev", BRIDGE, *_nodad(address))
        self._ip("-n", relay, "link", "set", BRIDGE, "up")

    def attach(
        self,
        relay: str,
        client: str,
        addresses: Sequence[Address],
        relay_addresses: Sequence[Address],
    ) -> None:
        """Wire a client namespace to the relay's bridge and give it ``addresses``.

        Each side gets host routes only: the client reaches the relay's
        addresses through its link, the relay reaches exactly these client
        addresses through the bridge. Nothing else is routable, so a packet
        can only ever travel between lab namespaces.
        """
        self.own(relay)
        self.own(client)
        self._links += 1
        port = f"p{self._links}"
        self._ip(
            "-n",
            relay,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_LINK,
            "netns",
            client,
        )
        self._ip("-n", relay, "link", "set", port, "master", BRIDGE)
        self._ip("-n", relay, "link", "set", port, "up")
        for address in addresses:
            self._ip(
                "-n", client, "addr", "add", _host(address), "dev", CLIENT_LINK, *_nodad(address)
            )
            self._ip("-n", relay, "route", "add", _host(address), "dev", BRIDGE)
        self._ip("-n", client, "link", "set", CLIENT_LINK, "up")
        for address in relay_addresses:
            self._ip("-n", client, "route", "add", _host(address), "dev", CLIENT_LINK)

    def destroy(self) -> list[str]:
        """Kill what still runs inside the lab namespaces, delete them; the problems left."""
        problems: list[str] = []
        for namespace in reversed(self.created):
            problems.extend(delete_namespace(namespace))
        self.created.clear()
        return problems


def namespace_pids(namespace: str) -> list[int]:
    """The processes whose network namespace is ``namespace``."""
    done = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def delete_namespace(namespace: str) -> list[str]:
    """End every process inside ``namespace``, then delete it; the problems left.

    Kills in passes until none is left: a pre-forking daemon (postfwd, Postfix's
    master) may start a new child between the listing and the kill, and a child
    that outlives its master would otherwise hold on with the namespace deleted.
    """
    problems: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        for pid in namespace_pids(namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3.0
        while namespace_pids(namespace) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not namespace_pids(namespace):
            break
    if left := namespace_pids(namespace):
        problems.append(f"{namespace}: processes {left} survived SIGKILL")
    done = subprocess.run(
        ["ip", "netns", "del", namespace], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        problems.append(f"{namespace}: ip netns del: {done.stderr.strip()}")
    return problems


def _host(address: Address) -> str:
    return f"{address}/{address.max_prefixlen}"


def _nodad(address: Address) -> tuple[str, ...]:
    # Duplicate address detection would keep a fresh IPv6 address "tentative"
    # (unusable as a source) for a second or more; the lab owns the link.
    return ("nodad",) if address.version == 6 else ()
