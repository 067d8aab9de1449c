"""The lifecycle commands: ``activity ingest``, ``review``, ``revoke``, ``retire``, ``renew``.

Each command parses its options into a frozen options object, calls the
lifecycle module that does the work, prints, and exits with the CLI's codes:
0 done; 1 findings (a log file could not be read, the review lists something
that needs action now, an edit was refused or left the inventory with
errors); 2 usage; 3 internal. Machine-readable output (``review --format
json|csv``) goes to stdout alone; progress bars and "wrote" lines go to stderr.
"""

from __future__ import annotations

import datetime as dt
import difflib
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
    DateParam,
    as_of_option,
    inventory_option,
    inventory_root,
)
from relaygate.errors import UsageError
from relaygate.lifecycle import edit, ingest, review, store
from relaygate.lifecycle import notices as notice_files
from relaygate.lifecycle.logs.files import Source
from relaygate.pipeline import display_path
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
    """Read relay logs into the activity store; list or forget what was read."""


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
    help="Flag a day with more accepted mail than this many times volume_per_day.",
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
    """Edit the record in memory, validate, and write it only if it adds no error to it."""
    path = edit.find_record(command.inventory, command.name)
    shown = display_path(path)
    before_text = path.read_text(encoding="utf-8")
    after_text = operation(before_text)
    if after_text == before_text:
        click.echo(f"{shown}: already {command.what}; nothing changed")
        sys.exit(EXIT_OK)
    after = edit.check(command.inventory, path, after_text, command.as_of)
    if after.introduced:
        click.echo(
            FORMATTERS["text"](after.introduced, f"{shown}: not changed"), nl=False, err=True
        )
        click.echo(
            "relaygate: the edit would make the record invalid; nothing was written", err=True
        )
        sys.exit(EXIT_FINDINGS)
    edit.replace_if_unchanged(path, before_text, after_text)
    click.echo(
        "".join(
            difflib.unified_diff(
                before_text.splitlines(keepends=True),
                after_text.splitlines(keepends=True),
                shown if shown.startswith("/") else f"a/{shown}",
                shown if shown.startswith("/") else f"b/{shown}",
            )
        ),
        nl=False,
    )
    click.echo(f"{shown}: {command.what}")
    click.echo(
        FORMATTERS["text"](after.findings, summary_line(after.findings, after.files_checked)),
        nl=False,
    )
    if not after.errors:
        click.echo("next: open a pull request with this change; compile and deploy after review")
    sys.exit(EXIT_FINDINGS if after.errors else EXIT_OK)


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
