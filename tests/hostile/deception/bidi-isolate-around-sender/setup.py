"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    replace(
        root,
        LEGACY,
        "  - hodges-scans@lib.example.edu\n",
        "  - \u2066hodges-scans@lib.example.edu\u2069\n",
    )
