"""relaygate plan and codeowners, against real git repositories built in temporary folders.

Each scenario copies the example campus into a fresh repository, commits it
as the base, applies one change to the working tree and asserts the exact
plan (json), plus the key lines of the text and markdown formats.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from relaygate import plan as plan_
from relaygate import plan_report
from tests.conftest import AS_OF, EXAMPLE, ROOT

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.edu",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.edu",
    "GIT_AUTHOR_DATE": "2026-11-29T12:00:00Z",
    "GIT_COMMITTER_DATE": "2026-11-29T12:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **GIT_ENV},
    )
    return done.stdout


def make_repo(tmp: Path) -> Path:
    """A repository with the example campus committed on main (the base)."""
    repo = tmp / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(EXAMPLE, repo / "inventory")
    shutil.copytree(ROOT / "schemas", repo / "schemas")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


DEVICES = Path("inventory/devices")

NEW_SCANNER = """\
# yaml-language-server: $schema=../../../schemas/device.schema.json
name: lib-map-scanner
unit: libraries
kind: scanner
model: Contex IQ Quattro 4490
fqdn: lib-map-scanner.lib.example.edu
address: 10.20.30.99
auth: ip
senders:
  - map-scans@lib.example.edu
volume_per_day: 5
requestor: {name: Riley Chen, email: rchen@example.edu}
technical_contact: {name: Sam Roe, email: sroe@example.edu}
netreg: static
exception:
  approver: {name: Morgan Ellis, email: mellis@example.edu, role: director}
  justification: >-
    The map room's large-format scanner only offers unauthenticated SMTP; its
    controller is end of life and replacement is planned for FY28.
  acknowledged:
    - unauthenticated-smtp-is-legacy-and-insecure
    - service-may-be-interrupted
    - support-may-be-discontinued
  approved_on: 2026-11-20
  expires_on: 2027-11-19
  mod_ticket: NS-12601
  acknowledgment_ref: ACK-2026-0160
status: active
"""


def change_added_exception(repo: Path) -> None:
    (repo / DEVICES / "libraries" / "lib-map-scanner.yaml").write_text(NEW_SCANNER)
    edit(
        repo / "inventory" / "netreg.yaml",
        "  - {address: 10.20.30.88,",
        "  - {address: 10.20.30.99, fqdn: lib-map-scanner.lib.example.edu, type: static}\n"
        "  - {address: 10.20.30.88,",
    )


def change_removed(repo: Path) -> None:
    git(repo, "rm", "-q", str(DEVICES / "libraries" / "lib-gate-counter.yaml"))


def change_sender_added(repo: Path) -> None:
    edit(
        repo / DEVICES / "libraries" / "lib-hodges-3f-copier.yaml",
        "  - hodges-scans@lib.example.edu\n",
        "  - hodges-scans@lib.example.edu\n  - hodges-color@lib.example.edu\n",
    )


OIT_BRIDGE = """\
# yaml-language-server: $schema=../../../schemas/device.schema.json
name: oit-plantops-bridge
unit: oit
kind: application
model: Mail bridge 1.4
fqdn: plantops-bridge.oit.example.edu
address: 10.5.20.41
auth: oauth2
account: svc-oit-plantops-bridge@example.edu
senders:
  - plantops-scans+bridge@facilities.example.edu
volume_per_day: 10
requestor: {name: Dana Whitfield, email: dwhitfield@example.edu}
technical_contact: {name: Sam Roe, email: sroe@example.edu}
status: active
"""


def change_sender_taken(repo: Path) -> None:
    """OIT takes over a sender a retired facilities record held, in facilities' own domain."""
    (repo / DEVICES / "oit" / "oit-plantops-bridge.yaml").write_text(OIT_BRIDGE)


def change_prefix_broadened(repo: Path) -> None:
    edit(
        repo / DEVICES / "medicine" / "med-appointment-reminders.yaml",
        "address: 10.60.50.8/29",
        "address: 10.60.50.0/28",
    )


def change_revocation(repo: Path) -> None:
    edit(
        repo / DEVICES / "libraries" / "lib-gate-counter.yaml",
        "status: active",
        "status: revoked\nstatus_reason: phishing\nstatus_date: 2026-11-28\n"
        "status_ticket: SEC-4501",
    )


def change_site(repo: Path) -> None:
    edit(
        repo / "inventory" / "site.yaml",
        "  - oit.example.edu\n",
        "  - oit.example.edu\n  - research.example.edu\n",
    )
    edit(repo / "inventory" / "site.yaml", "expiry_warning_days: 30", "expiry_warning_days: 45")


def change_mass_removal(repo: Path) -> None:
    git(repo, "rm", "-q", "-r", str(DEVICES / "medicine"), str(DEVICES / "engineering"))


