"""Every command transcript in README.md and docs/*.md runs, and prints what it shows.

A fenced block whose lines start with ``$ `` is a transcript: each ``$ COMMAND`` runs
(bash, standard error merged into standard output) and the lines up to the next ``$ ``
are what it must print. A line ``...`` stands for any number of lines (zero included),
and ``...`` inside a line for any text (a commit id, say).
The transcripts of one document share one sandbox: a copy of the example inventory,
its schemas and the sample logs in ``docs/examples/``, so a later block sees what an
earlier one changed, as a reader following the page would.

A block that shows output which cannot be reproduced here (timings, a deploy to real
relays) is marked on the line before its fence with ``<!-- illustrative -->``; such
blocks are counted, so the marker stays rare and deliberate. ``pytest --update-golden``
rewrites the shown output of every step that printed something else (review the diff).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import AS_OF, EXAMPLE, ROOT, require

MARKER = "<!-- illustrative -->"
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^(```+|~~~+)")


@dataclass(frozen=True, slots=True)
class Step:
    line: int  # where the command stands in the document
    command: str
    expected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Block:
    line: int  # the opening fence
    illustrative: bool
    steps: tuple[Step, ...]


def blocks(path: Path) -> list[Block]:
    """The transcripts of a Markdown document, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        start = index
        index += 1
        body: list[tuple[int, str]] = []
        while index < len(lines) and not lines[index].startswith(opening.group(1)):
            body.append((index + 1, lines[index]))
            index += 1
        index += 1
        if not any(text.startswith("$ ") for _, text in body):
            continue
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        steps: list[Step] = []
        continued = False  # the previous command line ended with a backslash
        for number, text in body:
            if continued:
                last = steps[-1]
                steps[-1] = Step(last.line, f"{last.command}\n{text}", ())
            elif text.startswith("$ "):
                steps.append(Step(number, text[2:], ()))
            elif steps:
                last = steps[-1]
                steps[-1] = Step(last.line, last.command, (*last.expected, text))
            continued = bool(steps) and not steps[-1].expected and text.endswith("\\")
        found.append(Block(start + 1, previous.strip() == MARKER, tuple(steps)))
    return found


def same_line(expected: str, actual: str) -> bool:
    """Equal, where ``...`` inside a shown line stands for any text (a commit id, say)."""
    if "..." not in expected:
        return expected == actual
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def matches(expected: tuple[str, ...], actual: list[str]) -> bool:
    """Line-by-line equality where an expected ``...`` line matches any run of lines."""
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and same_line(expected[0], actual[0]) and matches(expected[1:], actual[1:])


def sandbox(tmp_path: Path) -> Path:
    root = tmp_path / "campus"
    shutil.copytree(EXAMPLE, root / "inventory")
    shutil.copytree(ROOT / "schemas", root / "schemas")
    examples = ROOT / "docs" / "examples"
    if examples.is_dir():
        shutil.copytree(examples, root, dirs_exist_ok=True)
    # A policy repository is a git repository (`plan --base main` needs one) whose records
    # were committed long ago (the review dates records by their history).
    git = ["git", "-c", "user.name=Docs", "-c", "user.email=docs@example.edu"]
    dated = {**os.environ, "GIT_AUTHOR_DATE": "2025-06-01T12:00:00Z"}
    dated["GIT_COMMITTER_DATE"] = dated["GIT_AUTHOR_DATE"]
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        [*git, "add", "-A"],
        [*git, "commit", "-qm", "example"],
    ):
        subprocess.run(argv, cwd=root, check=True, capture_output=True, env=dated)
    return root


def run(step: Step, cwd: Path) -> list[str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TZ": "UTC",
        "COLUMNS": "100",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CI", None)  # a reader's shell, not CI
    # The transcripts are as of the example's day; faketime makes "today" that day for
    # the commands that default to it, whatever day the test runs.
    done = subprocess.run(
        # Standard error joins standard output for the whole command line (a `2>&1` after
        # it would only cover the last command of a list such as `a; echo $?`).
        ["faketime", "-f", f"@{AS_OF} 12:00:00", "bash", "-c", step.command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    return done.stdout.splitlines()


def rewrite(document: Path, printed: dict[int, list[str]]) -> None:
    """Replace the shown output of each step (keyed by its line) with what it printed."""
    lines = document.read_text(encoding="utf-8").splitlines()
    steps = {s.line: s for b in blocks(document) for s in b.steps}
    for number in sorted(printed, reverse=True):
        step = steps[number]
        start = number + step.command.count("\n")  # 0-based index of the first output line
        lines[start : start + len(step.expected)] = printed[number]
    document.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_transcripts_print_what_they_show(
    document: Path, tmp_path: Path, update_golden: bool
) -> None:
    require(shutil.which("faketime") is not None, "faketime is not installed (Debian: faketime)")
    cwd = sandbox(tmp_path)
    shown = document.relative_to(ROOT).as_posix()
    problems: list[str] = []
    printed: dict[int, list[str]] = {}
    for block in blocks(document):
        if block.illustrative:
            continue
        for step in block.steps:
            actual = run(step, cwd)
            if not matches(step.expected, actual):
                printed[step.line] = actual
                problems.append(
                    f"{shown}:{step.line}: $ {step.command}\n--- shown ---\n"
                    + "\n".join(step.expected)
                    + "\n--- printed ---\n"
                    + "\n".join(actual)
                )
    if update_golden and printed:
        rewrite(document, printed)  # review the diff: the docs now say what the commands print
        return
    assert not problems, "\n\n".join(problems)


def test_illustrative_blocks_are_few_and_named() -> None:
    marked = [
        f"{d.relative_to(ROOT).as_posix()}:{b.line}"
        for d in DOCUMENTS
        for b in blocks(d)
        if b.illustrative
    ]
    transcripts = sum(1 for d in DOCUMENTS for b in blocks(d))
    # Most transcripts must run; the marker is for what cannot run here.
    assert len(marked) * 3 <= transcripts, marked


def test_the_matcher() -> None:
    assert matches(("a", "...", "d"), ["a", "b", "c", "d"])
    assert matches(("a", "...", "b"), ["a", "b"])
    assert not matches(("a", "...", "d"), ["a", "b", "c"])
    assert not matches(("a",), ["a", "b"])
    assert matches(("...",), [])
    assert matches(
        ("plan: main (...) -> working tree",), ["plan: main (d09f83134b1e) -> working tree"]
    )
    assert not matches(("plan: main (...) -> working tree",), ["plan: main (d09f) -> index"])
