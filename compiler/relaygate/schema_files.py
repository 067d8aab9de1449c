"""The JSON Schema files a policy repository keeps beside its inventory.

Editors complete and check records with ``schemas/*.schema.json`` (the
``yaml-language-server`` line at the top of every record points there). Those
files must be the schemas of the installed relaygate, or the editor and
``validate`` disagree. This module owns that folder: ``export`` writes it and
``stale_findings`` tells ``validate`` when it no longer matches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_args

from relaygate import __version__
from relaygate.findings import Finding
from relaygate.rules import rule
from relaygate.schema import SchemaName, schema_text

SCHEMAS_DIR = "schemas"
NAMES: tuple[SchemaName, ...] = get_args(SchemaName)


def file_name(name: SchemaName) -> str:
    return f"{name}.schema.json"


def export(folder: Path) -> list[Path]:
    """Write every bundled schema into ``folder``; the files whose bytes changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for name in NAMES:
        target = folder / file_name(name)
        text = schema_text(name)
        if target.is_file() and not target.is_symlink() and target.read_text("utf-8") == text:
            continue
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_text(text, encoding="utf-8")
        staging.replace(target)
        changed.append(target)
    return changed


def stale_findings(inventory: Path, shown: str) -> list[Finding]:
    """A warning for each schema file beside ``inventory`` that is not the installed one.

    ``shown`` is how the inventory folder is printed; the schemas folder is its
    sibling. A missing folder is no finding (editor support is optional); a
    folder that is the bundled one itself (this source tree) is never stale.
    """
    folder = inventory.parent / SCHEMAS_DIR
    if not folder.is_dir():
        return []
    shown_folder = os.path.normpath(os.path.join(shown, os.pardir, SCHEMAS_DIR))
    findings: list[Finding] = []
    for name in NAMES:
        path = folder / file_name(name)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            problem = "is missing"
        except (OSError, UnicodeDecodeError) as error:
            problem = f"cannot be read ({error.__class__.__name__})"
        else:
            if text == schema_text(name):
                continue
            problem = f"differs from the schema of relaygate {__version__}"
        findings.append(
            rule("schemas.stale").at(
                f"{shown_folder}/{file_name(name)}",
                0,
                0,
                f"{file_name(name)} {problem}: editors check records against another schema",
            )
        )
    return findings
