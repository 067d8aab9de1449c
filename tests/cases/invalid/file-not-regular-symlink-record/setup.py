"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    link = root / "devices" / "libraries" / "lib-illiad-mirror.yaml"
    link.symlink_to("lib-illiad.yaml")
