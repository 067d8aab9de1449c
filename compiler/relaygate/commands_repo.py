"""Commands for a campus's own policy repository: init, schemas, import, list, deploy.

Each command parses its options, calls ``relaygate.workflow`` and returns an
exit code (0 done, 1 findings, 2 usage); no policy logic lives here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import click

from relaygate import gitrepo
from relaygate.cliutil import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    DateParam,
    as_of_option,
    inventory_option,
    inventory_root,
)
from relaygate.errors import UsageError
from relaygate.lifecycle import store, usage
from relaygate.pipeline import display_path, validate
from relaygate.plan import build_plan
from relaygate.report import FORMATTERS, summary_line
from relaygate.schema_files import export
from relaygate.workflow import approvals, deploy, importer, listing, netreg_import
from relaygate.workflow.init import InitOptions, create


@click.command("init")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--campus", default="Example University", show_default=True, help="Campus name.")
@click.option(
    "--platform-team",
    default="@example-edu/mail-platform",
    show_default=True,
    help="The code-host team that reviews risky changes.",
)
@as_of_option
def init_command(folder: Path, campus: str, platform_team: str, as_of: dt.date | None) -> None:
    """Create a policy repository in FOLDER (new or empty)."""
    options = InitOptions(folder, campus, platform_team, as_of or dt.date.today())
    written = create(options)
    for path in written:
        click.echo(f"wrote: {display_path(path)}")
    result = validate(folder / "inventory", options.today)
    if result.errors:  # the templates are ours: a finding here is a relaygate bug
        click.echo(FORMATTERS["text"](result.findings, ""), nl=False, err=True)
        raise RuntimeError("the new inventory does not validate")
    click.echo(
        f"{display_path(folder)}: policy repository for relaygate; next: git init, then"
        " `relaygate new --inventory inventory`"
    )


@click.group("schemas")
def schemas_group() -> None:
    """The JSON Schemas that editors use for completion."""


@schemas_group.command("export")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
def schemas_export_command(folder: Path) -> None:
    """Write the installed relaygate's schemas into FOLDER (usually `schemas`)."""
    changed = export(folder)
    for path in changed:
        click.echo(f"wrote: {display_path(path)}")
    click.echo(f"{display_path(folder)}: {len(changed)} schema files changed")


@click.command("import")
@inventory_option
@as_of_option
@click.option(
    "--csv",
    "csv_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="An export of relay requests: one record per row, field names as the header.",
)
@click.option("--dry-run", is_flag=True, help="Check every row; write nothing.")
def import_command(inventory: Path, as_of: dt.date | None, csv_path: Path, dry_run: bool) -> None:
    """Turn a spreadsheet of relay requests into records, one per row."""
    result = importer.run(
        inventory_root(inventory),
        csv_path,
        display_path(csv_path.resolve()),
        as_of or dt.date.today(),
        write=not dry_run,
    )
    for line in importer.problems_text(result):
        click.echo(line)
    for path in result.written:
        click.echo(f"wrote: {display_path(path)}")
    header_failed = any(p.row == 1 for p in result.rejected)
    accepted = 0 if header_failed else result.rows - result.failed_rows
    verb = "would be written" if dry_run else "written"
    click.echo(
        f"{result.shown}: {result.rows} rows, {accepted} {verb}, {result.rows - accepted} refused"
    )
    sys.exit(EXIT_FINDINGS if result.rejected else EXIT_OK)


@click.group("netreg")
def netreg_group() -> None:
    """The NetReg reservations export (inventory/netreg.yaml)."""


@netreg_group.command("import")
@inventory_option
@click.option(
    "--csv",
    "csv_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A NetReg export: address, fqdn, type, mac, note.",
)
@click.option(
    "--exported-on",
    "exported_on",
    type=DateParam(),
    default=None,
    help="The day of the export (YYYY-MM-DD); default: today.",
)
@click.option("--dry-run", is_flag=True, help="Check the export; write nothing.")
@click.option(
    "--allow-removals",
    is_flag=True,
    help="Accept an export that drops more reservations than policy.mass_change_share.",
)
def netreg_import_command(
    inventory: Path,
    csv_path: Path,
    exported_on: dt.date | None,
    dry_run: bool,
    allow_removals: bool,
) -> None:
    """Replace netreg.yaml with a NetReg export, if every row is good."""
    result = netreg_import.run(
        inventory_root(inventory),
        csv_path,
        display_path(csv_path.resolve()),
        exported_on or dt.date.today(),
        write=not dry_run,
        allow_removals=allow_removals,
    )
    for problem in result.problems:
        click.echo(problem.text(result.shown))
    state = (
        "refused, netreg.yaml unchanged"
        if result.problems
        else ("written" if result.written else "checked, nothing written")
    )
    click.echo(
        f"{result.shown}: {result.reservations} reservations ({result.added} added,"
        f" {result.removed} removed, {result.changed} changed); {state}"
    )
    sys.exit(EXIT_FINDINGS if result.problems else EXIT_OK)


