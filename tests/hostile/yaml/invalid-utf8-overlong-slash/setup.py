"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace_bytes


def setup(root: Path) -> None:
    replace_bytes(root, LEGACY, b"address: 10.20.30.41\n", b"address: 10.20.30.41\xc0\xaf24\n")
