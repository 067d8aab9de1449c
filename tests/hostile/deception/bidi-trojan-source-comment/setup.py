"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

from pathlib import Path

from tests.hostile._edit import REVOKED, replace


def setup(root: Path) -> None:
    replace(
        root,
        REVOKED,
        "status: revoked\n",
        "status: active  # \u202e\u2066 status: revoked\u2069 \u2066\n",
    )
