"""The abuse fast path: which devices passed the site's thresholds in the last minutes of the logs.

Input: a ``logs.timeline.Timeline`` (the relays' logs, read by the same
format readers as ingest), the inventory's records, the thresholds (site.yaml
``abuse_watch``, its schema's defaults, the command's overrides) and the end
of the window (the latest log time, or the command's ``--now``: "now" is an
input, so the same logs give the same answer). Output: a ``Watch``: per
client over a threshold, what was measured against what, the records it is,
and the commands that stop it; the lines where Postfix could not reach the
policy service.

Attribution is the activity store's: a legacy record (``auth: ip|none``) is
the mail that arrived *unauthenticated* from its address; an authenticated
record is the mail of its account (the SASL login, compared without case).
Several records of one account are one client (a login's limit is the sum of
theirs). A client no record covers is reported as such; loopback (content
filters re-injecting) and the relays' own addresses are the relay's own
traffic, not a client.

What is measured in the window ``(end - window_minutes, end]``:

* messages: accepted messages (qmgr's first ``queue active``);
* rejected ratio: rejected recipients (reject lines) over all recipients
  (the rejected ones and the ``nrcpt`` of the accepted messages), counted
  only from ``min_rejected`` rejected recipients on;
* distinct recipients: the recipient addresses (lower case) of deliveries
  and of rejects.

A client passes a threshold when its value is *above* it. Beside them the
client's daily volume limit (``relaygate.limits``; None for a client no
relaying record covers): more accepted messages in the window than the whole
limit, or any refusal of the volume-limit policy service, flag it too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from relaygate import limits as daily
from relaygate import model, schema
from relaygate.findings import Finding
from relaygate.lifecycle import usage
from relaygate.lifecycle.logs import timeline
from relaygate.rules import rule

#: The thresholds' names in site.yaml's ``abuse_watch`` (and their schema defaults).
FIELDS = (
    "window_minutes",
    "max_messages",
    "max_rejected_ratio",
    "min_rejected",
    "max_distinct_recipients",
)
#: What a flagged, active record is suspended with.
SUSPEND_REASON = "compromised"

SubjectKind = Literal["legacy", "login", "unknown-address", "unknown-login"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    window_minutes: int
    max_messages: int
    max_rejected_ratio: float
    min_rejected: int
    max_distinct_recipients: int
    #: Where each value came from: "site.yaml", "default" or "option".
    origin: tuple[tuple[str, str], ...] = ()

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.window_minutes)


def schema_defaults() -> dict[str, Any]:
    """The defaults of ``abuse_watch`` as the site schema states them (one place for them)."""
    document = json.loads(schema.schema_text("site"))
    properties = document["properties"]["abuse_watch"]["properties"]
    return {name: properties[name]["default"] for name in FIELDS}


def thresholds(site_block: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> Thresholds:
    """Options over site.yaml over the schema's defaults."""
    values: dict[str, Any] = {}
    origin: list[tuple[str, str]] = []
    defaults = schema_defaults()
    for name in FIELDS:
        if overrides.get(name) is not None:
            values[name], said = overrides[name], "option"
        elif site_block is not None and name in site_block:
            values[name], said = site_block[name], "site.yaml"
        else:
            values[name], said = defaults[name], "default"
        origin.append((name, said))
    return Thresholds(
        window_minutes=int(values["window_minutes"]),
        max_messages=int(values["max_messages"]),
        max_rejected_ratio=float(values["max_rejected_ratio"]),
        min_rejected=int(values["min_rejected"]),
        max_distinct_recipients=int(values["max_distinct_recipients"]),
        origin=tuple(origin),
    )


