"""The suite's closing lines hold under pytest-xdist: counts are totals over the workers.

`make test` runs the suite on several workers (``pytest -n``). A worker's own terminal is
never shown, so what tests/conftest.py prints at the end (the integration count, the lines
a test hands to ``closing_line``) must be gathered on the controller; and a skipped
integration test must still fail in CI. Each case runs a small suite in a subprocess with
this repository's conftest hooks, once on two workers and once without xdist.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

pytest_plugins = ["pytester"]

SUITE = """
import os

import pytest

from tests.conftest import closing_line, require


def worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.mark.integration
@pytest.mark.parametrize("n", range(19))
def test_ran(n: int, request: pytest.FixtureRequest) -> None:
    import time

    time.sleep(0.05)  # long enough that both workers get some
    closing_line(request.config, f"ran on {worker()}", f"ran on {worker()}")


@pytest.mark.integration
def test_missing_component() -> None:
    require(False, "the frobnicator is not installed")


def test_not_integration() -> None:
    pass
"""


def _run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: bool, *args: str
) -> pytest.RunResult:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    # Not this run's options or worker identity (this test may itself run on a worker).
    for name in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CI", "true" if ci else "")
    pytester.makeconftest("from tests.conftest import closing_line, pytest_configure\n")
    pytester.makeini(
        "[pytest]\nmarkers =\n    integration: needs real components\n"
        "addopts = -p no:cacheprovider\n"
    )
    pytester.makepyfile(test_cases=SUITE)
    return pytester.runpytest_subprocess("-q", *args)


@pytest.mark.parametrize("workers", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "serial"])
def test_integration_count_is_the_total_over_workers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
) -> None:
    result = _run(pytester, monkeypatch, False, *workers)
    result.assert_outcomes(passed=20, skipped=1)
    lines = result.outlines
    # The count comes just before pytest's own last line, and counts every worker's tests.
    assert lines[-2] == "integration: 19 ran, 1 skipped", lines[-6:]
    assert re.fullmatch(r"20 passed, 1 skipped in [0-9.]+s", lines[-1]), lines[-1]
    ran_on = sorted(line for line in lines if line.startswith("ran on "))
    if workers[0] == "-n":
        assert ran_on == ["ran on gw0", "ran on gw1"], lines  # both workers ran some
    else:
        assert ran_on == ["ran on main"], lines


def test_a_skipped_integration_test_fails_in_ci_on_a_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(pytester, monkeypatch, True, "-n", "2")
    result.assert_outcomes(passed=20, failed=1)
    assert "CI must run this test, but: the frobnicator is not installed" in result.stdout.str()
    # The failing one ran (and failed); nothing was skipped.
    assert "integration: 20 ran, 0 skipped" in result.outlines
