"""Building the package is quiet: a warning from the build backend is a failure here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, one_build_at_a_time, require


@pytest.mark.integration
def test_wheel_builds_without_warnings(tmp_path: Path) -> None:
    # Byte-compiling off (PYTHONDONTWRITEBYTECODE) makes setuptools say so; that is the
    # environment's choice, not the package's.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with one_build_at_a_time():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "-v",
                str(ROOT),
                "-w",
                str(tmp_path),
            ],
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


def _make_dry_run(path: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    """`make -n` of the venv step with PATH limited to ``path``: which Python would it use?"""
    make = shutil.which("make")
    assert make is not None
    return subprocess.run(
        [make, "-n", "-C", str(ROOT), f"VENV={venv}", f"{venv}/.installed"],
        capture_output=True,
        text=True,
        env={"PATH": str(path), "HOME": str(venv)},
        check=False,
    )


def test_makefile_takes_the_first_supported_python(tmp_path: Path) -> None:
    require(shutil.which("make") is not None, "make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A python3 that is too old (it fails the version check) and a python3.12 that fits.
    (bin_dir / "python3").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "python3").chmod(0o755)
    (bin_dir / "python3.12").symlink_to(sys.executable)
    done = _make_dry_run(bin_dir, tmp_path / "venv")
    assert done.returncode == 0, done.stderr
    assert f"python3.12 -m venv {tmp_path / 'venv'}" in done.stdout
    # Nothing that fits: the set-up stops with the reason, before creating anything.
    (bin_dir / "python3.12").unlink()
    done = _make_dry_run(bin_dir, tmp_path / "venv")
    assert 'test -n ""' in done.stdout
    assert "need Python 3.11, 3.12 or 3.13" in done.stdout
