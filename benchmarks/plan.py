"""The cache targets at 10k records, each against the floor measured in the same run.

A synthetic, valid inventory (``synth.generate``) is committed to a fresh git
repository in a temporary folder, with its own cache (``XDG_CACHE_HOME`` and
``.relaygate/`` inside that folder). Every relaygate figure is the real CLI in
a child process, interpreter start included; the clock is the child's CPU
time (``--clock cpu``, user + system, steady on a shared machine) or elapsed
time (``--clock wall``). Peak memory is the child's max RSS. relaygate's own
modules are byte-compiled first, as installing the package does: otherwise a
``PYTHONDONTWRITEBYTECODE`` in the caller's environment would have every child
compile them from source again (about 0.15 s a run), a cost the installed
tool does not have.

* floor: read every file + libyaml parse + jsonschema (as ``benchmarks/validate.py``),
  in this process, best of ``--repeat``;
* cold validate: ``relaygate validate`` with an empty cache (it fills it);
* warm validate: the same again, nothing changed;
* plan, one change, warm: after a ``plan --base HEAD`` and a ``compile`` of the
  clean tree, one record's ``model`` line changes; ``relaygate plan --base HEAD``;
* compile, one change: ``relaygate compile --out`` after the same change; its
  target allows for rendering, which is measured in process (policy + render);
* check-jsonschema: ``check-jsonschema --schemafile device.schema.json`` over every
  record, against relaygate's schema step alone (``schema.check`` on the parsed
  records, in process) and against the whole cold ``relaygate validate``.

The verdicts are a report: the exit status is 0 whether targets pass or fail.

    python benchmarks/plan.py                  # 10,000 records, cpu clock, best of 3
    python benchmarks/plan.py --quick          # 200 records, once (for tests)
"""

from __future__ import annotations

import argparse
import compileall
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relaygate
from relaygate import schema
from relaygate.load import load_document
from relaygate.pipeline import load
from relaygate.policy import build_policy
from relaygate.render import Header
from relaygate.render.targets import render_all
from synth import AS_OF, generate
from validate import _validators, run_floor

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
TARGETS = {
    "cold validate": 0.7,
    "warm validate": 0.2,
    "plan, one change, warm": 0.3,
    "compile, one change": 0.3,  # plus rendering
}
PLAN_MEMORY_MB = 200.0
CHECK_JSONSCHEMA_TARGET = 10.0


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    peak_mb: float


def _relaygate() -> list[str]:
    beside = Path(sys.executable).parent / "relaygate"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "import sys; from relaygate.cli import main; sys.exit(main())"]


def child(argv: list[str], env: dict[str, str], cwd: Path, clock: str, ok: set[int]) -> Run:
    """One child process: its CPU (or elapsed) seconds and its own peak memory."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        error = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{argv[0]} {' '.join(argv[1:3])} exited {code}:\n{error[-2000:]}")
    if process.stderr:
        process.stderr.close()
    seconds = usage.ru_utime + usage.ru_stime if clock == "cpu" else elapsed
    per_unit = 1 if sys.platform == "darwin" else 1024
    return Run(seconds, usage.ru_maxrss * per_unit / (1024 * 1024))


def _best(function: Callable[[], Any], repeat: int, clock: str) -> float:
    measure = time.process_time if clock == "cpu" else time.perf_counter
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = measure()
        function()
        best = min(best, measure() - start)
    return best


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.edu",
            *args,
        ],
        check=True,
        capture_output=True,
    )


def _change_one_record(inventory: Path) -> Path:
    record = sorted((inventory / "devices").glob("*/*.yaml"))[0]
    lines = record.read_text("utf-8").splitlines(keepends=True)
    lines = [
        "model: Benchmark Model 9000\n" if line.startswith("model:") else line for line in lines
    ]
    record.write_text("".join(lines), "utf-8")
    return record


def _schema_step(inventory: Path) -> Callable[[], None]:
    documents = [
        document
        for path in sorted((inventory / "devices").glob("*/*.yaml"))
        if (document := load_document(path, path.name, 65536).document) is not None
    ]

    def run() -> None:
        for document in documents:
            schema.check(document, "device")

    return run


def _render_step(inventory: Path) -> Callable[[], None]:
    inventory_model = load(inventory, AS_OF).inventory
    if inventory_model is None:
        raise SystemExit("the changed synthetic inventory has errors")

    def run() -> None:
        render_all(build_policy(inventory_model), Header(site=inventory_model.site.name))

    return run


def _byte_compile() -> None:
    """relaygate's modules as an installed package has them: compiled (``__pycache__``)."""
    if not compileall.compile_dir(Path(relaygate.__file__).parent, quiet=1):
        raise SystemExit("relaygate's modules do not byte-compile")


