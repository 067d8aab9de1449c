"""Proof of silence: which days every relay's logs cover.

Input: the store's coverage (per relay, the merged spans of its files' first
and last days) and the relays of ``site.yaml``. Output: a ``Proof`` that says
how long a stretch of a device's silence the logs of *every* relay cover,
and where they stop; notes on relays of ``site.yaml`` without logs and on
relays in the logs that ``site.yaml`` does not list. Relays are matched by
``name`` or the first label of ``fqdn`` (``logs.relay_name``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from relaygate import model
from relaygate.lifecycle import store
from relaygate.lifecycle.logs import relay_name


@dataclass(frozen=True, slots=True)
class Proof:
    """How much of a silence the logs cover, on every relay."""

    relays: dict[str, tuple[store.Span, ...]]  # site relay -> its covered spans
    common: tuple[store.Span, ...]  # days every site relay covers

    def stretch(self, first: dt.date, last: dt.date) -> store.Span | None:
        """The longest stretch of days in ``first .. last`` that every relay covers."""
        best: store.Span | None = None
        for span in self.common:
            start, end = max(span.first, first), min(span.last, last)
            if start <= end and (best is None or (end - start).days + 1 > best.days):
                best = store.Span(start, end)
        return best

    def unknown_since(self, first: dt.date) -> tuple[dt.date, str]:
        """The first day from ``first`` on that some relay does not cover, and that relay."""
        found: list[tuple[dt.date, str]] = []
        for relay, spans in self.relays.items():
            day = first
            for span in spans:
                if span.first <= day <= span.last:
                    day = span.last + dt.timedelta(days=1)
            found.append((day, relay))
        return min(found) if found else (first, "any relay")


def _intersect(
    left: tuple[store.Span, ...], right: tuple[store.Span, ...]
) -> tuple[store.Span, ...]:
    found: list[store.Span] = []
    for a in left:
        for b in right:
            start, end = max(a.first, b.first), min(a.last, b.last)
            if start <= end:
                found.append(store.Span(start, end))
    return store.merge(found)


def proof(coverage: store.Coverage, site_relays: tuple[model.RelayHost, ...]) -> Proof:
    """The covered days of each relay of ``site.yaml`` (matched by name or FQDN's first label)."""
    relays: dict[str, tuple[store.Span, ...]] = {}
    for host in site_relays:
        names = {relay_name(host.name), relay_name(host.fqdn)}
        relays[host.name] = store.merge(
            span for name in sorted(names) for span in coverage.relays.get(name, ())
        )
    if not relays:  # no relay listed: the logs' own relays
        relays = dict(coverage.relays)
    common: tuple[store.Span, ...] | None = None
    for spans in relays.values():
        common = spans if common is None else _intersect(common, spans)
    return Proof(relays, common or ())


def relay_notes(coverage: store.Coverage, site_relays: tuple[model.RelayHost, ...]) -> list[str]:
    """Relays of site.yaml without logs, and relays in the logs that site.yaml does not list."""
    notes: list[str] = []
    listed: set[str] = set()
    for host in site_relays:
        names = {relay_name(host.name), relay_name(host.fqdn)}
        listed |= names
        if not names & set(coverage.relays):
            notes.append(
                f"relay {host.name} (site.yaml) has no log lines in the store: silence cannot "
                "be proven until its logs are ingested"
            )
    for relay in coverage.relays:
        if relay not in listed:
            notes.append(
                f"the logs name relay {relay!r}, which site.yaml does not list: its mail is "
                "counted, but its logs prove no silence"
            )
    return notes
