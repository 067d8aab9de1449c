"""The risks of a change and the approvals it needs, from the two sides of a plan.

Input: the base and head ``Side`` and the record and file changes between
them. Output: ``Risk`` values with stable ids (``risk.*``) and the
``Approval`` values still needed, each list sorted by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from relaygate import model
from relaygate.addresses import canonical_text
from relaygate.checks import sender_key
from relaygate.errors import InternalError
from relaygate.pipeline import SITE_FILE, UNITS_FILE
from relaygate.plan_types import (
    REFUSED,
    Approval,
    FileChange,
    MassChange,
    RecordChange,
    Risk,
    Side,
    refusal,
    same_record,
)

#: Every risk id a plan can raise, with when it is raised (listed by ``relaygate rules``).
#: Ids are public like rule ids (a pull-request comment and its approvals name them).
RISKS: dict[str, str] = {
    "risk.legacy-exception-new": "an active record with unauthenticated access (ip/none) that"
    " was not legacy before (new record, auth downgraded, or retired record back)",
    "risk.legacy-exception-renewed": "a new approved_on and a later expires_on",
    "risk.exception-term-extended": "a later expires_on with the same approved_on"
    " (no new approval)",
    "risk.prefix-broadened": "the record's address covers more addresses than before",
    "risk.address-changed": "a legacy record moves to another address",
    "risk.segment-changed": "the record's MOD segment changed",
    "risk.revocation-lifted": "a revoked or suspended record becomes active, retired or is"
    " deleted: the relay stops refusing it",
    "risk.null-sender-allowed": "a record may now send with the null sender (MAIL FROM:<>)",
    "risk.sender-added": "a live record may use senders it did not have",
    "risk.site-changed": "site.yaml changed",
    "risk.units-changed": "units.yaml changed",
    "risk.mass-change": "more than policy.mass_change_share of the base's allow entries are"
    " removed or changed",
    "risk.limits-raised": "the active records' daily limits rise, in total, by more than"
    " policy.mass_change_share (a site volume_limits change, or many records at once)",
    "risk.limit-override": "an active record's volume_limit.per_day is new or raised (a limit"
    " set by hand rather than from its estimate)",
}


def new_risk(risk_id: str, subject: str, message: str, units: tuple[str, ...] = ()) -> Risk:
    """A risk with a registered id; an unknown id is a bug in relaygate (fails closed)."""
    if risk_id not in RISKS:
        raise InternalError(f"risk id {risk_id!r} is not in plan_risks.RISKS")
    return Risk(risk_id, subject, message, units)


def device_risks(base: Side, head: Side) -> list[Risk]:
    risks: list[Risk] = []
    same = same_record(base, head)
    for key in sorted(set(base.devices) | set(head.devices)):
        old, new = base.devices.get(key), head.devices.get(key)
        if same(old, new):
            continue
        if new is not None and new.status is model.Status.ACTIVE:
            address = canonical_text(new.network)
            if new.is_legacy:
                if old is None or not old.is_legacy or old.status is model.Status.RETIRED:
                    was = (
                        "a new record"
                        if old is None
                        else f"was auth {old.auth.value}"
                        if not old.is_legacy
                        else "was retired"
                    )
                    risks.append(
                        new_risk(
                            "risk.legacy-exception-new",
                            new.name,
                            f"new unauthenticated (auth {new.auth.value}) access from {address}"
                            f" ({was})",
                        )
                    )
                elif old.exception is not None and new.exception is not None:
                    before, after = old.exception, new.exception
                    if after.expires_on > before.expires_on:
                        if after.approved_on != before.approved_on:
                            risks.append(
                                new_risk(
                                    "risk.legacy-exception-renewed",
                                    new.name,
                                    f"exception renewed: approved {after.approved_on}, expires"
                                    f" {before.expires_on} -> {after.expires_on}",
                                )
                            )
                        else:
                            risks.append(
                                new_risk(
                                    "risk.exception-term-extended",
                                    new.name,
                                    f"expires_on {before.expires_on} -> {after.expires_on}"
                                    f" without a new approval (approved_on {after.approved_on})",
                                )
                            )
            if old is not None:
                old_address = canonical_text(old.network)
                if (
                    old.network.version == new.network.version
                    and new.network.size > old.network.size
                ):
                    risks.append(
                        new_risk(
                            "risk.prefix-broadened",
                            new.name,
                            f"address {old_address} -> {address}"
                            f" ({old.network.size} -> {new.network.size} addresses)",
                        )
                    )
                elif new.is_legacy and old_address != address:
                    risks.append(
                        new_risk(
                            "risk.address-changed",
                            new.name,
                            f"unauthenticated access moves from {old_address} to {address}",
                        )
                    )
                old_segment = base.segment(old.network)
                new_segment = head.segment(new.network)
                if old_segment != new_segment:
                    risks.append(
                        new_risk(
                            "risk.segment-changed",
                            new.name,
                            f"MOD segment {old_segment or '(none)'} -> {new_segment or '(none)'}",
                        )
                    )
        if old is not None and old.status in REFUSED and refusal(new) is None:
            now = "the record is removed" if new is None else f"status {new.status.value}"
            risks.append(
                new_risk(
                    "risk.revocation-lifted",
                    old.name,
                    f"was {old.status.value} ({old.status_reason or 'no reason'}"
                    f"{', ' + old.status_ticket if old.status_ticket else ''}); now {now}:"
                    f" the relay no longer refuses {canonical_text(old.network)}",
                )
            )
    return risks


def _mailbox_index(sides: Sequence[Side]) -> dict[str, list[model.Device]]:
    """Mailbox (``sender_key``) -> every record on either side, in any status, using it."""
    index: dict[str, dict[tuple[str, str], model.Device]] = {}
    for side in sides:
        for device in side.devices.values():
            for sender in device.senders:
                index.setdefault(sender_key(sender), {}).setdefault(
                    (device.name, device.unit), device
                )
    return {key: [found[k] for k in sorted(found)] for key, found in index.items()}


def _as(holder: model.Device, sender: str) -> str:
    """``, as SPELLING`` when the holder writes the same mailbox another way."""
    key = sender_key(sender)
    spelling = next(s for s in holder.senders if sender_key(s) == key)
    return "" if spelling == sender else f", as {spelling}"


def _domain_units(sides: Sequence[Side], domain: str) -> list[str]:
    """Units that declare this sender domain in units.yaml, on either side."""
    return sorted(
        {
            unit.id
            for side in sides
            for unit in (side.units or {}).values()
            if domain in unit.sender_domains
        }
    )


def sender_risks(base: Side, head: Side) -> list[Risk]:
    """A record that gains a sender, new or edited, and who else must agree.

    Retired records gain nothing (they relay nothing and hold no sender).
    """
    risks: list[Risk] = []
    mailboxes: dict[str, list[model.Device]] | None = None  # built on the first sender gained
    for key in sorted(head.devices):
        new, old = head.devices[key], base.devices.get(key)
        if new.status is model.Status.RETIRED:
            continue
        if new.allow_null_sender and (old is None or not old.allow_null_sender):
            # The null sender skips every sender check a login would otherwise meet.
            risks.append(
                new_risk(
                    "risk.null-sender-allowed",
                    new.name,
                    f"may now send with the null sender (MAIL FROM:<>): {new.null_sender_reason}",
                )
            )
        had = set() if old is None or old.status is model.Status.RETIRED else set(old.senders)
        added = sorted(set(new.senders) - had)
        if not added:
            continue
        units: set[str] = set()
        notes: list[str] = []
        for sender in added:
            if mailboxes is None:
                mailboxes = _mailbox_index((base, head))
            holders = [h for h in mailboxes.get(sender_key(sender), []) if h.name != new.name]
            owners = _domain_units((base, head), sender.rpartition("@")[2])
            units |= {h.unit for h in holders} | set(owners)
            held = [f"{h.name} ({h.unit}, {h.status.value}{_as(h, sender)})" for h in holders]
            if held:
                notes.append(f"{sender} is also used by {', '.join(held)}")
            others = [u for u in owners if u != new.unit]
            if others:
                notes.append(f"{sender.rpartition('@')[2]} belongs to unit {', '.join(others)}")
        units.discard(new.unit)
        what = " (a new record)" if old is None else ""
        detail = f"; {'; '.join(notes)}" if notes else ""
        risks.append(
            new_risk(
                "risk.sender-added",
                new.name,
                f"new senders{what}: {', '.join(added)}{detail}",
                tuple(sorted(units)),
            )
        )
    return risks


def file_risks(files: Sequence[FileChange], shown: str) -> list[Risk]:
    ids = {
        (Path(shown) / SITE_FILE).as_posix(): "risk.site-changed",
        (Path(shown) / UNITS_FILE).as_posix(): "risk.units-changed",
    }
    risks = []
    for change in files:
        if change.path in ids:
            names = [f.field for f in change.fields]
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            risks.append(
                new_risk(ids[change.path], change.path, f"changed: {', '.join(names[:5])}{more}")
            )
    return risks


def mass_change(base: Side, head: Side) -> MassChange:
    same = same_record(base, head)
    entries = affected = 0
    for key, old in base.devices.items():
        if not base.grants(old):
            continue  # no allow entry on the base: nothing to remove or change
        entries += 1
        new = head.devices.get(key)
        if same(old, new):
            continue
        if new is None or set(head.access(new)) != set(base.access(old)):
            affected += 1
    thresholds = [s.policy.mass_change_share for s in (base.site, head.site) if s is not None]
    # The stricter of the two: a change cannot raise its own threshold.
    return MassChange(entries, affected, min(thresholds) if thresholds else None)


def mass_risk(mass: MassChange, shown: str) -> list[Risk]:
    if mass.threshold is None or mass.base_entries == 0:
        return []
    share = mass.removed_or_changed / mass.base_entries
    if share <= mass.threshold:
        return []
    return [
        new_risk(
            "risk.mass-change",
            shown if shown not in ("", ".") else "inventory",
            f"{mass.removed_or_changed} of {mass.base_entries} allow entries removed or changed"
            f" ({share:.0%}; policy.mass_change_share is {mass.threshold:.0%})",
        )
    ]


#: Fields a revocation or suspension sets; a change of nothing else is a refusal only.
_STATUS_FIELDS = frozenset({"status", "status_reason", "status_date", "status_ticket"})


def _refusal_only(change: RecordChange, head: Side) -> bool:
    """A change that only revokes or suspends a record: the platform team's call alone."""
    device = head.devices.get(change.name)
    return (
        change.change == "changed"
        and device is not None
        and device.status in (model.Status.REVOKED, model.Status.SUSPENDED)
        and all(f.field in _STATUS_FIELDS for f in change.fields)
    )


