"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY


def setup(root: Path) -> None:
    record = root / LEGACY
    record.unlink()
    record.symlink_to("../medicine/med-clinic-copier.yaml")
