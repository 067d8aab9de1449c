"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    replace(root, LEGACY, "status: active\n", "status: active\nsta\u200dtus: revoked\n")
