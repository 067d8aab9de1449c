"""The suite's own set-up works on a fresh machine: no host Postfix configuration is read.

On a machine where Postfix was installed as "No configuration" (what .ci/run does),
/etc/postfix holds no main.cf and any bare ``postconf`` exits fatally. These tests build
exactly that view of /etc/postfix inside a private mount namespace (the host's folder is
never changed) and run the suite's detection there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import postfix_instance
from tests.conftest import ROOT, require

pytestmark = pytest.mark.integration

HOST_POSTFIX = Path("/etc/postfix")

#: Runs inside the mount namespace: the bare command first (the old detection), then ours.
PROBE = """
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from tests import postfix_instance
bare = subprocess.run(["postconf", "-m"], capture_output=True, text=True)
print("bare-exit", bare.returncode)
print("detected", postfix_instance.lmdb_missing() or "lmdb")
"""


def _without_main_cf(tmp_path: Path) -> Path:
    """A copy of the packaged /etc/postfix files (dynamicmaps.cf and friends), no main.cf."""
    view = tmp_path / "etc-postfix"
    shutil.copytree(HOST_POSTFIX, view, symlinks=True)
    for name in ("main.cf", "master.cf"):
        (view / name).unlink(missing_ok=True)
    return view


def _run_in_view(view: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = f'mount --bind "{view}" /etc/postfix && exec "{sys.executable}" -c "$0" "{ROOT}"'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, PROBE],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_detection_needs_no_host_main_cf(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "a private mount namespace needs root")
    require(shutil.which("unshare") is not None, "unshare is not installed (util-linux)")
    require(HOST_POSTFIX.is_dir(), "Postfix is not installed: /etc/postfix does not exist")
    view = _without_main_cf(tmp_path)
    # No MAIL_CONFIG and no inherited Postfix settings: the environment a CI job starts with.
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAIL_")}
    done = _run_in_view(view, env)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    # Positive control: the view really lacks main.cf, so the old bare command fails there.
    assert lines["bare-exit"] != "0", done.stdout
    # The suite's detection still finds lmdb: it would run the integration tests, not skip.
    assert lines["detected"] == "lmdb", done.stdout


def test_a_missing_capability_names_the_command_and_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(postfix_instance.available(), "Postfix is not installed")
    # A postconf that fails the way a broken install does: the reason quotes it exactly.
    fake = tmp_path / "bin"
    fake.mkdir()
    real = {tool: shutil.which(tool) for tool in postfix_instance.POSTFIX_TOOLS}
    for tool, path in real.items():
        assert path is not None
        (fake / tool).symlink_to(path)
    (fake / "postconf").unlink()
    (fake / "postconf").write_text(
        "#!/bin/sh\necho 'postconf: fatal: broken install' >&2\nexit 7\n"
    )
    (fake / "postconf").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    reason = postfix_instance.lmdb_missing()
    assert reason is not None
    assert "exited 7" in reason
    assert "postconf: fatal: broken install" in reason
    assert "postconf -c " in reason and reason.endswith("broken install")


def test_detection_reports_lmdb_when_installed() -> None:
    require(postfix_instance.available(), "Postfix is not installed")
    types = postfix_instance.map_types()
    assert "cidr" in types  # built in to every Postfix: the listing itself worked
    require("lmdb" in types, postfix_instance.lmdb_missing() or "")
    assert postfix_instance.lmdb_missing() is None
