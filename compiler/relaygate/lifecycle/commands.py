"""The lifecycle commands: ``activity ingest|watch``, ``review``, ``revoke``, ``retire``, ``renew``.

Each command parses its options into a frozen options object, calls the
lifecycle module that does the work, prints, and exits with the CLI's codes:
0 done; 1 findings (a log file could not be read, the review lists something
that needs action now, an edit was refused or left the inventory with
errors); 2 usage; 3 internal. Machine-readable output (``review --format
json|csv``) goes to stdout alone; progress bars and "wrote" lines go to stderr.
"""

from __future__ import annotations

import datetime as dt
import sys
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from relaygate.cliutil import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    DateParam,
    as_of_option,
    inventory_option,
    inventory_root,
)
from relaygate.errors import RelaygateError, UsageError
from relaygate.lifecycle import edit, ingest, review, store, watch
from relaygate.lifecycle import notices as notice_files
from relaygate.lifecycle.logs import timeline
from relaygate.lifecycle.logs.files import Source
from relaygate.pipeline import SITE_FILE, display_path, validate
from relaygate.report import FORMATTERS, summary_line

# --- activity ---------------------------------------------------------------------------


def _db_option(function: Any) -> Any:
    return click.option(
        "--db",
        "db",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The activity store (default: .relaygate/activity.sqlite beside the inventory).",
    )(function)


def _store_path(db: Path | None, inventory: Path) -> Path:
    if db is not None:
        return db
    if not inventory.is_dir():
        raise UsageError(
            f"inventory folder {inventory} not found; give --inventory DIR or --db PATH"
        )
    return store.default_path(inventory)


@dataclass(frozen=True, slots=True)
class IngestCommand:
    logs: tuple[Path, ...]
    db: Path
    options: ingest.IngestOptions
    progress: bool


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[Callable[[Source], ingest.Progress | None] | None]:
    """A progress bar per file on stderr, only when stderr is a terminal."""
    if not enabled:
        yield None
        return
    current: list[ExitStack] = []

    def start(source: Source) -> ingest.Progress | None:
        if current:  # finish the previous file's bar before the next one starts
            current.pop().close()
        if source.size is None:  # standard input or a pipe: no length to show
            return None
        stack = ExitStack()
        current.append(stack)
        bar = stack.enter_context(
            click.progressbar(length=max(source.size, 1), label=source.path.name, file=sys.stderr)
        )
        return bar.update

    try:
        yield start
    finally:
        if current:
            current.pop().close()


def _zone(name: str | None) -> dt.tzinfo | None:
    if name is None:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise UsageError(f"--tz {name!r} is not a time zone ({error})") from error


_LOGS = click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True)


@click.group("activity")
def activity_group() -> None:
    """Read relay logs into the activity store, list or forget them; watch for abuse."""


@activity_group.command("ingest")
@click.argument("logs", nargs=-1, required=True, type=_LOGS)
@inventory_option
@_db_option
@click.option(
    "--year",
    type=click.IntRange(1970, 9999),
    default=None,
    help="Classic syslog lines carry no year: the year of each file's first line "
    "(default: inferred from the file's modification time, checked against its last line).",
)
@click.option(
    "--tz",
    "zone",
    default=None,
    help="Time zone for journal instants (-o json, json-seq, short-unix); "
    "default: this machine's zone.",
)
@as_of_option
def ingest_command(
    logs: tuple[Path, ...],
    inventory: Path,
    db: Path | None,
    year: int | None,
    zone: str | None,
    as_of: dt.date | None,
) -> None:
    """Read Postfix logs: syslog, RFC 3339, RFC 5424, journalctl exports; .gz/.bz2/.xz; - is stdin.

    Files already read are recognised by content, not name, so rotated copies
    are not counted twice; a log that grew is read from where the last run
    stopped; a message held by several files or exports is counted once. Days
    after --as-of (default: today) are refused.
    """
    command = IngestCommand(
        logs=logs,
        db=_store_path(db, inventory),
        options=ingest.IngestOptions(year=year, zone=_zone(zone), as_of=as_of),
        progress=sys.stderr.isatty(),
    )
    with (
        closing(store.connect(command.db)) as connection,
        _progress_bars(command.progress) as bars,
    ):
        report = ingest.ingest(connection, command.logs, command.options, bars)
    for result in report.files:
        click.echo(ingest.describe(result))
    click.echo(ingest.summary(report))
    sys.exit(EXIT_FINDINGS if report.failed else EXIT_OK)


