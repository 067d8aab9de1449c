"""The annual access retention review: the activity store joined with the inventory.

Input: the inventory (every record that could be read, even when the
inventory has errors: an expired exception is an error, and the review is
where it gets handled), the activity store (may be absent), the as-of day and
the site policy (``inactivity_days``, ``expiry_warning_days``). Output: a
``Review`` (items by category, sorted by category then record name) and its
text in one of the registered formats (``notices`` turns it into messages
for the technical contacts). Nothing reads the clock: "today" is ``as_of``,
and only days up to it count.

A device is matched to the store by its address (a host, or every logged
address inside its prefix) when it is legacy (``auth: ip|none``), counting
only mail that arrived unauthenticated from there, and by its account (SASL
login, compared case-insensitively) when it authenticates (``usage``). Only
accepted mail is activity; rejected attempts are reported beside it.

Silence is claimed only where the logs prove it. The store knows, per relay,
which days its logs cover (``store.coverage``, ``proof``); a device's silence counts
only over the days *every* relay of ``site.yaml`` covers, and a removal
candidate needs such a covered stretch as long as the inactivity window.
Otherwise the review says how far the logs reach ("silence unknown since
DATE on relay X"). Relays named in the logs but not in ``site.yaml``, and
relays of ``site.yaml`` without logs, are reported in notes.

Categories (``CATEGORIES``, in report order):

* ``inactive``: active, last accepted mail ``inactivity_days`` or more ago,
  and the logs cover that silence (a removal candidate);
* ``never-seen``: active, no accepted mail and no rejected attempt at all,
  and silent, in covered logs, for the window since its approval (the day its
  file was added in git, else ``exception.approved_on``, else the first day
  the logs cover) (a removal candidate);
* ``only-rejected``: active, no accepted mail, yet rejected attempts: it tries
  to send and is refused;
* ``silence-unknown``: silent for the window or longer as far as the logs go,
  but they do not cover it (ingest the missing logs);
* ``notify``: active and silent for less than the window but within
  ``expiry_warning_days`` of it;
* ``exception-expired`` / ``exception-expiring``: an active legacy record
  whose exception ended, or ends within ``expiry_warning_days``;
* ``volume``: an active record that accepted more than its daily limit
  (``relaygate.limits``: what the relay's postfwd enforces; times
  ``volume_factor``, 1 by default) on some day of the last window: before
  the limits were deployed, a device spread over several relays (each
  counts on its own), or a burst across postfwd's 24-hour window (possible
  compromise);
* ``still-sending``: a revoked, suspended or retired record with accepted
  mail after its ``status_date`` (the refusal has not reached every relay);
* ``unknown-sender``: mail accepted in the last window from a client no
  record covers: an address (unauthenticated; loopback, where content
  filters re-inject, and the relays' own addresses excluded) or a SASL login.

``action`` categories make the command exit 1; ``notify`` and
``exception-expiring`` are advance warnings (exit 0), like validate's warnings.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from relaygate import model, schema
from relaygate.lifecycle import proof, store, usage
from relaygate.limits import Limit, record_limit
from relaygate.load import Limits, load_document
from relaygate.pipeline import DEVICES_DIR, SITE_FILE, display_path, validate

CATEGORIES: dict[str, str] = {
    "inactive": "no accepted mail for the inactivity window or longer (removal candidates)",
    "never-seen": "no accepted mail ever, and approved longer than the window ago "
    "(removal candidates)",
    "only-rejected": "no accepted mail ever, but rejected attempts: it tries to send and is "
    "refused",
    "silence-unknown": "silent as far as the logs go, but the logs do not cover the window",
    "notify": "silent and approaching the inactivity window (notify the contact)",
    "exception-expired": "the legacy exception has expired (renew or retire)",
    "exception-expiring": "the legacy exception expires inside the warning window",
    "volume": "a day above the daily limit (possible compromise)",
    "still-sending": "revoked, suspended or retired, yet mail was accepted after the status date",
    "unknown-sender": "mail accepted from a client no record covers",
}
#: Categories that need action now (the command exits 1 when any is listed).
ACTION = frozenset(
    {
        "inactive",
        "never-seen",
        "only-rejected",
        "exception-expired",
        "volume",
        "still-sending",
        "unknown-sender",
    }
)
#: Categories a technical contact is told about in a notice.
NOTICE = frozenset(
    {
        "inactive",
        "never-seen",
        "only-rejected",
        "notify",
        "exception-expired",
        "exception-expiring",
        "volume",
    }
)
#: A day counts for ``volume`` above this many times the record's daily limit
#: (``relaygate.limits``); 1: any day above the limit the relay enforces.
DEFAULT_VOLUME_FACTOR = 1.0


class ReviewError(Exception):
    """The review cannot run (the site file is unreadable); carries the findings."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record (or, for ``unknown-sender``, one client) in one category, with its facts."""

    category: str
    device: model.Device | None
    detail: str
    action: str
    last_accepted: dt.date | None = None
    days_silent: int | None = None
    silent_since: dt.date | None = None
    expires_on: dt.date | None = None
    peak_day: dt.date | None = None
    peak_accepted: int | None = None
    limit: int | None = None  # the record's daily limit, for volume items
    rejected: int = 0
    covered_days: int | None = None
    client: str | None = None

    @property
    def name(self) -> str:
        return self.device.name if self.device is not None else self.client or ""

    def sort_key(self) -> tuple[int, str, str]:
        source = self.device.source if self.device is not None else ""
        return (list(CATEGORIES).index(self.category), self.name, source)


