"""Exact edits for the hostile cases' ``setup.py`` files.

Each edit names the text it replaces and fails loudly when that text is not
there exactly once, so a change to the example inventory cannot silently turn
a hostile case into a harmless one.
"""

from __future__ import annotations

from pathlib import Path

#: A legacy copier (auth: ip) in the MOD segment of the libraries.
LEGACY = "devices/libraries/lib-hodges-3f-copier.yaml"
#: An authenticated application (auth: oauth2) of the libraries.
APPLICATION = "devices/libraries/lib-illiad.yaml"
#: A legacy MFD revoked for spam.
REVOKED = "devices/engineering/eng-rhodes-lab-mfd.yaml"


def replace_bytes(root: Path, relative: str, old: bytes, new: bytes) -> None:
    """Replace the one occurrence of ``old`` in a file of the inventory at ``root``."""
    path = root / relative
    data = path.read_bytes()
    count = data.count(old)
    if count != 1:
        raise AssertionError(f"{relative}: {old!r} occurs {count} times, expected once")
    path.write_bytes(data.replace(old, new))


def replace(root: Path, relative: str, old: str, new: str) -> None:
    """``replace_bytes`` for text; both sides are encoded as UTF-8."""
    replace_bytes(root, relative, old.encode("utf-8"), new.encode("utf-8"))
