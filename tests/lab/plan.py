"""What the lab builds for an inventory: namespaces, addresses, accounts.

Input: a checked inventory (``relaygate.pipeline.validate``). Output: a
``LabPlan``: the relay's addresses (the first relay host's), one segment
namespace per MOD segment that holds a device plus ``campus`` for the rest,
the address each device sends from, the SASL accounts with lab passwords,
the outsider's addresses, and the port of the volume-limit daemon.

Invariants: every record (retired ones too: their address and login may
linger after retirement) gets a source address equal to its address, or the
first host inside its prefix (a prefix of four or more addresses also gets
its second host, in the same namespace); the outsider's addresses are
held by no record and lie in no record's prefix (one in a MOD segment, one on
campus in IPv6, one off campus), so a test of "no record holds it" is honest.
Expectations the tests check are derived from the records here, never from
the compiler's policy module, so a compiler bug cannot hide itself.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from relaygate.model import Device, Inventory, Status
from relaygate.pipeline import validate
from tests.lab.netns import Address, LabError
from tests.lab.relay import Account

CAMPUS = "campus"
OUTSIDER = "outsider"
#: An off-campus address for the outsider (TEST-NET-2, RFC 5737).
OFF_CAMPUS = ipaddress.ip_address("198.51.100.7")


@dataclass(frozen=True)
class Client:
    """A record as the lab sees it: where it sends from and what it may use."""

    name: str
    namespace_role: str
    source: Address
    legacy: bool
    status: Status
    account: str | None
    senders: tuple[str, ...]
    status_reason: str | None
    status_ticket: str | None
    #: For a prefix record, a second host inside it (the lab gives it to the
    #: same namespace): "another of the record's addresses".
    other_source: Address | None = None


@dataclass(frozen=True)
class Outsider:
    """Addresses no record holds: in a MOD segment (IPv4 and IPv6) and off campus."""

    campus_v4: Address
    campus_v6: Address
    off_campus: Address

    @property
    def all(self) -> tuple[Address, ...]:
        return (self.campus_v4, self.campus_v6, self.off_campus)


@dataclass(frozen=True)
class LabPlan:
    relay_fqdn: str
    relay_addresses: tuple[Address, ...]
    relay_port: int
    submission_port: int
    #: Where Postfix asks the volume-limit daemon (127.0.0.1 in the relay namespace).
    volume_port: int
    clients: tuple[Client, ...]
    accounts: tuple[Account, ...]
    outsider: Outsider

    def client(self, name: str) -> Client:
        for client in self.clients:
            if client.name == name:
                return client
        raise LabError(f"no record named {name!r} in the lab's inventory")

    def account(self, login: str) -> Account:
        for account in self.accounts:
            if account.login == login:
                return account
        raise LabError(f"no account {login!r} in the lab's inventory")

    def roles(self) -> dict[str, list[Address]]:
        """Client namespace role -> the addresses it holds, in a fixed order."""
        found: dict[str, list[Address]] = {}
        for client in self.clients:
            found.setdefault(client.namespace_role, []).append(client.source)
            if client.other_source is not None:
                found[client.namespace_role].append(client.other_source)
        found[OUTSIDER] = list(self.outsider.all)
        return found

    def relay_address(self, version: int) -> Address:
        for address in self.relay_addresses:
            if address.version == version:
                return address
        raise LabError(f"the relay has no IPv{version} address")

    @property
    def active(self) -> tuple[Client, ...]:
        return tuple(c for c in self.clients if c.status is Status.ACTIVE)


def load(inventory_root: Path, as_of: dt.date) -> Inventory:
    result = validate(inventory_root, as_of)
    if result.inventory is None:
        problems = "\n".join(str(f) for f in result.findings if f.is_error)
        raise LabError(f"the inventory at {inventory_root} has errors:\n{problems}")
    return result.inventory


def make_plan(inventory: Inventory) -> LabPlan:
    site = inventory.site
    host = site.relay_hosts[0]
    relay_addresses = tuple(ipaddress.ip_address(str(a.ip)) for a in host.addresses)
    clients = tuple(_client(device, inventory) for device in inventory.devices)
    logins = sorted({d.account for d in inventory.devices if d.account})
    accounts = tuple(Account(login, secrets.token_urlsafe(12)) for login in logins)
    return LabPlan(
        relay_fqdn=host.fqdn,
        relay_addresses=relay_addresses,
        relay_port=site.relay_port,
        submission_port=site.submission_port,
        volume_port=site.volume_limits.port,
        clients=clients,
        accounts=accounts,
        outsider=_outsider(inventory, relay_addresses),
    )


def _source(device: Device) -> Address:
    network = ipaddress.ip_network(str(device.network))
    if network.num_addresses == 1:
        return network.network_address
    # A prefix record: a host inside it (not the network address itself).
    return network.network_address + 1


def _client(device: Device, inventory: Inventory) -> Client:
    source = _source(device)
    role = CAMPUS
    for segment in inventory.site.mod_segments:
        if any(source in ipaddress.ip_network(str(p)) for p in segment.prefixes):
            role = segment.name
    return Client(
        name=device.name,
        namespace_role=role,
        source=source,
        legacy=device.is_legacy,
        status=device.status,
        account=device.account,
        senders=device.senders,
        status_reason=device.status_reason,
        status_ticket=device.status_ticket,
        other_source=_other_source(device),
    )


def _other_source(device: Device) -> Address | None:
    network = ipaddress.ip_network(str(device.network))
    # Not the network address, not the first host (the record's source), and
    # in IPv4 not the broadcast address.
    return network.network_address + 2 if network.num_addresses >= 4 else None


def _outsider(inventory: Inventory, relay: tuple[Address, ...]) -> Outsider:
    held = [ipaddress.ip_network(str(d.network)) for d in inventory.devices]

    def free(address: Address) -> bool:
        return address not in relay and not any(address in network for network in held)

    def campus(address: Address) -> bool:
        return any(
            address in ipaddress.ip_network(str(n.prefix)) for n in inventory.site.campus_networks
        )

    chosen: dict[int, Address] = {}
    for version in (4, 6):
        # The highest free host of the first MOD prefix of this family: a
        # neighbour of registered devices, on campus, held by no record.
        for segment in inventory.site.mod_segments:
            prefixes = [
                ipaddress.ip_network(str(p)) for p in segment.prefixes if p.version == version
            ]
            if not prefixes:
                continue
            candidate = prefixes[0].network_address + min(prefixes[0].num_addresses - 2, 0xFA)
            while not free(candidate):
                candidate -= 1
            chosen[version] = candidate
            break
    if campus(OFF_CAMPUS) or not free(OFF_CAMPUS):
        raise LabError(f"{OFF_CAMPUS} is on campus in this inventory; the lab needs it outside")
    if set(chosen) != {4, 6}:
        raise LabError("the lab needs a MOD segment with an IPv4 and one with an IPv6 prefix")
    return Outsider(campus_v4=chosen[4], campus_v6=chosen[6], off_campus=OFF_CAMPUS)