@dataclass(slots=True)
class Measure:
    """One client's traffic in the window."""

    messages: int = 0
    accepted_recipients: int = 0
    rejected: int = 0
    over_limit: int = 0  # refusals of the volume-limit policy service
    recipients: set[str] = field(default_factory=set)
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    relays: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)

    def add(self, event: timeline.Event) -> None:
        if event.kind == "accepted":
            self.messages += 1
            self.accepted_recipients += event.count
        elif event.kind == "rejected":
            self.rejected += 1
            self.over_limit += bool(event.over_limit)
        if event.recipient:
            self.recipients.add(event.recipient)
        self.first = event.at if self.first is None else min(self.first, event.at)
        self.last = event.at if self.last is None else max(self.last, event.at)
        self.relays.add(event.relay)
        self.addresses.add(event.address)

    @property
    def ratio(self) -> float:
        total = self.rejected + self.accepted_recipients
        return self.rejected / total if total else 0.0


@dataclass(frozen=True, slots=True)
class Reason:
    threshold: str  # a name of FIELDS
    text: str


@dataclass(slots=True)
class Flagged:
    """A client over at least one threshold."""

    kind: SubjectKind
    key: str  # the record name (legacy), the login, or the unknown address/login
    records: list[model.Device]
    measure: Measure
    reasons: list[Reason]
    #: The client's daily limit (relaygate.limits) and how it was reached; None when no
    #: record of it relays (refused, lapsed or unknown).
    limit: tuple[int, str] | None = None

    @property
    def active(self) -> list[model.Device]:
        return [d for d in self.records if d.status is model.Status.ACTIVE]

    @property
    def needs_action(self) -> bool:
        """Active records to stop, or mail still accepted (refused records, unknown clients)."""
        if self.kind in ("unknown-address", "unknown-login"):
            return self.measure.messages > 0
        return bool(self.active) or self.measure.messages > 0


@dataclass(slots=True)
class Watch:
    start: dt.datetime | None
    end: dt.datetime | None
    end_from: str  # "--now" or "the latest log time"
    thresholds: Thresholds
    flagged: list[Flagged]
    troubles: list[timeline.PolicyTrouble]  # in the window
    earlier_troubles: int  # before the window
    clients: int  # clients with traffic in the window
    events: int  # events in the window

    @property
    def needs_action(self) -> bool:
        return bool(self.troubles) or any(f.needs_action for f in self.flagged)


def _is_own(address: str, relays: Iterable[model.RelayHost]) -> bool:
    """Loopback (content filters re-injecting) or a relay's own address: the relay's own mail."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    if parsed.is_loopback:
        return True
    return any(address in network for host in relays for network in host.addresses)


def _prefer_live(records: list[model.Device]) -> list[model.Device]:
    """A retired record's address or account may be reused: the live records take the mail."""
    live = [d for d in records if d.status is not model.Status.RETIRED]
    return sorted(live or records, key=lambda d: d.name)


def attribute(
    events: list[timeline.Event],
    devices: list[model.Device],
    relays: tuple[model.RelayHost, ...],
) -> dict[tuple[SubjectKind, str], tuple[list[model.Device], Measure]]:
    """Each event's client: a legacy record, an account's records, or an unknown client."""
    legacy = [d for d in devices if d.is_legacy or d.account is None]
    accounts: dict[str, list[model.Device]] = {}
    for device in devices:
        if not (device.is_legacy or device.account is None):
            accounts.setdefault(device.account.lower(), []).append(device)
    index = usage.AddressIndex({e.address for e in events if e.login is None})
    by_address: dict[str, list[model.Device]] = {}
    for device in legacy:
        for address in index.inside(device):
            by_address.setdefault(address, []).append(device)
    found: dict[tuple[SubjectKind, str], tuple[list[model.Device], Measure]] = {}
    for event in events:
        subject: tuple[SubjectKind, str]
        records: list[model.Device]
        if event.login is not None:
            records = _prefer_live(accounts.get(event.login.lower(), []))
            subject = ("login", event.login.lower()) if records else ("unknown-login", event.login)
        else:
            records = _prefer_live(by_address.get(event.address, []))
            if records:
                subject = ("legacy", records[0].name)
            elif _is_own(event.address, relays):
                continue
            else:
                subject = ("unknown-address", event.address)
        slot = found.get(subject)
        if slot is None:
            slot = found[subject] = (records, Measure())
        if event.over_limit and event.over_limit != _limit_subject(subject):
            slot[1].add(dataclasses.replace(event, over_limit=""))  # it names someone else
        else:
            slot[1].add(event)
    return found