EXPECTED = {
    "added_exception": {
        "access": [
            {
                "changes": [
                    {
                        "account": None,
                        "address": "10.20.30.99",
                        "change": "gained",
                        "port": 25,
                        "senders_added": ["map-scans@lib.example.edu"],
                        "senders_removed": [],
                    }
                ],
                "device": "lib-map-scanner",
                "refused_after": None,
                "refused_before": None,
                "unit": "libraries",
            }
        ],
        "approvals": [
            {
                "kind": "exception-approver",
                "reasons": [
                    "exception for lib-map-scanner (director, University Libraries;"
                    " acknowledgment ACK-2026-0160)"
                ],
                "who": "Morgan Ellis <mellis@example.edu>",
            },
            {
                "kind": "unit-owners",
                "reasons": ["added inventory/devices/libraries/lib-map-scanner.yaml"],
                "who": "@example-edu/libraries-it",
            },
            {
                "kind": "platform-team",
                "reasons": [
                    "risk.legacy-exception-new: lib-map-scanner",
                    "risk.sender-added: lib-map-scanner",
                    "changed inventory/netreg.yaml",
                ],
                "who": "@example-edu/mail-platform",
            },
        ],
        "files": [
            {
                "fields": [
                    {
                        "after": "lib-map-scanner.lib.example.edu",
                        "before": None,
                        "field": "reservations[10.20.30.99].fqdn",
                    },
                    {"after": "static", "before": None, "field": "reservations[10.20.30.99].type"},
                ],
                "path": "inventory/netreg.yaml",
            }
        ],
        "mass_change": {"base_entries": 31, "removed_or_changed": 0, "threshold": 0.3},
        "records": [
            {
                "change": "added",
                "fields": [],
                "name": "lib-map-scanner",
                "path": "inventory/devices/libraries/lib-map-scanner.yaml",
                "unit": "libraries",
            }
        ],
        "risks": [
            {
                "id": "risk.legacy-exception-new",
                "message": "new unauthenticated (auth ip) access from 10.20.30.99 (a new record)",
                "subject": "lib-map-scanner",
            },
            {
                "id": "risk.sender-added",
                "message": "new senders (a new record): map-scans@lib.example.edu",
                "subject": "lib-map-scanner",
            },
        ],
        "summary": {
            "approvals": 3,
            "artifacts_changed": 8,
            "devices_gaining": 1,
            "devices_losing": 0,
            "files_changed": 1,
            "records_added": 1,
            "records_changed": 0,
            "records_removed": 0,
            "risks": 2,
        },
    },
    "removed": {
        "access": [
            {
                "changes": [
                    {
                        "account": None,
                        "address": "10.20.30.88",
                        "change": "lost",
                        "port": 25,
                        "senders_added": [],
                        "senders_removed": ["gate-counts@lib.example.edu"],
                    }
                ],
                "device": "lib-gate-counter",
                "refused_after": None,
                "refused_before": None,
                "unit": "libraries",
            }
        ],
        "approvals": [
            {
                "kind": "unit-owners",
                "reasons": ["removed inventory/devices/libraries/lib-gate-counter.yaml"],
                "who": "@example-edu/libraries-it",
            }
        ],
        "files": [],
        "mass_change": {"base_entries": 31, "removed_or_changed": 1, "threshold": 0.3},
        "records": [
            {
                "change": "removed",
                "fields": [],
                "name": "lib-gate-counter",
                "path": "inventory/devices/libraries/lib-gate-counter.yaml",
                "unit": "libraries",
            }
        ],
        "risks": [],
        "summary": {
            "approvals": 1,
            "artifacts_changed": 8,
            "devices_gaining": 0,
            "devices_losing": 1,
            "files_changed": 0,
            "records_added": 0,
            "records_changed": 0,
            "records_removed": 1,
            "risks": 0,
        },
    },
    "sender_taken": {
        "approvals": [
            {
                "kind": "unit-owners",
                "reasons": ["risk.sender-added: oit-plantops-bridge"],
                "who": "@example-edu/facilities-it",
            },
            {
                "kind": "unit-owners",
                "reasons": ["added inventory/devices/oit/oit-plantops-bridge.yaml"],
                "who": "@example-edu/oit-infrastructure",
            },
            {
                "kind": "platform-team",
                "reasons": ["risk.sender-added: oit-plantops-bridge"],
                "who": "@example-edu/mail-platform",
            },
        ],
        "risks": [
            {
                "id": "risk.sender-added",
                "message": "new senders (a new record):"
                " plantops-scans+bridge@facilities.example.edu;"
                " plantops-scans+bridge@facilities.example.edu is also used by fac-plant-ops-copier"
                " (facilities, retired, as plantops-scans@facilities.example.edu);"
                " facilities.example.edu belongs to unit facilities",
                "subject": "oit-plantops-bridge",
            }
        ],
    },
    "sender_added": {
        "access": [
            {
                "changes": [
                    {
                        "account": None,
                        "address": "10.20.30.41",
                        "change": "changed",
                        "port": 25,
                        "senders_added": ["hodges-color@lib.example.edu"],
                        "senders_removed": [],
                    }
                ],
                "device": "lib-hodges-3f-copier",
                "refused_after": None,
                "refused_before": None,
                "unit": "libraries",
            }
        ],
        "approvals": [
            {
                "kind": "unit-owners",
                "reasons": ["changed inventory/devices/libraries/lib-hodges-3f-copier.yaml"],
                "who": "@example-edu/libraries-it",
            },
            {
                "kind": "platform-team",
                "reasons": ["risk.sender-added: lib-hodges-3f-copier"],
                "who": "@example-edu/mail-platform",
            },
        ],
        "files": [],
        "mass_change": {"base_entries": 31, "removed_or_changed": 1, "threshold": 0.3},
        "records": [
            {
                "change": "changed",
                "fields": [
                    {
                        "after": ["hodges-scans@lib.example.edu", "hodges-color@lib.example.edu"],
                        "before": ["hodges-scans@lib.example.edu"],
                        "field": "senders",
                    }
                ],
                "name": "lib-hodges-3f-copier",
                "path": "inventory/devices/libraries/lib-hodges-3f-copier.yaml",
                "unit": "libraries",
            }
        ],
        "risks": [
            {
                "id": "risk.sender-added",
                "message": "new senders: hodges-color@lib.example.edu",
                "subject": "lib-hodges-3f-copier",
            }
        ],
        "summary": {
            "approvals": 2,
            "artifacts_changed": 4,
            "devices_gaining": 1,
            "devices_losing": 0,
            "files_changed": 0,
            "records_added": 0,
            "records_changed": 1,
            "records_removed": 0,
            "risks": 1,
        },
    },
    "prefix_broadened": {
        "access": [
            {
                "changes": [
                    {
                        "account": "svc-med-reminders@example.edu",
                        "address": "10.60.50.0/28",
                        "change": "gained",
                        "port": 587,
                        "senders_added": [
                            "appointments@med.example.edu",
                            "no-reply@med.example.edu",
                        ],
                        "senders_removed": [],
                    },
                    {
                        "account": "svc-med-reminders@example.edu",
                        "address": "10.60.50.8/29",
                        "change": "lost",
                        "port": 587,
                        "senders_added": [],
                        "senders_removed": [
                            "appointments@med.example.edu",
                            "no-reply@med.example.edu",
                        ],
                    },
                ],
                "device": "med-appointment-reminders",
                "refused_after": None,
                "refused_before": None,
                "unit": "medicine",
            }
        ],
        "approvals": [
            {
                "kind": "unit-owners",
                "reasons": ["changed inventory/devices/medicine/med-appointment-reminders.yaml"],
                "who": "@example-edu/medicine-it @example-edu/medicine-security",
            },
            {
                "kind": "platform-team",
                "reasons": ["risk.prefix-broadened: med-appointment-reminders"],
                "who": "@example-edu/mail-platform",
            },
        ],
        "files": [],
        "mass_change": {"base_entries": 31, "removed_or_changed": 1, "threshold": 0.3},
        "records": [
            {
                "change": "changed",
                "fields": [
                    {"after": "10.60.50.0/28", "before": "10.60.50.8/29", "field": "address"}
                ],
                "name": "med-appointment-reminders",
                "path": "inventory/devices/medicine/med-appointment-reminders.yaml",
                "unit": "medicine",
            }
        ],
        "risks": [
            {
                "id": "risk.prefix-broadened",
                "message": "address 10.60.50.8/29 -> 10.60.50.0/28 (8 -> 16 addresses)",
                "subject": "med-appointment-reminders",
            }
        ],
        "summary": {
            "approvals": 2,
            "artifacts_changed": 2,
            "devices_gaining": 1,
            "devices_losing": 1,
            "files_changed": 0,
            "records_added": 0,
            "records_changed": 1,
            "records_removed": 0,
            "risks": 1,
        },
    },
    "revocation": {
        "access": [
            {
                "changes": [
                    {
                        "account": None,
                        "address": "10.20.30.88",
                        "change": "lost",
                        "port": 25,
                        "senders_added": [],
                        "senders_removed": ["gate-counts@lib.example.edu"],
                    }
                ],
                "device": "lib-gate-counter",
                "refused_after": "revoked",
                "refused_before": None,
                "unit": "libraries",
            }
        ],
        "approvals": [
            # A revocation is the platform team's call alone: the unit neither blocks it
            # nor is asked.
            {
                "kind": "platform-team",
                "reasons": ["revoked inventory/devices/libraries/lib-gate-counter.yaml"],
                "who": "@example-edu/mail-platform",
            }
        ],
        "files": [],
        "mass_change": {"base_entries": 31, "removed_or_changed": 1, "threshold": 0.3},
        "records": [
            {
                "change": "changed",
                "fields": [
                    {"after": "revoked", "before": "active", "field": "status"},
                    {"after": "2026-11-28", "before": None, "field": "status_date"},
                    {"after": "phishing", "before": None, "field": "status_reason"},
                    {"after": "SEC-4501", "before": None, "field": "status_ticket"},
                ],
                "name": "lib-gate-counter",
                "path": "inventory/devices/libraries/lib-gate-counter.yaml",
                "unit": "libraries",
            }
        ],
        "risks": [],
        "summary": {
            "approvals": 1,
            "artifacts_changed": 9,
            "devices_gaining": 0,
            "devices_losing": 1,
            "files_changed": 0,
            "records_added": 0,
            "records_changed": 1,
            "records_removed": 0,
            "risks": 0,
        },
    },
    "site": {
        "access": [],
        "approvals": [
            {
                "kind": "platform-team",
                "reasons": [
                    "risk.site-changed: inventory/site.yaml",
                    "changed inventory/site.yaml",
                ],
                "who": "@example-edu/mail-platform",
            }
        ],
        "files": [
            {
                "fields": [
                    {"after": 45, "before": 30, "field": "policy.expiry_warning_days"},
                    {
                        "after": [
                            "example.edu",
                            "lib.example.edu",
                            "eng.example.edu",
                            "med.example.edu",
                            "facilities.example.edu",
                            "business.example.edu",
                            "oit.example.edu",
                            "research.example.edu",
                        ],
                        "before": [
                            "example.edu",
                            "lib.example.edu",
                            "eng.example.edu",
                            "med.example.edu",
                            "facilities.example.edu",
                            "business.example.edu",
                            "oit.example.edu",
                        ],
                        "field": "sender_domains",
                    },
                ],
                "path": "inventory/site.yaml",
            }
        ],
        "mass_change": {"base_entries": 31, "removed_or_changed": 0, "threshold": 0.3},
        "records": [],
        "risks": [
            {
                "id": "risk.site-changed",
                "message": "changed: policy.expiry_warning_days, sender_domains",
                "subject": "inventory/site.yaml",
            }
        ],
        "summary": {
            "approvals": 1,
            "artifacts_changed": 0,
            "devices_gaining": 0,
            "devices_losing": 0,
            "files_changed": 1,
            "records_added": 0,
            "records_changed": 0,
            "records_removed": 0,
            "risks": 1,
        },
    },
    "mass_removal": {
        "access": "SEE_TEST",
        "approvals": [
            {
                "kind": "unit-owners",
                "reasons": [
                    "removed inventory/devices/engineering/eng-capstone-portal.yaml",
                    "removed inventory/devices/engineering/eng-cleanroom-monitor.yaml",
                    "removed inventory/devices/engineering/eng-ece-scanner.yaml",
                    "removed inventory/devices/engineering/eng-hpc-scheduler.yaml",
                    "removed inventory/devices/engineering/eng-me-shop-mfd.yaml",
                    "removed inventory/devices/engineering/eng-perkins-2f-copier.yaml",
                    "removed inventory/devices/engineering/eng-research-park-mfd.yaml",
                    "removed inventory/devices/engineering/eng-rhodes-lab-mfd.yaml",
                ],
                "who": "@example-edu/engineering-it",
            },
            {
                "kind": "unit-owners",
                "reasons": [
                    "removed inventory/devices/medicine/med-appointment-reminders.yaml",
                    "removed inventory/devices/medicine/med-clinic-copier.yaml",
                    "removed inventory/devices/medicine/med-lab-freezer-monitor.yaml",
                    "removed inventory/devices/medicine/med-pacs-reporting-server.yaml",
                    "removed inventory/devices/medicine/med-pathology-scanner.yaml",
                    "removed inventory/devices/medicine/med-radiology-mfd.yaml",
                    "removed inventory/devices/medicine/med-redcap.yaml",
                ],
                "who": "@example-edu/medicine-it @example-edu/medicine-security",
            },
            {
                "kind": "platform-team",
                "reasons": [
                    "risk.mass-change: inventory",
                    "risk.revocation-lifted: eng-rhodes-lab-mfd",
                    "risk.revocation-lifted: med-clinic-copier",
                ],
                "who": "@example-edu/mail-platform",
            },
        ],
        "files": [],
        "mass_change": {"base_entries": 31, "removed_or_changed": 13, "threshold": 0.3},
        "records": "SEE_TEST",
        "risks": [
            {
                "id": "risk.mass-change",
                "message": "13 of 31 allow entries removed or changed (42%; "
                "policy.mass_change_share is 30%)",
                "subject": "inventory",
            },
            {
                "id": "risk.revocation-lifted",
                "message": "was revoked (spam, SEC-4412); now the record is removed: the "
                "relay no longer refuses 10.40.32.77",
                "subject": "eng-rhodes-lab-mfd",
            },
            {
                "id": "risk.revocation-lifted",
                "message": "was suspended (investigation, SEC-4478); now the record is "
                "removed: the relay no longer refuses 2001:db8:1060:330::2a",
                "subject": "med-clinic-copier",
            },
        ],
        "summary": {
            "approvals": 3,
            "artifacts_changed": 30,
            "devices_gaining": 0,
            "devices_losing": 13,
            "files_changed": 0,
            "records_added": 0,
            "records_changed": 0,
            "records_removed": 15,
            "risks": 3,
        },
    },
}

