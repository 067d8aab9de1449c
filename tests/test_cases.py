"""Example inventories as test cases: tests/cases/{valid,invalid}/<case>/.

Each case is an overlay on the example inventory (``inventory/`` at the
repository root):

- ``remove.txt`` (optional): paths relative to the inventory root, one a
  line, deleted from a fresh copy first (files or whole folders);
- ``inventory/`` (optional): files copied over the copy, same relative paths;
- ``setup.py`` (optional): ``def setup(root: pathlib.Path) -> None`` mutates
  the copy for what git cannot hold as plain text (symlinks, BOMs, CRLF,
  invalid UTF-8, oversized files, folders named like records);
- ``expected.txt`` (invalid cases): the exact findings, one a line, as
  ``<path>:<line>:<col>: <severity> <rule-id>: <message>`` with the path
  relative to the inventory root, in the order relaygate sorts them.
  Lines starting with ``#`` are comments; ``# xfail: <reason>`` marks a case
  that documents a compiler bug (strict: it fails once the bug is fixed, so
  the expectation gets reviewed). ``{root}`` stands for the absolute
  inventory root where a message names it.

A valid case must validate with zero findings; it may carry an
``expected.txt`` holding only comments (for an ``# xfail:`` line).

A case whose ``setup.py`` sets ``UNPRIVILEGED = True`` depends on file modes
(``file.unreadable``): root reads any file whatever its mode, so when the
suite runs as root (as CI does) that case is validated in a forked child that
drops to ``nobody`` first, against a copy of the inventory in a folder
``nobody`` can traverse.

The overlay machinery here (``case_params``, ``build_inventory``,
``finding_line``, ``read_expected``) is shared with the hostile-input corpus
(``tests/test_hostile.py``).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from relaygate.findings import Finding
from relaygate.pipeline import validate
from relaygate.rules import RULES
from tests.conftest import AS_OF, EXAMPLE, CliResult

CASES = Path(__file__).resolve().parent / "cases"
VALID = CASES / "valid"
INVALID = CASES / "invalid"
XFAIL = "# xfail:"

#: uid and gid of ``nobody``, the identity a permission case runs as under root.
NOBODY = 65534

#: Rules no inventory can trigger, with the reason. Keep this empty if you can:
#: an entry here is a rule the catalogue promises and nothing checks.
UNREACHABLE: dict[str, str] = {}


def case_dirs(kind: Path) -> list[Path]:
    """The case folders directly under ``kind``, by name."""
    return sorted(p for p in kind.iterdir() if p.is_dir()) if kind.is_dir() else []


def read_expected(case: Path) -> tuple[list[str], list[str]]:
    """The expected finding lines of a case and its xfail reasons."""
    path = case / "expected.txt"
    if not path.exists():
        return [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    reasons = [line[len(XFAIL) :].strip() for line in lines if line.startswith(XFAIL)]
    findings = [line for line in lines if line.strip() and not line.startswith("#")]
    return findings, reasons


def rule_of(line: str) -> str:
    """The rule id of an expected line (``<path>:<l>:<c>: <severity> <rule>: <message>``)."""
    return line.split(": ", 2)[1].split()[1]


def case_params(kind: Path, prefix: str = "") -> list[object]:
    """One pytest param per case folder, strict-xfail when expected.txt says ``# xfail:``."""
    params: list[object] = []
    for case in case_dirs(kind):
        _, reasons = read_expected(case)
        marks = [pytest.mark.xfail(reason="; ".join(reasons), strict=True)] if reasons else []
        params.append(pytest.param(case, id=prefix + case.name, marks=marks))
    return params


def _inside(root: Path, relative: str) -> Path:
    target = root / relative
    if not target.resolve().is_relative_to(root.resolve()) or target == root:
        raise ValueError(f"{relative!r} is not a path inside the inventory")
    return target


def load_setup(case: Path) -> ModuleType | None:
    """The case's ``setup.py`` as a module, or None when it has none."""
    setup = case / "setup.py"
    if not setup.exists():
        return None
    name = f"case_setup_{case.parent.name}_{case.name}".replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, setup)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def needs_unprivileged(case: Path) -> bool:
    """Whether the case only means something to a user who is not root."""
    module = load_setup(case)
    return bool(getattr(module, "UNPRIVILEGED", False))


def _world_readable(root: Path) -> None:
    """Folders 0755 and files 0644, whatever the checkout's umask was."""
    root.chmod(0o755)
    for folder, folders, files in os.walk(root):
        for name in folders:
            Path(folder, name).chmod(0o755)
        for name in files:
            Path(folder, name).chmod(0o644)


def build_inventory(case: Path, tmp_path: Path, *, world_readable: bool = False) -> Path:
    """A fresh copy of the example inventory with the case applied; returns its root.

    With ``world_readable`` every folder and file of the copy is readable by
    anyone before ``setup.py`` runs (which may then take that away again).
    """
    root = (tmp_path / "inventory").resolve()
    shutil.copytree(EXAMPLE, root)
    remove = case / "remove.txt"
    if remove.exists():
        for line in remove.read_text(encoding="utf-8").splitlines():
            relative = line.strip()
            if not relative or relative.startswith("#"):
                continue
            target = _inside(root, relative)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
    overlay = case / "inventory"
    if overlay.is_dir():
        shutil.copytree(overlay, root, dirs_exist_ok=True)
    if world_readable:
        _world_readable(root)
    module = load_setup(case)
    if module is not None:
        module.setup(root)
    return root


