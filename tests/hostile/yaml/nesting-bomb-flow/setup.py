"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    replace(
        root, LEGACY, "volume_per_day: 40\n", "volume_per_day: " + "[" * 10000 + "]" * 10000 + "\n"
    )
