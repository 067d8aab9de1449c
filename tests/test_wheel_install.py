"""relaygate as a campus installs it: the built wheel, a fresh virtual environment, a new
policy repository made by `init`, outside this source tree.

The wheel's dependencies come from the package index (CI reaches it); nothing of this
checkout is importable in the new environment, so a file missing from the package data
fails here rather than on a campus's machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

from relaygate import __version__, release
from tests.conftest import AS_OF, ROOT, one_build_at_a_time, require, require_postfix_lmdb
from tests.deploy_support import ansible_env, make_lab

pytestmark = pytest.mark.integration


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_wheel_serves_a_policy_repository_of_its_own(tmp_path: Path) -> None:
    require(shutil.which("git") is not None, "git is not installed")
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with one_build_at_a_time():
        run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(wheels)],
            tmp_path,
            env,
        )
    (wheel,) = wheels.glob("relaygate-*.whl")
    environment = tmp_path / "env"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", f"{wheel}[deploy]"], tmp_path, env)
    bin_dir = environment / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    relaygate = str(bin_dir / "relaygate")

    # The package is the installed one, not this checkout.
    where = run([str(python), "-c", "import relaygate; print(relaygate.__file__)"], tmp_path, env)
    assert where.stdout.startswith(str(environment)), where.stdout
    assert run([relaygate, "--version"], tmp_path, env).stdout.strip().endswith(__version__)

    repo = tmp_path / "campus-policy"
    run([relaygate, "init", str(repo), "--as-of", AS_OF], tmp_path, env)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.edu"]
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run([*git, "add", "-A"], repo, env)
    run([*git, "commit", "-qm", "init"], repo, env)
    validated = run(
        [relaygate, "validate", "--inventory", "inventory", "--as-of", AS_OF], repo, env
    )
    assert "0 errors, 0 warnings" in validated.stdout

    run(
        [
            relaygate, "new", "--inventory", "inventory", "--as-of", AS_OF, "--no-prompt",
            "--name", "app-one", "--unit", "example-unit", "--kind", "application",
            "--model", "Some App 2", "--fqdn", "app-one.example.edu", "--address", "10.5.0.9",
            "--auth", "credentials", "--account", "svc-app-one@example.edu",
            "--sender", "app@example.edu", "--volume-per-day", "100",
            "--requestor-name", "Pat Doe", "--requestor-email", "pdoe@example.edu",
            "--contact-name", "Sam Roe", "--contact-email", "sroe@example.edu",
        ],
        repo,
        env,
    )  # fmt: skip
    record = (repo / "inventory/devices/example-unit/app-one.yaml").read_text()
    # The schema line points at the schemas init wrote: editor completion works here.
    header = record.splitlines()[0]
    assert header.endswith("$schema=../../../schemas/device.schema.json")
    assert (repo / "inventory/devices/example-unit" / header.split("=", 1)[1]).resolve() == (
        repo / "schemas" / "device.schema.json"
    )
    run([*git, "add", "-A"], repo, env)
    run([*git, "commit", "-qm", "app-one"], repo, env)
    plan = run(
        [relaygate, "plan", "--inventory", "inventory", "--base", "HEAD~1", "--as-of", AS_OF],
        repo,
        env,
    )
    assert "app-one" in plan.stdout
    compiled = run(
        [
            relaygate,
            "compile",
            "--inventory",
            "inventory",
            "--as-of",
            AS_OF,
            "--out",
            "build/relay",
        ],
        repo,
        env,
    )
    assert "artifacts changed" in compiled.stdout
    assert (
        "svc-app-one@example.edu\trelaygate_l_" in (repo / "build/relay/postfix/logins").read_text()
    )
    # The deploy playbook and its roles ship in the wheel.
    shown = run([relaygate, "deploy", "--show-path"], repo, env).stdout.strip()
    assert shown.startswith(str(environment)), shown
    assert (Path(shown) / "roles" / "relaygate" / "tasks" / "main.yml").is_file()
    run(
        [
            relaygate,
            "deploy",
            "--out",
            "build/relay",
            "-i",
            "deploy/inventory.yml",
            "--syntax-check",
        ],
        repo,
        env,
    )
    _deploy_check(repo, relaygate, env)


def _deploy_check(repo: Path, relaygate: str, env: dict[str, str]) -> None:
    """`relaygate deploy --check` from the installed package against a lab relay (a private
    Postfix in a network namespace this test makes): it verifies the folder against the
    committed inventory with the installed relaygate, and changes nothing on the relay."""
    require(os.geteuid() == 0, "a lab relay needs root (network namespaces)")
    require_postfix_lmdb()
    for tool in ("ip", "nft", "openssl", "saslpasswd2"):
        require(shutil.which(tool) is not None, f"{tool} is not installed")
    out = repo / "build" / "relay"
    root = Path(tempfile.mkdtemp(prefix="rgwheel-lab-"))
    root.chmod(0o755)  # the relay's postfix user must reach its data folder
    try:
        sources = release.verify_release(out, None).facts["probe"]["sources"]
        lab = make_lab(root, sorted(sources) or ["10.30.0.15"], count=1)
        try:
            (relay,) = lab.relays
            before = relay.state_hash()
            inventory = lab.inventory(
                relaygate_release_inventory=str(repo / "inventory"),
                relaygate_release_cmd=[relaygate],
            )
            deploy_env = {**ansible_env(root / "ansible"), "PATH": env["PATH"]}
            done = subprocess.run(
                [relaygate, "deploy", "--out", str(out), "-i", str(inventory), "--check"],
                cwd=repo,
                env=deploy_env,
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
            # The controller verified the release; the relay would change (a fresh relay)
            # and nothing failed.
            assert re.search(
                r"localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", done.stdout
            )
            assert re.search(
                r"relay-a\s+: ok=\d+\s+changed=[1-9]\d*\s+unreachable=0\s+failed=0", done.stdout
            ), done.stdout
            assert relay.state_hash() == before  # --check changed nothing
        finally:
            lab.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
