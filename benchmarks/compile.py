"""Benchmark ``relaygate compile`` against the validate floor, measured in the same run.

For each size a synthetic, valid inventory (``synth.generate``) is written to a
temporary folder, then measured in this process, best of ``--repeat``:

* floor: read every file + libyaml parse + jsonschema validate (the same floor
  as ``benchmarks/validate.py``);
* compile: ``relaygate.compile.build`` (validate, policy, every renderer, the
  cross-target verifier and the manifest) plus ``write`` into a fresh folder.

Aerleon: when ``aclgen`` is on PATH a comparison against it would render the
same addresses; it is not a dependency of relaygate, so without it the line
says it was skipped rather than inventing a number.

    python benchmarks/compile.py                 # 1k, 10k and 50k
    python benchmarks/compile.py --quick         # 200 records, once
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relaygate import compile as compile_
from synth import generate
from validate import _validators, run_floor

AS_OF = dt.date(2026, 11, 29)
TARGET_RATIO = 2.0


def _best(function: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _compile(root: Path, out: Path) -> None:
    result = compile_.build(root, AS_OF)
    if result.artifacts is None:
        raise SystemExit(f"synthetic inventory has errors: {result.validation.findings[:3]}")
    shutil.rmtree(out, ignore_errors=True)
    compile_.write(out, result.artifacts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = [200] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 1 if args.quick else args.repeat
    validators = _validators()
    print(f"{'records':>8} {'floor s':>9} {'compile s':>10} {'ratio':>6}")
    ratios: dict[int, float] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "inventory"
            generate(root, size, seed=0)
            floor = _best(lambda root=root: run_floor(root, validators), repeat)  # type: ignore[misc]
            out = Path(tmp) / "out"
            took = _best(lambda root=root, out=out: _compile(root, out), repeat)  # type: ignore[misc]
            ratios[size] = took / floor
            print(f"{size:>8} {floor:>9.3f} {took:>10.3f} {took / floor:>6.2f}", flush=True)
    if 10000 in ratios:
        verdict = "PASS" if ratios[10000] <= TARGET_RATIO else "FAIL"
        print(
            f"target: compile at 10k within {TARGET_RATIO}x of floor: {verdict} "
            f"(ratio {ratios[10000]:.2f})"
        )
    if shutil.which("aclgen") is None:
        print("aerleon: aclgen is not installed; comparison skipped")
    else:  # pragma: no cover - not installed on the project's machines
        print("aerleon: aclgen found, but the comparison policy is not generated yet; skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