CHANGES = {
    "added_exception": change_added_exception,
    "sender_taken": change_sender_taken,
    "removed": change_removed,
    "sender_added": change_sender_added,
    "prefix_broadened": change_prefix_broadened,
    "revocation": change_revocation,
    "site": change_site,
    "mass_removal": change_mass_removal,
}
GOLDEN = Path(__file__).parent / "golden" / "plan"
BASE_COMMIT = "<base commit>"


def run_plan(run_cli, repo: Path, output: str = "json", base: str = "main"):  # type: ignore[no-untyped-def]
    return run_cli(
        "plan",
        "--inventory",
        str(repo / "inventory"),
        "--base",
        base,
        "--as-of",
        AS_OF,
        "--format",
        output,
    )


def clean_side(commit: str | None, label: str) -> dict[str, Any]:
    return {
        "commit": commit,
        "errors": 0,
        "findings": [],
        "note": None,
        "ref": label,
        "valid": True,
        "warnings": 0,
    }


@pytest.mark.parametrize("scenario", sorted(CHANGES))
def test_plan_json_is_exact(scenario: str, tmp_path: Path, run_cli, update_golden: bool) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    CHANGES[scenario](repo)
    status_before = git(repo, "status", "--porcelain")
    result = run_plan(run_cli, repo)
    assert result.code == 0, result
    plan = json.loads(result.stdout)
    commit = git(repo, "rev-parse", "main").strip()
    assert plan["base"] == clean_side(commit, "main")
    assert plan["head"] == clean_side(None, "working tree")
    assert (plan["as_of"], plan["inventory"]) == (AS_OF, "inventory")
    for key, value in EXPECTED[scenario].items():
        if value != "SEE_TEST":
            assert plan[key] == value, f"{scenario}: {key}"
    # The whole plan, artifact lines included, against its reviewed golden file.
    plan["base"]["commit"] = BASE_COMMIT
    golden = GOLDEN / f"{scenario}.json"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    assert plan == json.loads(golden.read_text()), f"{golden} differs: pytest --update-golden"
    # The plan read the base from git objects: the work tree and index are untouched.
    assert git(repo, "status", "--porcelain") == status_before
    assert git(repo, "rev-parse", "HEAD").strip() == commit


