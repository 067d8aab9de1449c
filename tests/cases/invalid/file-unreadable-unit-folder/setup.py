"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def setup(root: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a folder whatever its mode; run the suite as a normal user")
    (root / "devices" / "libraries").chmod(0)
