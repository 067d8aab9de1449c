"""Case setup: mutates the copied inventory (see tests/test_cases.py)."""

from __future__ import annotations

import json
from pathlib import Path


def setup(root: Path) -> None:
    # The schemas folder beside the inventory, as an older relaygate exported it:
    # editors would complete `kind` from another list than validate checks.
    schemas = root.parent / "schemas"
    schemas.mkdir()
    source = Path(__file__).resolve().parents[4] / "schemas"
    for name in ("site", "units", "netreg"):
        (schemas / f"{name}.schema.json").write_text((source / f"{name}.schema.json").read_text())
    device = json.loads((source / "device.schema.json").read_text())
    device["properties"]["kind"]["enum"].append("fax")
    (schemas / "device.schema.json").write_text(json.dumps(device, indent=2) + "\n")
