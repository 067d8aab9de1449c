"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY


def setup(root: Path) -> None:
    path = root / LEGACY
    path.write_bytes(path.read_bytes() + b"#" * (10 * 1024 * 1024) + b"\n")
