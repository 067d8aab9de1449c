"""The annual access retention review: the activity store joined with the inventory.

Input: the inventory (every record that could be read, even when the
inventory has errors: an expired exception is an error, and the review is
where it gets handled), the activity store (may be absent), the as-of day and
the site policy (``inactivity_days``, ``expiry_warning_days``). Output: a
``Review`` (items by category, sorted by category then record name), text in
one of the registered formats, and one ready-to-send notice per technical
contact. Nothing is sent and nothing reads the clock: "today" is ``as_of``,
and only days up to it count.

A device is matched to the store by its address (a host, or every logged
address inside its prefix) when it is legacy (``auth: ip|none``), and by its
account (SASL login, compared case-insensitively) when it authenticates.
Only accepted mail is activity; rejected attempts are reported beside it.

Categories (``CATEGORIES``, in report order):

* ``inactive``: active, last accepted mail ``inactivity_days`` or more ago
  (a removal candidate);
* ``never-seen``: active, no accepted mail at all, and silent for the window
  since it was approved: since the later of the record's approval (the day
  its file was added in git, else ``exception.approved_on``) and the first
  day the logs cover (a removal candidate);
* ``notify``: active and silent for less than the window but within
  ``expiry_warning_days`` of it;
* ``exception-expired`` / ``exception-expiring``: an active legacy record
  whose exception ended, or ends within ``expiry_warning_days``;
* ``volume``: an active record that accepted more than ``volume_factor``
  times its ``volume_per_day`` on some day of the last window (possible
  compromise);
* ``still-sending``: a revoked, suspended or retired record with accepted
  mail after its ``status_date`` (the refusal has not reached every relay).

``action`` categories make the command exit 1; ``notify`` and
``exception-expiring`` are advance warnings (exit 0), like validate's warnings.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import ipaddress
import json
import sqlite3
import subprocess
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from relaygate import model, schema
from relaygate.lifecycle import activity
from relaygate.load import Limits, load_document
from relaygate.pipeline import DEVICES_DIR, SITE_FILE, display_path, validate

CATEGORIES: dict[str, str] = {
    "inactive": "no accepted mail for the inactivity window or longer (removal candidates)",
    "never-seen": "no accepted mail ever, and approved longer than the window ago "
    "(removal candidates)",
    "notify": "silent and approaching the inactivity window (notify the contact)",
    "exception-expired": "the legacy exception has expired (renew or retire)",
    "exception-expiring": "the legacy exception expires inside the warning window",
    "volume": "a day far above the estimated volume (possible compromise)",
    "still-sending": "revoked, suspended or retired, yet mail was accepted after the status date",
}
#: Categories that need action now (the command exits 1 when any is listed).
ACTION = frozenset({"inactive", "never-seen", "exception-expired", "volume", "still-sending"})
#: Categories a technical contact is told about in a notice.
NOTICE = frozenset(
    {"inactive", "never-seen", "notify", "exception-expired", "exception-expiring", "volume"}
)
DEFAULT_VOLUME_FACTOR = 10.0


class ReviewError(Exception):
    """The review cannot run (the site file is unreadable); carries the findings."""


@dataclass(frozen=True, slots=True)
class Item:
    """One record in one category, with the facts that put it there."""

    category: str
    device: model.Device
    detail: str
    action: str
    last_accepted: dt.date | None = None
    days_silent: int | None = None
    silent_since: dt.date | None = None
    expires_on: dt.date | None = None
    peak_day: dt.date | None = None
    peak_accepted: int | None = None
    rejected: int = 0

    def sort_key(self) -> tuple[int, str, str]:
        return (list(CATEGORIES).index(self.category), self.device.name, self.device.source)


@dataclass(slots=True)
class Review:
    as_of: dt.date
    site: str
    inactivity_days: int
    warning_days: int
    volume_factor: float
    store: str | None
    coverage: activity.Coverage | None
    reviewed: int
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {c: sum(1 for i in self.items if i.category == c) for c in CATEGORIES}

    @property
    def needs_action(self) -> bool:
        return any(item.category in ACTION for item in self.items)


# --- activity per device ----------------------------------------------------------------


@dataclass(slots=True)
class _Activity:
    days: dict[dt.date, list[int]] = field(default_factory=dict)  # day -> [accepted, rejected]
    last: activity.LastMessage | None = None

    @property
    def last_day(self) -> dt.date | None:
        seen = [day for day, (accepted, _) in self.days.items() if accepted]
        return max(seen) if seen else None

    @property
    def rejected(self) -> int:
        return sum(rejected for _, rejected in self.days.values())


class _AddressIndex:
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
        network = device.network
        numbers, texts = self.by_version[network.version]
        low = bisect.bisect_left(numbers, network.first)
        high = bisect.bisect_right(numbers, network.last)
        return texts[low:high]


def _device_keys(
    devices: Iterable[model.Device],
    connection: sqlite3.Connection,
) -> dict[str, tuple[activity.Kind, list[str]]]:
    """Each device's store keys: its addresses (legacy) or its login (authenticated)."""
    index = _AddressIndex(activity.keys(connection, "address"))
    logins: dict[str, list[str]] = {}
    for login in activity.keys(connection, "login"):
        logins.setdefault(login.lower(), []).append(login)
    found: dict[str, tuple[activity.Kind, list[str]]] = {}
    for device in devices:
        if device.is_legacy or device.account is None:
            found[device.source] = ("address", index.inside(device))
        else:
            found[device.source] = ("login", logins.get(device.account.lower(), []))
    return found


