"""Usage: the activity store seen per device, for the review and for ``relaygate query``.

Input: devices (the model), an open store, the as-of day. Output: per device
its days with accepted and rejected mail, its last accepted and last rejected
message (``Usage``), and the per-device view that ``relaygate query NAME``
prints (``DeviceView``, in text and as plain data).

Matching: a legacy device (``auth: ip|none``) by its address (a host, or
every logged address inside its prefix), counting only mail that arrived
*unauthenticated* from there: mail from its address that authenticated is
some login's, not the device's legacy use. An authenticated device by its
account (the SASL login, compared without case).
"""

from __future__ import annotations

import bisect
import datetime as dt
import ipaddress
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netaddr

from relaygate import model
from relaygate.lifecycle import store

#: The span of the per-device view's volume.
RECENT_DAYS = 30


@dataclass(slots=True)
class Usage:
    days: dict[dt.date, list[int]] = field(default_factory=dict)  # day -> [accepted, rejected]
    last: store.LastMessage | None = None
    last_rejected: store.LastMessage | None = None

    @property
    def last_day(self) -> dt.date | None:
        seen = [day for day, (accepted, _) in self.days.items() if accepted]
        return max(seen) if seen else None

    @property
    def accepted(self) -> int:
        return sum(accepted for accepted, _ in self.days.values())

    @property
    def rejected(self) -> int:
        return sum(rejected for _, rejected in self.days.values())


class AddressIndex:
    """Logged addresses, sorted per IP version, so a prefix finds its members by bisection."""

    def __init__(self, logged: Iterable[str]) -> None:
        self.by_version: dict[int, tuple[list[int], list[str]]] = {4: ([], []), 6: ([], [])}
        parsed = []
        for text in logged:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            parsed.append((address.version, int(address), text))
        for version, number, text in sorted(parsed):
            numbers, texts = self.by_version[version]
            numbers.append(number)
            texts.append(text)

    def inside(self, device: model.Device) -> list[str]:
        return self.inside_network(device.network)

    def inside_network(self, network: netaddr.IPNetwork) -> list[str]:
        numbers, texts = self.by_version[network.version]
        low = bisect.bisect_left(numbers, network.first)
        high = bisect.bisect_right(numbers, network.last)
        return texts[low:high]


def device_keys(
    devices: Iterable[model.Device], connection: sqlite3.Connection
) -> dict[str, tuple[store.Kind, list[str]]]:
    """Each device's store keys: its unauthenticated addresses (legacy) or its login."""
    index = AddressIndex(store.keys(connection, "address"))
    logins: dict[str, list[str]] = {}
    for login in store.keys(connection, "login"):
        logins.setdefault(login.lower(), []).append(login)
    found: dict[str, tuple[store.Kind, list[str]]] = {}
    for device in devices:
        if device.is_legacy or device.account is None:
            found[device.source] = ("address", index.inside(device))
        else:
            found[device.source] = ("login", logins.get(device.account.lower(), []))
    return found


def usages(
    devices: list[model.Device], connection: sqlite3.Connection, as_of: dt.date
) -> dict[str, Usage]:
    """Per device (by source path), its usage up to ``as_of``."""
    keys = device_keys(devices, connection)
    rows: dict[tuple[store.Kind, str], list[store.DayCount]] = {}
    lasts: dict[tuple[store.Kind, str, store.Event], store.LastMessage] = {}
    end_of_day = f"{as_of.isoformat()}T99"
    kinds: tuple[store.Kind, ...] = ("address", "login")
    for kind in kinds:
        wanted = {k for kind_, members in keys.values() if kind_ == kind for k in members}
        for count in store.day_counts(connection, kind, wanted, as_of):
            rows.setdefault((kind, count.key), []).append(count)
        events: tuple[store.Event, ...] = ("accepted", "rejected")
        for event in events:
            for key, message in store.last_messages(
                connection, kind, wanted, event, end_of_day
            ).items():
                lasts[(kind, key, event)] = message
    found: dict[str, Usage] = {}
    for device in devices:
        kind, members = keys[device.source]
        seen = Usage()
        for key in members:
            for count in rows.get((kind, key), []):
                slot = seen.days.setdefault(count.day, [0, 0])
                slot[0] += count.accepted
                slot[1] += count.rejected
            accepted = lasts.get((kind, key, "accepted"))
            if accepted is not None and (seen.last is None or accepted.at > seen.last.at):
                seen.last = accepted
            rejected = lasts.get((kind, key, "rejected"))
            if rejected is not None and (
                seen.last_rejected is None or rejected.at > seen.last_rejected.at
            ):
                seen.last_rejected = rejected
        found[device.source] = seen
    return found


