"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    (root / "netreg.yaml").unlink()
    (root / "netreg.yaml").symlink_to("/etc/hostname")
