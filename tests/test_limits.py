"""relaygate.limits: the one computation of a record's and a login's daily limit."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from relaygate import compile as compile_
from relaygate.limits import Source, login_limit, record_limit, scaled_estimate
from relaygate.model import Device, VolumeLimits, VolumeOverride, build_site
from relaygate.pipeline import validate
from relaygate.policy import build_policy
from tests.conftest import AS_OF, EXAMPLE

DAY = dt.date.fromisoformat(AS_OF)


def _device(name: str) -> Device:
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    return next(d for d in inventory.devices if d.name == name)


@pytest.mark.parametrize(
    ("volume", "factor", "floor", "per_day", "source"),
    [
        (40, "3", 50, 120, Source.ESTIMATE),  # 40 x 3 = 120 > 50
        (10, "3", 50, 50, Source.FLOOR),  # 10 x 3 = 30 < 50: the floor
        (16, "3", 48, 48, Source.ESTIMATE),  # 48 = floor: the estimate, not the floor
        (40, "1.1", 1, 44, Source.ESTIMATE),  # exact: a binary float gives ceil(44.000...1) = 45
        (7, "2.5", 1, 18, Source.ESTIMATE),  # 17.5 rounds up
    ],
)
def test_record_limit_is_the_larger_of_floor_and_scaled_estimate(
    volume: int, factor: str, floor: int, per_day: int, source: Source
) -> None:
    device = dataclasses.replace(_device("lib-hodges-3f-copier"), volume_per_day=volume)
    limit = record_limit(device, VolumeLimits(factor=factor, floor=floor))
    assert (limit.per_day, limit.source) == (per_day, source)


def test_override_wins_over_floor_and_estimate_and_says_so() -> None:
    device = dataclasses.replace(
        _device("lib-hodges-3f-copier"),
        volume_limit=VolumeOverride(per_day=7, justification="x"),
    )
    limit = record_limit(device, VolumeLimits())
    assert (limit.per_day, limit.source) == (7, Source.OVERRIDE)
    assert limit.explanation == "volume_limit override; computed would be 120"
    plain = record_limit(_device("lib-hodges-3f-copier"), VolumeLimits())
    assert plain.explanation == "estimate 40 x 3 = 120"
    low = record_limit(_device("lib-gate-counter"), VolumeLimits())
    assert low.explanation == f"site floor 50 (estimate {low.volume_per_day} x 3 = " + (
        f"{scaled_estimate(low.volume_per_day, '3')})"
    )


def test_example_override_is_read_from_the_record() -> None:
    limit = record_limit(_device("med-appointment-reminders"), VolumeLimits())
    assert (limit.per_day, limit.source) == (4000, Source.OVERRIDE)


def test_site_volume_limits_defaults_and_decimal_factor() -> None:
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    assert inventory.site.volume_limits == VolumeLimits("3", 50, 10000, 10040)
    data = {
        "name": "x",
        "campus_networks": [],
        "mod_segments": [],
        "relay": {"hosts": [], "relay_port": 25, "submission_port": 587},
        "sender_domains": [],
        "policy": {
            "max_exception_days": 1,
            "expiry_warning_days": 1,
            "inactivity_days": 1,
            "min_justification_chars": 1,
            "shortest_prefix": {"ipv4": 28, "ipv6": 124},
            "mass_change_share": 0.3,
        },
        "review": {"platform_team": "@x/y"},
    }
    assert build_site(data).volume_limits == VolumeLimits()  # the block is optional
    data["volume_limits"] = {"factor": 1.1, "floor": 7}
    assert build_site(data).volume_limits == VolumeLimits("1.1", 7, 10000, 10040)


def test_login_limit_is_the_sum_of_its_active_records() -> None:
    a = record_limit(_device("lib-hodges-3f-copier"), VolumeLimits())
    b = record_limit(_device("lib-gate-counter"), VolumeLimits())
    login = login_limit("svc@example.edu", [("zz", a), ("aa", b)])
    assert login.per_day == a.per_day + b.per_day
    assert login.names == ("aa", "zz")


def test_policy_carries_each_active_records_limit_and_no_other() -> None:
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    policy = build_policy(inventory)
    limits = inventory.site.volume_limits
    by_name = {d.name: d for d in inventory.devices}
    for client in (*policy.legacy, *policy.authenticated):
        assert client.limit == record_limit(by_name[client.name], limits)
    assert policy.login_limits["svc-med-reminders@example.edu"].per_day == 4000
    refused = {c.name for c in policy.refused}
    limited = {n for login in policy.login_limits.values() for n in login.names}
    limited |= {c.name for c in policy.legacy}
    assert refused and not refused & limited
    assert {d.name for d in inventory.devices if d.status == "retired"} - limited


def test_compile_is_byte_stable_with_limits() -> None:
    first = compile_.build(EXAMPLE, DAY).artifacts
    second = compile_.build(EXAMPLE, DAY).artifacts
    assert first is not None and first == second
    assert "postfwd/postfwd.cf" in first
