"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    site = root / "site.yaml"
    data = site.read_bytes()
    site.write_bytes(data + b"#" + b"x" * (1048577 - len(data) - 2) + b"\n")