_Coverage = store.Coverage


@dataclass(slots=True)
class Review:
    as_of: dt.date
    site: str
    inactivity_days: int
    warning_days: int
    volume_factor: float
    store: str | None
    coverage: _Coverage | None
    reviewed: int
    #: site.yaml review.notices: (display name, From, Reply-To or None).
    notices_from: tuple[str, str, str | None] | None = None
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {c: sum(1 for i in self.items if i.category == c) for c in CATEGORIES}

    @property
    def needs_action(self) -> bool:
        return any(item.category in ACTION for item in self.items)


# --- building the review ----------------------------------------------------------------


def record_dates(root: Path) -> tuple[dict[str, dt.date], bool]:
    """The day each record file was (last) added in git, by display path; and whether git knew.

    A record that git does not list is not committed yet: it is new. Outside
    a git checkout nothing is known and the caller falls back to the
    exception's approval day.
    """
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        log = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "log",
                "--diff-filter=A",
                "--no-renames",
                "--format=%x00%cs",
                "--name-only",
                "--",
                DEVICES_DIR,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}, False
    dates: dict[str, dt.date] = {}
    for block in log.split("\x00"):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        day = dt.date.fromisoformat(lines[0])
        for name in lines[1:]:
            # git log lists the newest commit first: the latest addition wins.
            dates.setdefault(display_path(Path(top) / name), day)
    return dates, True


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _contact(device: model.Device) -> str:
    person = device.technical_contact
    return f"{person.name} <{person.email}>"


def where(device: model.Device) -> str:
    """What identifies the device to the relay: its login, or its address."""
    return device.account if not device.is_legacy and device.account else device.address


