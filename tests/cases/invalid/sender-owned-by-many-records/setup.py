"""Seven more authenticated records all list oit-status-page's sender.

Each of the eight records gets one finding naming five others and how many
more, not one finding per pair.
"""

from __future__ import annotations

from pathlib import Path


def setup(root: Path) -> None:
    template = (root / "devices" / "oit" / "oit-status-page.yaml").read_text()
    for number in range(1, 8):
        text = (
            template.replace("oit-status-page", f"oit-copy-{number}")
            .replace("10.5.20.12", f"10.5.20.{40 + number}")
            .replace("svc-oit-status@", f"svc-oit-copy-{number}@")
            .replace("fqdn: status.oit.example.edu", f"fqdn: copy-{number}.oit.example.edu")
        )
        (root / "devices" / "oit" / f"oit-copy-{number}.yaml").write_text(text)
