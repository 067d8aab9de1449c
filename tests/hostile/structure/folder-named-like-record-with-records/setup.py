"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY


def setup(root: Path) -> None:
    folder = root / "devices" / "libraries" / "lib-shadow.yaml"
    folder.mkdir()
    (folder / "lib-shadow.yaml").write_bytes((root / LEGACY).read_bytes())