def _activities(
    devices: list[model.Device], connection: sqlite3.Connection, as_of: dt.date
) -> dict[str, _Activity]:
    keys = _device_keys(devices, connection)
    rows: dict[tuple[activity.Kind, str], list[activity.DayCount]] = {}
    lasts: dict[tuple[activity.Kind, str], activity.LastMessage] = {}
    for kind in ("address", "login"):
        wanted = {k for kind_, members in keys.values() if kind_ == kind for k in members}
        for count in activity.day_counts(connection, kind, wanted, as_of):
            rows.setdefault((kind, count.key), []).append(count)
        for key, message in activity.last_messages(connection, kind, wanted).items():
            lasts[(kind, key)] = message
    found: dict[str, _Activity] = {}
    end_of_day = f"{as_of.isoformat()}T99"
    for device in devices:
        kind, members = keys[device.source]
        seen = _Activity()
        for key in members:
            for count in rows.get((kind, key), []):
                slot = seen.days.setdefault(count.day, [0, 0])
                slot[0] += count.accepted
                slot[1] += count.rejected
            candidate = lasts.get((kind, key))
            if (
                candidate is not None
                and candidate.at <= end_of_day
                and (seen.last is None or candidate.at > seen.last.at)
            ):
                seen.last = candidate
        found[device.source] = seen
    return found


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


def _where(device: model.Device) -> str:
    return device.account if not device.is_legacy and device.account else device.address


def build(
    devices: list[model.Device],
    policy: model.Policy,
    site_name: str,
    as_of: dt.date,
    connection: sqlite3.Connection | None,
    store: str | None,
    added: dict[str, dt.date],
    git_known: bool,
    volume_factor: float = DEFAULT_VOLUME_FACTOR,
) -> Review:
    """The review of ``devices`` as of ``as_of``; pure apart from reading the store."""
    coverage = activity.coverage(connection) if connection is not None else None
    review = Review(
        as_of=as_of,
        site=site_name,
        inactivity_days=policy.inactivity_days,
        warning_days=policy.expiry_warning_days,
        volume_factor=volume_factor,
        store=store,
        coverage=coverage,
        reviewed=len(devices),
    )
    window = policy.inactivity_days
    warning = policy.expiry_warning_days
    if coverage is None or coverage.first_day is None or coverage.last_day is None:
        review.notes.append(
            "the activity store holds no log lines: activity categories are skipped "
            "(run `relaygate activity ingest` on the relays' logs)"
        )
        seen: dict[str, _Activity] = {}
    else:
        assert connection is not None
        seen = _activities(devices, connection, as_of)
        gap = (as_of - coverage.last_day).days
        if gap > 7:
            review.notes.append(
                f"the newest log line is from {coverage.last_day}, {gap} days before {as_of}: "
                "ingest recent logs, or silence is overstated"
            )
    items: list[Item] = []
    for device in devices:
        items.extend(_exception_items(device, as_of, warning))
        if coverage is None or coverage.first_day is None:
            continue
        usage = seen.get(device.source, _Activity())
        if device.status is not model.Status.ACTIVE:
            items.extend(_still_sending(device, usage))
            continue
        items.extend(
            _silence_items(device, usage, coverage, added, git_known, as_of, window, warning)
        )
        items.extend(_volume_items(device, usage, as_of, window, volume_factor))
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
                f"exception expired on {exception.expires_on} ({_n(-left, 'day')} ago)",
                "renew it (`relaygate renew`) with a new approval, or retire the device",
                expires_on=exception.expires_on,
            )
        ]
    if left <= warning:
        return [
            Item(
                "exception-expiring",
                device,
                f"exception expires on {exception.expires_on} (in {_n(left, 'day')})",
                "ask the approver to renew it before it expires, or plan the device's retirement",
                expires_on=exception.expires_on,
            )
        ]
    return []


