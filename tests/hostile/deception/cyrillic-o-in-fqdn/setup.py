"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import LEGACY, replace


def setup(root: Path) -> None:
    replace(
        root,
        LEGACY,
        "fqdn: lib-hodges-3f-copier.lib.example.edu\n",
        "fqdn: lib-h\u043edges-3f-copier.lib.example.edu\n",
    )
