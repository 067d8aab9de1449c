"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    path = root / "site.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
