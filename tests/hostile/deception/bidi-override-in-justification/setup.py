"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    replace(
        root,
        LEGACY,
        "replacement is budgeted for FY28.",
        "replacement is budgeted for \u202e82YF\u202c.",
    )
