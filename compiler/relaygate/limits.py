"""Daily message limits: the one place a record's (and a login's) limit is computed.

A record's limit is its ``volume_limit.per_day`` when it sets one (an
override), else the larger of the site's ``volume_limits.floor`` and
``ceil(volume_per_day x volume_limits.factor)``. A login's limit is the sum of
the limits of its active records (the relay counts an authenticated login's
messages together, whatever address they come from).

Every reader (the postfwd renderer, ``plan``, ``query``, ``review``, the
activity watch, the tests) calls these functions and never recomputes a
limit. The arithmetic is exact: the factor is decimal text, never a binary
float, so the same inventory always gives the same limits.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from relaygate.model import Device, VolumeLimits


class Source(enum.StrEnum):
    """Where a limit comes from."""

    ESTIMATE = "estimate"  # ceil(volume_per_day x factor)
    FLOOR = "floor"  # the site's floor, larger than the estimate times the factor
    OVERRIDE = "override"  # the record's volume_limit.per_day


@dataclass(frozen=True, slots=True)
class Limit:
    """A record's daily limit, with where it comes from and the numbers behind it."""

    per_day: int
    source: Source
    volume_per_day: int
    factor: str
    floor: int

    @property
    def explanation(self) -> str:
        """One line for people: how ``per_day`` was reached."""
        scaled = scaled_estimate(self.volume_per_day, self.factor)
        if self.source is Source.OVERRIDE:
            return f"volume_limit override; computed would be {max(self.floor, scaled)}"
        if self.source is Source.FLOOR:
            return (
                f"site floor {self.floor} (estimate {self.volume_per_day} x {self.factor}"
                f" = {scaled})"
            )
        return f"estimate {self.volume_per_day} x {self.factor} = {scaled}"


@functools.lru_cache(maxsize=64)
def _exact(factor: str) -> Fraction:
    return Fraction(Decimal(factor))


@functools.lru_cache(maxsize=4096)
def scaled_estimate(volume_per_day: int, factor: str) -> int:
    """``ceil(volume_per_day x factor)``, exactly (``factor`` is decimal text).

    Cached: the policy, the verifier and a plan's limit comparison each ask
    it for every record, and a campus has far fewer distinct estimates.
    """
    return math.ceil(volume_per_day * _exact(factor))


def record_limit(device: Device, limits: VolumeLimits) -> Limit:
    """The daily limit of one record under the site's ``volume_limits``."""
    scaled = scaled_estimate(device.volume_per_day, limits.factor)
    if device.volume_limit is not None:
        per_day, source = device.volume_limit.per_day, Source.OVERRIDE
    elif limits.floor > scaled:
        per_day, source = limits.floor, Source.FLOOR
    else:
        per_day, source = scaled, Source.ESTIMATE
    return Limit(per_day, source, device.volume_per_day, limits.factor, limits.floor)


@dataclass(frozen=True, slots=True)
class LoginLimit:
    """An authenticated login's daily limit: the sum of its active records' limits."""

    login: str
    parts: tuple[tuple[str, Limit], ...]  # (record name, its limit), by name

    @property
    def per_day(self) -> int:
        return sum(limit.per_day for _, limit in self.parts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parts)


def login_limit(login: str, records: Iterable[tuple[str, Limit]]) -> LoginLimit:
    """The limit of ``login`` from (record name, limit) of each of its ACTIVE records.

    The caller passes only the records that relay (active and not lapsed): a
    suspended record's share is not granted to the login.
    """
    return LoginLimit(login, tuple(sorted(records, key=lambda item: item[0])))