@activity_group.command("forget")
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path, allow_dash=True))
@inventory_option
@_db_option
def forget_command(logs: tuple[Path, ...], inventory: Path, db: Path | None) -> None:
    """Remove what files contributed to the store, so they can be ingested again.

    A file that exists is found by its content (as ingest finds it); a path
    that no longer exists by the path the store recorded.
    """
    path = _store_path(db, inventory)
    if not path.exists():
        raise UsageError(f"no activity store at {display_path(path)}")
    with closing(store.connect(path)) as connection:
        done = ingest.forget(connection, logs)
    missing = 0
    for item in done:
        if item.found is None:
            missing += 1
            click.echo(f"{item.path}: not in the activity store; nothing forgotten")
            continue
        days = f" ({item.found.first_day} .. {item.found.last_day})" if item.found.first_day else ""
        click.echo(
            f"{item.path}: forgotten: {item.found.accepted} accepted and {item.found.rejected} "
            f"rejected messages{days} no longer counted; ingest it again to count it anew"
        )
    sys.exit(EXIT_FINDINGS if missing else EXIT_OK)


@activity_group.command("files")
@inventory_option
@_db_option
def files_command(inventory: Path, db: Path | None) -> None:
    """List the files the store has read, and the days each relay's logs cover."""
    path = _store_path(db, inventory)
    if not path.exists():
        raise UsageError(f"no activity store at {display_path(path)}")
    with closing(store.connect(path)) as connection:
        stored = store.files(connection)
        covered = store.coverage(connection)
    for item in stored:
        days = f"{item.first_day} .. {item.last_day}" if item.first_day else "no days"
        click.echo(
            f"{item.path}: {days}, {item.lines} lines, {item.accepted} accepted, "
            f"{item.rejected} rejected"
        )
    for relay, spans in covered.relays.items():
        shown = ", ".join(f"{s.first} .. {s.last}" for s in spans)
        click.echo(f"relay {relay}: {shown}")
    click.echo(f"{len(stored)} files")


# --- activity watch ---------------------------------------------------------------------


class WindowParam(click.ParamType):  # type: ignore[type-arg]
    """Minutes: ``15``, ``15m``, ``2h``."""

    name = "MINUTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        factor = 60 if text.endswith("h") else 1
        digits = text[:-1] if text[-1:] in ("h", "m") else text
        if not digits.isdigit() or not 1 <= int(digits) * factor <= 1440:
            self.fail(f"{value!r} is not a window of 1 to 1440 minutes (15m, 2h)", param, ctx)
        return int(digits) * factor


class MomentParam(click.ParamType):  # type: ignore[type-arg]
    name = "DATETIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            moment = dt.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a time (YYYY-MM-DD HH:MM[:SS])", param, ctx)
        if moment.tzinfo is not None:
            self.fail(f"{value!r}: give the relays' local time, without an offset", param, ctx)
        return moment


@dataclass(frozen=True, slots=True)
class WatchCommand:
    logs: tuple[Path, ...]
    inventory: Path
    inventory_given: str
    now: dt.datetime | None
    as_of: dt.date
    settings: timeline.Settings
    overrides: dict[str, Any]
    apply: bool
    ticket: str | None