def build(
    devices: list[model.Device],
    site: model.Site,
    as_of: dt.date,
    connection: sqlite3.Connection | None,
    store_name: str | None,
    added: dict[str, dt.date],
    git_known: bool,
    volume_factor: float = DEFAULT_VOLUME_FACTOR,
) -> Review:
    """The review of ``devices`` as of ``as_of``; pure apart from reading the store."""
    policy = site.policy
    coverage = store.coverage(connection) if connection is not None else None
    review = Review(
        as_of=as_of,
        site=site.name,
        inactivity_days=policy.inactivity_days,
        warning_days=policy.expiry_warning_days,
        volume_factor=volume_factor,
        store=store_name,
        coverage=coverage,
        reviewed=len(devices),
        notices_from=site.notices_from,
    )
    window = policy.inactivity_days
    warning = policy.expiry_warning_days
    seen: dict[str, usage.Usage] = {}
    proven: proof.Proof | None = None
    if coverage is None or coverage.first_day is None or coverage.last_day is None:
        review.notes.append(
            "the activity store holds no log lines: activity categories are skipped "
            "(run `relaygate activity ingest` on the relays' logs)"
        )
    else:
        assert connection is not None
        seen = usage.usages(devices, connection, as_of)
        proven = proof.proof(coverage, site.relay_hosts)
        review.notes.extend(proof.relay_notes(coverage, site.relay_hosts))
        gap = (as_of - coverage.last_day).days
        if gap > 7:
            review.notes.append(
                f"the newest log line is from {coverage.last_day}, {gap} days before {as_of}: "
                "silence after it is unknown (ingest recent logs)"
            )
    items: list[Item] = []
    for device in devices:
        items.extend(_exception_items(device, as_of, warning))
        if proven is None or coverage is None:
            continue
        use = seen.get(device.source, usage.Usage())
        if device.status is not model.Status.ACTIVE:
            items.extend(_still_sending(device, use))
            continue
        items.extend(
            _silence_items(device, use, coverage, proven, added, git_known, as_of, window, warning)
        )
        items.extend(
            _volume_items(
                device, use, as_of, window, record_limit(device, site.volume_limits), volume_factor
            )
        )
    if connection is not None and proven is not None:
        items.extend(_unknown_senders(devices, site.relay_hosts, connection, as_of, window))
    review.items = sorted(items, key=Item.sort_key)
    return review


def _exception_items(device: model.Device, as_of: dt.date, warning: int) -> list[Item]:
    exception = device.exception
    if device.status is not model.Status.ACTIVE or not device.is_legacy or exception is None:
        return []
    left = (exception.expires_on - as_of).days
    if left <= 0:
        return [
            Item(
                "exception-expired",
                device,
                f"exception expired on {exception.expires_on} ({_n(-left, 'day')} ago;"
                f" approved by {exception.approver.name}, acknowledgment"
                f" {exception.acknowledgment_ref})",
                "renew it (`relaygate renew`) with a new approval, or retire the device",
                expires_on=exception.expires_on,
            )
        ]
    if left <= warning:
        return [
            Item(
                "exception-expiring",
                device,
                f"exception expires on {exception.expires_on} (in {_n(left, 'day')};"
                f" approved by {exception.approver.name}, acknowledgment"
                f" {exception.acknowledgment_ref})",
                "ask the approver to renew it before it expires, or plan the device's retirement",
                expires_on=exception.expires_on,
            )
        ]
    return []


def _silence_items(
    device: model.Device,
    use: usage.Usage,
    coverage: store.Coverage,
    proven: proof.Proof,
    added: dict[str, dt.date],
    git_known: bool,
    as_of: dt.date,
    window: int,
    warning: int,
) -> list[Item]:
    assert coverage.first_day is not None
    last_day = use.last_day
    if last_day is None and use.rejected:
        return [_only_rejected(device, use)]
    if last_day is not None:
        since = last_day
        silent = (as_of - last_day).days
        via = ""
        if use.last is not None:
            via = f" (queue id {use.last.queue_id} on {use.last.relay}, from {use.last.sender})"
        detail = f"last accepted mail {last_day}, {_n(silent, 'day')} ago{via}"
        removal = "inactive"
    else:
        approved: dt.date | None = added.get(device.source)
        if approved is None and git_known:
            approved = as_of  # not committed yet: a new record
        if approved is None and device.exception is not None:
            approved = device.exception.approved_on
        # Silence counts from the approval; the logs decide how much of it is proven.
        since = approved if approved else coverage.first_day
        silent = (as_of - since).days
        basis = f"approved {approved}" if approved else "approval day unknown (not a git checkout)"
        detail = (
            f"no accepted mail in the logs ({coverage.first_day} .. {coverage.last_day}); "
            f"{basis}; silent for {_n(silent, 'day')}"
        )
        removal = "never-seen"
    stretch = proven.stretch(since + dt.timedelta(days=1), as_of)
    covered = stretch.days if stretch is not None else 0
    if silent >= window and covered >= window:
        category = removal
    elif silent < window and covered >= window - warning:
        category = "notify"
    elif silent >= window - warning:
        category = "silence-unknown"
        day, relay = proven.unknown_since(since + dt.timedelta(days=1))
        best = f" ({stretch.first} .. {stretch.last})" if stretch is not None else ""
        detail += (
            f"; the logs cover {_n(covered, 'day')} of that silence on every relay{best}, "
            f"silence unknown since {day} on relay {relay}"
        )
    else:
        return []
    if use.rejected:
        detail += f"; {_n(use.rejected, 'rejected attempt')}"
    remaining = window - silent
    if category == "silence-unknown":
        action = (
            "ingest the missing logs of every relay (`relaygate activity ingest`), then review "
            "again"
        )
    elif category == "notify":
        action = (
            f"it reaches the {window}-day limit in {_n(remaining, 'day')}: send mail through the "
            "relay or tell us it can be retired"
        )
    else:
        action = (
            "confirm it still needs the relay, or retire it (`relaygate retire --reason inactive`)"
        )
    return [
        Item(
            category,
            device,
            detail,
            action,
            last_accepted=last_day,
            days_silent=silent,
            silent_since=since,
            rejected=use.rejected,
            covered_days=covered,
        )
    ]


