"""`relaygate approvals check` against a local fake of the GitHub REST API.

The code host cannot exist here, so a small HTTP server on 127.0.0.1 answers with
responses shaped as GitHub's (recorded field names and order: reviews oldest first,
pagination through the Link header). Everything else is real: the git repository, the
plan, the command.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import AS_OF
from tests.test_plan import (
    change_added_exception,
    change_revocation,
    edit,
    git,
    make_repo,
)

REPO = "example-edu/relay-policy"
PR = 42
AUTHOR = "lib-requestor"


class FakeGitHub:
    """Routes: path -> list of pages (each a JSON value); anything else is a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Any]] = {}
        self.status: int = 200
        self.seen: list[tuple[str, str]] = []  # (path?query, Authorization)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                fake.seen.append((self.path, self.headers.get("Authorization", "")))
                pages = fake.routes.get(url.path)
                if fake.status != 200 or pages is None:
                    self.send_response(fake.status if fake.status != 200 else 404)
                    self.end_headers()
                    self.wfile.write(b'{"message": "Not Found"}')
                    return
                query = dict(p.split("=", 1) for p in url.query.split("&") if "=" in p)
                page = int(query.get("page", "1"))
                body = json.dumps(pages[page - 1]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if page < len(pages):
                    base = f"http://{self.headers['Host']}{url.path}?per_page=100"
                    self.send_header("Link", f'<{base}&page={page + 1}>; rel="next"')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        return Handler

    def pull(self, head: str) -> None:
        self.routes[f"/repos/{REPO}/pulls/{PR}"] = [
            {"number": PR, "user": {"login": AUTHOR, "type": "User"}, "head": {"sha": head}}
        ]

    def reviews(self, *pages: list[dict[str, Any]]) -> None:
        self.routes[f"/repos/{REPO}/pulls/{PR}/reviews"] = list(pages)

    def team(self, org: str, team: str, *logins: str) -> None:
        self.routes[f"/orgs/{org}/teams/{team}/members"] = [
            [{"login": login, "type": "User"} for login in logins]
        ]


def review(login: str, state: str, commit: str, number: int) -> dict[str, Any]:
    return {
        "id": 1000 + number,
        "user": {"login": login, "type": "User"},
        "body": "",
        "state": state,
        "commit_id": commit,
        "submitted_at": f"2026-11-29T10:{number:02d}:00Z",
    }


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, str]]:
    fake = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def teams(fake: FakeGitHub) -> None:
    fake.team("example-edu", "libraries-it", "lib-lead", AUTHOR)
    fake.team("example-edu", "mail-platform", "plat-one", "plat-two", "lib-requestor")