@activity_group.command("watch")
@click.argument("logs", nargs=-1, required=True, type=_LOGS)
@inventory_option
@click.option(
    "--window",
    "window_minutes",
    type=WindowParam(),
    default=None,
    help="How much of the latest logs to look at (15m, 2h); default: site.yaml "
    "abuse_watch.window_minutes.",
)
@click.option(
    "--now",
    "now",
    type=MomentParam(),
    default=None,
    help="The end of the window, in the relays' local time (YYYY-MM-DD HH:MM[:SS]); "
    "default: the latest time in the logs.",
)
@as_of_option
@click.option(
    "--year",
    type=click.IntRange(1970, 9999),
    default=None,
    help="The year of each classic syslog file's first line (default: from --now, "
    "else the file's modification time).",
)
@click.option(
    "--tz",
    "zone",
    default=None,
    help="Time zone for journal instants (-o json, json-seq, short-unix).",
)
@click.option(
    "--max-messages",
    type=click.IntRange(min=1),
    default=None,
    help="Override abuse_watch.max_messages.",
)
@click.option(
    "--max-rejected-ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Override abuse_watch.max_rejected_ratio.",
)
@click.option(
    "--min-rejected",
    type=click.IntRange(min=1),
    default=None,
    help="Override abuse_watch.min_rejected.",
)
@click.option(
    "--max-distinct-recipients",
    type=click.IntRange(min=1),
    default=None,
    help="Override abuse_watch.max_distinct_recipients.",
)
@click.option(
    "--apply",
    "apply",
    is_flag=True,
    help="Suspend each flagged active record (the edit of relaygate suspend); "
    "never commits or deploys.",
)
@click.option(
    "--ticket", default=None, help="The ticket of the suspension (SEC-1234); required with --apply."
)
def watch_command(
    logs: tuple[Path, ...], inventory: Path, window_minutes: int | None,
    now: dt.datetime | None, as_of: dt.date | None, year: int | None, zone: str | None,
    max_messages: int | None, max_rejected_ratio: float | None, min_rejected: int | None,
    max_distinct_recipients: int | None, apply: bool, ticket: str | None,
) -> None:  # fmt: skip
    """The abuse fast path: flag devices over the site's thresholds in the latest minutes.

    Reads the logs as ingest does (no store), looks at the window that ends at
    the latest log time (or --now), and prints for each client over a threshold
    what was measured, and the suspend edit and fast revoke that stop it.
    Exits 0 when nothing is flagged, 1 when something needs action (or the
    policy service was unreachable), 2 on a usage or input error.
    """
    if apply and ticket is None:
        raise UsageError("--apply needs --ticket, the ticket that records the suspension")
    day = as_of or (now.date() if now is not None else dt.date.today())
    command = WatchCommand(
        logs=logs,
        inventory=inventory_root(inventory),
        inventory_given=str(inventory),
        now=now,
        as_of=day,
        settings=timeline.Settings(
            year=year,
            reference=now.date() if now is not None else None,
            today=day,
            zone=_zone(zone),
        ),
        overrides={
            "window_minutes": window_minutes,
            "max_messages": max_messages,
            "max_rejected_ratio": max_rejected_ratio,
            "min_rejected": min_rejected,
            "max_distinct_recipients": max_distinct_recipients,
        },
        apply=apply,
        ticket=ticket,
    )
    sys.exit(_watch(command))


def _watch(command: WatchCommand) -> int:
    loaded = validate(command.inventory, command.as_of)
    site_file = loaded.files.get(SITE_FILE)
    site_document = site_file.document if site_file is not None else None
    if loaded.site is None or site_document is None:
        problems = [f for f in loaded.findings if f.is_error and f.path.endswith(SITE_FILE)]
        click.echo(FORMATTERS["text"](problems, "site.yaml has errors"), nl=False, err=True)
        click.echo("relaygate: the watch needs the site's thresholds and relays", err=True)
        return EXIT_USAGE
    limits = watch.thresholds(site_document.data.get("abuse_watch"), command.overrides)
    unread = sorted(
        relative
        for relative, item in loaded.files.items()
        if relative.startswith("devices/") and item.document is None
    )
    if unread:
        click.echo(
            f"note: {len(unread)} records cannot be read (run relaygate validate); their mail"
            f" shows as from unknown clients: {', '.join(unread)}"
        )
    read = timeline.read(command.logs, command.settings)
    failed = False
    for item in read.files:
        finding = watch.file_finding(item)
        click.echo(finding.as_text() if finding is not None else _file_line(item))
        failed = failed or item.status == "failed"
    result = watch.run(read, loaded.devices, loaded.site, limits, command.now, loaded.lapsed)
    for line in watch.header(result):
        click.echo(line)
    if result.end is None or not any(item.status == "read" for item in read.files):
        click.echo("relaygate: no Postfix line in the logs: nothing to watch", err=True)
        return EXIT_USAGE
    for finding in watch.trouble_findings(result):
        click.echo(f"WARNING {finding.as_text()}")
    steps = watch.Steps(command.as_of, command.ticket, command.inventory_given)
    edits = 0
    for flag in result.flagged:
        click.echo("")
        applied = command.apply and bool(flag.active)
        for line in watch.flag_lines(flag, steps, applied):
            click.echo(line)
        if applied:
            edits += _suspend_flagged(command, flag)
            for line in watch.command_lines(flag, steps, applied):
                click.echo(line)
    if any(watch.stop_commands(f, steps, command.apply) for f in result.flagged):
        click.echo("")
        click.echo(f"note: {watch.FAST_PATH_NOTE}")
    if command.apply:
        click.echo(
            f"--apply: {edits} records suspended in the working tree; nothing committed or deployed"
        )
    click.echo(watch.summary(result))
    if failed:
        return EXIT_USAGE
    return EXIT_FINDINGS if result.needs_action else EXIT_OK