def _only_rejected(device: model.Device, use: usage.Usage) -> Item:
    last = use.last_rejected
    when = ""
    if last is not None:
        when = f" (last {last.at[:10]} on {last.relay}: {last.detail})"
    return Item(
        "only-rejected",
        device,
        f"no accepted mail in the logs, but {_n(use.rejected, 'rejected attempt')}{when}",
        "check the device's settings (sender address, login, relay address) against its record",
        rejected=use.rejected,
    )


def _unknown_senders(
    devices: list[model.Device],
    relays: tuple[model.RelayHost, ...],
    connection: sqlite3.Connection,
    as_of: dt.date,
    window: int,
) -> list[Item]:
    """Clients with accepted mail in the last window that no record (of any status) covers.

    Loopback (content filters re-injecting) and the relays' own addresses (one
    relay handing mail to another) are not senders.
    """
    start = as_of - dt.timedelta(days=window - 1)
    covered: set[str] = set()
    index = usage.AddressIndex(store.keys(connection, "address"))
    accounts = {d.account.lower() for d in devices if d.account}
    for device in devices:
        covered.update(index.inside(device))
    for host in relays:
        for network in host.addresses:
            covered.update(index.inside_network(network))
    candidates: dict[store.Kind, list[str]] = {
        "address": [
            key
            for key in store.keys(connection, "address")
            if key not in covered and not ipaddress.ip_address(key).is_loopback
        ],
        "login": [key for key in store.keys(connection, "login") if key.lower() not in accounts],
    }
    items: list[Item] = []
    end_of_day = f"{as_of.isoformat()}T99"
    for kind, keys in candidates.items():
        days: dict[str, list[dt.date]] = {}
        totals: dict[str, int] = {}
        for count in store.day_counts(connection, kind, keys, as_of):
            if count.accepted and count.day >= start:
                days.setdefault(count.key, []).append(count.day)
                totals[count.key] = totals.get(count.key, 0) + count.accepted
        lasts = store.last_messages(connection, kind, list(days), "accepted", end_of_day)
        what = "address, unauthenticated" if kind == "address" else "SASL login"
        for key, seen in sorted(days.items()):
            last = lasts.get(key)
            via = f"; last on {last.relay}, from {last.sender}" if last is not None else ""
            items.append(
                Item(
                    "unknown-sender",
                    None,
                    f"{what}: {_n(totals[key], 'message')} accepted on {_n(len(seen), 'day')} "
                    f"({min(seen)} .. {max(seen)}){via}",
                    "find who sends it; a client no record covers should not be able to relay "
                    "(check mynetworks and the relay's maps), or file a record for it",
                    last_accepted=max(seen),
                    client=key,
                )
            )
    return items


