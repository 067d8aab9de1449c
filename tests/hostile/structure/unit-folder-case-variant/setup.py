"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY


def setup(root: Path) -> None:
    folder = root / "devices" / "Libraries"
    folder.mkdir()
    (root / LEGACY).rename(folder / "lib-hodges-3f-copier.yaml")
