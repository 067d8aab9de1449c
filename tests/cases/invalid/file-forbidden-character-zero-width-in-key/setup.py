"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    record = root / "devices" / "libraries" / "lib-illiad.yaml"
    text = record.read_text(encoding="utf-8")
    assert "\naccount: " in text
    record.write_text(text.replace("\naccount: ", "\naccount\u200b: "), encoding="utf-8")