def _volume_items(
    device: model.Device,
    use: usage.Usage,
    as_of: dt.date,
    window: int,
    limit: Limit,
    factor: float,
) -> list[Item]:
    start = as_of - dt.timedelta(days=window)
    threshold = limit.per_day * factor
    over = [
        (accepted, day)
        for day, (accepted, _) in use.days.items()
        if start < day <= as_of and accepted > threshold
    ]
    if not over:
        return []
    peak, peak_day = max(over)
    above = "its daily limit" if factor == 1 else f"{factor:g}x its daily limit"
    return [
        Item(
            "volume",
            device,
            f"{peak} messages accepted on {peak_day}, above {above} of {limit.per_day}"
            f" ({limit.explanation}); {_n(len(over), 'day')} above it in the last {window} days",
            "check the device for compromise; suspend it (status: suspended) if in doubt; if the"
            " volume is genuine, correct volume_per_day or set a justified volume_limit",
            peak_day=peak_day,
            peak_accepted=peak,
            limit=limit.per_day,
        )
    ]


def _still_sending(device: model.Device, use: usage.Usage) -> list[Item]:
    if device.status_date is None:
        return []
    after = sorted(
        (day, accepted)
        for day, (accepted, _) in use.days.items()
        if day > device.status_date and accepted
    )
    if not after:
        return []
    total = sum(accepted for _, accepted in after)
    return [
        Item(
            "still-sending",
            device,
            f"status {device.status} since {device.status_date}, yet {total} messages were "
            f"accepted on {_n(len(after), 'later day')} (last {after[-1][0]})",
            "check that every relay runs the current compile (`relaygate compile`, deploy)",
            last_accepted=after[-1][0],
        )
    ]


def load_site(root: Path) -> model.Site:
    """The site model, checked against its schema; raises ReviewError with the findings."""
    path = root / SITE_FILE
    result = load_document(path, display_path(path), Limits().site_bytes)
    problems = list(result.findings)
    if result.document is not None:
        problems.extend(schema.check(result.document, "site"))
    errors = [p for p in problems if p.is_error]
    if result.document is None or errors:
        raise ReviewError("\n".join(p.as_text() for p in errors) or f"{path}: cannot be read")
    return model.build_site(result.document.data)


def run(
    root: Path,
    as_of: dt.date,
    connection: sqlite3.Connection | None,
    store: str | None,
    volume_factor: float = DEFAULT_VOLUME_FACTOR,
) -> Review:
    """Load the inventory leniently and review it."""
    site = load_site(root)
    validation = validate(root, as_of)
    added, git_known = record_dates(root)
    review = build(
        sorted(validation.devices, key=lambda d: (d.name, d.source)),
        site,
        as_of,
        connection,
        store,
        added,
        git_known,
        volume_factor,
    )
    unread = validation.files_checked - 3 - len(validation.devices)
    if unread > 0:
        review.notes.append(
            f"{unread} record files could not be read and are not reviewed (run relaygate validate)"
        )
    if validation.errors:
        review.notes.append(
            f"the inventory has {validation.errors} validation errors (run relaygate validate)"
        )
    return review


# --- output formats -----------------------------------------------------------------------

Formatter = Callable[[Review], str]
FORMATS: dict[str, Formatter] = {}


def output_format(name: str) -> Callable[[Formatter], Formatter]:
    def register(function: Formatter) -> Formatter:
        FORMATS[name] = function
        return function

    return register


def _header(review: Review) -> list[str]:
    lines = [
        f"relaygate review of {review.site} as of {review.as_of}: inactivity window "
        f"{review.inactivity_days} days, warning {review.warning_days} days, volume alert above "
        + (
            "the daily limit"
            if review.volume_factor == 1
            else f"{review.volume_factor:g}x the daily limit"
        )
    ]
    coverage = review.coverage
    if coverage is not None and coverage.first_day is not None:
        lines.append(
            f"logs: {coverage.first_day} .. {coverage.last_day} from {coverage.files} files "
            f"({review.store})"
        )
        for relay, spans in coverage.relays.items():
            lines.append(
                f"logs of relay {relay}: {', '.join(f'{s.first} .. {s.last}' for s in spans)}"
            )
    lines.extend(f"note: {note}" for note in review.notes)
    return lines


def summary_line(review: Review) -> str:
    counts = review.counts()
    listed = ", ".join(f"{counts[c]} {c}" for c in CATEGORIES if counts[c])
    return f"{review.reviewed} records reviewed: {listed or 'nothing to do'}"


