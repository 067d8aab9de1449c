"""Shared fixtures: the example inventory, an in-process CLI runner, CI rules."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class _ClosingLines:
    """The run's closing lines: what a test asked to show, then the integration count.

    Integration tests are counted by what happened to them, so that a green run that tested
    no relay is visible at a glance. Under pytest-xdist every worker's reports reach the
    controller's ``pytest_runtest_logreport``, so the controller counts the total over the
    workers. A worker's terminal is never shown: it hands its lines to the controller when
    it ends (``workeroutput``), and the controller prints them.
    """

    WORKER_OUTPUT = "relaygate_closing_lines"

    def __init__(self) -> None:
        self.counts = {"ran": 0, "skipped": 0, "errors": 0}
        self.lines: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "integration" not in report.keywords:
            return
        if report.skipped:
            self.counts["skipped"] += 1
        elif report.when == "call":
            self.counts["ran"] += 1
        elif report.failed and report.when == "setup":
            self.counts["errors"] += 1

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output = getattr(session.config, "workeroutput", None)
        if output is not None:  # an xdist worker
            output[self.WORKER_OUTPUT] = dict(self.lines)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """An xdist worker ended (seen by the controller): keep the lines it handed over."""
        self.lines.update(getattr(node, "workeroutput", {}).get(self.WORKER_OUTPUT, {}))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for key in sorted(self.lines):
            terminalreporter.write_line(self.lines[key], bold=True)
        line = f"integration: {self.counts['ran']} ran, {self.counts['skipped']} skipped"
        if self.counts["errors"]:
            line += f", {self.counts['errors']} errors before running"
        terminalreporter.write_line(line, bold=True)


_CLOSING = pytest.StashKey[_ClosingLines]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_CLOSING] = _ClosingLines()
    config.pluginmanager.register(config.stash[_CLOSING], "relaygate-closing-lines")


#: The slowest files (measured on a 2-core machine, slowest first). `make test` hands out
#: whole files (``--dist loadfile``: a file's lab or running Postfix is built once, on one
#: worker, and its tests run in file order) in collection order, so these start first and
#: the workers end together; other files with integration tests follow, then the rest. A
#: new file that takes minutes belongs in this list.
SLOW_FIRST = (
    "tests/test_deploy.py",
    "tests/test_deploy_guards.py",
    "tests/test_deploy_limits.py",
    "tests/test_relay_policy.py",
    "tests/test_differential.py",
    "tests/test_lab.py",
    "tests/test_volume_limits.py",
    "tests/test_wheel_install.py",
    "tests/test_hostile.py",
    "tests/test_docs.py",
    "tests/test_postfwd.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker: the slowest files first (see SLOW_FIRST)."""
    if not hasattr(config, "workerinput"):
        return  # one process: the usual order

    def path(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    integration = {path(item) for item in items if item.get_closest_marker("integration")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        if path(item) in SLOW_FIRST:
            return (0, SLOW_FIRST.index(path(item)))
        return (1, 0) if path(item) in integration else (2, 0)

    items.sort(key=rank)  # stable, and one rank per file: a file's tests keep their order


@contextlib.contextmanager
def one_build_at_a_time() -> Iterator[None]:
    """Hold a lock while ``pip wheel`` builds this checkout.

    The build runs in the source tree (build/, the egg-info), so two tests on two workers
    must not build at once; the lock is a file in the temporary folder, named after the
    checkout."""
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"relaygate-build-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def closing_line(config: pytest.Config, key: str, text: str) -> None:
    """Show ``text`` among the run's closing lines (the last one given per ``key``).

    Unlike a print under ``capsys.disabled()``, this reaches the terminal when the suite
    runs on several workers (``pytest -n``)."""
    config.stash[_CLOSING].lines[key] = text


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite the golden files from the current renderers.",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
