"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    record = root / "devices" / "libraries" / "lib-illiad.yaml"
    text = record.read_text(encoding="utf-8")
    first, rest = text.split("\n", 1)
    record.write_text(first + "\n# Owner note: \u202eeton\n" + rest, encoding="utf-8")
