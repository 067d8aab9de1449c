"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

import shutil
from pathlib import Path


def setup(root: Path) -> None:
    unit = root / "devices" / "libraries"
    shutil.copyfile(unit / "lib-illiad.yaml", unit / "lib-illiad.yaml~")
