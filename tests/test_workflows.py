"""The shipped CI and pre-commit files: structure, schemas, and their commands run for real.

Every `run:` / `script:` / `entry:` that invokes relaygate is extracted and run
with bash in a temporary git repository holding a base commit and a change,
with the CI expressions substituted; the exit codes and outputs are asserted.
The one other substitution: `--as-of 2026-11-29` is added to each relaygate
command, because the example campus is a snapshot checked as of that day.

The GitHub workflow and GitLab CI JSON Schemas are not on the network here;
check-jsonschema ships copies of both (from SchemaStore), and they are used
when it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from relaygate import plan_report
from tests.conftest import AS_OF, ROOT
from tests.test_plan import change_sender_added, edit, git, make_repo

WORKFLOWS = ROOT / ".github" / "workflows"
PR = WORKFLOWS / "relaygate-pr.yml"
DEPLOY = WORKFLOWS / "relaygate-deploy.yml"
SCHEDULED = WORKFLOWS / "relaygate-scheduled.yml"
GITLAB = ROOT / ".gitlab-ci.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
BIN = Path(sys.executable).parent


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    if True in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_every_workflow_file_parses_and_none_uses_pull_request_target() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == [
        "relaygate-deploy.yml",
        "relaygate-pr.yml",
        "relaygate-scheduled.yml",
    ]
    for path in files:
        assert "pull_request_target" not in load(path)["on"], path
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "pull_request_target" in line], path


def test_pull_request_workflow_structure() -> None:
    workflow = load(PR)
    assert list(workflow["on"]) == ["pull_request"]
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    (job,) = workflow["jobs"].values()
    assert job["env"] == {"BASE_REF": "${{ github.base_ref }}"}
    checkout = job["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert "relaygate validate --format github" in runs
    plan = next(r for r in runs if "relaygate plan" in r)
    assert 'relaygate plan --base "origin/$BASE_REF" --format markdown > relaygate-plan.md' in plan
    # Expressions never reach a script: a branch name cannot inject shell code.
    assert all("${{" not in r for r in runs)
    comment = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/github-script"))
    assert f"const marker = '{plan_report.MARKER}';" in comment["with"]["script"]
    assert "relaygate-plan.md" in comment["with"]["script"]


def test_deploy_workflow_structure() -> None:
    workflow = load(DEPLOY)
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"] == {"group": "relaygate-deploy", "cancel-in-progress": False}
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "production"
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert runs[-3:] == [
        "relaygate validate --format github",
        "relaygate compile --out build/relay",
        "ansible-playbook playbooks/deploy.yml -e relaygate_out=build/relay",
    ]


def test_scheduled_workflow_structure() -> None:
    """A daily compile and deploy, in the deploy's queue, so expiries take effect on their day."""
    workflow = load(SCHEDULED)
    assert workflow["on"]["schedule"] == [{"cron": "10 5 * * *"}]
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"] == load(DEPLOY)["concurrency"]
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "production"
    assert job["env"]["TZ"]  # "today" is the campus's day, not the runner's
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert runs[-3:] == [
        "relaygate validate --format github",
        "relaygate compile --out build/relay",
        "ansible-playbook playbooks/deploy.yml -e relaygate_out=build/relay",
    ]


