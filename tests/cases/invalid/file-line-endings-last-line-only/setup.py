"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    record = root / "devices" / "libraries" / "lib-illiad.yaml"
    data = record.read_bytes()
    assert data.endswith(b"status: active\n")
    record.write_bytes(data[:-1] + b"\r\n")
