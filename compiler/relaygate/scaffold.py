"""`relaygate new`: write one device record that validates, or nothing.

Input: the field values a requestor gave (flags, or answers to prompts), the
inventory folder and "today". Output: the record's YAML text and, when the
whole inventory validates with it, the file
``<inventory>/devices/<unit>/<name>.yaml``.

Invariants:

- Nothing is written unless the whole inventory, with the new record in a
  private copy of it, validates without errors; the findings say why not.
- An existing file is never overwritten (the file is created exclusively).
- The text written is exactly the text that was validated, and reading it
  back gives exactly the data that was asked for (checked, fail closed).
- The approver's name and role are copied from units.yaml, the only values
  the procedure accepts, so a requestor names the approver by email.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from relaygate import addresses, model
from relaygate.checks import justification_shortfall
from relaygate.errors import InternalError, UsageError
from relaygate.findings import Finding
from relaygate.load import parse_text
from relaygate.pipeline import DEVICES_DIR, OverlaySource, display_path, load, touched
from relaygate.plan import site_and_units
from relaygate.schema import MAIL_ADDRESS
from relaygate.source import FolderSource

SCHEMA_LINE = "# yaml-language-server: $schema=../../../schemas/device.schema.json"
ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
KINDS = tuple(k.value for k in model.Kind)
AUTHS = tuple(a.value for a in model.Auth)
STATUSES = tuple(s.value for s in model.Status)
NETREG_TYPES = ("static", "static-dhcp")
STATUS_REASONS = (
    "spam",
    "phishing",
    "compromised",
    "request",
    "inactive",
    "investigation",
    "expired",
)
ACKNOWLEDGMENTS = model.ACKNOWLEDGMENTS


@dataclass(frozen=True, slots=True)
class Field:
    """One input: its option name, what the prompt says, and its closed set if any."""

    key: str  # the option's dest, e.g. "requestor_email"
    flag: str  # e.g. "--requestor-email"
    prompt: str
    choices: tuple[str, ...] = ()


FIELDS: dict[str, Field] = {
    f.key: f
    for f in (
        Field("name", "--name", "Record name (lower-case, = file name)"),
        Field("unit", "--unit", "Unit (folder under devices/)"),
        Field("kind", "--kind", "Kind", KINDS),
        Field("model", "--model", "Device model or application"),
        Field("fqdn", "--fqdn", "FQDN"),
        Field("address", "--address", "Address (IPv4 or IPv6; application/server: a prefix)"),
        Field("auth", "--auth", "Authentication", AUTHS),
        Field("account", "--account", "Login account (SASL/OAuth2)"),
        Field("senders", "--sender", "Envelope sender addresses (comma-separated)"),
        Field("volume_per_day", "--volume-per-day", "Estimated messages per day"),
        Field("requestor_name", "--requestor-name", "Requestor name"),
        Field("requestor_email", "--requestor-email", "Requestor email"),
        Field("contact_name", "--contact-name", "Technical contact name"),
        Field("contact_email", "--contact-email", "Technical contact email"),
        Field("netreg", "--netreg", "NetReg reservation type", NETREG_TYPES),
        Field("approver", "--approver", "Approver's email (as listed in units.yaml)"),
        Field("justification", "--justification", "Business justification"),
        Field("approved_on", "--approved-on", "Approved on (YYYY-MM-DD)"),
        Field("expires_on", "--expires-on", "Expires on (YYYY-MM-DD)"),
        Field("mod_ticket", "--mod-ticket", "MOD network ticket (e.g. NS-12345)"),
        Field(
            "acknowledgment_ref",
            "--acknowledgment-ref",
            "Ticket or document holding the approver's written acknowledgment",
        ),
        Field("acknowledged", "--acknowledge", "Acknowledgments", ACKNOWLEDGMENTS),
        Field("status", "--status", "Status", STATUSES),
        Field("status_reason", "--status-reason", "Status reason", STATUS_REASONS),
        Field("status_date", "--status-date", "Status date (YYYY-MM-DD)"),
        Field("status_ticket", "--status-ticket", "Status ticket"),
    )
}
_ALWAYS = (
    "name",
    "unit",
    "kind",
    "model",
    "fqdn",
    "address",
    "auth",
    "senders",
    "volume_per_day",
    "requestor_name",
    "requestor_email",
    "contact_name",
    "contact_email",
)
_AUTHENTICATED = ("account",)
_LEGACY = (
    "netreg",
    "approver",
    "justification",
    "approved_on",
    "expires_on",
    "mod_ticket",
    "acknowledged",
    "acknowledgment_ref",
)
_INACTIVE = ("status_reason", "status_date")

Values = dict[str, Any]


def _given(value: Any) -> bool:
    return value is not None and value not in ((), [])


def required(values: Mapping[str, Any]) -> list[str]:
    """The field keys this record needs, given what is known so far (auth, status)."""
    keys = list(_ALWAYS)
    auth = values.get("auth")
    if auth in ("oauth2", "credentials"):
        keys += _AUTHENTICATED
    elif auth in ("ip", "none"):
        keys += _LEGACY
    if values.get("status") not in (None, "active"):
        keys += _INACTIVE
    return keys


def missing(values: Mapping[str, Any]) -> list[str]:
    """The flags still missing, in record order."""
    return [FIELDS[key].flag for key in required(values) if not _given(values.get(key))]


Prompt = Callable[[Field, Values], Any]
Confirm = Callable[[str], bool]


def ask_missing(values: Values, prompt: Prompt, confirm: Confirm) -> Values:
    """Fill every missing required field by asking; later questions depend on earlier answers."""
    answers = dict(values)
    done: set[str] = set()
    while True:
        todo = [k for k in required(answers) if not _given(answers.get(k)) and k not in done]
        if not todo:
            return answers
        key = todo[0]
        done.add(key)
        if key == "acknowledged":
            answers[key] = tuple(
                ack
                for ack in ACKNOWLEDGMENTS
                if confirm(f"Has the approver acknowledged in writing: {ack.replace('-', ' ')}?")
            )
        else:
            answers[key] = prompt(FIELDS[key], answers)


@dataclass(frozen=True, slots=True)
class AnswerContext:
    """What an answer is checked against while a requestor types it."""

    site: model.Site | None
    units: dict[str, model.Unit] | None
    names: frozenset[str]  # record names already taken, in any unit


def answer_context(inventory: Path) -> AnswerContext:
    site, units = site_and_units(inventory)
    devices = inventory / DEVICES_DIR
    names = frozenset(p.stem for p in devices.glob("*/*.yaml")) if devices.is_dir() else frozenset()
    return AnswerContext(site, units, names)


def _address_problem(text: str, auth: Any, ctx: AnswerContext) -> str | None:
    parsed = addresses.parse(text)
    if isinstance(parsed, str):
        return f"{text!r} is not an address: {parsed}"
    if parsed.problem:
        return f"{text!r}: {parsed.problem}"
    site = ctx.site
    if site is None:
        return None
    if not addresses.inside(parsed.network, (n.prefix for n in site.campus_networks)):
        return f"{text} is outside the campus networks in site.yaml"
    legacy = auth in ("ip", "none")
    segments = (p for segment in site.mod_segments for p in segment.prefixes)
    if legacy and not addresses.inside(parsed.network, segments):
        return (
            f"{text} is in no MOD segment: a legacy (ip/none) device must sit in one"
            " (open a Network Services ticket first, or use oauth2/credentials)"
        )
    return None


def answer_problem(
    key: str, value: Any, answers: Mapping[str, Any], ctx: AnswerContext
) -> str | None:
    """Why an interactive answer cannot stand, checked as it is typed; None when it can.

    Only what one answer decides is checked here; the whole record is still
    validated with the inventory before anything is written.
    """
    if key == "name":
        if not ID.fullmatch(str(value)):
            return "lower-case letters, digits and inner hyphens, at most 63 characters"
        if value in ctx.names:
            return f"a record named {value!r} exists already; choose another name"
    elif key == "unit" and ctx.units is not None and value not in ctx.units:
        close = difflib.get_close_matches(str(value), list(ctx.units), n=1)
        return f"unit {value!r} is not in units.yaml" + (
            f"; did you mean {close[0]!r}?" if close else ""
        )
    elif key == "address":
        return _address_problem(str(value), answers.get("auth"), ctx)
    elif key == "auth" and value in ("ip", "none") and _given(answers.get("address")):
        return _address_problem(str(answers["address"]), value, ctx)
    elif key == "senders":
        for sender in value:
            if not MAIL_ADDRESS.fullmatch(sender) or ".." in sender:
                return f"{sender!r} is not a lower-case mail address, e.g. scans@lib.example.edu"
            domain = sender.rsplit("@", 1)[1]
            if ctx.site is not None and domain not in ctx.site.sender_domains:
                return f"{domain} is not a sender domain in site.yaml"
    elif key in ("requestor_email", "contact_email") and not MAIL_ADDRESS.fullmatch(str(value)):
        return f"{value!r} is not a lower-case mail address, e.g. pdoe@example.edu"
    elif key == "justification" and ctx.site is not None:
        return justification_shortfall(str(value), ctx.site.policy.min_justification_chars)
    return None


def approver_of(units: dict[str, model.Unit] | None, unit: str, email: str) -> model.Approver:
    """The listed approver of ``unit`` with this email; a usage error naming the listed ones."""
    if units is None:
        raise UsageError("units.yaml does not load, so the approver cannot be looked up")
    if unit not in units:
        raise UsageError(f"unit {unit!r} is not in units.yaml (known: {', '.join(sorted(units))})")
    for approver in units[unit].approvers:
        if approver.email == email:
            return approver
    listed = ", ".join(f"{a.email} ({a.name}, {a.role.value})" for a in units[unit].approvers)
    raise UsageError(f"{email} is not a listed approver of {unit}; listed: {listed}")


def record_data(values: Mapping[str, Any], units: dict[str, model.Unit] | None) -> dict[str, Any]:
    """The record as data, keys in the documented order; only given fields appear."""
    data: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if _given(value):
            data[key] = value

    for key in ("name", "unit", "kind", "model", "fqdn", "address", "auth", "account"):
        put(key, values.get(key))
    put("senders", list(values.get("senders") or ()))
    volume = values.get("volume_per_day")
    put("volume_per_day", int(volume) if volume is not None else None)
    if _given(values.get("requestor_name")) or _given(values.get("requestor_email")):
        data["requestor"] = {
            "name": values.get("requestor_name"),
            "email": values.get("requestor_email"),
        }
    if _given(values.get("contact_name")) or _given(values.get("contact_email")):
        data["technical_contact"] = {
            "name": values.get("contact_name"),
            "email": values.get("contact_email"),
        }
    put("netreg", values.get("netreg"))
    exception_keys = (
        "approver",
        "justification",
        "approved_on",
        "expires_on",
        "mod_ticket",
        "acknowledgment_ref",
    )
    if any(_given(values.get(k)) for k in (*exception_keys, "acknowledged")):
        exception: dict[str, Any] = {}
        if _given(values.get("approver")):
            approver = approver_of(units, str(values.get("unit")), str(values["approver"]))
            exception["approver"] = {
                "name": approver.name,
                "email": approver.email,
                "role": approver.role.value,
            }
        if _given(values.get("justification")):
            exception["justification"] = values["justification"]
        if _given(values.get("acknowledged")):
            exception["acknowledged"] = list(values["acknowledged"])
        for key in ("approved_on", "expires_on"):
            if _given(values.get(key)):
                exception[key] = _date_text(values[key])
        if _given(values.get("mod_ticket")):
            exception["mod_ticket"] = values["mod_ticket"]
        if _given(values.get("acknowledgment_ref")):
            exception["acknowledgment_ref"] = values["acknowledgment_ref"]
        data["exception"] = exception
    data["status"] = values.get("status") or "active"
    put("status_reason", values.get("status_reason"))
    if _given(values.get("status_date")):
        data["status_date"] = _date_text(values["status_date"])
    put("status_ticket", values.get("status_ticket"))
    return data


def _date_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


# --- YAML text ------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z0-9@][A-Za-z0-9 ._@/+()':-]*[A-Za-z0-9.)]|[A-Za-z0-9]")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
_DATE_KEYS = frozenset({"approved_on", "expires_on", "status_date"})


def scalar(value: Any, key: str = "", *, flow: bool = False) -> str:
    """One scalar as YAML text that reads back as exactly ``value`` (quoted when in doubt)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if key in _DATE_KEYS and _DATE.fullmatch(text):
        return text  # dates are written plain, as in every record; the loader keeps them as text
    plain = (
        _PLAIN.fullmatch(text) is not None
        and text.lower() not in _YAML11_WORDS
        and " #" not in text
        and not (flow and ":" in text)  # flow mappings read "a:b" differently
        and _reads_back(text)
    )
    return text if plain else json.dumps(text, ensure_ascii=False)


