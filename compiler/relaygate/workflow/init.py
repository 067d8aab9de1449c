"""`relaygate init DIR`: a new policy repository that validates as written.

Input: an empty (or missing) folder, the campus name, the platform team and
"today". Output: the folder with ``inventory/`` (site, units and netreg files
whose comments explain every field), ``schemas/`` (the installed schemas),
workflows for GitHub and GitLab that install this exact relaygate version,
``.pre-commit-config.yaml``, a generated ``.github/CODEOWNERS``, an example
Ansible inventory for ``relaygate deploy`` and a README for the campus team.

Invariants: nothing is written into a folder that holds anything; the files
come from the package (``resources/init``) with a few placeholders filled in,
and a placeholder left unfilled is a bug (fail closed); the new inventory is
validated before ``init`` reports success.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from relaygate import __version__, schema_files
from relaygate.errors import InternalError, UsageError
from relaygate.pipeline import DEVICES_DIR
from relaygate.plan import codeowners, site_and_units

#: Packaged file -> path in the new repository. Dot files are stored without
#: their dot (package data globs skip hidden files).
FILES: dict[str, str] = {
    "README.md": "README.md",
    "gitignore": ".gitignore",
    "pre-commit-config.yaml": ".pre-commit-config.yaml",
    "gitlab-ci.yml": ".gitlab-ci.yml",
    "github/workflows/relaygate-pr.yml": ".github/workflows/relaygate-pr.yml",
    "github/workflows/relaygate-deploy.yml": ".github/workflows/relaygate-deploy.yml",
    "deploy/inventory.yml": "deploy/inventory.yml",
    "inventory/site.yaml": "inventory/site.yaml",
    "inventory/units.yaml": "inventory/units.yaml",
    "inventory/netreg.yaml": "inventory/netreg.yaml",
    "gitkeep": f"inventory/{DEVICES_DIR}/.gitkeep",
}
CODEOWNERS = ".github/CODEOWNERS"
_PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")
_TEAM = re.compile(r"@[A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_NAME = re.compile(r"[^\x00-\x1f\x7f\"\\]{1,100}")


@dataclass(frozen=True, slots=True)
class InitOptions:
    folder: Path
    campus: str
    platform_team: str
    today: dt.date


def _check(options: InitOptions) -> None:
    if not _NAME.fullmatch(options.campus) or options.campus.strip() != options.campus:
        raise UsageError(
            f"--campus {options.campus!r}: one line of at most 100 characters, no quotes"
        )
    if not _TEAM.fullmatch(options.platform_team):
        raise UsageError(
            f"--platform-team {options.platform_team!r}: a code-host team or user,"
            " e.g. @your-org/mail-platform"
        )
    folder = options.folder
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} is not an empty folder; init writes only into a new one")


def _fill(text: str, options: InitOptions) -> str:
    values = {
        "@@VERSION@@": __version__,
        "@@CAMPUS@@": options.campus,
        "@@PLATFORM_TEAM@@": options.platform_team,
        "@@TODAY@@": options.today.isoformat(),
    }
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    left = _PLACEHOLDER.search(text)
    if left:
        raise InternalError(f"init template placeholder {left.group()} has no value")
    return text


def files(options: InitOptions) -> dict[str, str]:
    """Every file ``init`` writes except the schemas and CODEOWNERS: path -> text."""
    package = resources.files("relaygate") / "resources" / "init"
    return {
        target: _fill((package / source).read_text("utf-8"), options)
        for source, target in FILES.items()
    }


def create(options: InitOptions) -> list[Path]:
    """Write the new repository; the paths written, in order."""
    _check(options)
    folder = options.folder
    written: list[Path] = []
    for relative, text in files(options).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
        written.append(path)
    written += schema_files.export(folder / schema_files.SCHEMAS_DIR)
    site, units = site_and_units(folder / "inventory")
    if site is None or units is None:
        raise InternalError("the new inventory's site.yaml or units.yaml does not load")
    owners = folder / CODEOWNERS
    with open(owners, "x", encoding="utf-8") as handle:
        handle.write(codeowners(site, units, "inventory", __version__))
    written.append(owners)
    return written