def _silence_items(
    device: model.Device,
    usage: _Activity,
    coverage: activity.Coverage,
    added: dict[str, dt.date],
    git_known: bool,
    as_of: dt.date,
    window: int,
    warning: int,
) -> list[Item]:
    assert coverage.first_day is not None
    last_day = usage.last_day
    if last_day is not None:
        silent = (as_of - last_day).days
        via = ""
        if usage.last is not None:
            via = (
                f" (queue id {usage.last.queue_id} on {usage.last.relay}, from {usage.last.sender})"
            )
        detail = f"last accepted mail {last_day}, {_n(silent, 'day')} ago{via}"
        since = last_day
        category = (
            "inactive" if silent >= window else "notify" if silent >= window - warning else None
        )
    else:
        approved: dt.date | None = added.get(device.source)
        if approved is None and git_known:
            approved = as_of  # not committed yet: a new record
        if approved is None and device.exception is not None:
            approved = device.exception.approved_on
        since = max(approved, coverage.first_day) if approved else coverage.first_day
        silent = (as_of - since).days
        basis = f"approved {approved}" if approved else "approval day unknown (not a git checkout)"
        detail = (
            f"no accepted mail in the logs ({coverage.first_day} .. {coverage.last_day}); "
            f"{basis}; silent for {_n(silent, 'day')}"
        )
        category = (
            "never-seen" if silent >= window else "notify" if silent >= window - warning else None
        )
    if category is None:
        return []
    remaining = window - silent
    action = (
        "confirm it still needs the relay, or retire it (`relaygate retire --reason inactive`)"
        if category != "notify"
        else f"it reaches the {window}-day limit in {_n(remaining, 'day')}: send mail through the "
        "relay or tell us it can be retired"
    )
    if usage.rejected:
        detail += f"; {_n(usage.rejected, 'rejected attempt')}"
    return [
        Item(
            category,
            device,
            detail,
            action,
            last_accepted=last_day,
            days_silent=silent,
            silent_since=since,
            rejected=usage.rejected,
        )
    ]


def _volume_items(
    device: model.Device, usage: _Activity, as_of: dt.date, window: int, factor: float
) -> list[Item]:
    start = as_of - dt.timedelta(days=window)
    limit = device.volume_per_day * factor
    over = [
        (accepted, day)
        for day, (accepted, _) in usage.days.items()
        if start < day <= as_of and accepted > limit
    ]
    if not over:
        return []
    peak, peak_day = max(over)
    return [
        Item(
            "volume",
            device,
            f"{peak} messages accepted on {peak_day}, {peak / device.volume_per_day:.0f}x the "
            f"estimate of {device.volume_per_day} per day; {_n(len(over), 'day')} above "
            f"{factor:g}x in the last {window} days",
            "check the device for compromise; suspend it (status: suspended) if in doubt, "
            "or correct volume_per_day",
            peak_day=peak_day,
            peak_accepted=peak,
        )
    ]


