"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    record = root / "devices" / "libraries" / "lib-illiad.yaml"
    data = record.read_bytes()
    old = b"model: OCLC ILLiad 9.2\n"
    assert old in data
    record.write_bytes(data.replace(old, b"model: OCLC ILLiad 9.2 caf\xe9\n"))
