"""Shared fixtures: the example inventory, an in-process CLI runner, CI rules."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relaygate.cli import main
from tests import postfix_instance

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inventory"
AS_OF = "2026-11-29"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run relaygate in process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def inventory(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the example inventory."""
    target = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, target)
    yield target


def require(condition: bool, reason: str) -> None:
    """Skip an integration test off CI when a component is missing; fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


def require_postfix_lmdb() -> None:
    """Require a Postfix with lmdb maps; the skip or failure names the command that said no."""
    reason = postfix_instance.lmdb_missing()
    require(reason is None, reason or "")


#: Integration tests by what happened to them: counted in the run's closing lines so that a
#: green run that tested no relay is visible at a glance.
_INTEGRATION = {"ran": 0, "skipped": 0, "errors": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "integration" not in report.keywords:
        return
    if report.skipped:
        _INTEGRATION["skipped"] += 1
    elif report.when == "call":
        _INTEGRATION["ran"] += 1
    elif report.failed and report.when == "setup":
        _INTEGRATION["errors"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = _INTEGRATION
    line = f"integration: {counts['ran']} ran, {counts['skipped']} skipped"
    if counts["errors"]:
        line += f", {counts['errors']} errors before running"
    terminalreporter.write_line(line, bold=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite the golden files from the current renderers.",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
