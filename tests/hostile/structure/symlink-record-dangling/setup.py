"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    (root / "devices" / "libraries" / "lib-ghost.yaml").symlink_to("lib-does-not-exist.yaml")
