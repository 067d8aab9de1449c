"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    (root / "devices").rename(root / "devices.real")
    (root / "devices").symlink_to("devices.real", target_is_directory=True)
