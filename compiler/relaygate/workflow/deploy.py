"""`relaygate deploy`: run the deploy playbook that ships with this relaygate.

A policy repository has no copy of the playbooks: they are package data, so
the deploy logic is always the one of the pinned relaygate version. This module
finds them and builds the ``ansible-playbook`` command; the caller runs it.
"""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path

from relaygate.errors import UsageError

PLAYBOOKS = ("deploy.yml", "mod_acl_package.yml", "mod_acl_ios.yml")


def playbooks_dir() -> AbstractContextManager[Path]:
    """The packaged playbook folder, as a real path for as long as the context lasts."""
    return resources.as_file(resources.files("relaygate") / "resources" / "playbooks")


def ansible_playbook() -> str:
    """``ansible-playbook`` beside this Python (the same environment) or on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise UsageError(
            "ansible-playbook not found: install relaygate with its deploy extra"
            " (pip install 'relaygate[deploy]')"
        )
    return found


def command(folder: Path, playbook: str, out: Path, extra: tuple[str, ...]) -> list[str]:
    """The ansible-playbook argv: the packaged playbook, the compiled folder, the user's options."""
    if playbook not in PLAYBOOKS:
        raise UsageError(f"unknown playbook {playbook!r} (one of {', '.join(PLAYBOOKS)})")
    if not out.is_dir():
        raise UsageError(f"{out} is not a compiled folder (run `relaygate compile --out {out}`)")
    variables = json.dumps({"relaygate_out": str(out.resolve())})
    return [ansible_playbook(), str(folder / playbook), "-e", variables, *extra]
