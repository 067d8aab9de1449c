"""The console script: every line reaches a pipe and the exit code is main's.

``relaygate.cli.entry`` ends the process with ``os._exit`` (no heap teardown),
so it must flush the standard streams itself; these run it as a real child
process whose output goes to a pipe (block-buffered, the case that loses
output without the flush).
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

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
