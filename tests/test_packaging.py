"""Building the package is quiet: a warning from the build backend is a failure here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.integration
def test_wheel_builds_without_warnings(tmp_path: Path) -> None:
    # Byte-compiling off (PYTHONDONTWRITEBYTECODE) makes setuptools say so; that is the
    # environment's choice, not the package's.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", str(ROOT), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # pip's own notes about its index locations are not the build's.
    warnings = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if ("warning" in line.lower() or "deprecat" in line.lower())
        and "is ignored: it is neither a file nor a directory" not in line
    ]
    assert warnings == []
    assert [path.name for path in tmp_path.glob("*.whl")] == ["relaygate-0.1.0-py3-none-any.whl"]