def _suspend_flagged(command: WatchCommand, flag: watch.Flagged) -> int:
    """The edit of ``relaygate suspend`` on each active record of a flagged client."""
    done = 0
    ticket = command.ticket or ""
    for device in flag.active:
        try:
            outcome = edit.change_record(
                command.inventory,
                device.name,
                command.as_of,
                lambda text: edit.suspend(text, watch.SUSPEND_REASON, ticket, command.as_of),
            )
        except RelaygateError as error:
            click.echo(f"  {device.name}: not suspended: {error}")
            continue
        what = f"suspended ({watch.SUSPEND_REASON}, {ticket}, {command.as_of})"
        print_outcome(outcome, what, next_step=False)
        done += 1 if outcome.changed else 0
    return done


def _file_line(item: timeline.FileRead) -> str:
    years = f"; classic syslog years {item.years}" if item.years else ""
    return f"{item.path}: read: {item.lines} lines, {item.used} from postfix{years}"


# --- review ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewCommand:
    inventory: Path
    as_of: dt.date
    db: Path
    format: str
    notices: Path | None
    volume_factor: float


@click.command("review")
@inventory_option
@as_of_option
@_db_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(list(review.FORMATS)),
    default="text",
    show_default=True,
    help="How to print the review.",
)
@click.option(
    "--notices",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write one ready-to-send notice per technical contact into this folder (nothing is sent).",
)
@click.option(
    "--volume-factor",
    type=click.FloatRange(min=1.0),
    default=review.DEFAULT_VOLUME_FACTOR,
    show_default=True,
    help="Flag a day with more accepted mail than this many times the record's daily limit.",
)
def review_command(
    inventory: Path,
    as_of: dt.date | None,
    db: Path | None,
    output_format: str,
    notices: Path | None,
    volume_factor: float,
) -> None:
    """The retention review: inactive and never-seen devices, expiring exceptions, volume.

    Exits 1 when something needs action (removal candidates, expired
    exceptions, volume alerts, refused devices still sending), 0 otherwise.
    """
    root = inventory_root(inventory)
    if db is not None and not db.is_file():
        raise UsageError(
            f"--db {db}: no activity store there (run `relaygate activity ingest` first, or"
            " leave --db out to review without one)"
        )
    command = ReviewCommand(
        inventory=root,
        as_of=as_of or dt.date.today(),
        db=_store_path(db, root),
        format=output_format,
        notices=notices,
        volume_factor=volume_factor,
    )
    connection = store.connect(command.db) if command.db.exists() else None
    try:
        result = review.run(
            command.inventory,
            command.as_of,
            connection,
            display_path(command.db),
            command.volume_factor,
        )
    except review.ReviewError as error:
        click.echo(str(error), err=True)
        click.echo("relaygate: site.yaml has errors; the review needs its policy", err=True)
        sys.exit(EXIT_FINDINGS)
    finally:
        if connection is not None:
            connection.close()
    if connection is None:
        result.notes.insert(0, f"no activity store at {display_path(command.db)}")
    click.echo(review.FORMATS[command.format](result), nl=False)
    if command.notices is not None:
        written = notice_files.write_notices(result, command.notices)
        click.echo(f"wrote {len(written)} notices to {display_path(command.notices)}", err=True)
    sys.exit(EXIT_FINDINGS if result.needs_action else EXIT_OK)


# --- revoke, retire, renew --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditCommand:
    inventory: Path
    name: str
    as_of: dt.date
    what: str  # a past-tense summary for the report line


def _run_edit(command: EditCommand, operation: Callable[[str], str]) -> None:
    """Edit the record in memory, check it, and write it only if it adds no error to it."""
    outcome = edit.change_record(command.inventory, command.name, command.as_of, operation)
    sys.exit(print_outcome(outcome, command.what))


def print_outcome(outcome: edit.Outcome, what: str, next_step: bool = True) -> int:
    """Print what an edit did (its diff, the findings after it); the exit code it means."""
    shown = outcome.path
    if outcome.introduced:
        click.echo(
            FORMATTERS["text"](outcome.introduced, f"{shown}: not changed"), nl=False, err=True
        )
        click.echo(
            "relaygate: the edit would make the record invalid; nothing was written", err=True
        )
        return EXIT_FINDINGS
    after = outcome.after
    if not outcome.changed or after is None:
        click.echo(f"{shown}: already {what}; nothing changed")
        return EXIT_OK
    click.echo(outcome.diff, nl=False)
    click.echo(f"{shown}: {what}")
    click.echo(
        FORMATTERS["text"](after.findings, summary_line(after.findings, after.files_checked)),
        nl=False,
    )
    if not after.errors and next_step:
        click.echo("next: open a pull request with this change; compile and deploy after review")
    return EXIT_FINDINGS if after.errors else EXIT_OK