def measure(records: int, repeat: int, clock: str, seed: int) -> list[str]:
    lines: list[str] = []
    _byte_compile()
    with tempfile.TemporaryDirectory(prefix="relaygate-bench-plan-") as tmp:
        repo = Path(tmp) / "repo"
        inventory = repo / "inventory"
        generate(inventory, records, seed)
        _git(repo, "init", "-q")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "synthetic inventory")
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(tmp) / "xdg"))
        cli = _relaygate()
        day = ["--as-of", AS_OF.isoformat()]
        validate_argv = [*cli, "validate", "--inventory", "inventory", *day]
        plan_argv = [*cli, "plan", "--inventory", "inventory", "--base", "HEAD", *day]
        compile_argv = [*cli, "compile", "--inventory", "inventory", "--out", "../out", *day]

        validators = _validators()
        floor = _best(lambda: run_floor(inventory, validators), repeat, clock)

        def fresh(argv: list[str], ok: set[int], reset: Callable[[], None]) -> Run:
            runs = []
            for _ in range(repeat):
                reset()
                runs.append(child(argv, env, repo, clock, ok))
            return min(runs, key=lambda r: r.seconds)

        def no_cache() -> None:
            shutil.rmtree(repo / ".relaygate", ignore_errors=True)

        cold = fresh(validate_argv, {0}, no_cache)
        warm = fresh(validate_argv, {0}, lambda: None)

        # What CI has cached before the change: the clean tree planned and compiled.
        child(plan_argv, env, repo, clock, {0})
        child(compile_argv, env, Path(tmp) / "repo", clock, {0})
        record = _change_one_record(inventory)
        original = record.read_text("utf-8")
        plan = fresh(plan_argv, {0}, lambda: None)
        # Each compile must see a change it has not cached: alternate two edits.
        edits = iter(range(1000))

        def another_change() -> None:
            record.write_text(original.replace("9000", f"{9001 + next(edits)}"), "utf-8")

        compiled = fresh(compile_argv, {0}, another_change)
        render = _best(_render_step(inventory), repeat, clock)

        schema_step = _best(_schema_step(inventory), repeat, clock)
        checker = shutil.which("check-jsonschema") or str(
            Path(sys.executable).parent / "check-jsonschema"
        )
        records_glob = sorted(
            p.relative_to(inventory).as_posix() for p in (inventory / "devices").glob("*/*.yaml")
        )
        check_jsonschema = (
            _check_jsonschema(checker, records_glob, env, inventory, clock, repeat)
            if Path(checker).exists()
            else None
        )

    load_average = os.getloadavg()
    lines.append(
        f"relaygate cache targets at {records} records ({clock} clock, best of {repeat}, "
        f"{os.cpu_count()} CPUs, load average {load_average[0]:.2f} {load_average[1]:.2f};"
        " relaygate byte-compiled as installed)"
    )
    lines.append(f"floor (read + libyaml + jsonschema, in process): {floor:.3f} s")
    rows = [
        ("cold validate", cold.seconds, TARGETS["cold validate"] * floor, ""),
        ("warm validate", warm.seconds, TARGETS["warm validate"] * floor, ""),
        ("plan, one change, warm", plan.seconds, TARGETS["plan, one change, warm"] * floor, ""),
        (
            "compile, one change",
            compiled.seconds,
            TARGETS["compile, one change"] * floor + render,
            f" (limit includes rendering {render:.3f} s)",
        ),
    ]
    lines.append(f"{'measure':<24} {'seconds':>8} {'x floor':>8} {'limit s':>8}  verdict")
    for name, seconds, limit, note in rows:
        verdict = "PASS" if seconds <= limit else "FAIL"
        lines.append(
            f"{name:<24} {seconds:>8.3f} {seconds / floor:>8.2f} {limit:>8.3f}  "
            f"{verdict} (target {TARGETS[name]}x floor{note})"
        )
    verdict = "PASS" if plan.peak_mb <= PLAN_MEMORY_MB else "FAIL"
    lines.append(
        f"plan peak memory: {plan.peak_mb:.1f} MB: {verdict} (target {PLAN_MEMORY_MB:.0f} MB)"
    )
    lines.append(f"schema step in process (schema.check on every record): {schema_step:.3f} s")
    if check_jsonschema is None:
        lines.append("check-jsonschema: not installed; comparison skipped")
    else:
        ratio = check_jsonschema / schema_step if schema_step > 0 else float("inf")
        whole = check_jsonschema / cold.seconds
        verdict = "PASS" if ratio >= CHECK_JSONSCHEMA_TARGET else "FAIL"
        lines.append(
            f"check-jsonschema on every record: {check_jsonschema:.3f} s; relaygate's schema step "
            f"is {ratio:.1f}x faster: {verdict} (aim {CHECK_JSONSCHEMA_TARGET:.0f}x); "
            f"the whole cold validate is {whole:.1f}x faster"
        )
    return lines


def _check_jsonschema(
    checker: str, records: list[str], env: dict[str, str], cwd: Path, clock: str, repeat: int
) -> float:
    """check-jsonschema over every record (formats off: ours are not its formats)."""
    argv = [
        checker,
        "--schemafile",
        str(SCHEMAS / "device.schema.json"),
        "--disable-formats",
        "*",
        *records,
    ]
    return min(child(argv, env, cwd, clock, {0, 1}).seconds for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="200 records, once (for tests)")
    args = parser.parse_args(argv)
    records = 200 if args.quick else args.records
    repeat = 1 if args.quick else max(1, args.repeat)
    for line in measure(records, repeat, args.clock, args.seed):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
