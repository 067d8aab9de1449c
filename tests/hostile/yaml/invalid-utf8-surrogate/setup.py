"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace_bytes


def setup(root: Path) -> None:
    replace_bytes(
        root, LEGACY, b"model: Xerox AltaLink C8170\n", b"model: Xerox \xed\xa0\x80 C8170\n"
    )
