"""The relaygate command line: a thin layer over the pipeline.

Each command parses its options into a frozen options object, calls the
pipeline and returns an exit code. Exit codes (PRODUCT.md): 0 success
(warnings allowed), 1 findings or policy errors, 2 usage error, 3 internal
failure. Any exception that is not a deliberate ``RelaygateError`` is an
internal failure: it is reported and exits 3, never 0.
"""

from __future__ import annotations

import datetime as dt
import difflib
import gc
import importlib
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click

from relaygate import __version__
from relaygate.cache import NO_CACHE_HELP, opened
from relaygate.cliutil import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    as_of_option,
    inventory_option,
    inventory_root,
)
from relaygate.errors import RelaygateError
from relaygate.pipeline import summarize
from relaygate.report import FORMATTERS, summary_line


class _LazyGroup(click.Group):
    """The top-level group; each module of ``COMMANDS`` loads when first needed.

    ``validate``, ``compile`` and ``rules`` are defined here. Asking for another
    command imports only the module that defines it (``COMMANDS``), so a
    ``plan`` does not pay for importing the lifecycle and repository commands;
    asking for the list (``--help``) or for a name no module defines imports
    every command module once.
    """

    _loaded: frozenset[str] = frozenset()

    def _load(self, modules: Iterable[str]) -> None:
        for name in modules:
            if name not in self._loaded:
                self._loaded |= {name}
                importlib.import_module(name).register(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            module = COMMANDS.get(cmd_name)
            self._load((module,) if module is not None else COMMAND_MODULES)
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load(COMMAND_MODULES)
        return super().list_commands(ctx)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="relaygate")
def cli() -> None:
    """relaygate: compile reviewed device records into SMTP relay policy."""


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    inventory: Path
    as_of: dt.date
    format: str
    cache: bool


@cli.command("validate")
@inventory_option
@as_of_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(sorted(FORMATTERS)),
    default="text",
    show_default=True,
    help="How to print findings.",
)
@click.option("--no-cache", "no_cache", is_flag=True, help=NO_CACHE_HELP)
def validate_command(
    inventory: Path, as_of: dt.date | None, output_format: str, no_cache: bool
) -> None:
    """Check every record against the schemas and every rule of the procedure."""
    options = ValidateOptions(
        inventory=inventory_root(inventory),
        as_of=as_of or dt.date.today(),
        format=output_format,
        cache=not no_cache,
    )
    with opened(options.inventory, options.cache) as store:
        findings, files_checked = summarize(options.inventory, options.as_of, store=store)
    summary = summary_line(findings, files_checked)
    click.echo(FORMATTERS[options.format](findings, summary), nl=False)
    sys.exit(EXIT_FINDINGS if any(f.is_error for f in findings) else EXIT_OK)


@dataclass(frozen=True, slots=True)
class CompileOptions:
    inventory: Path
    out: Path
    as_of: dt.date
    check: bool
    cache: bool


@cli.command("compile")
@inventory_option
@as_of_option
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="The output folder (replaced atomically).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if OUT is stale.")
@click.option("--no-cache", "no_cache", is_flag=True, help=NO_CACHE_HELP)
def compile_command(
    inventory: Path, as_of: dt.date | None, out: Path, check: bool, no_cache: bool
) -> None:
    """Compile the inventory into Postfix maps, nftables rules and MOD ACLs."""
    options = CompileOptions(
        inventory=inventory_root(inventory),
        out=out,
        as_of=as_of or dt.date.today(),
        check=check,
        cache=not no_cache,
    )
    from relaygate import compile as compile_  # noqa: PLC0415 - only compile renders

    with opened(options.inventory, options.cache) as store:
        result = compile_.build(
            options.inventory,
            options.as_of,
            compile_.inventory_commit(options.inventory),
            store=store,
        )
    validation = result.validation
    if validation.findings:
        click.echo(
            FORMATTERS["text"](
                validation.findings, summary_line(validation.findings, validation.files_checked)
            ),
            nl=False,
            err=True,
        )
    if result.artifacts is None:
        click.echo("relaygate: the inventory has errors; nothing was written", err=True)
        sys.exit(EXIT_FINDINGS)
    if options.check:
        differ = compile_.stale(options.out, result.artifacts)
        for path in differ:
            click.echo(f"stale: {path}")
        click.echo(
            f"{options.out}: {'stale' if differ else 'up to date'}"
            f" ({len(result.artifacts)} artifacts)"
        )
        sys.exit(EXIT_FINDINGS if differ else EXIT_OK)
    changed = compile_.write(options.out, result.artifacts)
    for path in changed:
        click.echo(f"{'wrote' if path in result.artifacts else 'removed'}: {path}")
    click.echo(f"{options.out}: {len(changed)} of {len(result.artifacts)} artifacts changed")
    sys.exit(EXIT_OK)