def _limit_subject(subject: tuple[SubjectKind, str]) -> str:
    """Whom the volume-limit refusal of this client names (render/postfwd.py's text)."""
    kind, key = subject
    return {"legacy": f"device {key}", "login": f"login {key}"}.get(kind, "")


def daily_limit(
    kind: SubjectKind,
    key: str,
    records: list[model.Device],
    site: model.Site,
    lapsed: Mapping[str, model.Lapse],
) -> tuple[int, str] | None:
    """The daily limit the relay enforces for a client, and how it was reached.

    A legacy record's own; a login's, the sum of its active records' (``relaygate.limits``
    computes both). None when no record of the client relays (refused, lapsed, unknown).
    """
    relaying = [d for d in records if d.status is model.Status.ACTIVE and d.source not in lapsed]
    if not relaying:
        return None
    parts = [(d.name, daily.record_limit(d, site.volume_limits)) for d in relaying]
    if kind == "legacy":
        limit = parts[0][1]
        return limit.per_day, limit.explanation
    login = daily.login_limit(key, parts)
    shares = ", ".join(f"{name} {limit.per_day}" for name, limit in login.parts)
    return login.per_day, f"the login's: the sum of its active records' ({shares})"


def reasons(
    measure: Measure, limits: Thresholds, limit: tuple[int, str] | None = None
) -> list[Reason]:
    """The thresholds a client's window passes, each with its value and the threshold.

    Beside the site's thresholds, the client's daily volume limit: more accepted messages
    in the window than the whole limit (the policy service did not refuse them: down, or
    not deployed), or any message the policy service refused over the limit.
    """
    found: list[Reason] = []
    minutes = limits.window_minutes
    if measure.messages > limits.max_messages:
        found.append(
            Reason(
                "max_messages",
                f"{measure.messages} messages accepted in {minutes} min"
                f" (threshold {limits.max_messages})",
            )
        )
    if measure.rejected >= limits.min_rejected and measure.ratio > limits.max_rejected_ratio:
        found.append(
            Reason(
                "max_rejected_ratio",
                f"{measure.rejected} of {measure.rejected + measure.accepted_recipients}"
                f" recipients rejected ({measure.ratio:.0%}; threshold"
                f" {limits.max_rejected_ratio:.0%} from {limits.min_rejected} rejected on)",
            )
        )
    if len(measure.recipients) > limits.max_distinct_recipients:
        found.append(
            Reason(
                "max_distinct_recipients",
                f"{len(measure.recipients)} distinct recipients"
                f" (threshold {limits.max_distinct_recipients})",
            )
        )
    if limit is not None and measure.messages > limit[0]:
        found.append(
            Reason(
                "volume_limit",
                f"{measure.messages} messages accepted in {minutes} min, more than its daily"
                f" volume limit of {limit[0]} (the policy service did not refuse them)",
            )
        )
    if measure.over_limit:
        of = f" of {limit[0]}" if limit is not None else ""
        found.append(
            Reason(
                "volume_limit_reached",
                f"{measure.over_limit} messages refused over its daily volume limit{of} (it"
                " reached the limit: the policy service holds it back, 4xx, until the day passes)",
            )
        )
    return found


def run(
    read: timeline.Timeline,
    devices: list[model.Device],
    site: model.Site,
    limits: Thresholds,
    now: dt.datetime | None,
    lapsed: Mapping[str, model.Lapse] | None = None,
) -> Watch:
    """Look at the window that ends at ``now`` (default: the latest log time)."""
    end = now if now is not None else read.latest
    end_from = "--now" if now is not None else "the latest log time"
    if end is None:
        return Watch(None, None, end_from, limits, [], [], 0, 0, 0)
    start = end - limits.window
    inside = [e for e in read.events if start < e.at <= end]
    flagged: list[Flagged] = []
    subjects = attribute(inside, devices, site.relay_hosts)
    for (kind, key), (records, measure) in sorted(subjects.items()):
        limit = daily_limit(kind, key, records, site, lapsed or {})
        found = reasons(measure, limits, limit)
        if found:
            flagged.append(Flagged(kind, key, records, measure, found, limit))
    troubles = [t for t in read.troubles if start < t.at <= end]
    earlier = sum(1 for t in read.troubles if t.at <= start)
    return Watch(
        start, end, end_from, limits, flagged, troubles, earlier, len(subjects), len(inside)
    )


