"""Daily limit changes of a plan: per record, the site's ``volume_limits``, and their risks.

Input: the base and head ``Side``. Output: a ``LimitChange`` per record whose
limit on the relay changes (a record has a limit while it is active), a
``LimitsSummary`` (None when nothing changes), and the risks:

- ``risk.limits-raised``: the limits of records active on both sides rise,
  in total, by more than ``policy.mass_change_share`` (a site factor or floor
  change, or many estimates raised at once);
- ``risk.limit-override``: a record gains a ``volume_limit`` override, or
  its override rises: the platform team sees every limit set by hand.

Every limit comes from ``relaygate.limits``; nothing is recomputed here.
"""

from __future__ import annotations

from relaygate import model
from relaygate.limits import Limit, record_limit
from relaygate.plan_risks import new_risk
from relaygate.plan_types import LimitChange, LimitsSummary, Risk, Side


def _limit(side: Side, device: model.Device | None) -> Limit | None:
    if device is None or device.status is not model.Status.ACTIVE or side.site is None:
        return None
    return record_limit(device, side.site.volume_limits)


def _site_text(site: model.Site | None) -> str | None:
    if site is None:
        return None
    v = site.volume_limits
    return f"factor {v.factor}, floor {v.floor}, max_per_day {v.max_per_day}, port {v.port}"


def limit_changes(base: Side, head: Side) -> list[LimitChange]:
    """Every record whose limit changes, by record key."""
    changes: list[LimitChange] = []
    if base.site is None or head.site is None:  # a side without site.yaml has no limits
        return changes
    same_site = base.site.volume_limits == head.site.volume_limits
    for key in sorted(set(base.devices) | set(head.devices)):
        old, new = base.devices.get(key), head.devices.get(key)
        if same_site and old is new:
            continue  # one record object on both sides (unchanged bytes): the same limit
        before, after = _limit(base, old), _limit(head, new)
        if (before.per_day if before else None) == (after.per_day if after else None):
            continue
        device = new or old
        assert device is not None
        changes.append(
            LimitChange(
                device.name,
                device.unit,
                before.per_day if before else None,
                after.per_day if after else None,
                after.explanation if after else None,
            )
        )
    return changes


def limits_summary(base: Side, head: Side, changes: list[LimitChange]) -> LimitsSummary | None:
    site_before, site_after = _site_text(base.site), _site_text(head.site)
    if not changes and site_before == site_after:
        return None
    both = [c for c in changes if c.before is not None and c.after is not None]
    total_before = total_after = 0
    for key in set(base.devices) & set(head.devices):
        before = _limit(base, base.devices[key])
        after = _limit(head, head.devices[key])
        if before is not None and after is not None:
            total_before += before.per_day
            total_after += after.per_day
    return LimitsSummary(
        site_before=site_before if site_before != site_after else None,
        site_after=site_after if site_before != site_after else None,
        raised=sum(1 for c in both if (c.after or 0) > (c.before or 0)),
        lowered=sum(1 for c in both if (c.after or 0) < (c.before or 0)),
        added=sum(1 for c in changes if c.before is None),
        removed=sum(1 for c in changes if c.after is None),
        total_before=total_before,
        total_after=total_after,
    )


def limit_risks(base: Side, head: Side, summary: LimitsSummary | None, shown: str) -> list[Risk]:
    risks = []
    # The stricter of the two sides' shares: a change cannot raise its own threshold.
    shares = [side.site.policy.mass_change_share for side in (base, head) if side.site]
    share = min(shares) if shares else None
    if (
        summary is not None
        and share is not None
        and summary.total_before > 0
        and summary.total_after > summary.total_before * (1 + share)
    ):
        rise = summary.total_after / summary.total_before - 1
        risks.append(
            new_risk(
                "risk.limits-raised",
                shown if shown not in ("", ".") else "inventory",
                f"daily limits rise from {summary.total_before} to {summary.total_after}"
                f" messages in total (+{rise:.0%}; policy.mass_change_share is {share:.0%})",
            )
        )
    for key in sorted(head.devices):
        new, old = head.devices[key], base.devices.get(key)
        if new.status is not model.Status.ACTIVE or new.volume_limit is None:
            continue
        before = old.volume_limit.per_day if old and old.volume_limit else None
        if before is not None and new.volume_limit.per_day <= before:
            continue
        was = "a new override" if before is None else f"override was {before}"
        risks.append(
            new_risk(
                "risk.limit-override",
                new.name,
                f"volume_limit.per_day {new.volume_limit.per_day} set by hand ({was})",
            )
        )
    return risks