# --- the per-device view (relaygate query NAME) ----------------------------------------------


_Last = store.LastMessage


@dataclass(frozen=True, slots=True)
class DeviceView:
    store: str
    as_of: dt.date
    last_accepted: _Last | None
    last_rejected: _Last | None
    recent_accepted: int
    recent_rejected: int
    logs_until: dt.date | None

    @property
    def since(self) -> dt.date:
        return self.as_of - dt.timedelta(days=RECENT_DAYS - 1)


def views(
    devices: list[model.Device], connection: sqlite3.Connection, shown: str, as_of: dt.date
) -> dict[str, DeviceView]:
    """The per-device view of each device, by name."""
    found = usages(devices, connection, as_of)
    until = store.coverage(connection).last_day
    start = as_of - dt.timedelta(days=RECENT_DAYS - 1)
    result: dict[str, DeviceView] = {}
    for device in devices:
        seen = found[device.source]
        recent = [pair for day, pair in seen.days.items() if start <= day <= as_of]
        result[device.name] = DeviceView(
            store=shown,
            as_of=as_of,
            last_accepted=seen.last,
            last_rejected=seen.last_rejected,
            recent_accepted=sum(a for a, _ in recent),
            recent_rejected=sum(r for _, r in recent),
            logs_until=until,
        )
    return result


def for_query(
    path: Path, shown: str, devices: list[model.Device], as_of: dt.date
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Text lines and data per record name for ``relaygate query``; nothing without a store."""
    if not path.exists() or not devices:
        return {}, {}
    with closing(store.connect(path)) as connection:
        found = views(devices, connection, shown, as_of)
    return (
        {name: view_text(view) for name, view in found.items()},
        {name: view_data(view) for name, view in found.items()},
    )


def _day(message: store.LastMessage) -> str:
    return f"{message.at[:10]} {message.at[11:19]}"


def view_text(view: DeviceView) -> list[str]:
    """The view as indented lines under the device's block."""
    last = view.last_accepted
    rejected = view.last_rejected
    until = f", logs until {view.logs_until}" if view.logs_until else ", no logs"
    return [
        f"  activity:  from {view.store}{until}",
        "    last accepted: "
        + (
            f"{_day(last)} on {last.relay}, from <{last.sender}> (queue id {last.queue_id})"
            if last
            else "none in the logs"
        ),
        "    last rejected: "
        + (
            f"{_day(rejected)} on {rejected.relay}: {rejected.detail}"
            if rejected
            else "none in the logs"
        ),
        f"    last {RECENT_DAYS} days ({view.since} .. {view.as_of}): "
        f"{view.recent_accepted} accepted, {view.recent_rejected} rejected",
    ]


def view_data(view: DeviceView) -> dict[str, Any]:
    """The view as plain data (the query's json format)."""

    def message(item: store.LastMessage | None, rejected: bool) -> dict[str, Any] | None:
        if item is None:
            return None
        data: dict[str, Any] = {
            "day": item.at[:10],
            "time": item.at[11:19],
            "relay": item.relay,
            "queue_id": item.queue_id,
            "sender": item.sender,
        }
        if rejected:
            data["reason"] = item.detail
        return data

    return {
        "store": view.store,
        "logs_until": view.logs_until.isoformat() if view.logs_until else None,
        "last_accepted": message(view.last_accepted, False),
        "last_rejected": message(view.last_rejected, True),
        "recent": {
            "days": RECENT_DAYS,
            "since": view.since.isoformat(),
            "until": view.as_of.isoformat(),
            "accepted": view.recent_accepted,
            "rejected": view.recent_rejected,
        },
    }