@click.command("list")
@inventory_option
@as_of_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(sorted(listing.FORMATS)),
    default="text",
    show_default=True,
)
@click.option(
    "--db",
    "db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The activity store for last_seen (default: .relaygate/activity.sqlite beside it).",
)
def list_command(
    inventory: Path, as_of: dt.date | None, output_format: str, db: Path | None
) -> None:
    """The register: every record with its unit, auth, status, expiry and last activity."""
    root = inventory_root(inventory)
    day = as_of or dt.date.today()
    result = validate(root, day)
    last_seen: dict[str, dt.date] = {}
    path = db or store.default_path(root)
    if db is not None and not db.is_file():
        raise UsageError(f"{db}: no activity store there (run `relaygate activity ingest`)")
    if path.is_file() and result.devices:
        with closing(store.connect(path)) as connection:
            found = usage.usages(result.devices, connection, day)
        for device in result.devices:
            last = found[device.source].last
            if last is not None:
                last_seen[device.name] = dt.date.fromisoformat(last.at[:10])
    rows = listing.entries(result.devices, root, last_seen, result.lapsed)
    click.echo(listing.FORMATS[output_format](rows), nl=False)
    listed = {device.source for device in result.devices}
    unlisted = sorted({f.path for f in result.findings if f.rule.startswith("schema.")} - listed)
    if unlisted:
        click.echo(
            f"not listed (schema errors; run relaygate validate): {', '.join(unlisted)}",
            err=True,
        )
        click.echo(summary_line(result.findings, result.files_checked), err=True)
    sys.exit(EXIT_FINDINGS if unlisted else EXIT_OK)


@click.command(
    "deploy",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("build/relay"),
    show_default=True,
    help="The folder `relaygate compile --out` wrote.",
)
@click.option(
    "--playbook",
    type=click.Choice(deploy.PLAYBOOKS),
    default="deploy.yml",
    show_default=True,
)
@click.option("--show-path", is_flag=True, help="Print the packaged playbook folder and stop.")
@click.argument("ansible_options", nargs=-1, type=click.UNPROCESSED)
def deploy_command(
    out: Path, playbook: str, show_path: bool, ansible_options: tuple[str, ...]
) -> None:
    """Run the packaged playbook; every other option goes to ansible-playbook (-i, --check ...)."""
    with deploy.playbooks_dir() as folder:
        if show_path:
            click.echo(str(folder))
            sys.exit(EXIT_OK)
        argv = deploy.command(folder, playbook, out, ansible_options)
        click.echo("relaygate: " + " ".join(argv), err=True)
        code = subprocess.run(argv, check=False).returncode
    if code:
        click.echo(f"relaygate: ansible-playbook exited {code}", err=True)
    # ansible-playbook 5 is a bad option: a usage error of ours too.
    sys.exit(EXIT_OK if code == 0 else EXIT_USAGE if code == 5 else EXIT_FINDINGS)


@click.group("approvals")
def approvals_group() -> None:
    """The approvals a change needs, enforced on its pull request."""


def _event() -> dict[str, object]:
    """The GitHub Actions event, when running there (GITHUB_EVENT_PATH)."""
    path = os.environ.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"GITHUB_EVENT_PATH {path}: {error}") from error
    pull = data.get("pull_request") if isinstance(data, dict) else None
    return pull if isinstance(pull, dict) else {}


@approvals_group.command("check")
@inventory_option
@as_of_option
@click.option("--base", required=True, help="The pull request's base (e.g. origin/main).")
@click.option("--head", default=None, help="The head commit to require approvals of.")
@click.option("--pr", "number", type=int, default=None, help="The pull request number.")
@click.option("--repository", default=None, help="owner/name (default: $GITHUB_REPOSITORY).")
@click.option("--api", default=None, help="API base URL (default: $GITHUB_API_URL).")
def approvals_check_command(
    inventory: Path,
    as_of: dt.date | None,
    base: str,
    head: str | None,
    number: int | None,
    repository: str | None,
    api: str | None,
) -> None:
    """Fail until everyone the plan names has approved the pull request's head commit.

    The token comes from RELAYGATE_GITHUB_TOKEN (or GITHUB_TOKEN); reading team
    membership needs a token with read access to the organisation's teams.
    """
    pull = _event()
    head_info = pull.get("head")
    head = head or (str(head_info.get("sha")) if isinstance(head_info, dict) else None)
    number = number or (int(str(pull["number"])) if "number" in pull else None)
    repository = repository or os.environ.get("GITHUB_REPOSITORY")
    api = api or os.environ.get("GITHUB_API_URL", "https://api.github.com")
    token = os.environ.get("RELAYGATE_GITHUB_TOKEN") or os.environ.get("GITHUB_TOKEN")
    for value, what in (
        (head, "--head"),
        (number, "--pr"),
        (repository, "--repository"),
        (token, "RELAYGATE_GITHUB_TOKEN"),
    ):
        if not value:
            raise UsageError(f"approvals check needs {what} (or run it in a pull-request workflow)")
    assert head and number and repository and token
    root = inventory_root(inventory)
    plan = build_plan(root, base, as_of or dt.date.today())
    top = gitrepo.repo_top(root)
    inside = f"{plan.inventory}/" if plan.inventory not in ("", ".") else ""
    outside = [
        path
        for path in gitrepo.changed_paths(top, gitrepo.resolve_commit(top, base))
        if not inside or not path.startswith(inside)
    ]
    host = approvals.GitHub(api, repository, number, token)
    outcomes = approvals.check(plan, host, head, outside)
    click.echo(approvals.report(outcomes, head), nl=False)
    sys.exit(EXIT_OK if all(o.met for o in outcomes) else EXIT_FINDINGS)


def register(group: click.Group) -> None:
    for command in (
        init_command,
        schemas_group,
        import_command,
        netreg_group,
        list_command,
        deploy_command,
        approvals_group,
    ):
        group.add_command(command)