@cli.command("rules")
@click.argument("rule_ids", nargs=-1)
def rules_command(rule_ids: tuple[str, ...]) -> None:
    """List every id (rules, plan risks, review categories) and its kind; with IDS, explain."""
    from relaygate.catalogue import catalogue  # noqa: PLC0415 - only this command lists all ids

    entries = catalogue()
    if not rule_ids:
        for entry in entries.values():
            click.echo(f"{entry.id:36} {entry.kind:6} {entry.level:8} {entry.summary}")
        return
    unknown = [rule_id for rule_id in rule_ids if rule_id not in entries]
    for rule_id in unknown:
        close = difflib.get_close_matches(rule_id, list(entries), n=3)
        guess = f"; did you mean {' or '.join(close)}?" if close else ""
        click.echo(f"relaygate: no rule {rule_id!r}{guess}", err=True)
    if unknown:
        sys.exit(EXIT_USAGE)
    for rule_id in rule_ids:
        entry = entries[rule_id]
        label = entry.level if entry.kind == "rule" else f"{entry.kind}, {entry.level}"
        click.echo(f"{entry.id} ({label}): {entry.summary}\n  what to do: {entry.hint}")


#: The commands that live in their own modules, by name, and the module that
#: defines each (it has ``register(group)``, which adds exactly these; a test
#: holds the two together).
COMMANDS: dict[str, str] = {
    **dict.fromkeys(("plan", "codeowners", "new", "query"), "relaygate.commands_review"),
    **dict.fromkeys(
        ("activity", "review", "revoke", "suspend", "reinstate", "retire", "renew"),
        "relaygate.lifecycle.commands",
    ),
    **dict.fromkeys(
        ("init", "schemas", "import", "netreg", "list", "deploy", "approvals"),
        "relaygate.commands_repo",
    ),
    "release": "relaygate.release",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


#: Allocations between young-generation collections while a command runs: a
#: 10k-record inventory is millions of small objects that live to the end, and
#: the default (700) spends a tenth of a plan collecting them again and again;
#: larger thresholds than these raised a plan's peak memory.
GC_THRESHOLD = (50_000, 20, 1000)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map every outcome to an exit code."""
    previous = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        return _run(argv)
    finally:
        gc.set_threshold(*previous)


def entry() -> NoReturn:
    """The ``relaygate`` console script: ``main``, then exit without tearing the heap down.

    Freeing a 10k-record inventory object by object at interpreter exit costs
    a tenth of a compile and achieves nothing: the command has finished, its
    files are closed and its cache is flushed. Only the standard streams still
    hold output, so they are flushed first; a stream that cannot be flushed
    fails the run (as Python's own exit would, with 120).
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 120
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="relaygate", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as error:
        error.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_USAGE
    except SystemExit as done:
        return int(done.code or 0) if isinstance(done.code, int | None) else EXIT_INTERNAL
    except RelaygateError as error:
        click.echo(f"relaygate: {error}", err=True)
        return error.exit_code
    except Exception:
        click.echo("relaygate: internal error; nothing was written. Details:", err=True)
        click.echo(traceback.format_exc(), err=True)
        return EXIT_INTERNAL
    return EXIT_OK