def needed_approvals(
    base: Side,
    head: Side,
    records: Sequence[RecordChange],
    files: Sequence[FileChange],
    risks: Sequence[Risk],
) -> list[Approval]:
    """Who must approve: the exception's listed approver and the unit's owners for what a unit
    asks, the platform team for every risk and site-wide file; a revocation or suspension
    needs the platform team alone, so a unit can neither block nor wave through its own.

    Who may approve comes from the base side (its site.yaml and units.yaml) whenever the
    base has them: a change never names its own approvers, platform team or logins. A
    change to those files is itself a risk the base's platform team approves."""
    approvals: dict[tuple[str, str], tuple[tuple[str, ...], list[str]]] = {}

    def need(kind: str, who: str, accepts: tuple[str, ...], reason: str) -> None:
        _, reasons = approvals.setdefault((kind, who), (accepts, []))
        if reason not in reasons:
            reasons.append(reason)

    units = base.units if base.units is not None else head.units or {}
    for key in sorted(head.devices):
        new, old = head.devices[key], base.devices.get(key)
        if new.status is not model.Status.ACTIVE or new.exception is None:
            continue
        if old is not None and old.exception == new.exception and old.is_legacy:
            continue
        approver = new.exception.approver
        unit = units.get(new.unit)
        listed = unit is not None and approver in unit.approvers
        who = f"{approver.name} <{approver.email}>"
        role = approver.role.value
        detail = (
            f"{role}, {unit.name}"
            if listed and unit is not None
            else f"{role}; NOT a listed approver of unit {new.unit}"
        )
        login = unit.login_of(approver.email) if listed and unit is not None else None
        need(
            "exception-approver",
            who,
            (login,) if login else (),
            f"exception for {new.name} ({detail}; acknowledgment"
            f" {new.exception.acknowledgment_ref})",
        )
    site = base.site or head.site
    platform = site.platform_team if site else "(site.yaml review.platform_team)"
    team = (site.platform_team,) if site else ()
    for change in records:
        if _refusal_only(change, head):
            status = head.devices[change.name].status.value
            need("platform-team", platform, team, f"{status} {change.path}")
            continue
        unit = units.get(change.unit)
        owners = " ".join(unit.owners) if unit else f"(unit {change.unit} is not in units.yaml)"
        need("unit-owners", owners, unit.owners if unit else (), f"{change.change} {change.path}")
    for risk in risks:
        need("platform-team", platform, team, f"{risk.id}: {risk.subject}")
        for unit_id in risk.units:
            unit = units.get(unit_id)
            owners = " ".join(unit.owners) if unit else f"(unit {unit_id} is not in units.yaml)"
            need("unit-owners", owners, unit.owners if unit else (), f"{risk.id}: {risk.subject}")
    for file_change in files:
        need("platform-team", platform, team, f"changed {file_change.path}")
    order = {"exception-approver": 0, "unit-owners": 1, "platform-team": 2}
    return [
        Approval(kind, who, tuple(reasons), accepts)
        for (kind, who), (accepts, reasons) in sorted(
            approvals.items(), key=lambda i: (order[i[0][0]], i[0][1])
        )
    ]
