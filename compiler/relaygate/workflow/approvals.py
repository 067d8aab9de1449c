"""`relaygate approvals check`: the approvals a plan needs, enforced on the pull request.

CODEOWNERS can ask for one team per path; the procedure needs two for a legacy
exception (the unit's listed approver AND the platform team) and must keep a
unit from blocking, or waving through, a revocation of its own device. The plan
says who must approve (``Plan.approvals``, each with the logins or teams that
satisfy it); this module asks the code host who approved the pull request's
head commit and compares.

Rules of the comparison (fail closed):

- Only a user's latest review counts, and only when it is an approval of the
  exact head commit: an approval of an earlier push, or one followed by a
  request for changes or a dismissal, is not an approval.
- The pull request's author never satisfies a requirement, whatever teams
  they are in: nobody approves their own change.
- A requirement that names nobody who could satisfy it (an approver without a
  ``login`` in units.yaml, a unit missing from units.yaml) is unmet.
- Any error talking to the code host ends the check as a failure, never as a
  pass.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from relaygate.errors import RelaygateError
from relaygate.plan import Approval, Plan

_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_TEAM = re.compile(r"@([A-Za-z0-9][A-Za-z0-9-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)")
_USER = re.compile(r"@([A-Za-z0-9][A-Za-z0-9-]*)")
_PAGE_LIMIT = 50  # pages of 100: far beyond any pull request, a bound on a hostile server


class CodeHostError(RelaygateError):
    """The code host could not be asked, or answered something that cannot be trusted."""

    exit_code = 3


class CodeHost(Protocol):
    def author(self) -> str: ...

    def approvers(self, head: str) -> set[str]: ...

    def team_members(self, org: str, team: str) -> set[str]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    approval: Approval
    satisfied_by: tuple[str, ...]  # the approving logins that count for it

    @property
    def met(self) -> bool:
        return bool(self.satisfied_by)


def _members(accepts: tuple[str, ...], host: CodeHost) -> set[str]:
    """The logins (lower case) that ``accepts`` names: users as given, teams expanded."""
    logins: set[str] = set()
    for entry in accepts:
        team = _TEAM.fullmatch(entry)
        if team:
            logins |= {m.lower() for m in host.team_members(team.group(1), team.group(2))}
            continue
        user = _USER.fullmatch(entry)
        if user:
            logins.add(user.group(1).lower())
    return logins


def required(plan: Plan, outside: list[str]) -> list[Approval]:
    """The plan's approvals, plus the platform team for every changed path outside the
    inventory (workflows, CODEOWNERS, the deploy inventory: what runs the checks and the
    deploy is no unit's to change)."""
    if not outside:
        return list(plan.approvals)
    reasons = tuple(f"changed {path} (outside the inventory)" for path in outside)
    team = plan.platform_team
    approvals = list(plan.approvals)
    for index, approval in enumerate(approvals):
        if approval.kind == "platform-team":
            approvals[index] = replace(approval, reasons=approval.reasons + reasons)
            return approvals
    who = team or "(site.yaml review.platform_team)"
    approvals.append(Approval("platform-team", who, reasons, (team,) if team else ()))
    return approvals


def check(plan: Plan, host: CodeHost, head: str, outside: list[str] | None = None) -> list[Outcome]:
    """One outcome per approval the change needs, with who (if anyone) satisfied it."""
    author = host.author().lower()
    approved = {login.lower() for login in host.approvers(head)} - {author}
    outcomes: list[Outcome] = []
    for approval in required(plan, outside or []):
        eligible = _members(approval.accepts, host) if approval.accepts else set()
        outcomes.append(Outcome(approval, tuple(sorted(approved & eligible))))
    return outcomes


def report(outcomes: list[Outcome], head: str) -> str:
    lines = [f"approvals for {head[:12]}:"]
    for outcome in outcomes:
        approval = outcome.approval
        if outcome.met:
            state = "approved by " + ", ".join(f"@{login}" for login in outcome.satisfied_by)
        elif not approval.accepts:
            state = "MISSING: nobody can approve it (give the approver a login in units.yaml)"
        else:
            state = "MISSING: needs an approval of this commit from " + " or ".join(
                approval.accepts
            )
        lines.append(f"  {approval.kind} {approval.who}: {state}")
        lines += [f"    for {reason}" for reason in approval.reasons]
    missing = sum(1 for o in outcomes if not o.met)
    lines.append(
        f"{len(outcomes) - missing} of {len(outcomes)} approvals present"
        + (f"; {missing} missing" if missing else "")
    )
    return "\n".join(lines) + "\n"


# --- GitHub ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GitHub:
    """The GitHub REST API for one pull request. ``api`` is e.g. https://api.github.com."""

    api: str
    repository: str  # owner/name
    number: int
    token: str
    timeout: float = 20.0

    def _get(self, url: str) -> tuple[Any, str | None]:
        request = urllib.request.Request(
            url,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "relaygate-approvals",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
                link = response.headers.get("Link")
        except urllib.error.HTTPError as error:
            raise CodeHostError(f"GET {url}: HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise CodeHostError(f"GET {url}: {error}") from error
        try:
            data = json.loads(body)
        except ValueError as error:
            raise CodeHostError(f"GET {url}: the answer is not JSON") from error
        match = _NEXT.search(link or "")
        return data, match.group(1) if match else None

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        url: str | None = f"{self.api.rstrip('/')}{path}?per_page=100"
        for _ in range(_PAGE_LIMIT):
            if url is None:
                return
            data, url = self._get(url)
            if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
                raise CodeHostError(f"{path}: expected a list of objects")
            yield from data
        raise CodeHostError(f"{path}: more than {_PAGE_LIMIT} pages")

    def author(self) -> str:
        data, _ = self._get(f"{self.api.rstrip('/')}/repos/{self.repository}/pulls/{self.number}")
        try:
            return str(data["user"]["login"])
        except (KeyError, TypeError) as error:
            raise CodeHostError("the pull request has no author login") from error

    def approvers(self, head: str) -> set[str]:
        latest: dict[str, dict[str, Any]] = {}
        for review in self._pages(f"/repos/{self.repository}/pulls/{self.number}/reviews"):
            user = review.get("user")
            if not isinstance(user, dict) or not isinstance(user.get("login"), str):
                continue
            if review.get("state") == "COMMENTED":
                continue  # a comment neither grants nor withdraws an approval
            latest[user["login"]] = review  # the API lists reviews oldest first
        return {
            login
            for login, review in latest.items()
            if review.get("state") == "APPROVED" and review.get("commit_id") == head
        }

    def team_members(self, org: str, team: str) -> set[str]:
        quoted = f"/orgs/{urllib.parse.quote(org)}/teams/{urllib.parse.quote(team)}/members"
        return {str(member["login"]) for member in self._pages(quoted) if "login" in member}