def _date_option(function: Any) -> Any:
    return click.option(
        "--date",
        "day",
        type=DateParam(),
        default=None,
        help="status_date (default: --as-of, or today).",
    )(function)


Refusal = Callable[[str, str, str, dt.date], str]


def _refuse(
    what: str, operation: Refusal, name: str, inventory: Path, as_of: dt.date | None,
    reason: str, ticket: str, day: dt.date | None,
) -> None:  # fmt: skip
    """Revoke or suspend: set the status with its reason, ticket and day, then re-validate."""
    today = as_of or dt.date.today()
    when = day or today
    command = EditCommand(
        inventory_root(inventory), name, today, f"{what} ({reason}, {ticket}, {when})"
    )
    _run_edit(command, lambda text: operation(text, reason, ticket, when))


@click.command("revoke")
@click.argument("name")
@inventory_option
@as_of_option
@click.option("--reason", required=True, type=click.Choice(edit.REVOKE_REASONS))
@click.option("--ticket", required=True, help="The ticket recording the revocation (SEC-1234).")
@_date_option
def revoke_command(
    name: str,
    inventory: Path,
    as_of: dt.date | None,
    reason: str,
    ticket: str,
    day: dt.date | None,
) -> None:
    """Revoke a device: it compiles to an explicit reject and a firewall drop."""
    _refuse("revoked", edit.revoke, name, inventory, as_of, reason, ticket, day)


@click.command("suspend")
@click.argument("name")
@inventory_option
@as_of_option
@click.option("--reason", required=True, type=click.Choice(edit.SUSPEND_REASONS))
@click.option("--ticket", required=True, help="The ticket recording the suspension (SEC-1234).")
@_date_option
def suspend_command(
    name: str,
    inventory: Path,
    as_of: dt.date | None,
    reason: str,
    ticket: str,
    day: dt.date | None,
) -> None:
    """Suspend a device: refused with its reason until reinstated (the fast revoke path)."""
    _refuse("suspended", edit.suspend, name, inventory, as_of, reason, ticket, day)


@click.command("reinstate")
@click.argument("name")
@inventory_option
@as_of_option
def reinstate_command(name: str, inventory: Path, as_of: dt.date | None) -> None:
    """Reinstate a suspended device: active again once the change is reviewed and deployed."""
    command = EditCommand(inventory_root(inventory), name, as_of or dt.date.today(), "reinstated")
    _run_edit(command, edit.reinstate)


@click.command("retire")
@click.argument("name")
@inventory_option
@as_of_option
@click.option("--reason", required=True, type=click.Choice(edit.RETIRE_REASONS))
@click.option("--ticket", default=None, help="The ticket recording the retirement (optional).")
@_date_option
def retire_command(
    name: str,
    inventory: Path,
    as_of: dt.date | None,
    reason: str,
    ticket: str | None,
    day: dt.date | None,
) -> None:
    """Retire a device: it keeps its record as history and grants nothing."""
    today = as_of or dt.date.today()
    when = day or today
    command = EditCommand(inventory_root(inventory), name, today, f"retired ({reason}, {when})")
    _run_edit(command, lambda text: edit.retire(text, reason, when, ticket))


@click.command("renew")
@click.argument("name")
@inventory_option
@as_of_option
@click.option("--expires", "expires_on", required=True, type=DateParam(), help="New expires_on.")
@click.option(
    "--approved-on", "approved_on", required=True, type=DateParam(), help="New approved_on."
)
def renew_command(
    name: str,
    inventory: Path,
    as_of: dt.date | None,
    expires_on: dt.date,
    approved_on: dt.date,
) -> None:
    """Renew a legacy exception (refuses a term longer than site policy allows)."""
    root = inventory_root(inventory)
    today = as_of or dt.date.today()
    try:
        limit = review.load_site(root).policy.max_exception_days
    except review.ReviewError as error:
        raise UsageError(f"site.yaml has errors; the term limit is unknown:\n{error}") from error
    command = EditCommand(root, name, today, f"exception renewed ({approved_on} .. {expires_on})")
    _run_edit(command, lambda text: edit.renew(text, approved_on, expires_on, today, limit))


def register(group: click.Group) -> None:
    """Add the lifecycle commands to the relaygate CLI."""
    for command in (
        activity_group,
        review_command,
        revoke_command,
        suspend_command,
        reinstate_command,
        retire_command,
        renew_command,
    ):
        group.add_command(command)