# --- the report -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Steps:
    """What the printed commands need: the day, the ticket, the inventory as given."""

    as_of: dt.date
    ticket: str | None
    inventory: str  # as the user gave it ("inventory" is left out of the commands)


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def _span(measure: Measure) -> str:
    first, last = measure.first, measure.last
    if first is None or last is None:
        return ""
    shown_last = last.strftime("%H:%M:%S") if first.date() == last.date() else _when(last)
    return f"{_when(first)} .. {shown_last} on {', '.join(sorted(measure.relays))}"


def measured(measure: Measure) -> str:
    total = measure.rejected + measure.accepted_recipients
    over = f" ({measure.over_limit} over the volume limit)" if measure.over_limit else ""
    return (
        f"{measure.messages} messages, {measure.rejected} of {total} recipients rejected"
        f"{over} ({measure.ratio:.0%}), {len(measure.recipients)} distinct recipients"
    )


def header(watch: Watch) -> list[str]:
    limits = watch.thresholds
    origin = dict(limits.origin)
    words = {"default": "defaults", "site.yaml": "site.yaml abuse_watch", "option": "options"}
    sources = [words[k] for k in ("option", "site.yaml", "default") if k in origin.values()]
    lines = [
        f"activity watch: the {limits.window_minutes} minutes up to {_when(watch.end)}"
        f" ({watch.end_from})",
        f"thresholds ({' over '.join(sources)}): more than {limits.max_messages} messages,"
        f" more than {limits.max_rejected_ratio:.0%} of recipients rejected"
        f" (from {limits.min_rejected} rejected on),"
        f" more than {limits.max_distinct_recipients} distinct recipients",
    ]
    return lines


def trouble_findings(watch: Watch) -> list[Finding]:
    """The loud warning: Postfix could not reach a policy service in the window.

    One finding per relay and server, at the first such line.
    """
    groups: dict[tuple[str, str], list[timeline.PolicyTrouble]] = {}
    for trouble in watch.troubles:
        groups.setdefault((trouble.relay, trouble.server), []).append(trouble)
    found = []
    for (relay, server), items in sorted(groups.items()):
        first = items[0]
        earlier = (
            f"; {watch.earlier_troubles} more such lines before the window"
            if watch.earlier_troubles
            else ""
        )
        found.append(
            rule("watch.policy-service-unreachable").at(
                first.path,
                first.line,
                0,
                f"{relay} could not reach the policy service {server} {len(items)} times in the"
                f" window ({_when(first.at)} .. {_when(items[-1].at)}): the volume limits are NOT"
                f" enforced while it is down (mail keeps flowing){earlier}",
            )
        )
    return found


def file_finding(item: timeline.FileRead) -> Finding | None:
    """A log that failed, or gave no Postfix line, as a finding (None: it was read)."""
    if item.status == "failed":
        return rule("watch.log-unreadable").at(item.path, 0, 0, f"cannot be read: {item.problem}")
    if item.status == "empty":
        return rule("watch.log-unusable").at(item.path, 0, 0, "the file is empty")
    if item.status == "unusable":
        return rule("watch.log-unusable").at(item.path, 0, 0, str(item.problem))
    return None


def _who(flag: Flagged) -> str:
    if flag.kind == "unknown-address":
        return f"{flag.key} (no record covers this address; unauthenticated)"
    if flag.kind == "unknown-login":
        return f"SASL login {flag.key} (no record has this account)"
    parts = []
    for device in flag.records:
        status = device.status.value
        if device.status is not model.Status.ACTIVE:
            note = ", ".join(
                str(v)
                for v in (device.status_reason, device.status_date, device.status_ticket)
                if v
            )
            status += f" ({note})" if note else ""
        client = device.address if flag.kind == "legacy" else device.account
        parts.append(f"{device.name} ({device.unit}, {client}, auth {device.auth.value}, {status})")
    return "; ".join(parts)


