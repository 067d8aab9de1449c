"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    senders = "".join(f"  - sender-{i:05d}@lib.example.edu\n" for i in range(5000))
    replace(root, LEGACY, "  - hodges-scans@lib.example.edu\n", senders)
