"""Shared pieces of the command line: exit codes, common options, option types.

Command modules import from here (never from ``relaygate.cli``) so a command
group can live in its own module without an import cycle.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from relaygate.errors import UsageError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class DateParam(click.ParamType):  # type: ignore[type-arg]
    name = "DATE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


def inventory_option(function: Any) -> Any:
    return click.option(
        "--inventory",
        "inventory",
        default="inventory",
        show_default=True,
        type=click.Path(path_type=Path, file_okay=False),
        help="The inventory folder.",
    )(function)


def as_of_option(function: Any) -> Any:
    return click.option(
        "--as-of",
        "as_of",
        type=DateParam(),
        default=None,
        help="The day to check against (YYYY-MM-DD); default: today.",
    )(function)


def inventory_root(path: Path) -> Path:
    if not path.is_dir():
        raise UsageError(f"inventory folder {path} not found (use --inventory DIR)")
    return path.resolve()
