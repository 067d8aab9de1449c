"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

import os
from pathlib import Path


def setup(root: Path) -> None:
    os.mkfifo(root / "devices" / "libraries" / "lib-pipe.yaml")
