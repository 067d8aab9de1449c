"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    record = root / "devices" / "libraries" / "lib-illiad.yaml"
    data = record.read_bytes()
    record.write_bytes(data + b"#" + b"x" * (65536 - len(data) - 2) + b"\n")
    assert record.stat().st_size == 65536