def _record_path(device: model.Device) -> str:
    return device.source


def stop_commands(flag: Flagged, steps: Steps, applied: bool) -> list[str]:
    """The suspend edit (unless applied) and the fast revoke that takes it to the relays."""
    active = flag.active
    if not active:
        return []
    ticket = steps.ticket or "TICKET"
    where = "" if steps.inventory == "inventory" else f" --inventory {steps.inventory}"
    lines: list[str] = []
    if not applied:
        for device in active:
            lines.append(
                f"relaygate suspend {device.name} --reason {SUSPEND_REASON} --ticket {ticket}"
                f" --date {steps.as_of}{where}"
            )
    names = ", ".join(d.name for d in active)
    paths = " ".join(_record_path(d) for d in active)
    lines += [
        f'git commit -m "Suspend {names}: {SUSPEND_REASON} ({ticket})" {paths}',
        f"relaygate compile --out build/relay --as-of {steps.as_of}{where}",
        "relaygate deploy --out build/relay -i DEPLOY_INVENTORY --tags revoke",
    ]
    return lines


def flag_lines(flag: Flagged, steps: Steps, applied: bool) -> list[str]:
    measure = flag.measure
    lines = [f"flagged: {_who(flag)}"]
    lines += [f"  over: {reason.text}" for reason in flag.reasons]
    lines.append(f"  measured: {measured(measure)}, {_span(measure)}")
    if flag.limit is not None:
        per_day, how = flag.limit
        share = measure.messages / per_day
        shown = f"{share:.0%}" if share >= 0.01 or not measure.messages else "under 1%"
        lines.append(
            f"  volume limit: {per_day} messages a day ({how}); the window's"
            f" {measure.messages} are {shown} of it"
        )
    if flag.kind == "login":
        lines.append(f"  from: {', '.join(sorted(measure.addresses))}")
    if flag.kind in ("unknown-address", "unknown-login"):
        if measure.messages:
            lines.append(
                "  the relay ACCEPTED mail from a client no record covers: check its maps"
                f" (relaygate query {flag.key}) and the relay's configuration"
            )
        else:
            lines.append("  every attempt was refused by the relay; nothing to suspend")
        return lines
    stale = [d for d in flag.records if d.status is not model.Status.ACTIVE]
    for device in stale:
        if measure.messages:
            lines.append(
                f"  {device.name} is already {device.status.value} in the inventory, yet"
                f" {measure.messages} messages were accepted in the window: the refusal has not"
                " reached the relay; compile and deploy it (relaygate deploy ... --tags revoke)"
            )
        else:
            lines.append(
                f"  {device.name} is already {device.status.value}: every attempt was refused;"
                " nothing to suspend"
            )
    if not applied:
        lines += command_lines(flag, steps, applied)
    return lines


def command_lines(flag: Flagged, steps: Steps, applied: bool) -> list[str]:
    """The commands that stop a flagged client (after ``--apply``'s edit: what is left)."""
    commands = stop_commands(flag, steps, applied)
    if not commands:
        return []
    return ["  to stop it:" if not applied else "  then:"] + [f"    {c}" for c in commands]


FAST_PATH_NOTE = (
    "the fast revoke (--tags revoke) applies new refusals only, suspensions included (the"
    " refused maps and the suspended nft sets), on every relay at once; the deploy verifies"
    " the folder against the committed inventory, so commit (and merge) the suspension first"
)


def summary(watch: Watch) -> str:
    acting = sum(1 for f in watch.flagged if f.needs_action)
    text = (
        f"{len(watch.flagged)} clients over a threshold ({acting} need action) of"
        f" {watch.clients} with mail in the window"
    )
    if watch.troubles:
        text += f"; the policy service was unreachable {len(watch.troubles)} times"
    return text
