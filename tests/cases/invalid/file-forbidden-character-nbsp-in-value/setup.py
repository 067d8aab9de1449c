"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    record = root / "devices" / "libraries" / "lib-illiad.yaml"
    text = record.read_text(encoding="utf-8")
    assert "model: OCLC ILLiad 9.2" in text
    text = text.replace("model: OCLC ILLiad 9.2", "model: OCLC\u00a0ILLiad 9.2")
    record.write_text(text, encoding="utf-8")