@output_format("text")
def _text(review: Review) -> str:
    lines = _header(review)
    for category, meaning in CATEGORIES.items():
        members = [i for i in review.items if i.category == category]
        if not members:
            continue
        lines += ["", f"{category}: {meaning}"]
        for item in members:
            device = item.device
            if device is None:
                lines.append(f"  {item.client} (no record): {item.detail}")
                continue
            lines.append(
                f"  {device.name} ({device.unit}, {where(device)}): {item.detail}; "
                f"contact {_contact(device)}"
            )
    lines += ["", summary_line(review)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


@output_format("markdown")
def _markdown(review: Review) -> str:
    lines = [f"# Relay access review, {review.site}, as of {review.as_of}", ""]
    lines += [f"- {_cell(line)}" for line in _header(review)[1:]]
    lines.append(f"- {summary_line(review)}")
    for category, meaning in CATEGORIES.items():
        members = [i for i in review.items if i.category == category]
        if not members:
            continue
        lines += ["", f"## {category} ({len(members)})", "", meaning, ""]
        lines += [
            "| record | unit | address or account | finding | contact |",
            "|---|---|---|---|---|",
        ]
        for item in members:
            device = item.device
            if device is None:
                lines.append(f"| (no record) | | `{item.client}` | {_cell(item.detail)} | |")
                continue
            lines.append(
                f"| `{device.name}` | {device.unit} | `{where(device)}` | "
                f"{_cell(item.detail)} | {_cell(_contact(device))} |"
            )
    return "\n".join(lines) + "\n"


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _record(item: Item) -> dict[str, object]:
    device = item.device
    facts: dict[str, object] = {
        "category": item.category,
        "name": item.name,
        "unit": None,
        "path": None,
        "address": None,
        "account": None,
        "auth": None,
        "status": None,
        "contact_name": None,
        "contact_email": None,
    }
    if device is not None:
        facts.update(
            unit=device.unit,
            path=device.source,
            address=device.address,
            account=device.account,
            auth=str(device.auth),
            status=str(device.status),
            contact_name=device.technical_contact.name,
            contact_email=device.technical_contact.email,
        )
    elif item.client is not None and "@" in item.client:
        facts["account"] = item.client
    else:
        facts["address"] = item.client
    facts.update(
        {
            "last_accepted": _iso(item.last_accepted),
            "days_silent": item.days_silent,
            "silent_since": _iso(item.silent_since),
            "covered_days": item.covered_days,
            "expires_on": _iso(item.expires_on),
            "peak_day": _iso(item.peak_day),
            "peak_accepted": item.peak_accepted,
            "volume_per_day": device.volume_per_day if device is not None else None,
            "limit": item.limit,
            "rejected": item.rejected,
            "detail": item.detail,
            "action": item.action,
        }
    )
    return facts


@output_format("json")
def _json(review: Review) -> str:
    coverage = review.coverage
    payload = {
        "as_of": review.as_of.isoformat(),
        "site": review.site,
        "policy": {
            "inactivity_days": review.inactivity_days,
            "warning_days": review.warning_days,
            "volume_factor": review.volume_factor,
        },
        "store": review.store,
        "coverage": None
        if coverage is None
        else {
            "first_day": _iso(coverage.first_day),
            "last_day": _iso(coverage.last_day),
            "files": coverage.files,
            "relays": {
                relay: [[_iso(s.first), _iso(s.last)] for s in spans]
                for relay, spans in coverage.relays.items()
            },
        },
        "reviewed": review.reviewed,
        "counts": review.counts(),
        "notes": review.notes,
        "items": [_record(item) for item in review.items],
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


CSV_COLUMNS = (
    "category",
    "name",
    "unit",
    "path",
    "address",
    "account",
    "auth",
    "status",
    "contact_name",
    "contact_email",
    "last_accepted",
    "days_silent",
    "silent_since",
    "covered_days",
    "expires_on",
    "peak_day",
    "peak_accepted",
    "volume_per_day",
    "limit",
    "rejected",
    "detail",
    "action",
)


@output_format("csv")
def _csv(review: Review) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in review.items:
        writer.writerow({k: "" if v is None else v for k, v in _record(item).items()})
    return out.getvalue()
