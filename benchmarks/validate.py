"""Benchmark ``relaygate validate`` against the floor of reading, parsing and schema-checking.

For each size a synthetic, valid inventory (``synth.generate``) is written to
a temporary folder, then measured in this process:

* floor: read every file (site, units, netreg, all devices), ``yaml.load``
  with libyaml (``CSafeLoader`` without the timestamp resolver, so dates stay
  text as the schemas expect) and ``Draft202012Validator(schema,
  format_checker=FormatChecker()).iter_errors`` against the matching schema of
  ``schemas/`` (one validator per schema, built once);
* relaygate: ``relaygate.pipeline.validate(root, 2026-11-29)``; it must
  report no errors;

each the best of ``--repeat`` runs, and the peak memory (max RSS) of
``relaygate validate`` in a fresh child process.

The verdicts are a report: the exit status is 0 whether they pass or fail,
and nonzero only if something crashes or the synthetic inventory has errors.

    python benchmarks/validate.py                      # 1k, 10k and 50k, best of 3
    python benchmarks/validate.py --quick              # 200 records, once (for tests)
    python benchmarks/validate.py --sizes 10000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker

from relaygate.pipeline import validate

try:  # run as a script (benchmarks/ is sys.path[0]) or imported as benchmarks.validate
    from synth import AS_OF, generate
except ImportError:  # pragma: no cover - depends on how the module is loaded
    from benchmarks.synth import AS_OF, generate

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
DEFAULT_SIZES = (1000, 10000, 50000)
RATIO_SIZE = 10000
RATIO_TARGET = 1.5
MEMORY_SIZE = 50000
MEMORY_TARGET_MB = 500.0
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _FloorLoader(yaml.CSafeLoader):
    """libyaml's safe loader, but dates stay strings (the schemas' ``date`` is a string)."""


_FloorLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}

# The child whose peak memory is measured, and the parent that reads it: a fresh
# parent per measurement, because RUSAGE_CHILDREN keeps the maximum of all children.
_CHILD = (
    "import datetime, pathlib, sys\n"
    "from relaygate.pipeline import validate\n"
    "result = validate(pathlib.Path(sys.argv[1]), datetime.date.fromisoformat(sys.argv[2]))\n"
    "sys.exit(1 if result.errors else 0)\n"
)
_METER = (
    "import resource, subprocess, sys\n"
    "subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], check=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


class BenchmarkError(Exception):
    """The benchmark cannot report: the synthetic inventory is not valid, or a run failed."""


@dataclass(frozen=True, slots=True)
class Row:
    records: int
    floor_s: float
    relaygate_s: float
    peak_mb: float

    @property
    def ratio(self) -> float:
        return self.relaygate_s / self.floor_s if self.floor_s > 0 else float("inf")


def _validators() -> dict[str, Draft202012Validator]:
    checker = FormatChecker()
    validators: dict[str, Draft202012Validator] = {}
    for name in ("site", "units", "netreg", "device"):
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text("utf-8"))
        validators[name] = Draft202012Validator(schema, format_checker=checker)
    return validators


def _floor_one(path: str, validator: Draft202012Validator) -> int:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    data = yaml.load(text, Loader=_FloorLoader)
    return sum(1 for _ in validator.iter_errors(data))


def run_floor(root: Path, validators: dict[str, Draft202012Validator]) -> int:
    """Read, parse and schema-check every file; the number of schema errors."""
    errors = _floor_one(str(root / "site.yaml"), validators["site"])
    errors += _floor_one(str(root / "units.yaml"), validators["units"])
    errors += _floor_one(str(root / "netreg.yaml"), validators["netreg"])
    device = validators["device"]
    with os.scandir(root / "devices") as units:
        for unit in units:
            with os.scandir(unit.path) as entries:
                for entry in entries:
                    errors += _floor_one(entry.path, device)
    return errors


def run_relaygate(root: Path) -> int:
    """``relaygate validate`` in process; the number of errors (warnings are not counted)."""
    result = validate(root, AS_OF)
    if result.errors:
        shown = "\n".join([str(f) for f in result.findings if f.is_error][:10])
        raise BenchmarkError(f"relaygate found {result.errors} errors in {root}:\n{shown}")
    return result.errors


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(function: Callable[[], Any], clock: Callable[[], float]) -> float:
    """Seconds one call takes, after collecting the previous run's garbage."""
    gc.collect()
    start = clock()
    function()
    return clock() - start