def test_gitlab_ci_structure() -> None:
    pipeline = load(GITLAB)
    assert pipeline["variables"] == {"GIT_DEPTH": 0}
    assert pipeline["plan"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    deploy = pipeline["deploy"]
    assert deploy["resource_group"] == "relaygate-deploy"
    assert deploy["environment"] == {"name": "production"}
    assert deploy["rules"] == [
        {"if": '$CI_COMMIT_BRANCH == "main" && $CI_PIPELINE_SOURCE == "push"'},
        {"if": '$CI_COMMIT_BRANCH == "main" && $CI_PIPELINE_SOURCE == "schedule"'},
    ]
    assert deploy["script"][-1] == (
        "ansible-playbook playbooks/deploy.yml -e relaygate_out=build/relay"
    )


def test_pre_commit_hook_manifest() -> None:
    hooks = yaml.safe_load(HOOKS.read_text())
    validate = next(h for h in hooks if h["id"] == "relaygate-validate")
    assert validate == {
        "id": "relaygate-validate",
        "name": "relaygate validate",
        "description": "Check the inventory against every rule of the relay procedure.",
        "entry": "relaygate validate",
        "language": "python",
        "pass_filenames": False,
        "files": "^inventory/",
    }
    assert re.search(validate["files"], "inventory/devices/oit/x.yaml")
    assert not re.search(validate["files"], "docs/inventory/x.yaml")


def _vendored_schema(name: str) -> dict[str, Any]:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.skip("check-jsonschema (which ships the schema offline) is not installed")
    text = (
        resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / f"{name}.json"
    ).read_text()
    return dict(json.loads(text))


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ("github-workflows", PR),
        ("github-workflows", DEPLOY),
        ("github-workflows", SCHEDULED),
        ("gitlab-ci", GITLAB),
    ],
)
def test_against_the_vendored_json_schema(schema: str, path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    if True in document:
        document["on"] = document.pop(True)
    validator_class = jsonschema.validators.validator_for(_vendored_schema(schema))
    validator = validator_class(_vendored_schema(schema))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert [e.message for e in errors] == []
    # The schema does bite: a workflow without jobs is refused.
    broken = dict(document)
    broken.pop("jobs" if "jobs" in broken else "deploy")
    if schema == "github-workflows":
        assert list(validator.iter_errors(broken))


def test_pre_commit_accepts_the_manifest() -> None:
    tool = shutil.which("pre-commit") or (
        str(BIN / "pre-commit") if (BIN / "pre-commit").exists() else None
    )
    if tool is None:
        pytest.skip("pre-commit is not installed")
    done = subprocess.run(
        [tool, "validate-manifest", str(HOOKS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the commands, run for real -----------------------------------------------------------

_RELAYGATE = re.compile(r"\brelaygate (validate|plan|compile)\b")
EXPRESSIONS = {"github.base_ref": "main"}


def with_as_of(script: str) -> str:
    return _RELAYGATE.sub(lambda m: f"{m.group(0)} --as-of {AS_OF}", script)


def expression(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        assert key in EXPRESSIONS, f"no substitute for ${{{{ {key} }}}}"
        return EXPRESSIONS[key]

    return re.sub(r"\$\{\{(.*?)\}\}", replace, value)


def bash(script: str, repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a step the way GitHub runs `run:` (bash -e -o pipefail)."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", with_as_of(script)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
        timeout=600,
    )


@pytest.fixture
def pr_repo(tmp_path: Path) -> Path:
    """A policy repository: main as the base (also as origin/main), a change in the work tree."""
    repo = make_repo(tmp_path)
    git(repo, "update-ref", "refs/remotes/origin/main", "main")
    return repo


def relaygate_steps(path: Path) -> list[dict[str, Any]]:
    return [s for s in steps(load(path)) if "run" in s and _RELAYGATE.search(s["run"])]


def test_pull_request_steps_on_a_valid_change(pr_repo: Path, tmp_path: Path) -> None:
    change_sender_added(pr_repo)
    job = next(iter(load(PR)["jobs"].values()))
    summary = tmp_path / "summary.md"
    env = {k: expression(v) for k, v in job["env"].items()} | {"GITHUB_STEP_SUMMARY": str(summary)}
    validate, plan = relaygate_steps(PR)
    checked = bash(validate["run"], pr_repo, env)
    assert checked.returncode == 0, checked
    assert "::error" not in checked.stdout
    planned = bash(plan["run"], pr_repo, env)
    assert planned.returncode == 0, planned
    comment = (pr_repo / "relaygate-plan.md").read_text()
    assert comment.startswith(plan_report.MARKER + "\n### relaygate plan\n")
    assert "| `risk.sender-added` | `lib-hodges-3f-copier` |" in comment
    assert summary.read_text() == comment  # the job summary holds the same plan
    assert "relaygate plan: origin/main (" in planned.stdout  # the full text plan in the log


def test_pull_request_steps_on_an_invalid_change(pr_repo: Path, tmp_path: Path) -> None:
    edit(
        pr_repo / "inventory/devices/libraries/lib-gate-counter.yaml",
        "address: 10.20.30.88",
        "address: 10.20.30.89",
    )
    env = {"BASE_REF": "main", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    validate, plan = relaygate_steps(PR)
    # No reservation is outside data: a warning for the inventory as a whole...
    checked = bash(validate["run"], pr_repo, env)
    assert checked.returncode == 0, checked
    assert checked.stdout.startswith(
        "::warning file=inventory/devices/libraries/lib-gate-counter.yaml,line=7,col=10,"
        "title=legacy.netreg-no-reservation::"
    )
    # ...and an error for this pull request, which edits the record: the plan fails it.
    planned = bash(plan["run"], pr_repo, env)
    assert planned.returncode == 1, planned
    # The comment is still written, so the reviewer sees why.
    comment = (pr_repo / "relaygate-plan.md").read_text()
    assert "> **The working tree does not validate** (1 error, 0 warnings)." in comment


def test_deploy_steps(pr_repo: Path) -> None:
    change_sender_added(pr_repo)
    for step in relaygate_steps(DEPLOY):
        done = bash(step["run"], pr_repo, {})
        assert done.returncode == 0, (step, done)
    manifest = json.loads((pr_repo / "build/relay/manifest.json").read_text())
    assert manifest["as_of"] == AS_OF
    assert "hodges-color@lib.example.edu\tOK" in "".join(
        p.read_text() for p in (pr_repo / "build/relay/postfix/senders").iterdir()
    )


def test_gitlab_jobs(pr_repo: Path) -> None:
    change_sender_added(pr_repo)
    pipeline = load(GITLAB)
    env = {
        "CI_MERGE_REQUEST_DIFF_BASE_SHA": git(pr_repo, "rev-parse", "main").strip(),
        "RELAYGATE_NOTE_TOKEN": "",  # no token: the note is not posted, the artifact is kept
    }
    for name in ("validate", "plan", "deploy"):
        script = "\n".join(
            line for line in pipeline[name]["script"] if not line.startswith("ansible-playbook")
        )
        done = bash(script, pr_repo, env)
        assert done.returncode == 0, (name, done)
    comment = (pr_repo / "relaygate-plan.md").read_text()
    assert comment.startswith(plan_report.MARKER)
    assert "`risk.sender-added`" in comment
    assert (pr_repo / "build/relay/manifest.json").is_file()


def test_pre_commit_hook_entries(pr_repo: Path) -> None:
    hooks = {h["id"]: h for h in yaml.safe_load(HOOKS.read_text())}
    change_sender_added(pr_repo)
    assert bash(hooks["relaygate-validate"]["entry"], pr_repo, {}).returncode == 0
    edit(pr_repo / "inventory/devices/libraries/lib-gate-counter.yaml", "status: active", "x: 1")
    failed = bash(hooks["relaygate-validate"]["entry"], pr_repo, {})
    assert failed.returncode == 1, failed
    owners = hooks["relaygate-codeowners"]["entry"]
    assert bash(owners, pr_repo, {}).returncode == 1  # no CODEOWNERS yet
    written = bash("relaygate codeowners --out .github/CODEOWNERS", pr_repo, {})
    assert written.returncode == 0, written
    assert bash(owners, pr_repo, {}).returncode == 0
    assert re.search(hooks["relaygate-codeowners"]["files"], "inventory/units.yaml")
    assert re.search(hooks["relaygate-codeowners"]["files"], ".github/CODEOWNERS")
    assert not re.search(hooks["relaygate-codeowners"]["files"], "inventory/netreg.yaml")