def finding_line(finding: Finding, root: Path) -> str:
    """The text-format line of a finding without its hint, paths relative to ``root``."""
    path = Path(finding.path)
    if path.is_absolute():
        path = path.relative_to(root)
    message = finding.message.replace(str(root), "{root}")
    return (
        f"{path.as_posix()}:{finding.line}:{finding.column}: "
        f"{finding.severity} {finding.rule}: {message}"
    )


@contextmanager
def traversable_folder() -> Iterator[Path]:
    """A temporary folder ``nobody`` can enter (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="relaygate-case-")).resolve()
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def validate_as_nobody(root: Path) -> list[str]:
    """The finding lines of ``root`` as ``nobody`` sees them (the caller is root).

    A forked child drops every privilege (supplementary groups, gid, uid),
    validates and sends back JSON through a pipe. A fork rather than a new
    interpreter: the child then needs no access to the checkout or the
    virtual environment, wherever CI cloned them.
    """
    # Compile the four schemas before forking: the child may not read them.
    validate(EXAMPLE, dt.date.fromisoformat(AS_OF))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        payload: dict[str, object]
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.chdir(root)  # finding paths are shown relative to the working directory
            result = validate(root, dt.date.fromisoformat(AS_OF))
            payload = {
                "uid": os.getuid(),
                "euid": os.geteuid(),
                "groups": os.getgroups(),
                "lines": [finding_line(f, root) for f in result.findings],
            }
        except BaseException:
            payload = {"error": traceback.format_exc()}
        data = json.dumps(payload).encode()
        while data:
            data = data[os.write(write_end, data) :]
        os._exit(0)
    os.close(write_end)
    chunks: list[bytes] = []
    with os.fdopen(read_end, "rb") as reader:
        while chunk := reader.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child died"
    payload = json.loads(b"".join(chunks))
    assert "error" not in payload, payload.get("error")
    assert (payload["uid"], payload["euid"], payload["groups"]) == (NOBODY, NOBODY, [])
    lines = payload["lines"]
    assert isinstance(lines, list)
    return [str(line) for line in lines]


def run_case(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    if needs_unprivileged(case) and os.geteuid() == 0:
        with traversable_folder() as folder:
            root = build_inventory(case, folder, world_readable=True)
            return validate_as_nobody(root)
    root = build_inventory(case, tmp_path)
    # Finding paths are shown relative to the working directory.
    monkeypatch.chdir(root)
    result = validate(root, dt.date.fromisoformat(AS_OF))
    return [finding_line(f, root) for f in result.findings]


@pytest.mark.parametrize("case", case_params(VALID))
def test_valid_case(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected, _ = read_expected(case)
    assert expected == [], "a valid case may only carry comments in expected.txt"
    assert run_case(case, tmp_path, monkeypatch) == []


@pytest.mark.parametrize("case", case_params(INVALID))
def test_invalid_case(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected, _ = read_expected(case)
    assert expected, f"{case.name}: expected.txt lists no finding"
    assert run_case(case, tmp_path, monkeypatch) == expected


def test_every_rule_has_an_invalid_case() -> None:
    covered: set[str] = set()
    for case in case_dirs(INVALID):
        for line in read_expected(case)[0]:
            covered.add(rule_of(line))
    unknown = covered - set(RULES)
    assert not unknown, f"expected.txt names unknown rule ids: {sorted(unknown)}"
    stale = covered & set(UNREACHABLE)
    assert not stale, f"now covered, remove from UNREACHABLE: {sorted(stale)}"
    # A CSV import reports rows, not inventory files: tests/test_policy_repo.py covers them.
    imports = {rule_id for rule_id in RULES if rule_id.startswith("import.")}
    # activity watch reports relay logs, not inventory files: tests/test_watch.py covers them.
    watches = {rule_id for rule_id in RULES if rule_id.startswith("watch.")}
    missing = set(RULES) - covered - set(UNREACHABLE) - imports - watches
    assert not missing, f"rules without an invalid case: {sorted(missing)}"


# findings in two files: a record and units.yaml, in relaygate's order
CLI_CASE = INVALID / "units-duplicate-approver-conflicting-role"


def test_cli_prints_a_case_with_hints(
    run_cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, _ = read_expected(CLI_CASE)
    root = build_inventory(CLI_CASE, tmp_path)
    monkeypatch.chdir(root)
    result = run_cli("validate", "--inventory", ".", "--as-of", AS_OF)
    assert result.code == 1, result
    lines = result.stdout.splitlines()
    hinted = [f"{line} ({RULES[rule_of(line)].hint})" for line in expected]
    assert lines[:-1] == hinted, result
    errors = sum(1 for line in expected if ": error " in line)
    warnings = sum(1 for line in expected if ": warning " in line)
    assert (errors, warnings) == (1, 1), expected  # the record's lapse is only a warning
    assert lines[-1].endswith(f"{errors} errors, {warnings} warnings"), result
