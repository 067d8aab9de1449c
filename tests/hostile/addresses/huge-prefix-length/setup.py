"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import APPLICATION, replace


def setup(root: Path) -> None:
    replace(
        root, APPLICATION, "address: 10.20.50.16\n", "address: 10.20.50.16/" + "0" * 4400 + "\n"
    )
