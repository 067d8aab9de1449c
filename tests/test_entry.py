"""The console script: every line reaches a pipe and the exit code is main's.

``relaygate.cli.entry`` ends the process with ``os._exit`` (no heap teardown),
so it must flush the standard streams itself; these run it as a real child
process whose output goes to a pipe (block-buffered, the case that loses
output without the flush).
"""

from __future__ import annotations

import gc
import importlib
import subprocess
import sys
from pathlib import Path

import click

from relaygate import cli
from relaygate.catalogue import catalogue

ROOT = Path(__file__).resolve().parent.parent
_ENTRY = "from relaygate.cli import entry; entry()"


def _entry(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_every_line_reaches_the_pipe() -> None:
    done = _entry("rules")
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    assert listed == list(catalogue())  # the last lines are not lost in a buffer


def test_the_exit_code_is_mains(tmp_path: Path) -> None:
    broken = tmp_path / "inventory"
    broken.mkdir()  # no site.yaml: findings, exit 1
    done = _entry("validate", "--inventory", str(broken), "--as-of", "2026-11-29", "--no-cache")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "file.missing" in done.stdout + done.stderr
    ok = _entry("validate", "--inventory", "inventory", "--as-of", "2026-11-29", "--no-cache")
    assert ok.returncode == 0, ok.stdout + ok.stderr  # positive control
    assert "0 errors" in ok.stdout


def test_main_restores_the_collector_thresholds() -> None:
    before = gc.get_threshold()
    assert before != cli.GC_THRESHOLD
    assert cli.main(["rules", "file.missing"]) == 0
    assert gc.get_threshold() == before


def test_each_command_module_registers_exactly_the_commands_it_is_listed_for() -> None:
    listed: dict[str, set[str]] = {}
    for name, module in cli.COMMANDS.items():
        listed.setdefault(module, set()).add(name)
    for module, names in listed.items():
        group = click.Group()
        importlib.import_module(module).register(group)
        assert set(group.commands) == names, module
    assert not set(cli.COMMANDS) & {"validate", "compile", "rules"}  # defined in cli itself


def test_a_command_imports_only_its_own_module() -> None:
    # A fresh interpreter: `plan --help` loads the review commands and no other module.
    probe = (
        "import sys\n"
        "from relaygate.cli import main\n"
        "main(['plan', '--help'])\n"
        "print(sorted(m for m in sys.modules if m in "
        "('relaygate.commands_review', 'relaygate.lifecycle.commands',"
        " 'relaygate.commands_repo', 'relaygate.release')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--base" in done.stdout  # the plan command's own help: it was found
    assert done.stdout.splitlines()[-1] == "['relaygate.commands_review']"
    listing = _entry("--help")  # the list names commands of every module
    assert listing.returncode == 0, listing.stderr
    for name in ("plan", "revoke", "deploy", "release"):
        assert f"  {name} " in listing.stdout, name