def _reads_back(text: str) -> bool:
    """relaygate's own strict loader is the judge of whether a plain scalar is safe."""
    probe = parse_text(Path("probe.yaml"), "probe.yaml", f"key: {text}\n", [])
    return (
        not probe.findings
        and probe.document is not None
        and probe.document.data == {"key": text}
        and yaml.safe_load(f"key: {text}") == {"key": text}
    )


def _flow(mapping: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {scalar(v, k, flow=True)}" for k, v in mapping.items()) + "}"


def _justification(text: str) -> list[str]:
    """A long justification as a folded block when folding keeps it exactly."""
    if " ".join(text.split()) == text and len(text) > 60 and _PLAIN.fullmatch(text[:1]):
        lines = textwrap.wrap(text, 84, break_on_hyphens=False, break_long_words=False)
        return [">-", *("    " + line for line in lines)]
    return [scalar(text)]


def render(data: Mapping[str, Any]) -> str:
    """The record's YAML text, starting with the schema line."""
    lines = [SCHEMA_LINE]
    for key, value in data.items():
        if key in ("requestor", "technical_contact"):
            lines.append(f"{key}: {_flow(value)}")
        elif key == "senders":
            lines.append("senders:")
            lines += [f"  - {scalar(s)}" for s in value]
        elif key == "exception":
            lines.append("exception:")
            for inner, item in value.items():
                if inner == "approver":
                    lines.append(f"  approver: {_flow(item)}")
                elif inner == "acknowledged":
                    lines.append("  acknowledged:")
                    lines += [f"    - {scalar(a)}" for a in item]
                elif inner == "justification":
                    first, *rest = _justification(item)
                    lines.append(f"  justification: {first}")
                    lines += rest
                else:
                    lines.append(f"  {inner}: {scalar(item, inner)}")
        elif isinstance(value, Mapping):
            lines.append(f"{key}: {_flow(value)}")
        elif isinstance(value, list | tuple):
            lines.append(f"{key}:")
            lines += [f"  - {scalar(item)}" for item in value]
        else:
            lines.append(f"{key}: {scalar(value, key)}")
    return "\n".join(lines) + "\n"


