"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "auth: none")  # invisible "auth: none"
    replace(root, LEGACY, "status: active\n", f"status: active  # {hidden}\n")
