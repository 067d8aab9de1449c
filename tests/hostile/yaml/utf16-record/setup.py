"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY


def setup(root: Path) -> None:
    path = root / LEGACY
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