def peak_memory_mb(root: Path) -> float:
    """Max RSS of ``relaygate validate`` on ``root`` in a fresh child process, in MiB."""
    completed = subprocess.run(
        [sys.executable, "-c", _METER, _CHILD, str(root), AS_OF.isoformat()],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchmarkError(
            f"the memory child failed (exit {completed.returncode}):\n{completed.stderr}"
        )
    max_rss = int(completed.stdout.strip().splitlines()[-1])
    per_unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return max_rss * per_unit / (1024 * 1024)


def profile_text(root: Path, top: int = 25) -> str:
    """A cProfile of one ``relaygate validate`` run, the ``top`` entries by cumulative time."""
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    validate(root, AS_OF)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def measure(
    records: int, repeat: int, seed: int, profile: bool, clock: Callable[[], float]
) -> tuple[Row, str | None]:
    validators = _validators()
    with tempfile.TemporaryDirectory(prefix=f"relaygate-bench-{records}-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate(root, records, seed)
        _log(f"{records}: generated in {time.perf_counter() - start:.1f} s")

        floor_errors = run_floor(root, validators)
        if floor_errors:
            raise BenchmarkError(f"{floor_errors} schema errors in the synthetic inventory")
        run_relaygate(root)  # checks validity once before timing anything

        floor_s = relaygate_s = float("inf")
        for _ in range(repeat):  # interleaved, so drift hits both alike
            floor_s = min(floor_s, _timed(lambda: run_floor(root, validators), clock))
            relaygate_s = min(relaygate_s, _timed(lambda: run_relaygate(root), clock))
        _log(f"{records}: floor {floor_s:.3f} s, relaygate {relaygate_s:.3f} s")

        peak = peak_memory_mb(root)
        _log(f"{records}: peak {peak:.1f} MB")
        profiled = profile_text(root) if profile else None
    return Row(records, floor_s, relaygate_s, peak), profiled


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(rows: list[Row]) -> str:
    lines = [
        f"{'records':>8}  {'floor s':>9}  {'relaygate s':>11}  {'ratio':>6}  {'peak MB':>8}",
    ]
    lines += [
        f"{r.records:>8}  {r.floor_s:>9.3f}  {r.relaygate_s:>11.3f}  {r.ratio:>6.2f}  "
        f"{r.peak_mb:>8.1f}"
        for r in rows
    ]
    by_size = {r.records: r for r in rows}
    at_ratio = by_size.get(RATIO_SIZE)
    if at_ratio is None:
        lines.append(
            f"target: validate at 10k within {RATIO_TARGET}x of floor: SKIP "
            f"({RATIO_SIZE} not measured)"
        )
    else:
        verdict = "PASS" if at_ratio.ratio <= RATIO_TARGET else "FAIL"
        lines.append(
            f"target: validate at 10k within {RATIO_TARGET}x of floor: {verdict} "
            f"(ratio {at_ratio.ratio:.2f})"
        )
    at_memory = by_size.get(MEMORY_SIZE)
    if at_memory is None:
        lines.append(
            f"target: peak memory at 50k under {MEMORY_TARGET_MB:.0f} MB: SKIP "
            f"({MEMORY_SIZE} not measured)"
        )
    else:
        verdict = "PASS" if at_memory.peak_mb < MEMORY_TARGET_MB else "FAIL"
        lines.append(
            f"target: peak memory at 50k under {MEMORY_TARGET_MB:.0f} MB: {verdict} "
            f"({at_memory.peak_mb:.1f} MB)"
        )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from error
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark relaygate validate against its floor.")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated record counts (default 1000,10000,50000)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inventory")
    parser.add_argument("--quick", action="store_true", help="200 records, one run (for tests)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time (default); cpu: this process's CPU time, steadier on a busy host",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"print a cProfile (top 25 cumulative) of relaygate at {RATIO_SIZE} records "
        "(or the largest size if 10000 is not measured)",
    )
    args = parser.parse_args(argv)
    sizes: list[int] = [200] if args.quick else args.sizes
    repeat: int = 1 if args.quick else max(1, args.repeat)
    profile_size = RATIO_SIZE if RATIO_SIZE in sizes else max(sizes)

    rows: list[Row] = []
    profiles: list[str] = []
    try:
        for size in sizes:
            row, profiled = measure(
                size, repeat, args.seed, args.profile and size == profile_size, CLOCKS[args.clock]
            )
            rows.append(row)
            if profiled is not None:
                profiles.append(f"cProfile of relaygate validate at {size} records:\n{profiled}")
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    print(
        f"relaygate validate benchmark (best of {repeat}, {args.clock} clock, "
        f"as of {AS_OF.isoformat()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    print(report(rows))
    for text in profiles:
        print()
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