def _still_sending(device: model.Device, usage: _Activity) -> list[Item]:
    if device.status_date is None:
        return []
    after = sorted(
        (day, accepted)
        for day, (accepted, _) in usage.days.items()
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
        site.policy,
        site.name,
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
        f"{review.volume_factor:g}x the estimate"
    ]
    coverage = review.coverage
    if coverage is not None and coverage.first_day is not None:
        lines.append(
            f"logs: {coverage.first_day} .. {coverage.last_day} from {coverage.files} files "
            f"({review.store})"
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
            lines.append(
                f"  {device.name} ({device.unit}, {_where(device)}): {item.detail}; "
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
            lines.append(
                f"| `{device.name}` | {device.unit} | `{_where(device)}` | "
                f"{_cell(item.detail)} | {_cell(_contact(device))} |"
            )
    return "\n".join(lines) + "\n"


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _record(item: Item) -> dict[str, object]:
    device = item.device
    return {
        "category": item.category,
        "name": device.name,
        "unit": device.unit,
        "path": device.source,
        "address": device.address,
        "account": device.account,
        "auth": str(device.auth),
        "status": str(device.status),
        "contact_name": device.technical_contact.name,
        "contact_email": device.technical_contact.email,
        "last_accepted": _iso(item.last_accepted),
        "days_silent": item.days_silent,
        "silent_since": _iso(item.silent_since),
        "expires_on": _iso(item.expires_on),
        "peak_day": _iso(item.peak_day),
        "peak_accepted": item.peak_accepted,
        "volume_per_day": device.volume_per_day,
        "rejected": item.rejected,
        "detail": item.detail,
        "action": item.action,
    }


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
    "expires_on",
    "peak_day",
    "peak_accepted",
    "volume_per_day",
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


# --- notices ------------------------------------------------------------------------------

NOTICE_MARKER = "X-Relaygate-Review"


def notices(review: Review) -> dict[str, str]:
    """File name -> text of one notice per technical contact (RFC 5322, ready for sendmail -t)."""
    by_contact: dict[str, list[Item]] = {}
    for item in review.items:
        if item.category in NOTICE:
            by_contact.setdefault(item.device.technical_contact.email, []).append(item)
    found: dict[str, str] = {}
    for email, members in sorted(by_contact.items()):
        person = members[0].device.technical_contact
        names = sorted({i.device.name for i in members})
        subject = (
            f"SMTP relay access review: {len(names)} device{'s' if len(names) != 1 else ''} "
            "need your attention"
        )
        lines = [
            f"To: {person.name} <{email}>",
            f"Subject: {subject}",
            f"{NOTICE_MARKER}: as-of {review.as_of}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"Dear {person.name},",
            "",
            *_wrap(
                f"The access review of the {review.site} SMTP relay, as of {review.as_of}, "
                "lists these devices for which you are the technical contact. Devices that "
                f"send no mail through the relay for {review.inactivity_days} days are removed, "
                "and a legacy exception ends on its expiry date unless it is renewed."
            ),
        ]
        for item in sorted(members, key=Item.sort_key):
            device = item.device
            lines += [
                "",
                *_wrap(
                    f"* {device.name} ({device.model}, {device.fqdn}, {_where(device)})", "", "  "
                ),
                *_wrap(f"{item.detail}.", "  ", "  "),
                *_wrap(f"What to do: {item.action}.", "  ", "  "),
            ]
        lines += [
            "",
            *_wrap(
                "Reply to this message if anything here is wrong. Changes are made as pull "
                "requests to the relay inventory, reviewed like any other change."
            ),
            "",
            "Mail platform team",
        ]
        found[f"{email}.txt"] = "\n".join(lines) + "\n"
    return found


def _wrap(text: str, first: str = "", rest: str = "") -> list[str]:
    """Mail-friendly lines (72 columns); long tokens such as addresses are never broken."""
    return textwrap.wrap(
        text,
        width=72,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def write_notices(review: Review, folder: Path) -> list[Path]:
    """Write the notices into ``folder``, replacing notices of earlier runs only.

    A file is ours when its header carries ``NOTICE_MARKER``; other files in
    the folder are left alone, so an old notice never lingers to be sent by
    mistake and nothing else is deleted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    wanted = notices(review)
    for old in sorted(folder.glob("*.txt")):
        if old.name not in wanted and old.is_file() and not old.is_symlink():
            head = old.read_text(encoding="utf-8", errors="replace")[:2000]
            if f"\n{NOTICE_MARKER}: " in head:
                old.unlink()
    written = []
    for name, text in wanted.items():
        target = folder / name
        temporary = folder / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(target)
        written.append(target)
    return written