# --- create ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    path: Path  # where the record is (or would be) written
    shown: str  # that path as printed
    text: str
    findings: tuple[Finding, ...]  # of the whole inventory with the record, paths as printed
    written: bool

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.is_error)


def target_path(inventory: Path, unit: str, name: str) -> Path:
    """``devices/<unit>/<name>.yaml``; refuses anything that is not an id (no path tricks)."""
    for what, value in (("unit", unit), ("name", name)):
        if not ID.fullmatch(value):
            raise UsageError(
                f"{what} {value!r} must be lower-case letters, digits and inner hyphens"
                " (at most 63 characters)"
            )
    return inventory / DEVICES_DIR / unit / f"{name}.yaml"


def create(inventory: Path, values: Mapping[str, Any], as_of: dt.date, *, write: bool) -> Created:
    """Validate the record inside a copy of the inventory; write it if clean and ``write``."""
    gaps = missing(values)
    if gaps:
        raise UsageError("missing fields: " + ", ".join(gaps))
    path = target_path(inventory, str(values["unit"]), str(values["name"]))
    shown = display_path(path)
    if os.path.lexists(path):
        raise FileExistsError(shown)
    _site, units = site_and_units(inventory)
    data = record_data(values, units)
    text = render(data)
    loaded = parse_text(path, shown, text, []).document
    if loaded is None or loaded.data != data:
        raise InternalError(f"the record text does not read back as written:\n{text}")
    # The inventory as it would be with the record: the file is added in memory,
    # every other file is read where it is (nothing is copied or written).
    overlay = OverlaySource(
        FolderSource(inventory), {path.relative_to(inventory).as_posix(): text.encode("utf-8")}
    )
    result = load(inventory, as_of, shown=display_path(inventory), source=overlay)
    findings = tuple(result.findings)
    # A new record is a change that touches it: a lapse on it (no NetReg
    # reservation yet, an approver units.yaml does not list) is an error here.
    findings = tuple(touched(list(findings), {shown}))
    clean = not any(f.is_error for f in findings)
    written = False
    if clean and write:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x": never overwrite, even if the file appeared since the check above.
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
        written = True
    return Created(path, shown, text, findings, written)
