"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

#: Root reads a folder whatever its mode: under root the runner validates this
#: case as `nobody` (see tests/test_cases.py).
UNPRIVILEGED = True


def setup(root: Path) -> None:
    (root / "devices" / "libraries").chmod(0)
