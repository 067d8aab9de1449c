"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    replace(root, LEGACY, "address: 10.20.30.41\n", "address: \u0661\u0660.20.30.41\n")
