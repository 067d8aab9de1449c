"""Property-based tests of the whole pipeline, and a short run of the byte-level fuzz target.

Extends tests/test_properties.py (random valid inventories; top-level field
mutations of synthetic records) with:

- lifecycle changes on random valid inventories (records retired, suspended
  or revoked the legal way): they still compile, the verifier agrees, the
  output does not depend on where the inventory lies, and a retired record
  appears in no artifact;
- structure-aware mutations of the example inventory: any value at any path
  (nested exception fields, person fields, site.yaml, units.yaml, netreg.yaml)
  replaced by hostile strings, numbers, lists or mappings, a key deleted, or
  an unknown key added. Every outcome must satisfy the fuzz target's
  properties (``tests/fuzz_target.py``): refused with located findings of
  known rules, or compiled to output the verifier accepts; nothing raised;
- the fuzz target itself: its seeds compile, it detects what it must, a
  short derandomized run, and its command line.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import relaygate.checks
from relaygate import compile as compile_
from relaygate.errors import VerificationFailed
from relaygate.findings import Finding, Severity
from relaygate.load import load_document
from relaygate.pipeline import ValidationResult
from relaygate.verify import verify
from tests import fuzz_target
from tests.conftest import AS_OF, EXAMPLE
from tests.test_cases import read_expected

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from synth import generate

DAY = dt.date.fromisoformat(AS_OF)
HOSTILE = Path(__file__).resolve().parent / "hostile"
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- random valid inventories with lifecycle changes --------------------------------------

_LIFECYCLE = {
    "retired": "status: retired\nstatus_reason: request\nstatus_date: 2026-11-01\n",
    "suspended": "status: suspended\nstatus_reason: investigation\nstatus_date: 2026-11-20\n"
    "status_ticket: SEC-9001\n",
    "revoked": "status: revoked\nstatus_reason: phishing\nstatus_date: 2026-11-28\n",
}


@SETTINGS
@given(
    records=st.integers(min_value=2, max_value=40),
    seed=st.integers(0, 2**16),
    changes=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(_LIFECYCLE))), max_size=8
    ),
)
def test_lifecycle_changes_compile_and_agree(
    records: int, seed: int, changes: list[tuple[int, str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "a"
        generate(root, records, seed)
        files = sorted((root / "devices").glob("*/*.yaml"))
        retired: set[str] = set()
        for pick, status in changes:
            record = files[pick % len(files)]
            text = record.read_text(encoding="utf-8")
            if not text.endswith("status: active\n"):
                continue  # already changed, or generated inactive: keep its history
            record.write_text(text.removesuffix("status: active\n") + _LIFECYCLE[status])
            if status == "retired":
                retired.add(record.stem)
        result = compile_.build(root, DAY)
        assert result.validation.findings == []
        assert result.artifacts is not None and result.validation.inventory is not None
        assert verify(result.validation.inventory, result.artifacts) == []
        for name in retired:
            # record names are unique and distinctive; a retired one is history only
            assert not [p for p, t in result.artifacts.items() if f"{name}\n" in t or name in t]
        # the same files elsewhere compile to the same bytes (no path, no clock)
        copy = Path(tmp) / "elsewhere" / "inventory"
        shutil.copytree(root, copy)
        again = compile_.build(copy, DAY)
        assert again.artifacts == result.artifacts


# --- structure-aware mutations ---------------------------------------------------------------

Pointer = tuple[str | int, ...]

HOSTILE_TEXT = [
    "",
    " ",
    "OK",
    "RELAY",
    "PERMIT",
    "REJECT",
    "DUNNO",
    "ok",
    "12345",
    "0",
    "0.0.0.0/0",
    "::/0",
    "10.20.30.41\nOK",
    "10.20.30.41\tOK",
    "a\rb",
    "line\nbreak",
    "trailing\n",
    "#",
    "a,b",
    "a;b",
    '"',
    "'",
    "}",
    "{",
    "*",
    "&a",
    "!!str",
    "<<",
    "no",
    "on",
    "~",
    "null",
    "0755",
    "1:30",
    ".inf",
    "\u202e",
    "\u200b",
    "\u2028",
    "\x00",
    "\x85",
    "lib.\u0435xample.edu",
    "xn--xample-2of.edu",
    "010.20.30.41",
    "10.20.30.41/24",
    "10.20.30.41/255.255.255.0",
    "fe80::1%eth0",
    "::ffff:10.20.30.41",
    "10.1.0.25",
    "2001:db8:1001::25",
    "2001:db8:1020:310::41",
    "10.20.30.99",
    "x" * 300,
    "a@b",
    "@lib.example.edu",
    "postmaster@",
    "hodges-scans@lib.example.edu",
    "svc-lib-illiad@example.edu",
    "adean@example.edu",
    "9999-12-31",
    "2026-02-30",
    "2026-11-29",
    "static",
    "static-dhcp",
    "ip",
    "none",
    "oauth2",
    "revoked",
    "suspended",
    "retired",
    "active",
    "dean",
    "server",
    "application",
    "libraries",
    "NS-1",
    "unauthenticated-smtp-is-legacy-and-insecure",
]

_SCALARS = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=24),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(["name", "email", "role", "x", "<<", "address"]), children, max_size=3
        ),
    ),
    max_leaves=6,
)

MUTABLE_FILES = sorted(
    [p.relative_to(EXAMPLE) for p in (EXAMPLE / "devices").glob("*/*.yaml")]
    + [Path("site.yaml"), Path("units.yaml"), Path("netreg.yaml")]
)


def paths(value: Any, pointer: Pointer = ()) -> Iterator[Pointer]:
    """Every pointer into ``value``, containers before their members."""
    yield pointer
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*pointer, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*pointer, index))


def _parent(data: Any, pointer: Pointer) -> Any:
    for step in pointer[:-1]:
        data = data[step]
    return data


def mutate(data: dict[str, Any], pointer: Pointer, operation: str, value: Any) -> None:
    """Apply one structure-aware edit at ``pointer`` (the root pointer gains a field)."""
    if not pointer:
        data["x-hostile"] = value
        return
    parent, last = _parent(data, pointer), pointer[-1]
    if operation == "replace":
        parent[last] = value
    elif operation == "delete":
        del parent[last]
    elif operation == "wrap":
        parent[last] = [parent[last], value]
    elif operation == "duplicate" and isinstance(parent, list):
        parent.insert(int(last), parent[int(last)])
    elif isinstance(parent[last], dict):  # "add": an unknown or hostile key in a mapping
        parent[last][str(value)[:40] or "x"] = value
    else:
        parent[last] = value


@SETTINGS
@given(
    file=st.sampled_from(MUTABLE_FILES),
    pick=st.integers(0, 10**6),
    operation=st.sampled_from(
        ["replace", "replace", "replace", "delete", "wrap", "duplicate", "add"]
    ),
    value=VALUES,
)
def test_structure_aware_mutations_are_refused_with_located_findings_or_compile_cleanly(
    file: Path, pick: int, operation: str, value: Any
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "inventory"
        shutil.copytree(EXAMPLE, root)
        loaded = load_document(root / file, str(file), 1 << 20).document
        assert loaded is not None
        data = loaded.data
        pointers = list(paths(data))
        mutate(data, pointers[pick % len(pointers)], operation, value)
        (root / file).write_text(
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        # refused with located findings of known rules, or compiled and verified;
        # nothing raised, every message one line, no hang (fuzz_target.check)
        fuzz_target.check(root)


# --- the byte-level fuzz target -------------------------------------------------------------


def test_every_seed_compiles_through_the_fuzz_target() -> None:
    before = fuzz_target.STATS.compiled
    seeds = [
        (mode, target) for mode in fuzz_target.MODES for target in fuzz_target.seed_corpus(mode)
    ]
    assert len(seeds) > 30
    for mode, target in seeds:
        fuzz_target.one_input((EXAMPLE / target).read_bytes(), mode, target)
    assert fuzz_target.STATS.compiled - before == len(seeds)


def test_fuzz_target_restores_the_file_it_overwrote() -> None:
    fuzz_target.one_input(b"status: [", "record")
    fuzz_target.one_input(b"\xff\xfe", "site")
    workspace = fuzz_target._workspace().root
    for mode in fuzz_target.MODES:
        path = fuzz_target.TARGETS[mode]
        assert (workspace / path).read_bytes() == (EXAMPLE / path).read_bytes()


def _result(findings: list[Finding]) -> compile_.CompileResult:
    return compile_.CompileResult(ValidationResult(findings=findings, inventory=None), None)


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (RuntimeError("boom"), "crash: RuntimeError: boom"),
        (VerificationFailed("disagree"), "VerificationFailed on user data"),
        (
            [Finding("site.yaml", 0, 1, "yaml.syntax", Severity.ERROR, "m", "h")],
            "finding without a location",
        ),
        (
            [Finding("site.yaml", 1, 1, "no.such-rule", Severity.ERROR, "m", "h")],
            "unknown rule id",
        ),
        (
            [Finding("site.yaml", 1, 1, "yaml.syntax", Severity.ERROR, "two\nlines", "h")],
            "a finding message spans lines",
        ),
        (
            [Finding("site.yaml", 1, 1, "yaml.syntax", Severity.WARNING, "m", "h")],
            "no artifacts, but no error finding",
        ),
    ],
    ids=["crash", "internal-error", "unlocated", "unknown-rule", "two-lines", "no-error"],
)
def test_fuzz_target_detects_a_broken_pipeline(
    outcome: object, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(root: Path, as_of: dt.date) -> compile_.CompileResult:
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, list)
        return _result(outcome)

    monkeypatch.setattr(compile_, "build", build)  # the module fuzz_target calls
    with pytest.raises(fuzz_target.FuzzFailure, match=message):
        fuzz_target.one_input(b"name: x\n", "record")


def test_fuzz_target_counts_a_known_bug_instead_of_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No bug is open today, so stand one in: a check that crashes on every input.
    def crash(*_args: object) -> object:
        raise ZeroDivisionError("a stand-in bug")

    monkeypatch.setattr(relaygate.checks, "inventory_checks", crash)
    bug = fuzz_target.KnownBug(
        "stand-in", "<none>", lambda f: isinstance(f.cause, ZeroDivisionError)
    )
    monkeypatch.setattr(fuzz_target, "KNOWN_BUGS", (bug,))
    record = (EXAMPLE / fuzz_target.TARGETS["record"]).read_bytes()
    before = fuzz_target.STATS.known["stand-in"]
    fuzz_target.one_input(record, "record")  # counted, not raised
    assert fuzz_target.STATS.known["stand-in"] == before + 1
    monkeypatch.setattr(fuzz_target, "KNOWN_BUGS", ())
    with pytest.raises(fuzz_target.FuzzFailure):
        fuzz_target.one_input(record, "record")


def test_known_bugs_are_pinned_by_open_hostile_cases() -> None:
    for bug in fuzz_target.KNOWN_BUGS:
        for case in bug.case.split(", "):
            folder = HOSTILE / case
            assert folder.is_dir(), f"{bug.id}: no hostile case {case}"
            assert read_expected(folder)[1], f"{bug.id}: {case} is no longer xfail; drop the bug"


def test_fuzz_target_short_run() -> None:
    before = fuzz_target.STATS.inputs
    fuzz_target.fuzz_test(fuzz_target.MODES, examples=40, derandomize=True)()
    assert fuzz_target.STATS.inputs - before >= 40


def test_fuzz_command_line_runs_for_the_time_given_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        code = fuzz_target.main(
            ["--seconds", "1", "--batch", "4", "--seed", "5", "--failures", str(tmp_path / "f")]
        )
    assert code == 0, out.getvalue()
    assert "no failure" in out.getvalue()
    saved = tmp_path / "input.bin"
    saved.write_bytes(b"name: [unclosed\n")
    out = io.StringIO()
    with redirect_stdout(out):
        code = fuzz_target.main(["--replay", str(saved), "--mode", "record"])
    assert code == 0, out.getvalue()
    assert out.getvalue() == "ok (devices/libraries/lib-hodges-3f-copier.yaml): refused\n"

    # A crash is reported as a failure on replay (a stand-in bug: no real one is open).
    def crash(*_args: object) -> object:
        raise ZeroDivisionError("a stand-in bug")

    monkeypatch.setattr(relaygate.checks, "inventory_checks", crash)
    saved.write_bytes((EXAMPLE / fuzz_target.TARGETS["record"]).read_bytes())
    out = io.StringIO()
    with redirect_stdout(out):
        code = fuzz_target.main(["--replay", str(saved), "--mode", "record"])
    assert code == 1, out.getvalue()
    assert out.getvalue().startswith("FAIL (devices/libraries/lib-hodges-3f-copier.yaml): crash")