def test_mass_removal_is_flagged_with_every_record_and_device(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    change_mass_removal(repo)
    plan = json.loads(run_plan(run_cli, repo).stdout)
    removed = sorted(
        p.stem
        for unit in ("engineering", "medicine")
        for p in (EXAMPLE / "devices" / unit).glob("*.yaml")
    )
    assert [r["name"] for r in plan["records"]] == removed
    assert {r["change"] for r in plan["records"]} == {"removed"}
    assert [a["device"] for a in plan["access"]] == removed
    lost = [
        a["device"] for a in plan["access"] if a["changes"] and a["changes"][0]["change"] == "lost"
    ]
    assert len(lost) == 13 == plan["mass_change"]["removed_or_changed"]
    assert {a["device"]: a["refused_before"] for a in plan["access"] if a["refused_before"]} == {
        "eng-rhodes-lab-mfd": "revoked",
        "med-clinic-copier": "suspended",
    }


KEY_LINES = {
    "added_exception": (
        [
            "summary: 1 added, 0 removed, 0 changed; 1 inventory file changed; 1 device gains"
            " access, 0 devices lose access; 2 risks; 3 approvals needed",
            "  risk.sender-added  lib-map-scanner: new senders (a new record):"
            " map-scans@lib.example.edu",
            "  risk.legacy-exception-new  lib-map-scanner: new unauthenticated (auth ip) access"
            " from 10.20.30.99 (a new record)",
            "  [exception approver] Morgan Ellis <mellis@example.edu>",
            "      exception for lib-map-scanner (director, University Libraries;"
            " acknowledgment ACK-2026-0160)",
            "  + lib-map-scanner (libraries) inventory/devices/libraries/lib-map-scanner.yaml",
            "  lib-map-scanner: gains relay from 10.20.30.99 on port 25 without login, senders:"
            " map-scans@lib.example.edu",
            "    + 10.20.30.99\trelaygate_s_d9d07d087e18",
        ],
        [
            "| records | 1 added · 0 removed · 0 changed |",
            "| risks | **2** |",
            "| `risk.legacy-exception-new` | `lib-map-scanner` | `new unauthenticated (auth ip)"
            " access from 10.20.30.99 (a new record)` |",
            "- [ ] `Morgan Ellis <mellis@example.edu>` (exception approver): `exception for"
            " lib-map-scanner (director, University Libraries; acknowledgment ACK-2026-0160)`",
            "- [ ] `@example-edu/mail-platform` (platform team): `risk.legacy-exception-new:"
            " lib-map-scanner`; `risk.sender-added: lib-map-scanner`; `changed"
            " inventory/netreg.yaml`",
            "+10.20.30.99\trelaygate_s_d9d07d087e18",
        ],
    ),
    "sender_taken": (
        [
            "  [unit owners] @example-edu/facilities-it",
            "      risk.sender-added: oit-plantops-bridge",
        ],
        [
            "- [ ] `@example-edu/facilities-it` (unit owners): `risk.sender-added:"
            " oit-plantops-bridge`",
        ],
    ),
    "removed": (
        [
            "  - lib-gate-counter (libraries) inventory/devices/libraries/lib-gate-counter.yaml",
            "  lib-gate-counter: loses relay from 10.20.30.88 on port 25 without login, senders:"
            " gate-counts@lib.example.edu",
            "    - 10.20.30.88\trelaygate_s_c3eb8aa07183",
        ],
        [
            "| records | 0 added · 1 removed · 0 changed |",
            "| risks | 0 |",
            "- removed `lib-gate-counter` (`inventory/devices/libraries/lib-gate-counter.yaml`)",
            "-10.20.30.88\trelaygate_s_c3eb8aa07183",
        ],
    ),
    "sender_added": (
        [
            "      senders: added hodges-color@lib.example.edu",
            "  lib-hodges-3f-copier: relay from 10.20.30.41 on port 25 without login: senders"
            " added: hodges-color@lib.example.edu",
            "  risk.sender-added  lib-hodges-3f-copier: new senders: hodges-color@lib.example.edu",
        ],
        [
            "  - `senders`: added `hodges-color@lib.example.edu`",
            "| `risk.sender-added` | `lib-hodges-3f-copier` | `new senders:"
            " hodges-color@lib.example.edu` |",
        ],
    ),
    "prefix_broadened": (
        [
            "      address: 10.60.50.8/29 -> 10.60.50.0/28",
            "  risk.prefix-broadened  med-appointment-reminders: address 10.60.50.8/29 ->"
            " 10.60.50.0/28 (8 -> 16 addresses)",
            # The login is bound to its address: the login class follows the prefix.
            "  postfix/logins (changed)",
        ],
        ["  - `address`: `10.60.50.8/29` -> `10.60.50.0/28`"],
    ),
    "revocation": (
        [
            "      status: active -> revoked",
            "  lib-gate-counter: now refused by the relay (revoked)",
            "    + 10.20.30.88\tREJECT relay access revoked: sent phishing (SEC-4501)",
        ],
        [
            "  - now refused by the relay (revoked)",
            "+10.20.30.88\tREJECT relay access revoked: sent phishing (SEC-4501)",
        ],
    ),
    "site": (
        [
            "  ~ inventory/site.yaml",
            "      policy.expiry_warning_days: 30 -> 45",
            "      sender_domains: added research.example.edu",
            "  risk.site-changed  inventory/site.yaml: changed: policy.expiry_warning_days,"
            " sender_domains",
        ],
        [
            "| inventory files | 1 changed |",
            "- changed `inventory/site.yaml`",
            "  - `sender_domains`: added `research.example.edu`",
        ],
    ),
    "mass_removal": (
        [
            "  risk.mass-change  inventory: 13 of 31 allow entries removed or changed (42%;"
            " policy.mass_change_share is 30%)",
            "  risk.revocation-lifted  eng-rhodes-lab-mfd: was revoked (spam, SEC-4412); now the"
            " record is removed: the relay no longer refuses 10.40.32.77",
            "  eng-rhodes-lab-mfd: no longer refused by the relay (was revoked)",
        ],
        [
            "| records | 0 added · 15 removed · 0 changed |",
            "| relay access | 0 devices gain · 13 devices lose |",
            "| risks | **3** |",
            "| `risk.mass-change` | `inventory` | `13 of 31 allow entries removed or changed (42%;"
            " policy.mass_change_share is 30%)` |",
        ],
    ),
}


@pytest.mark.parametrize("scenario", sorted(CHANGES))
def test_plan_text_and_markdown_key_lines(scenario: str, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    CHANGES[scenario](repo)
    text = run_plan(run_cli, repo, "text")
    markdown = run_plan(run_cli, repo, "markdown")
    assert text.code == markdown.code == 0, (text, markdown)
    text_lines, markdown_lines = KEY_LINES[scenario]
    commit = git(repo, "rev-parse", "main").strip()
    assert text.stdout.splitlines()[:3] == [
        f"relaygate plan: main ({commit[:12]}) -> working tree, inventory inventory, as of {AS_OF}",
        "base: valid",
        "working tree: valid",
    ]
    for line in text_lines:
        assert line in text.stdout.splitlines(), f"{line!r} not in\n{text.stdout}"
    lines = markdown.stdout.splitlines()
    assert lines[:2] == [plan_report.MARKER, "### relaygate plan"]
    for line in markdown_lines:
        assert line in lines, f"{line!r} not in\n{markdown.stdout}"
    assert markdown.stdout.count("<details>") == markdown.stdout.count("</details>")
    # The summary comes before anything folded.
    assert markdown.stdout.index("| risks |") < markdown.stdout.index("<details>")


def bulk_record(index: int) -> str:
    return (
        "# yaml-language-server: $schema=../../../schemas/device.schema.json\n"
        f"name: oit-bulk-app-{index:04d}\n"
        "unit: oit\n"
        "kind: application\n"
        "model: Bulk notification service\n"
        f"fqdn: bulk-app-{index:04d}.oit.example.edu\n"
        f"address: 10.6.{index // 200}.{index % 200 + 1}\n"
        "auth: oauth2\n"
        f"account: svc-bulk-{index:04d}@example.edu\n"
        "senders:\n"
        f"  - bulk-{index:04d}@oit.example.edu\n"
        "volume_per_day: 10\n"
        "requestor: {name: Jesse Kim, email: jkim@example.edu}\n"
        "technical_contact: {name: Harper Singh, email: hsingh@example.edu}\n"
        "status: active\n"
    )


def test_markdown_of_a_huge_change_fits_one_comment_with_a_note(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    for index in range(700):
        path = repo / DEVICES / "oit" / f"oit-bulk-app-{index:04d}.yaml"
        path.write_text(bulk_record(index))
    full = run_plan(run_cli, repo, "text")
    result = run_plan(run_cli, repo, "markdown")
    assert result.code == full.code == 0, result
    body = result.stdout
    assert len(full.stdout) > 2 * plan_report.MAX_COMMENT  # it really had to be cut
    assert len(body) <= plan_report.MAX_COMMENT
    assert body.count("<details>") == body.count("</details>")
    assert body.count("\n```") % 2 == 0  # every code block that opened was closed
    assert "| records | 700 added · 0 removed · 0 changed |" in body
    assert "| relay access | 700 devices gain · 0 devices lose |" in body
    note = body.rstrip().splitlines()[-1]
    assert note.startswith("**This plan is truncated**: ")
    assert "did not fit in one comment (65,536 characters)" in note
    assert "`relaygate plan --base main --format text`" in note
    dropped = int(note.split(": ", 1)[1].split(" ", 1)[0])
    assert dropped > 700  # the detail of hundreds of records was left out, and counted


def test_markdown_truncation_closes_what_it_opened(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    change_removed(repo)
    plan = plan_.build_plan(repo / "inventory", "main", dt.date.fromisoformat(AS_OF))
    whole = plan_report.markdown(plan)
    for limit in (1_400, 1_800, 2_500):
        cut = plan_report.markdown(plan, limit=limit)
        assert len(cut) <= limit < len(whole)
        assert cut.count("<details>") == cut.count("</details>")
        assert cut.count("```") % 2 == 0
        assert "**This plan is truncated**" in cut
        kept = cut.split("\n\n**This plan is truncated**")[0].splitlines()
        # What is kept is a prefix of the whole comment, apart from the closers added.
        closers = {"</details>", "```"}
        body = [line for line in kept if line not in closers]
        whole_lines = [line for line in whole.splitlines() if line not in closers]
        assert body == whole_lines[: len(body)]
    assert "**This plan is truncated**" not in whole


CODEOWNERS = """\
# Generated by relaygate 0.1.0 from policy/inventory/units.yaml and policy/inventory/site.yaml.
# Do not edit: change the inventory and run `relaygate codeowners --out .github/CODEOWNERS`.

# Anything not listed below: the mail platform team (site.yaml review.platform_team).
* @example-edu/mail-platform

# Device records: the owning unit (units.yaml owners).
/policy/inventory/devices/business-office/ @example-edu/business-systems
/policy/inventory/devices/engineering/ @example-edu/engineering-it
/policy/inventory/devices/facilities/ @example-edu/facilities-it
/policy/inventory/devices/libraries/ @example-edu/libraries-it
/policy/inventory/devices/medicine/ @example-edu/medicine-it @example-edu/medicine-security
/policy/inventory/devices/oit/ @example-edu/oit-infrastructure

# Site-wide facts, schemas and the pipelines: the mail platform team.
/policy/inventory/site.yaml @example-edu/mail-platform
/policy/inventory/units.yaml @example-edu/mail-platform
/policy/inventory/netreg.yaml @example-edu/mail-platform
/policy/schemas/ @example-edu/mail-platform
/.github/ @example-edu/mail-platform
/.gitlab-ci.yml @example-edu/mail-platform
/.pre-commit-hooks.yaml @example-edu/mail-platform
"""


def test_codeowners_from_units_and_site(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    (repo / "policy").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    inventory = repo / "policy" / "inventory"
    shutil.copytree(EXAMPLE, inventory)
    printed = run_cli("codeowners", "--inventory", str(inventory))
    assert printed.code == 0, printed
    assert printed.stdout == CODEOWNERS
    out = repo / ".github" / "CODEOWNERS"
    stale = run_cli("codeowners", "--inventory", str(inventory), "--out", str(out), "--check")
    assert (stale.code, stale.stdout) == (1, f"{out}: stale\n"), stale
    assert not out.exists()
    written = run_cli("codeowners", "--inventory", str(inventory), "--out", str(out))
    assert (written.code, written.stdout) == (0, f"{out}: written\n"), written
    assert out.read_text() == CODEOWNERS
    fresh = run_cli("codeowners", "--inventory", str(inventory), "--out", str(out), "--check")
    assert (fresh.code, fresh.stdout) == (0, f"{out}: up to date\n"), fresh
    # A new owner in units.yaml makes the file stale.
    edit(inventory / "units.yaml", '["@example-edu/facilities-it"]', '["@example-edu/fac"]')
    again = run_cli("codeowners", "--inventory", str(inventory), "--out", str(out), "--check")
    assert again.code == 1, again


def test_codeowners_refuses_when_units_do_not_load(inventory: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    (inventory / "units.yaml").write_text("units: [")
    result = run_cli("codeowners", "--inventory", str(inventory))
    assert result.code == 1, result
    assert f"{inventory}/units.yaml:2:1: error yaml.syntax:" in result.stderr
    assert result.stdout == ""


def test_head_that_does_not_validate_exits_1_with_its_findings(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    edit(
        repo / DEVICES / "libraries" / "lib-gate-counter.yaml",
        "address: 10.20.30.88",
        "address: 10.20.30.89",
    )
    result = run_plan(run_cli, repo)
    assert result.code == 1, result
    plan = json.loads(result.stdout)
    assert plan["head"]["valid"] is False and plan["base"]["valid"] is True
    # A lost reservation is only a warning for the inventory, but this change
    # edits the record, so under the pull-request rule it fails the change.
    assert [
        (f["path"], f["line"], f["rule"], f["severity"], f["message"])
        for f in plan["head"]["findings"]
    ] == [
        (
            "inventory/devices/libraries/lib-gate-counter.yaml",
            7,
            "legacy.netreg-no-reservation",
            "error",
            "NetReg has no reservation for 10.20.30.89; this change adds or edits the record",
        )
    ]
    # The head still compiles (the record as a refusal), so the artifact diff shows it.
    assert plan["artifacts_note"] is None
    refused = [
        line
        for a in plan["artifacts"]
        if a["path"] == "postfix/refused_clients"
        for line in a["added"]
    ]
    assert refused == [
        "# lib-gate-counter",
        "10.20.30.89\tREJECT relay access suspended: NetReg reservation missing or changed",
    ], refused
    [access] = plan["access"]
    assert access["refused_after"] == "suspended: NetReg reservation missing or changed"
    # The record and access diffs still show what the change attempts.
    assert plan["records"][0]["fields"] == [
        {"field": "address", "before": "10.20.30.88", "after": "10.20.30.89"}
    ]
    assert [r["id"] for r in plan["risks"]] == ["risk.address-changed"]
    markdown = run_plan(run_cli, repo, "markdown")
    assert markdown.code == 1
    assert "> **The working tree does not validate** (1 error, 0 warnings). Fix it before" in (
        markdown.stdout
    )
    assert "inventory/devices/libraries/lib-gate-counter.yaml:7:10: error" in markdown.stdout


def test_base_that_does_not_validate_is_reported_and_still_diffed(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    record = repo / DEVICES / "libraries" / "lib-gate-counter.yaml"
    edit(record, "volume_per_day: 2", "volume_per_day: two")
    git(repo, "commit", "-q", "-am", "broken base")
    edit(record, "volume_per_day: two", "volume_per_day: 3")
    result = run_plan(run_cli, repo)
    assert result.code == 0, result
    plan = json.loads(result.stdout)
    assert plan["base"]["valid"] is False and plan["head"]["valid"] is True
    assert [(f["path"], f["rule"]) for f in plan["base"]["findings"]] == [
        ("inventory/devices/libraries/lib-gate-counter.yaml", "schema.type")
    ]
    assert plan["records"] == [
        {
            "change": "changed",
            "fields": [{"after": 3, "before": "two", "field": "volume_per_day"}],
            "name": "lib-gate-counter",
            "path": "inventory/devices/libraries/lib-gate-counter.yaml",
            "unit": "libraries",
        }
    ]
    # The record did not load on the base, so to the access diff it is new.
    assert [a["device"] for a in plan["access"]] == ["lib-gate-counter"]
    assert plan["artifacts"] is None
    assert plan["artifacts_note"].startswith("not compiled: main did not validate")
    text = run_plan(run_cli, repo, "text").stdout
    assert "base: DOES NOT VALIDATE (1 error, 0 warnings)" in text


def test_usage_errors_exit_2(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    missing = run_plan(run_cli, repo, base="no-such-branch")
    assert missing.code == 2, missing
    assert "git ref 'no-such-branch' not found" in missing.stderr
    option = run_plan(run_cli, repo, base="--output=/tmp/x")
    assert option.code == 2, option
    outside = tmp_path / "plain"
    shutil.copytree(EXAMPLE, outside / "inventory")
    result = run_plan(run_cli, outside)
    assert result.code == 2, result
    assert "is not inside a git repository" in result.stderr


def test_inventory_in_a_subfolder_that_the_base_lacks(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("policy\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "empty")
    shutil.copytree(EXAMPLE, repo / "policy" / "inventory")
    result = run_cli(
        "plan",
        "--inventory",
        str(repo / "policy" / "inventory"),
        "--base",
        "main",
        "--as-of",
        AS_OF,
        "--format",
        "json",
    )
    assert result.code == 0, result
    plan = json.loads(result.stdout)
    assert plan["inventory"] == "policy/inventory"
    assert plan["base"]["valid"] is False
    assert {f["rule"] for f in plan["base"]["findings"]} == {"file.missing"}
    assert {f["path"] for f in plan["base"]["findings"]} >= {"policy/inventory/site.yaml"}
    devices = len(list(EXAMPLE.glob("devices/*/*.yaml")))
    assert [r["change"] for r in plan["records"]] == ["added"] * devices
    assert plan["records"][0]["path"].startswith("policy/inventory/devices/")


def _risks(run_cli, repo: Path) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    result = run_plan(run_cli, repo)
    assert result.code == 0, result
    return [(r["id"], r["subject"], r["message"]) for r in json.loads(result.stdout)["risks"]]


def test_exception_renewed_and_term_extended(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    hodges = repo / DEVICES / "libraries" / "lib-hodges-3f-copier.yaml"
    gate = repo / DEVICES / "libraries" / "lib-gate-counter.yaml"
    edit(
        hodges,
        "approved_on: 2026-06-15\n  expires_on: 2027-06-15",
        "approved_on: 2026-11-20\n  expires_on: 2027-11-19",
    )
    edit(gate, "expires_on: 2027-09-10", "expires_on: 2027-09-11")
    assert _risks(run_cli, repo) == [
        (
            "risk.exception-term-extended",
            "lib-gate-counter",
            "expires_on 2027-09-10 -> 2027-09-11 without a new approval (approved_on 2026-09-10)",
        ),
        (
            "risk.legacy-exception-renewed",
            "lib-hodges-3f-copier",
            "exception renewed: approved 2026-11-20, expires 2027-06-15 -> 2027-11-19",
        ),
    ]
    plan = json.loads(run_plan(run_cli, repo).stdout)
    assert plan["approvals"][:2] == [
        {
            "kind": "exception-approver",
            "who": "Dr. Alex Dean <adean@example.edu>",
            "reasons": [
                "exception for lib-hodges-3f-copier (dean, University Libraries;"
                " acknowledgment ACK-2026-5646)"
            ],
        },
        {
            "kind": "exception-approver",
            "who": "Morgan Ellis <mellis@example.edu>",
            "reasons": [
                "exception for lib-gate-counter (director, University Libraries;"
                " acknowledgment ACK-2026-0778)"
            ],
        },
    ]
    assert plan["access"] == []  # the relay answers the same; only the paperwork moved


def test_revocation_lifted_and_units_changed(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    rhodes = repo / DEVICES / "engineering" / "eng-rhodes-lab-mfd.yaml"
    edit(
        rhodes,
        "status: revoked\nstatus_reason: spam\nstatus_date: 2026-10-02\nstatus_ticket: SEC-4412\n",
        "status: active\n",
    )
    edit(
        rhodes,
        "approved_on: 2026-07-14\n  expires_on: 2027-07-14",
        "approved_on: 2026-11-25\n  expires_on: 2027-11-24",
    )
    edit(
        repo / "inventory" / "units.yaml",
        '["@example-edu/facilities-it"]',
        '["@example-edu/fac-it"]',
    )
    assert _risks(run_cli, repo) == [
        (
            "risk.legacy-exception-renewed",
            "eng-rhodes-lab-mfd",
            "exception renewed: approved 2026-11-25, expires 2027-07-14 -> 2027-11-24",
        ),
        (
            "risk.revocation-lifted",
            "eng-rhodes-lab-mfd",
            "was revoked (spam, SEC-4412); now status active: the relay no longer refuses"
            " 10.40.32.77",
        ),
        ("risk.units-changed", "inventory/units.yaml", "changed: units.facilities.owners"),
    ]


def test_segment_change(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    # A MOD segment's prefix moves: the legacy devices in it change segment.
    edit(repo / "inventory" / "site.yaml", "prefixes: [10.90.35.0/24]", "prefixes: [10.90.35.0/25]")
    edit(
        repo / "inventory" / "site.yaml",
        "prefixes: [10.80.34.0/24]",
        "prefixes: [10.80.34.0/24, 10.90.35.128/25]",
    )
    risks = _risks(run_cli, repo)
    assert [r[0] for r in risks] == ["risk.site-changed"]  # both facilities devices stay in /25
    edit(repo / "inventory" / "site.yaml", "prefixes: [10.90.35.0/25]", "prefixes: [10.90.35.0/28]")
    edit(
        repo / "inventory" / "site.yaml",
        "prefixes: [10.80.34.0/24, 10.90.35.128/25]",
        "prefixes: [10.80.34.0/24, 10.90.35.16/28]",
    )
    assert _risks(run_cli, repo) == [
        (
            "risk.segment-changed",
            "fac-energy-meter-gateway",
            "MOD segment mod-facilities -> mod-admin",
        ),
        (
            "risk.site-changed",
            "inventory/site.yaml",
            "changed: mod_segments[mod-admin].prefixes, mod_segments[mod-facilities].prefixes",
        ),
    ]


# --- the pull-request rule for time and outside data --------------------------------


def _expire_gate_counter(repo: Path) -> Path:
    """Commit a base where lib-gate-counter's exception expired on 2026-11-01."""
    record = repo / DEVICES / "libraries" / "lib-gate-counter.yaml"
    edit(record, "approved_on: 2026-09-10", "approved_on: 2025-11-05")
    edit(record, "expires_on: 2027-09-10", "expires_on: 2026-11-01")
    git(repo, "commit", "-q", "-am", "base: an exception that has since expired")
    return record


def test_an_expired_record_does_not_block_a_revocation(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    _expire_gate_counter(repo)
    edit(
        repo / DEVICES / "libraries" / "lib-special-collections-scanner.yaml",
        "status: active",
        "status: revoked\nstatus_reason: spam\nstatus_date: 2026-11-29\nstatus_ticket: SEC-4620",
    )
    result = run_plan(run_cli, repo)
    assert result.code == 0, result
    plan = json.loads(result.stdout)
    assert (plan["head"]["valid"], plan["head"]["errors"], plan["head"]["warnings"]) == (
        True,
        0,
        1,
    )
    [finding] = plan["head"]["findings"]
    assert (finding["path"], finding["rule"], finding["severity"]) == (
        "inventory/devices/libraries/lib-gate-counter.yaml",
        "exception.expired",
        "warning",
    )
    # The revocation is compiled; the expired record is refused on both sides, so unchanged.
    assert [(a["device"], a["refused_after"]) for a in plan["access"]] == [
        ("lib-special-collections-scanner", "revoked")
    ]
    added = [line for a in plan["artifacts"] for line in a["added"] if "10.20.30.57" in line]
    assert "10.20.30.57\tREJECT relay access revoked: sent spam (SEC-4620)" in added, added


def test_a_change_to_the_expired_record_fails_until_it_is_renewed(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    record = _expire_gate_counter(repo)
    edit(record, "volume_per_day: 2", "volume_per_day: 3")
    touched = run_plan(run_cli, repo)
    assert touched.code == 1, touched
    plan = json.loads(touched.stdout)
    assert [(f["rule"], f["severity"], f["message"]) for f in plan["head"]["findings"]] == [
        (
            "exception.expired",
            "error",
            "expired on 2026-11-01 (as of 2026-11-29); this change adds or edits the record",
        )
    ]
    # Positive control: the same edit with a renewal passes, and the device relays again.
    edit(record, "approved_on: 2025-11-05", "approved_on: 2026-11-28")
    edit(record, "expires_on: 2026-11-01", "expires_on: 2027-11-28")
    renewed = run_plan(run_cli, repo)
    assert renewed.code == 0, renewed
    plan = json.loads(renewed.stdout)
    assert plan["head"]["findings"] == []
    [access] = plan["access"]
    assert (access["device"], access["refused_before"], access["refused_after"]) == (
        "lib-gate-counter",
        "suspended: exception expired on 2026-11-01",
        None,
    )
    assert [c["change"] for c in access["changes"]] == ["gained"]


def test_a_sender_takeover_fails_and_asks_the_unit_that_holds_it(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A new medicine record lists a libraries account's sender, spelt with a +extension."""
    repo = make_repo(tmp_path)
    (repo / DEVICES / "medicine" / "med-ill-bridge.yaml").write_text(
        OIT_BRIDGE.replace("oit-plantops-bridge", "med-ill-bridge")
        .replace("unit: oit", "unit: medicine")
        .replace("plantops-bridge.oit.example.edu", "ill-bridge.med.example.edu")
        .replace("10.5.20.41", "10.60.50.40")
        .replace("svc-oit-plantops-bridge", "svc-med-ill-bridge")
        .replace("plantops-scans+bridge@facilities.example.edu", "ill+notices@lib.example.edu")
    )
    result = run_plan(run_cli, repo)
    assert result.code == 1, result
    plan = json.loads(result.stdout)
    assert [(Path(f["path"]).name, f["rule"]) for f in plan["head"]["findings"]] == [
        ("lib-illiad.yaml", "sender.owned-by-another"),
        ("med-ill-bridge.yaml", "sender.owned-by-another"),
    ]
    assert plan["risks"] == [
        {
            "id": "risk.sender-added",
            "message": "new senders (a new record): ill+notices@lib.example.edu;"
            " ill+notices@lib.example.edu is also used by lib-illiad (libraries, active,"
            " as ill@lib.example.edu)",
            "subject": "med-ill-bridge",
        }
    ]
    libraries = [a for a in plan["approvals"] if a["who"] == "@example-edu/libraries-it"]
    assert libraries == [
        {
            "kind": "unit-owners",
            "reasons": ["risk.sender-added: med-ill-bridge"],
            "who": "@example-edu/libraries-it",
        }
    ]


def test_a_null_sender_opt_in_is_a_risk_and_an_access_gain(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    record = repo / DEVICES / "libraries" / "lib-illiad.yaml"
    record.write_text(
        record.read_text() + "allow_null_sender: {reason: ILLiad sends delivery reports}\n"
    )
    plan = json.loads(run_plan(run_cli, repo).stdout)
    assert [(r["id"], r["subject"]) for r in plan["risks"]] == [
        ("risk.null-sender-allowed", "lib-illiad")
    ]
    assert plan["risks"][0]["message"] == (
        "may now send with the null sender (MAIL FROM:<>): ILLiad sends delivery reports"
    )
    assert {a["kind"] for a in plan["approvals"]} == {"unit-owners", "platform-team"}
    (change,) = plan["access"]
    (delta,) = change["changes"]
    # The null sender is shown as access the login gains.
    assert (delta["change"], delta["senders_added"], delta["senders_removed"]) == (
        "changed",
        ["<>"],
        [],
    ), delta


# --- daily limits (relaygate.limits) ------------------------------------------------------


def test_plan_shows_a_site_factor_change_summarised_with_a_risk(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    edit(repo / "inventory" / "site.yaml", "  factor: 3 ", "  factor: 5 ")
    plan = json.loads(run_plan(run_cli, repo).stdout)
    summary = plan["limits_summary"]
    assert (summary["site_before"], summary["site_after"]) == (
        "factor 3, floor 50, max_per_day 10000, port 10040",
        "factor 5, floor 50, max_per_day 10000, port 10040",
    )
    # Every active record above the floor rises; those at the floor or with an
    # override keep their limit.
    by_name = {c["device"]: c for c in plan["limits"]}
    assert by_name["lib-hodges-3f-copier"]["before"] == 120
    assert by_name["lib-hodges-3f-copier"]["after"] == 200
    assert by_name["lib-hodges-3f-copier"]["how"] == "estimate 40 x 5 = 200"
    assert "med-appointment-reminders" not in by_name  # its override does not move
    assert "lib-gate-counter" not in by_name  # at the floor before and after (estimate 2)
    assert summary["raised"] == len(plan["limits"]) and summary["lowered"] == 0
    assert summary["total_after"] > summary["total_before"] * 1.3
    risks = [r for r in plan["risks"] if r["id"] == "risk.limits-raised"]
    assert risks == [
        {
            "id": "risk.limits-raised",
            "subject": "inventory",
            "message": f"daily limits rise from {summary['total_before']} to"
            f" {summary['total_after']} messages in total"
            f" (+{summary['total_after'] / summary['total_before'] - 1:.0%};"
            " policy.mass_change_share is 30%)",
        }
    ]
    text = run_plan(run_cli, repo, "text").stdout
    assert "Daily limits:\n  site volume_limits: factor 3, floor 50" in text
    assert "  lib-hodges-3f-copier: 120/day -> 200/day (estimate 40 x 5 = 200)\n" in text
    assert (
        f"  {summary['raised']} limits change: {summary['raised']} raised; records active before"
        f" and after: {summary['total_before']} -> {summary['total_after']} messages a day in"
        " total\n"
    ) in text
    markdown = run_plan(run_cli, repo, "markdown").stdout
    assert "<summary>Daily limits: " in markdown
    assert "- `lib-hodges-3f-copier`: 120/day -> 200/day (estimate 40 x 5 = 200)" in markdown


def test_a_small_limit_change_is_listed_without_the_mass_risk(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    edit(
        repo / DEVICES / "libraries" / "lib-hodges-3f-copier.yaml",
        "volume_per_day: 40",
        "volume_per_day: 50",
    )
    plan = json.loads(run_plan(run_cli, repo).stdout)
    assert plan["limits"] == [
        {
            "device": "lib-hodges-3f-copier",
            "unit": "libraries",
            "before": 120,
            "after": 150,
            "how": "estimate 50 x 3 = 150",
        }
    ]
    assert plan["limits_summary"]["raised"] == 1
    assert plan["limits_summary"]["site_before"] is None
    assert not [r for r in plan["risks"] if r["id"].startswith("risk.limit")]


def test_an_override_raised_is_a_risk_and_lowered_is_not(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    path = DEVICES / "medicine" / "med-appointment-reminders.yaml"
    for new, risky in ((6000, True), (3000, False)):
        (tmp_path / str(new)).mkdir()
        repo = make_repo(tmp_path / str(new))
        edit(repo / path, "per_day: 4000", f"per_day: {new}")
        plan = json.loads(run_plan(run_cli, repo).stdout)
        assert plan["limits"][0]["after"] == new
        assert plan["limits"][0]["how"] == "volume_limit override; computed would be 7500"
        risks = [r for r in plan["risks"] if r["id"] == "risk.limit-override"]
        assert risks == (
            [
                {
                    "id": "risk.limit-override",
                    "subject": "med-appointment-reminders",
                    "message": "volume_limit.per_day 6000 set by hand (override was 4000)",
                }
            ]
            if risky
            else []
        )


def test_an_unchanged_inventory_has_no_limit_section(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo(tmp_path)
    edit(repo / "inventory" / "site.yaml", "expiry_warning_days: 30", "expiry_warning_days: 45")
    plan = json.loads(run_plan(run_cli, repo).stdout)
    assert (plan["limits"], plan["limits_summary"]) == ([], None)
    assert "Daily limits:" not in run_plan(run_cli, repo, "text").stdout


def test_the_stricter_share_of_the_two_sides_decides_the_limit_risk(  # type: ignore[no-untyped-def]
    tmp_path: Path, run_cli
) -> None:
    """Factor 3 -> 4 raises the example's total by about 26%: under the base's 30%."""
    risky = []
    for share in ("0.3", "0.1"):
        (tmp_path / share).mkdir()
        repo = make_repo(tmp_path / share)
        site = repo / "inventory" / "site.yaml"
        edit(site, "  factor: 3 ", "  factor: 4 ")
        edit(site, "mass_change_share: 0.3", f"mass_change_share: {share}")
        plan = json.loads(run_plan(run_cli, repo).stdout)
        risky.append([r["message"] for r in plan["risks"] if r["id"] == "risk.limits-raised"])
    assert risky[0] == []
    assert len(risky[1]) == 1 and risky[1][0].endswith("policy.mass_change_share is 10%)")


@pytest.mark.parametrize("change", ["segment", "netreg", "record"])
def test_a_cached_plan_is_the_uncached_plan(tmp_path: Path, run_cli, change: str) -> None:  # type: ignore[no-untyped-def]
    """With the cache, unchanged records are one object on both sides and skip the
    per-record comparison; a change around them (the site, NetReg) must still show."""
    repo = make_repo(tmp_path)
    inventory = repo / "inventory"
    if change == "segment":
        edit(inventory / "site.yaml", "prefixes: [10.90.35.0/24]", "prefixes: [10.90.35.0/28]")
        edit(
            inventory / "site.yaml",
            "prefixes: [10.80.34.0/24]",
            "prefixes: [10.80.34.0/24, 10.90.35.16/28]",
        )
    elif change == "netreg":  # lib-gate-counter loses its reservation: it lapses
        edit(
            inventory / "netreg.yaml",
            "  - {address: 10.20.30.88, fqdn: lib-gate-counter.lib.example.edu, type: static-dhcp,"
            ' mac: "00:50:c2:7d:10:88"}\n',
            "",
        )
    else:
        edit(inventory / "devices/libraries/lib-gate-counter.yaml", "model:", "model: X #")
    argv = ["plan", "--inventory", str(inventory), "--base", "main", "--as-of", AS_OF]
    uncached = run_cli(*argv, "--format", "json", "--no-cache")
    for _ in range(2):  # fills the cache, then reads it
        cached = run_cli(*argv, "--format", "json")
        assert (cached.code, cached.stdout) == (uncached.code, uncached.stdout)
    plan = json.loads(uncached.stdout)
    if change == "segment":
        assert "risk.segment-changed" in [r["id"] for r in plan["risks"]]
    elif change == "netreg":
        assert [a["device"] for a in plan["access"]] == ["lib-gate-counter"]
    else:
        assert plan["access"] == [] and plan["risks"] == []


@pytest.mark.parametrize("day", ["2026-11-29", "2028-06-30"])
def test_a_side_grants_exactly_the_records_it_gives_access(day: str) -> None:
    """``Side.grants`` (what the mass-change count reads) says ``access`` is not empty."""
    as_of = dt.date.fromisoformat(day)
    side = plan_.load_side("working tree", None, EXAMPLE, "inventory", as_of, base=False)
    devices = list(side.devices.values())
    granted = [d for d in devices if side.grants(d)]
    assert [d for d in devices if side.access(d)] == granted
    lapsed = [d for d in devices if side.lapse(d) is not None]
    assert 0 < len(granted) < len(devices)  # refused records are among them
    assert bool(lapsed) == (day != AS_OF)  # two years on, exceptions have expired
    assert not set(map(id, lapsed)) & set(map(id, granted))
