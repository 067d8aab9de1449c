"""Fuzz target: raw bytes as a device record (or as site.yaml) through the whole pipeline.

Input: bytes. ``one_input(data, mode)`` writes them over one file of a private
copy of the example inventory (``mode="record"``: a legacy copier's record;
``mode="site"``: ``site.yaml``), runs load -> schema -> checks -> policy ->
render -> verify (``relaygate.compile.build``) and restores the file.

What it asserts, and nothing more (the fuzzer does not know what the bytes
mean, only what must hold for every input):

- nothing is raised: not a foreign exception (a crash), and not a relaygate
  error either, since bad user data must become findings, never an internal
  error (an ``InternalError``/``RenderRefused``/``VerificationFailed`` on user
  data means a guard caught what validation let through: fail-closed, but a
  bug);
- a refused inventory has at least one error finding, and every finding is
  located (line >= 1, column >= 1), names a path and a rule of the catalogue,
  and its message is one line (reports print one finding per line);
- an accepted inventory compiled to artifacts the cross-target verifier
  accepts, with no error finding;
- one input takes less than ``SLOW_SECONDS`` (no hang, no alias bomb).

A failure that is an instance of an already reported bug (``KNOWN_BUGS``,
each pinned by a strict-xfail case of the hostile corpus) is counted, not
raised, so a run keeps looking for new ones.

Generation is hypothesis (``st.binary()`` plus byte-level mutations of a seed
corpus: every example record and ``site.yaml``, mutated by flips, deletions,
duplications, splices and hostile tokens), so no compiled fuzzer is needed.

Run for a bounded time::

    python tests/fuzz_target.py --seconds 60 [--mode record|site|both] [--seed N]
    python tests/fuzz_target.py --replay FILE --mode record   # re-run one saved input

A failing input is shrunk by hypothesis, printed, and saved under
``build/fuzz-failures/`` for ``--replay``. Exit 0: no failure in the time
given; 1: a failure was found; 2: usage error.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import datetime as dt
import hashlib
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from relaygate import compile as compile_
from relaygate.errors import RelaygateError
from relaygate.findings import Finding
from relaygate.rules import RULES
from relaygate.verify import verify

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inventory"
AS_OF = dt.date(2026, 11, 29)
FAILURES = ROOT / "build" / "fuzz-failures"
#: One input validates and compiles 37 small files; far beyond this is a hang.
SLOW_SECONDS = 5.0

Mode = Literal["record", "site"]
MODES: tuple[Mode, ...] = ("record", "site")
TARGETS: dict[Mode, Path] = {
    # a legacy copier: the record with the most rules behind it
    "record": Path("devices/libraries/lib-hodges-3f-copier.yaml"),
    "site": Path("site.yaml"),
}


class FuzzFailure(AssertionError):
    """An input broke a property; the message says which and how.

    ``cause`` is the exception the pipeline raised (None when a property of
    its result failed), ``finding`` the finding that broke one; ``root`` is
    the inventory it ran on.
    """

    def __init__(
        self,
        message: str,
        root: Path,
        cause: BaseException | None = None,
        finding: Finding | None = None,
    ) -> None:
        super().__init__(message)
        self.root = root
        self.cause = cause
        self.finding = finding


@dataclass(frozen=True)
class KnownBug:
    """A compiler bug already reported and pinned by a strict-xfail hostile case.

    While it is open the fuzzers count its hits instead of failing, so they
    keep looking for new bugs. Delete the entry when its case stops failing.
    """

    id: str
    case: str  # tests/hostile/<family>/<case>, the reproduction
    matches: Callable[[FuzzFailure], bool]


#: Open bugs, each pinned by a strict-xfail hostile case. Empty: every bug the
#: fuzzers and the corpus found so far is fixed (see git history for the list).
KNOWN_BUGS: tuple[KnownBug, ...] = ()


def known_bug(failure: FuzzFailure) -> KnownBug | None:
    """The open bug this failure is an instance of, if any."""
    return next((bug for bug in KNOWN_BUGS if bug.matches(failure)), None)


@dataclass
class Stats:
    """What a run did: inputs per outcome and the rules that refused them."""

    inputs: int = 0
    compiled: int = 0
    refused: int = 0
    rules: collections.Counter[str] = field(default_factory=collections.Counter)
    known: collections.Counter[str] = field(default_factory=collections.Counter)


STATS = Stats()


@dataclass
class _Workspace:
    root: Path


_WORKSPACE: list[_Workspace] = []


def _workspace() -> _Workspace:
    """A private copy of the example inventory, made once per process."""
    if not _WORKSPACE:
        base = Path(tempfile.mkdtemp(prefix="relaygate-fuzz-"))
        atexit.register(shutil.rmtree, base, True)
        root = base / "inventory"
        shutil.copytree(EXAMPLE, root)
        _WORKSPACE.append(_Workspace(root))
    return _WORKSPACE[0]


def check(root: Path, *, tolerate_known: bool = True) -> None:
    """Run the pipeline on ``root`` and assert the properties of the module docstring.

    With ``tolerate_known`` an instance of an open ``KNOWN_BUGS`` entry is
    counted in ``STATS.known`` instead of raised.
    """
    STATS.inputs += 1
    try:
        _check(root)
    except FuzzFailure as failure:
        bug = known_bug(failure) if tolerate_known else None
        if bug is None:
            raise
        STATS.known[bug.id] += 1


def _check(root: Path) -> None:
    started = time.monotonic()
    try:
        result = compile_.build(root, AS_OF)
    except RelaygateError as error:
        raise FuzzFailure(
            f"{type(error).__name__} on user data (fail-closed, but a data problem must be "
            f"a finding, not an internal error): {error}",
            root,
            error,
        ) from error
    except Exception as error:
        raise FuzzFailure(f"crash: {type(error).__name__}: {error}", root, error) from error
    elapsed = time.monotonic() - started
    if elapsed > SLOW_SECONDS:
        raise FuzzFailure(f"one input took {elapsed:.1f} s (limit {SLOW_SECONDS} s)", root)
    findings = result.validation.findings
    for finding in findings:
        if finding.rule not in RULES:
            raise FuzzFailure(
                f"unknown rule id {finding.rule!r}: {finding.as_text()}", root, finding=finding
            )
        if finding.line < 1 or finding.column < 1 or not finding.path:
            raise FuzzFailure(
                f"finding without a location: {finding.as_text()}", root, finding=finding
            )
        if any(c in finding.message for c in "\n\r"):
            # text, GitHub and SARIF consumers read one finding per line
            raise FuzzFailure(
                f"a finding message spans lines: {finding.as_text()!r}", root, finding=finding
            )
    errors = [f for f in findings if f.is_error]
    if result.artifacts is None:
        if not errors:
            raise FuzzFailure("no artifacts, but no error finding says why", root)
        STATS.refused += 1
        STATS.rules.update({f.rule for f in errors})
        return
    if errors:
        raise FuzzFailure(f"artifacts despite errors: {[f.as_text() for f in errors]}", root)
    inventory = result.validation.inventory
    if inventory is None:
        raise FuzzFailure("artifacts without a checked inventory", root)
    problems = verify(inventory, result.artifacts)
    if problems:
        raise FuzzFailure(f"the verifier disagrees with compiled output: {problems}", root)
    STATS.compiled += 1


def one_input(
    data: bytes,
    mode: Mode = "record",
    target: Path | None = None,
    *,
    tolerate_known: bool = True,
) -> None:
    """The fuzz entry point: ``data`` as the bytes of one inventory file.

    ``target`` (relative to the inventory root) picks another existing file of
    the kind ``mode`` names, e.g. the record a mutated seed came from.
    ``tolerate_known`` as for ``check``.
    """
    workspace = _workspace()
    relative = target or TARGETS[mode]
    path = workspace.root / relative
    original = (EXAMPLE / relative).read_bytes()
    try:
        path.write_bytes(data)
        check(workspace.root, tolerate_known=tolerate_known)
    finally:
        path.write_bytes(original)


# --- inputs ---------------------------------------------------------------------------


def seed_corpus(mode: Mode) -> list[Path]:
    """Every example file of the kind ``mode`` writes (the starting points of mutation),
    relative to the inventory root."""
    if mode == "site":
        return [TARGETS["site"]]
    return sorted(p.relative_to(EXAMPLE) for p in (EXAMPLE / "devices").glob("*/*.yaml"))


#: Byte strings that mean something to YAML, Unicode, an address parser or a relay
#: config: spliced into seeds so mutations reach the interesting corners quickly.
TOKENS: tuple[bytes, ...] = (
    b"&a ",
    b"*a",
    b"<<: ",
    b"!!python/object/apply:os.system ",
    b"!!binary ",
    b"!local ",
    b"%YAML 1.1\n",
    b"%TAG ! tag:yaml.org,2002:\n",
    b"---\n",
    b"...\n",
    b"? ",
    b"- ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"'",
    b"|",
    b">-",
    b"\\n",
    b"\\r",
    b"\\t",
    b"\\u202e",
    b"\\x00",
    b"#",
    b",",
    b";",
    b"\n",
    b"\r",
    b"\r\n",
    b"\t",
    b"\x00",
    b"\x85",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xae",
    b"\xe2\x80\x8b",
    b"\xe2\x80\xa8",
    b"\xc2\xa0",
    b"\xd0\xb5",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xff",
    b"no",
    b"on",
    b"0755",
    b"1:30",
    b"0x1f",
    b".inf",
    b"~",
    b"null",
    b"1e3",
    b"1.0e+400",
    b"99999999999999999999999",
    b"9" * 4400,
    b'"a\\nb"',
    b"-1",
    b"0",
    b"OK",
    b"RELAY",
    b"PERMIT",
    b"REJECT",
    b"0.0.0.0/0",
    b"::/0",
    b"::ffff:10.20.30.41",
    b"fe80::1%eth0",
    b"010.020.030.041",
    b"10.20.30.41/24",
    b"10.20.30.41/255.255.255.0",
    b"10.1.0.25",
    b"2001:db8:1020:310::41",
    b"xn--exmple-cua.edu",
    b"@example.edu",
    b"status: revoked\n",
    b"auth: none\n",
    b"address: 10.20.30.99\n",
    b"expires_on: 2099-01-01\n",
)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """A seed with 1-8 byte-level mutations (each step drawn, so hypothesis can shrink it)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        size = len(data)
        at = draw(st.integers(0, size))
        op = draw(
            st.sampled_from(("token", "flip", "delete", "duplicate", "splice-line", "random"))
        )
        if op == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "flip" and size:
            index = min(at, size - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            data[at : at + draw(st.integers(1, 64))] = b""
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
        elif op == "splice-line":
            lines = bytes(data).splitlines(keepends=True)
            if lines:
                line = lines[draw(st.integers(0, len(lines) - 1))]
                data[at:at] = line
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@st.composite
def inputs(draw: st.DrawFn, mode: Mode) -> tuple[Path, bytes]:
    """Where to write and what: raw bytes, an unmutated seed, or a mutated seed.

    A seed is written over the file it came from, so an unmutated seed is
    valid and every mutation is measured against a clean inventory.
    """
    target = draw(st.sampled_from(seed_corpus(mode)))
    seed = (EXAMPLE / target).read_bytes()
    data = draw(st.one_of(st.binary(max_size=2048), st.just(seed), mutated(seed)))
    return target, data


Failure = tuple[Mode, Path, bytes]


def fuzz_test(
    modes: tuple[Mode, ...],
    examples: int,
    on_failure: Callable[[Failure], None] | None = None,
    *,
    derandomize: bool = False,
) -> Callable[[], None]:
    """A hypothesis test running ``examples`` inputs through ``one_input``."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        mode = data.draw(st.sampled_from(modes), label="mode")
        target, raw = data.draw(inputs(mode), label="input")
        try:
            one_input(raw, mode, target)
        except FuzzFailure:
            if on_failure is not None:
                on_failure((mode, target, raw))
            raise

    return run


# --- command line ---------------------------------------------------------------------


def _save(data: bytes, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first batch")
    parser.add_argument("--batch", type=int, default=50, help="inputs per hypothesis run")
    parser.add_argument(
        "--failures", type=Path, default=FAILURES, help="where a failing input is saved"
    )
    parser.add_argument("--replay", type=Path, help="run one saved input and report")
    parser.add_argument(
        "--target", type=Path, help="with --replay: the file it replaces (inventory-relative)"
    )
    args = parser.parse_args(argv)
    modes: tuple[Mode, ...] = MODES if args.mode == "both" else (args.mode,)
    if args.replay is not None:
        target = args.target or TARGETS[modes[0]]
        compiled = STATS.compiled
        try:  # a replay shows a known bug too: it is what one replays a failure for
            one_input(args.replay.read_bytes(), modes[0], target, tolerate_known=False)
        except FuzzFailure as failure:
            print(f"FAIL ({target}): {failure}")
            return 1
        outcome = "compiled and verified" if STATS.compiled > compiled else "refused"
        print(f"ok ({target}): {outcome}")
        return 0
    rng = random.Random(args.seed)
    failures: list[Failure] = []
    started = time.monotonic()
    batches = 0
    while time.monotonic() - started < args.seconds:
        batch_seed = rng.getrandbits(64)
        test = fuzz_test(modes, args.batch, failures.append)
        batches += 1
        try:
            hypothesis_seed(batch_seed)(test)()
        except FuzzFailure as failure:
            mode, target, raw = failures[-1]  # the last failing call is the shrunk one
            path = _save(raw, args.failures)
            print(f"FAIL after {STATS.inputs} inputs (batch seed {batch_seed}): {failure}")
            print(f"input ({target}, {len(raw)} bytes): {raw[:400]!r}")
            print(
                f"saved: {path}; replay: python tests/fuzz_target.py --replay {path}"
                f" --mode {mode} --target {target}"
            )
            return 1
    elapsed = time.monotonic() - started
    print(
        f"fuzz ({'+'.join(modes)}): {STATS.inputs} inputs in {elapsed:.0f} s, {batches} batches:"
        f" {STATS.compiled} compiled and verified, {STATS.refused} refused, no failure"
    )
    top = ", ".join(f"{rule} {count}" for rule, count in STATS.rules.most_common(8))
    print(f"most frequent refusals: {top}")
    if STATS.known:
        known = ", ".join(f"{bug} {count}" for bug, count in sorted(STATS.known.items()))
        print(f"hits of known, reported bugs (see KNOWN_BUGS): {known}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