def exception_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repo whose head adds a legacy exception signed by Morgan Ellis (login @mellis)."""
    repo = make_repo(tmp_path)
    edit(
        repo / "inventory" / "units.yaml",
        "{name: Morgan Ellis, email: mellis@example.edu, role: director}",
        '{name: Morgan Ellis, email: mellis@example.edu, role: director, login: "@mellis"}',
    )
    git(repo, "commit", "-qam", "logins")
    git(repo, "checkout", "-q", "-b", "change")
    old = git(repo, "rev-parse", "HEAD").strip()
    change_added_exception(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "add lib-map-scanner")
    return repo, old, git(repo, "rev-parse", "HEAD").strip()


def check(run_cli, repo: Path, api: str, head: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RELAYGATE_GITHUB_TOKEN", "t0ken")
    monkeypatch.delenv("GITHUB_EVENT_PATH", raising=False)
    return run_cli(
        "approvals", "check", "--inventory", str(repo / "inventory"), "--as-of", AS_OF,
        "--base", "main", "--head", head, "--pr", str(PR), "--repository", REPO, "--api", api,
    )  # fmt: skip


def test_a_new_exception_needs_its_approver_the_unit_and_the_platform(
    tmp_path: Path, github: tuple[FakeGitHub, str], run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    fake, api = github
    repo, _, head = exception_repo(tmp_path)
    teams(fake)
    fake.pull(head)
    # Positive control: all three approved this head (across two pages of reviews).
    fake.reviews(
        [review("mellis", "APPROVED", head, 1), review("lib-lead", "APPROVED", head, 2)],
        [review("plat-two", "APPROVED", head, 3)],
    )
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 0, done
    assert (
        "exception-approver Morgan Ellis <mellis@example.edu>: approved by @mellis" in done.stdout
    )
    assert "unit-owners @example-edu/libraries-it: approved by @lib-lead" in done.stdout
    assert "platform-team @example-edu/mail-platform: approved by @plat-two" in done.stdout
    assert done.stdout.splitlines()[-1] == "3 of 3 approvals present"
    assert all(auth == "Bearer t0ken" for _, auth in fake.seen)
    assert any("page=2" in path for path, _ in fake.seen)  # the second page was read

    # The unit alone cannot merge its own exception.
    fake.reviews([review("lib-lead", "APPROVED", head, 1)])
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 1, done
    assert "exception-approver Morgan Ellis <mellis@example.edu>: MISSING" in done.stdout
    assert "platform-team @example-edu/mail-platform: MISSING" in done.stdout
    assert done.stdout.splitlines()[-1] == "1 of 3 approvals present; 2 missing"


@pytest.mark.parametrize(
    "reviews",
    [
        # An approval of an earlier push does not approve this commit.
        "stale",
        # A request for changes after the approval withdraws it.
        "withdrawn",
        # The author is in the platform team, but nobody approves their own change.
        "author",
        # A dismissed approval is no approval.
        "dismissed",
    ],
)
def test_approvals_that_do_not_count(
    tmp_path: Path,
    github: tuple[FakeGitHub, str],
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
    reviews: str,
) -> None:  # type: ignore[no-untyped-def]
    fake, api = github
    repo, old, head = exception_repo(tmp_path)
    teams(fake)
    fake.pull(head)
    good = [review("mellis", "APPROVED", head, 1), review("lib-lead", "APPROVED", head, 2)]
    platform = {
        "stale": [review("plat-one", "APPROVED", old, 3)],
        "withdrawn": [
            review("plat-one", "APPROVED", head, 3),
            review("plat-one", "COMMENTED", head, 4),
            review("plat-one", "CHANGES_REQUESTED", head, 5),
        ],
        "author": [review(AUTHOR, "APPROVED", head, 3)],
        "dismissed": [
            review("plat-one", "APPROVED", head, 3),
            review("plat-one", "DISMISSED", head, 4),
        ],
    }[reviews]
    fake.reviews([*good, *platform])
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 1, done
    assert "platform-team @example-edu/mail-platform: MISSING" in done.stdout
    assert done.stdout.splitlines()[-1] == "2 of 3 approvals present; 1 missing"
    # Positive control: the same setup with a valid platform approval passes, and a comment
    # after an approval does not withdraw it.
    fake.reviews(
        [
            *good,
            *platform,
            review("plat-two", "APPROVED", head, 9),
            review("plat-two", "COMMENTED", head, 10),
        ]
    )
    assert check(run_cli, repo, api, head, monkeypatch).code == 0


def test_a_revocation_needs_the_platform_team_alone(
    tmp_path: Path, github: tuple[FakeGitHub, str], run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    fake, api = github
    repo = make_repo(tmp_path)
    git(repo, "checkout", "-q", "-b", "revoke")
    change_revocation(repo)
    git(repo, "commit", "-qam", "revoke lib-gate-counter")
    head = git(repo, "rev-parse", "HEAD").strip()
    teams(fake)
    fake.pull(head)
    fake.reviews([review("lib-lead", "APPROVED", head, 1)])
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 1, done  # the unit's approval is not what a revocation needs
    assert "unit-owners" not in done.stdout
    fake.reviews([review("plat-one", "APPROVED", head, 1)])
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 0, done
    assert "platform-team @example-edu/mail-platform: approved by @plat-one" in done.stdout
    assert "for revoked inventory/devices/libraries/lib-gate-counter.yaml" in done.stdout


def test_an_approver_without_a_login_cannot_be_satisfied(
    tmp_path: Path, github: tuple[FakeGitHub, str], run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    fake, api = github
    repo = make_repo(tmp_path)
    git(repo, "checkout", "-q", "-b", "change")
    change_added_exception(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "add")
    head = git(repo, "rev-parse", "HEAD").strip()
    teams(fake)
    fake.pull(head)
    fake.reviews(
        [
            review(login, "APPROVED", head, n)
            for n, login in enumerate(("mellis", "lib-lead", "plat-one"))
        ]
    )
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 1, done
    assert "nobody can approve it (give the approver a login in units.yaml)" in done.stdout


def test_a_code_host_failure_fails_closed(
    tmp_path: Path, github: tuple[FakeGitHub, str], run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    fake, api = github
    repo, _, head = exception_repo(tmp_path)
    fake.status = 502
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 3, done
    assert "HTTP 502" in done.stderr
    monkeypatch.delenv("RELAYGATE_GITHUB_TOKEN")
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    done = run_cli(
        "approvals", "check", "--inventory", str(repo / "inventory"), "--base", "main",
        "--head", head, "--pr", str(PR), "--repository", REPO, "--api", api,
    )  # fmt: skip
    assert done.code == 2, done
    assert "RELAYGATE_GITHUB_TOKEN" in done.stderr


@pytest.mark.parametrize("rewrite", ["site", "units", "both"])
def test_a_change_never_names_its_own_approvers(
    tmp_path: Path,
    github: tuple[FakeGitHub, str],
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
    rewrite: str,
) -> None:  # type: ignore[no-untyped-def]
    fake, api = github
    repo, _, _ = exception_repo(tmp_path)
    # The same pull request makes the unit's lead the platform team and/or the approver.
    if rewrite in ("site", "both"):
        edit(
            repo / "inventory" / "site.yaml",
            'platform_team: "@example-edu/mail-platform"',
            'platform_team: "@example-edu/libraries-it"',
        )
    if rewrite in ("units", "both"):
        edit(repo / "inventory" / "units.yaml", 'login: "@mellis"', 'login: "@lib-lead"')
    git(repo, "commit", "-qam", "approvers of our own")
    head = git(repo, "rev-parse", "HEAD").strip()
    teams(fake)
    fake.pull(head)
    helpers = {
        "site": ["mellis", "lib-lead"],
        "units": ["lib-lead", "plat-one"],
        "both": ["lib-lead"],
    }
    fake.reviews([review(login, "APPROVED", head, n) for n, login in enumerate(helpers[rewrite])])
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 1, done
    # Who may approve is what the base says: the mail platform team and @mellis.
    assert "platform-team @example-edu/mail-platform:" in done.stdout
    if rewrite in ("units", "both"):
        assert "exception-approver Morgan Ellis <mellis@example.edu>: MISSING" in done.stdout
    if rewrite in ("site", "both"):
        assert "platform-team @example-edu/mail-platform: MISSING" in done.stdout
    # Positive control: the people the base names approve, and it passes.
    fake.reviews(
        [
            review(login, "APPROVED", head, n)
            for n, login in enumerate(("mellis", "lib-lead", "plat-two"))
        ]
    )
    assert check(run_cli, repo, api, head, monkeypatch).code == 0


def test_a_change_outside_the_inventory_needs_the_platform_team(
    tmp_path: Path, github: tuple[FakeGitHub, str], run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    fake, api = github
    repo = make_repo(tmp_path)
    git(repo, "checkout", "-q", "-b", "ci")
    workflow = repo / ".github" / "workflows" / "relaygate-deploy.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text("on: push\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a workflow of my own")
    head = git(repo, "rev-parse", "HEAD").strip()
    teams(fake)
    fake.pull(head)
    fake.reviews([])
    done = check(run_cli, repo, api, head, monkeypatch)
    assert done.code == 1, done
    assert "platform-team @example-edu/mail-platform: MISSING" in done.stdout
    assert "for changed .github/workflows/relaygate-deploy.yml (outside the inventory)" in (
        done.stdout
    )
    fake.reviews([review("plat-one", "APPROVED", head, 1)])
    assert check(run_cli, repo, api, head, monkeypatch).code == 0
