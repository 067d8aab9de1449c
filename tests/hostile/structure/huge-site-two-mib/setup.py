"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    path = root / "site.yaml"
    path.write_bytes(path.read_bytes() + b"#" * (2 * 1024 * 1024) + b"\n")
