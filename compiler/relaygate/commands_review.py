"""The pull-request workflow commands: plan, codeowners, new and query.

Each click function only turns its arguments into a frozen options object,
calls the module that does the work (``plan``, ``plan_report``, ``scaffold``,
``query``) and maps the outcome to an exit code (PRODUCT.md): 0 success,
1 findings (or, for ``query``, nothing found), 2 usage, 3 internal.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from relaygate import __version__, plan_report, query, scaffold
from relaygate import compile as compile_
from relaygate import plan as plan_
from relaygate.cache import NO_CACHE_HELP, opened
from relaygate.cliutil import (
    EXIT_FINDINGS,
    EXIT_OK,
    DateParam,
    as_of_option,
    inventory_option,
    inventory_root,
)
from relaygate.errors import UsageError
from relaygate.lifecycle import store, usage
from relaygate.pipeline import display_path, validate
from relaygate.report import FORMATTERS, summary_line

# --- plan ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanOptions:
    inventory: Path
    base: str
    as_of: dt.date
    format: str
    cache: bool = True


@click.command("plan")
@inventory_option
@as_of_option
@click.option(
    "--base", "base", required=True, help="The git ref to compare with (e.g. origin/main)."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(sorted(plan_report.PLAN_FORMATS)),
    default="text",
    show_default=True,
    help="text for a terminal, markdown for a pull-request comment, json for tools.",
)
@click.option("--no-cache", "no_cache", is_flag=True, help=NO_CACHE_HELP)
def plan_command(
    inventory: Path, as_of: dt.date | None, base: str, output_format: str, no_cache: bool
) -> None:
    """Show what the working tree changes against BASE: records, access, artifacts, risks."""
    options = PlanOptions(
        inventory=inventory_root(inventory),
        base=base,
        as_of=as_of or dt.date.today(),
        format=output_format,
        cache=not no_cache,
    )
    with opened(options.inventory, options.cache) as store:
        result = plan_.build_plan(options.inventory, options.base, options.as_of, store=store)
    click.echo(plan_report.PLAN_FORMATS[options.format](result), nl=False)
    sys.exit(EXIT_OK if result.head.valid else EXIT_FINDINGS)


# --- codeowners -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeownersOptions:
    inventory: Path
    out: Path | None
    check: bool


@click.command("codeowners")
@inventory_option
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the file here (e.g. .github/CODEOWNERS) instead of printing it.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if OUT is not up to date.")
def codeowners_command(inventory: Path, out: Path | None, check: bool) -> None:
    """Generate CODEOWNERS from units.yaml (unit owners) and site.yaml (platform team)."""
    options = CodeownersOptions(inventory=inventory_root(inventory), out=out, check=check)
    if options.check and options.out is None:
        raise click.UsageError("--check needs --out FILE")
    site, units = plan_.site_and_units(options.inventory)
    if site is None or units is None:
        result = validate(options.inventory, dt.date.today())
        click.echo(
            FORMATTERS["text"](
                result.findings, summary_line(result.findings, result.files_checked)
            ),
            nl=False,
            err=True,
        )
        click.echo("relaygate: site.yaml and units.yaml must load to write CODEOWNERS", err=True)
        sys.exit(EXIT_FINDINGS)
    text = plan_.codeowners(site, units, plan_.inventory_in_repo(options.inventory), __version__)
    if options.out is None:
        click.echo(text, nl=False)
        sys.exit(EXIT_OK)
    current = options.out.read_text(encoding="utf-8") if options.out.is_file() else None
    if options.check:
        click.echo(f"{options.out}: {'up to date' if current == text else 'stale'}")
        sys.exit(EXIT_OK if current == text else EXIT_FINDINGS)
    if current != text:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(text, encoding="utf-8")
    click.echo(f"{options.out}: {'unchanged' if current == text else 'written'}")
    sys.exit(EXIT_OK)


# --- new ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewOptions:
    inventory: Path
    as_of: dt.date
    values: dict[str, Any]
    prompt: bool
    dry_run: bool


def _choice(values: tuple[str, ...]) -> click.Choice:  # type: ignore[type-arg]
    return click.Choice(values)


def _new_options(function: Any) -> Any:
    """One option per record field (scaffold.FIELDS), in reverse so --help lists them in order."""
    specs: list[tuple[str, dict[str, Any]]] = []
    for field in scaffold.FIELDS.values():
        kwargs: dict[str, Any] = {"default": None, "help": field.prompt + "."}
        if field.choices:
            kwargs["type"] = _choice(field.choices)
        if field.key == "volume_per_day":
            kwargs["type"] = click.IntRange(min=1)
        if field.key in ("approved_on", "expires_on", "status_date"):
            kwargs["type"] = DateParam()
        if field.key in ("senders", "acknowledged"):
            kwargs["multiple"] = True
            kwargs["default"] = ()
            kwargs["help"] = (
                "An envelope sender address (repeat for several)."
                if field.key == "senders"
                else "One acknowledgment the approver gave in writing (repeat for several)."
            )
        specs.append((field.flag, {**kwargs, "show_default": False}))
    for flag, kwargs in reversed(specs):
        key = next(f.key for f in scaffold.FIELDS.values() if f.flag == flag)
        function = click.option(flag, key, **kwargs)(function)
    return function


def _interactive() -> bool:
    """Ask only a person: standard input is a terminal (CI may have no stdin at all)."""
    return sys.stdin is not None and sys.stdin.isatty()


def _prompter(inventory: Path) -> scaffold.Prompt:
    context = scaffold.answer_context(inventory)
    units = context.units

    def prompt(field: scaffold.Field, answers: dict[str, Any]) -> Any:
        kind: Any = None
        text = field.prompt
        if field.choices:
            kind = _choice(field.choices)
        elif field.key == "unit" and units:
            kind = _choice(tuple(sorted(units)))
        elif field.key == "approver" and units and answers.get("unit") in units:
            approvers = units[answers["unit"]].approvers
            kind = _choice(tuple(a.email for a in approvers))
            text += (
                " [" + "; ".join(f"{a.email}: {a.name}, {a.role.value}" for a in approvers) + "]"
            )
        elif field.key == "volume_per_day":
            kind = click.IntRange(min=1)
        elif field.key in ("approved_on", "expires_on", "status_date"):
            kind = DateParam()
        while True:  # each answer is checked as it is typed, not after the last prompt
            answer: Any = click.prompt(text, type=kind)
            if field.key == "senders":
                answer = tuple(s.strip() for s in str(answer).split(",") if s.strip())
            problem = scaffold.answer_problem(field.key, answer, answers, context)
            if problem is None:
                return answer
            click.echo(f"  {problem}; try again")

    return prompt


@click.command("new")
@inventory_option
@as_of_option
@_new_options
@click.option(
    "--acknowledge-all",
    is_flag=True,
    help="The approver acknowledged all three statements in writing (legacy auth only).",
)
@click.option(
    "--prompt/--no-prompt",
    "prompt",
    default=None,
    help="Ask for missing fields (default: when standard input is a terminal).",
)
@click.option("--dry-run", is_flag=True, help="Validate and print the record; write nothing.")
def new_command(
    inventory: Path,
    as_of: dt.date | None,
    acknowledge_all: bool,
    prompt: bool | None,
    dry_run: bool,
    **fields: Any,
) -> None:
    """Write a new device record that validates: devices/<unit>/<name>.yaml."""
    values = {key: value for key, value in fields.items() if key in scaffold.FIELDS}
    if acknowledge_all:
        values["acknowledged"] = scaffold.ACKNOWLEDGMENTS
    options = NewOptions(
        inventory=inventory_root(inventory),
        as_of=as_of or dt.date.today(),
        values=values,
        prompt=_interactive() if prompt is None else prompt,
        dry_run=dry_run,
    )
    values = dict(options.values)
    if options.prompt:
        values = scaffold.ask_missing(
            values, _prompter(options.inventory), lambda text: click.confirm(text, default=False)
        )
    gaps = scaffold.missing(values)
    if gaps:
        raise UsageError(
            "missing fields: " + ", ".join(gaps) + " (give them as options, or run in a terminal"
            " to be asked)"
        )
    try:
        created = scaffold.create(options.inventory, values, options.as_of, write=not dry_run)
    except FileExistsError as error:
        click.echo(f"relaygate: {error} already exists; not overwritten", err=True)
        sys.exit(EXIT_FINDINGS)
    if created.findings:
        warnings = len(created.findings) - created.errors
        click.echo(
            FORMATTERS["text"](
                list(created.findings), f"{created.errors} errors, {warnings} warnings"
            ),
            nl=False,
        )
    if created.errors:
        click.echo(
            f"relaygate: {created.shown} was not written: the inventory does not validate with it",
            err=True,
        )
        sys.exit(EXIT_FINDINGS)
    if options.dry_run:
        click.echo(created.text, nl=False)
        click.echo(f"would write {created.shown} (dry run)")
    else:
        click.echo(f"wrote {created.shown}")
    sys.exit(EXIT_OK)


# --- query -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryOptions:
    inventory: Path
    as_of: dt.date
    query: str
    sender: str | None
    login: str | None
    format: str
    db: Path


@click.command("query")
@inventory_option
@as_of_option
@click.option(
    "--db",
    "db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The activity store for the activity lines "
    "(default: .relaygate/activity.sqlite beside the inventory).",
)
@click.argument("address_or_name")
@click.option("--sender", default=None, help="Also show what the relay answers to MAIL FROM:<S>.")
@click.option(
    "--login",
    default=None,
    help="Simulate this SASL login (default: the record's account; none for legacy records).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def query_command(
    inventory: Path,
    as_of: dt.date | None,
    address_or_name: str,
    sender: str | None,
    login: str | None,
    output_format: str,
    db: Path | None,
) -> None:
    """Which record covers an address (or has a name), where it appears, what the relay says.

    With an activity store (relaygate activity ingest), each record also shows
    its last accepted message, its last rejection and its last 30 days' volume.
    """
    root = inventory_root(inventory)
    options = QueryOptions(
        inventory=root,
        as_of=as_of or dt.date.today(),
        query=address_or_name,
        sender=sender,
        login=login,
        format=output_format,
        db=db or store.default_path(root),
    )
    built = compile_.build(options.inventory, options.as_of)
    site, units = plan_.site_and_units(options.inventory)
    result = query.run_query(
        built.validation,
        built.artifacts,
        site,
        units,
        options.query,
        options.as_of,
        sender=options.sender,
        login=options.login,
    )
    lines, data = usage.for_query(
        options.db,
        display_path(options.db),
        [m.device for m in result.matches],
        options.as_of,
    )
    if options.format == "json":
        click.echo(json.dumps(query.as_dict(result, data), indent=2, sort_keys=True))
    else:
        click.echo(query.text(result, lines), nl=False)
    sys.exit(EXIT_OK if result.found else EXIT_FINDINGS)


def register(group: click.Group) -> None:
    """Add this module's commands to the relaygate CLI."""
    for command in (plan_command, codeowners_command, new_command, query_command):
        group.add_command(command)
