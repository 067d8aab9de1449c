"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    record = root / "devices" / "libraries" / "lib-illiad.yaml"
    with record.open("a", encoding="utf-8") as handle:
        handle.write("notes: " + "[" * 600 + "]" * 600 + "\n")
