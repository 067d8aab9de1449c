"""Stage 5: the effective relay policy, derived from a checked inventory.

Input: an error-free ``Inventory``. Output: ``Policy``, the one structure
every renderer and the verifier read. It answers "who may relay, with which
senders, and who is refused", in a fixed order (by address, then name), so
every artifact is byte-stable whatever order the files were read in.

Only ``active`` records grant access. ``revoked`` and ``suspended`` records are
refused explicitly (the relay's log says why); ``retired`` records are
history and appear nowhere. An active record in ``inventory.lapsed`` (its
exception expired, its NetReg reservation or its approver is gone) is refused
exactly like a suspended one, with that reason and its date: every target
treats it as suspended, so they agree with each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass

import netaddr

from relaygate.addresses import canonical_text
from relaygate.limits import Limit, LoginLimit, login_limit, record_limit
from relaygate.model import Device, Inventory, ModSegment, Site, Status


@dataclass(frozen=True, slots=True)
class SenderClass:
    """A Postfix restriction class: one distinct set of allowed senders."""

    name: str
    senders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LegacyClient:
    name: str
    address: str  # canonical text
    network: netaddr.IPNetwork
    sender_class: str
    segment: str
    ticket: str
    limit: Limit  # its daily message limit (relaygate.limits)


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    name: str
    account: str
    address: str
    network: netaddr.IPNetwork
    senders: tuple[str, ...]
    segment: str | None
    limit: Limit  # this record's share of its login's daily limit (relaygate.limits)


@dataclass(frozen=True, slots=True)
class RefusedClient:
    """A revoked or suspended record: refused with a short reason."""

    name: str
    address: str
    network: netaddr.IPNetwork
    account: str | None
    status: Status
    reason: str
    ticket: str | None
    since: dt.date | None = None  # the day a lapse took effect (an expiry), when known


@dataclass(frozen=True, slots=True)
class Policy:
    site: Site
    legacy: tuple[LegacyClient, ...]
    authenticated: tuple[AuthenticatedClient, ...]
    refused: tuple[RefusedClient, ...]
    classes: tuple[SenderClass, ...]

    @property
    def login_limits(self) -> dict[str, LoginLimit]:
        """Login -> its daily limit (the sum of its active records' limits), by login."""
        parts: dict[str, list[tuple[str, Limit]]] = {}
        for client in self.authenticated:
            parts.setdefault(client.account, []).append((client.name, client.limit))
        return {login: login_limit(login, parts[login]) for login in sorted(parts)}

    @property
    def sender_logins(self) -> dict[str, tuple[str, ...]]:
        """Sender address -> the accounts that own it, both sorted."""
        owners: dict[str, set[str]] = {}
        for client in self.authenticated:
            for sender in client.senders:
                owners.setdefault(sender, set()).add(client.account)
        return {sender: tuple(sorted(owners[sender])) for sender in sorted(owners)}

    def segment_clients(
        self, segment: ModSegment
    ) -> tuple[tuple[LegacyClient, ...], tuple[AuthenticatedClient, ...]]:
        return (
            tuple(c for c in self.legacy if c.segment == segment.name),
            tuple(c for c in self.authenticated if c.segment == segment.name),
        )


#: The shape of every restriction class name relaygate generates.
CLASS_PATTERN = re.compile(r"relaygate_s_[0-9a-f]{12}")


def class_name(senders: tuple[str, ...]) -> str:
    """A stable name for a sender set: the same set always gets the same class."""
    digest = hashlib.sha256("\n".join(sorted(senders)).encode()).hexdigest()[:12]
    return f"relaygate_s_{digest}"


def _sort_key(network: netaddr.IPNetwork, name: str) -> tuple[int, int, int, str]:
    return (network.version, network.first, network.prefixlen, name)


def _ticket(device: Device) -> str:
    return device.exception.mod_ticket or "" if device.exception else ""


def build_policy(inventory: Inventory) -> Policy:
    site = inventory.site
    legacy: list[LegacyClient] = []
    authenticated: list[AuthenticatedClient] = []
    refused: list[RefusedClient] = []
    classes: dict[str, SenderClass] = {}
    lapsed = inventory.lapsed
    inventory = inventory.effective()
    segments = site.segment_index()
    for device in inventory.devices:
        address = canonical_text(device.network)
        if device.status in (Status.REVOKED, Status.SUSPENDED):
            refused.append(
                RefusedClient(
                    name=device.name,
                    address=address,
                    network=device.network,
                    account=None if device.is_legacy else device.account,
                    status=device.status,
                    reason=device.status_reason or "unspecified",
                    ticket=device.status_ticket,
                    since=lapsed[device.source].since if device.source in lapsed else None,
                )
            )
            continue
        if device.status is not Status.ACTIVE:
            continue
        senders = device.relay_senders
        if device.is_legacy:
            name = class_name(senders)
            classes.setdefault(name, SenderClass(name, senders))
            segment = segments.first(device.network)
            if segment is None:  # pragma: no cover - legacy.outside-mod stops this earlier
                raise AssertionError(f"legacy device {device.name} outside every MOD segment")
            legacy.append(
                LegacyClient(
                    device.name,
                    address,
                    device.network,
                    name,
                    segment,
                    _ticket(device),
                    record_limit(device, site.volume_limits),
                )
            )
        else:
            assert device.account is not None  # auth.account-missing stops this earlier
            authenticated.append(
                AuthenticatedClient(
                    device.name,
                    device.account,
                    address,
                    device.network,
                    senders,
                    segments.first(device.network),
                    record_limit(device, site.volume_limits),
                )
            )
    return Policy(
        site=site,
        legacy=tuple(sorted(legacy, key=lambda c: _sort_key(c.network, c.name))),
        authenticated=tuple(sorted(authenticated, key=lambda c: _sort_key(c.network, c.name))),
        refused=tuple(sorted(refused, key=lambda c: _sort_key(c.network, c.name))),
        classes=tuple(sorted(classes.values(), key=lambda c: c.name)),
    )
