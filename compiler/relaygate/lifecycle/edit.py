"""Edit one record in place: revoke, retire, renew, keeping every other byte.

Input: a record's text and the changes (set or remove a key, given as a path
of mapping keys). Output: the new text, in which only the lines of the
changed keys differ: comments, blank lines, key order, quoting, flow
mappings and folded scalars elsewhere are kept byte for byte.

How: ruamel.yaml's round-trip loader gives the line and column of every key
and value; the edit replaces the value's token on its line, inserts a new
``key: value`` line after a named sibling, or deletes a key's line. ruamel's
own dumper is not used to write, because it re-serialises every line and
changes what it does not reproduce (sequence indentation, long lines, quoting
styles). After each change the text is loaded again with ruamel and the data
compared with what was intended; any difference (a multi-line scalar, a flow
mapping) refuses the edit instead of writing something else.

``find_record`` and ``write_atomic`` do the file work; the operations
(``revoke``, ``suspend``, ``reinstate``, ``retire``, ``renew``) are pure text -> text;
``change_record`` makes one of them on a record of an inventory, validates the
inventory again and undoes an edit that adds an error to the record (what the
commands and ``activity watch --apply`` call).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from relaygate.errors import RelaygateError, UsageError
from relaygate.findings import Finding
from relaygate.pipeline import DEVICES_DIR, OverlaySource, display_path, load
from relaygate.source import FolderSource

REVOKE_REASONS = ("spam", "phishing", "compromised", "request")
RETIRE_REASONS = ("inactive", "request")
SUSPEND_REASONS = ("investigation", "spam", "phishing", "compromised", "request")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._/@+-]*|\d{4}-\d{2}-\d{2}")
# Plain words that YAML 1.1 reads as booleans or null: always quoted.
_SPECIAL = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


class EditError(RelaygateError):
    """The edit is refused: policy forbids it, or it cannot be made safely. Exits 1."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Change:
    """Set ``path`` to ``value`` (None: remove the key). New keys go after ``after``."""

    path: tuple[str, ...]
    value: str | None
    after: str | None = None


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml


def _load(text: str) -> CommentedMap:
    try:
        data = _yaml().load(text)
    except YAMLError as error:
        raise EditError(f"the record cannot be parsed: {error}") from error
    if not isinstance(data, CommentedMap):
        raise EditError("the record is not a YAML mapping")
    return data


def plain(value: Any) -> Any:
    """ruamel data as plain Python, dates as ISO text (the way relaygate reads them)."""
    if isinstance(value, CommentedMap | dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, CommentedSeq | list):
        return [plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)
    return value


def scalar(value: str) -> str:
    """``value`` as a YAML scalar relaygate's strict loader reads back as that string."""
    if _PLAIN.fullmatch(value) and value.lower() not in _SPECIAL:
        return value
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _token_end(line: str, start: int) -> int:
    """Where the scalar token starting at ``start`` ends (exclusive)."""
    quote = line[start : start + 1]
    if quote == '"':
        index = start + 1
        while index < len(line):
            if line[index] == "\\":
                index += 2
                continue
            if line[index] == '"':
                return index + 1
            index += 1
        raise EditError("a double-quoted value continues on the next line")
    if quote == "'":
        index = start + 1
        while index < len(line):
            if line[index] == "'":
                if line[index + 1 : index + 2] == "'":
                    index += 2
                    continue
                return index + 1
            index += 1
        raise EditError("a single-quoted value continues on the next line")
    comment = line.find(" #", start)
    end = len(line) if comment < 0 else comment
    return len(line[:end].rstrip())


def _parent(data: CommentedMap, path: Sequence[str]) -> CommentedMap:
    node: Any = data
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, CommentedMap) else None
        if not isinstance(node, CommentedMap):
            raise EditError(f"{'.'.join(path[:-1])} is missing or not a mapping")
    if node.fa.flow_style():
        raise EditError(f"{'.'.join(path[:-1])} is written in flow style ({{...}}); edit by hand")
    return node  # type: ignore[no-any-return]


def _apply_one(text: str, change: Change) -> str:
    data = _load(text)
    parent = _parent(data, change.path)
    key = change.path[-1]
    lines = text.split("\n")
    if key in parent:
        key_line, key_col = parent.lc.key(key)
        if change.value is None:
            if isinstance(parent[key], CommentedMap | CommentedSeq):
                raise EditError(f"{'.'.join(change.path)} is not a single value")
            del lines[key_line]
            return "\n".join(lines)
        rendered = scalar(change.value)
        if parent[key] is None:  # "key:" with no value: write the value after the colon
            line = lines[key_line]
            colon = line.find(":", key_col)
            lines[key_line] = f"{line[: colon + 1]} {rendered}{_comment(line, colon + 1)}"
            return "\n".join(lines)
        if isinstance(parent[key], CommentedMap | CommentedSeq):
            raise EditError(f"{'.'.join(change.path)} is not a single value")
        value_line, value_col = parent.lc.value(key)
        line = lines[value_line]
        if line[value_col : value_col + 1] in ("|", ">"):
            raise EditError(f"{'.'.join(change.path)} is a block scalar; edit by hand")
        end = _token_end(line, value_col)
        lines[value_line] = line[:value_col] + rendered + line[end:]
        return "\n".join(lines)
    if change.value is None:
        return text
    rendered = scalar(change.value)
    if change.after is not None and change.after in parent:
        after_line, indent = parent.lc.key(change.after)
        value = parent[change.after]
        if isinstance(value, CommentedMap | CommentedSeq):
            raise EditError(f"cannot insert {key} after {change.after}, a nested value")
        value_line = parent.lc.value(change.after)[0] if value is not None else after_line
        if value_line != after_line:
            raise EditError(f"cannot insert {key} after {change.after}: its value spans lines")
        lines.insert(after_line + 1, f"{' ' * indent}{key}: {rendered}")
        return "\n".join(lines)
    if len(change.path) != 1:
        raise EditError(f"cannot place the new key {'.'.join(change.path)}")
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{body}{key}: {rendered}\n"


def _comment(line: str, start: int) -> str:
    index = line.find(" #", start)
    return "" if index < 0 else line[index:]


def _expected(data: Any, changes: Sequence[Change]) -> Any:
    result = plain(data)
    for change in changes:
        node = result
        for key in change.path[:-1]:
            node = node[key]
        if change.value is None:
            node.pop(change.path[-1], None)
        else:
            node[change.path[-1]] = change.value
    return result


def apply(text: str, changes: Sequence[Change]) -> str:
    """The record's text with ``changes`` made; every other line is kept as it was."""
    original = _load(text)
    edited = text
    for change in changes:
        edited = _apply_one(edited, change)
    if plain(_load(edited)) != _expected(original, changes):
        raise EditError("the edit would change more than the fields asked for; edit by hand")
    return edited


def _status_changes(status: str, reason: str, day: dt.date, ticket: str | None) -> list[Change]:
    return [
        Change(("status",), status),
        Change(("status_reason",), reason, after="status"),
        Change(("status_date",), day.isoformat(), after="status_reason"),
        Change(("status_ticket",), ticket, after="status_date"),
    ]


def _status_of(text: str) -> tuple[str, dict[str, Any]]:
    data = plain(_load(text))
    return str(data.get("status", "")), data


def revoke(text: str, reason: str, ticket: str, day: dt.date) -> str:
    """Revoke: the record is refused explicitly (a reject map entry and a firewall drop)."""
    if reason not in REVOKE_REASONS:
        raise EditError(f"--reason must be one of {', '.join(REVOKE_REASONS)}")
    status, data = _status_of(text)
    if status == "retired":
        raise EditError("the record is retired: it grants nothing, so there is nothing to revoke")
    if status == "revoked":
        asked = (reason, day.isoformat(), ticket)
        if tuple(str(data.get(k)) for k in ("status_reason", "status_date", "status_ticket")) == (
            asked
        ):
            return text  # the same revocation again: nothing to change
        raise EditError(
            f"the record is already revoked ({_status_note(data)}); the first revocation stays"
            " on record"
        )
    return apply(text, _status_changes("revoked", reason, day, ticket))


def _status_note(data: dict[str, Any]) -> str:
    parts = [data.get("status_reason"), data.get("status_date"), data.get("status_ticket")]
    return ", ".join(str(part) for part in parts if part) or "no reason recorded"


def suspend(text: str, reason: str, ticket: str, day: dt.date) -> str:
    """Suspend: refused for now (Postfix says why), with the record kept for a reinstatement."""
    if reason not in SUSPEND_REASONS:
        raise EditError(f"--reason must be one of {', '.join(SUSPEND_REASONS)}")
    status, data = _status_of(text)
    if status != "active":
        raise EditError(
            f"the record is {status} ({_status_note(data)}): only an active record is suspended"
        )
    return apply(text, _status_changes("suspended", reason, day, ticket))


def reinstate(text: str) -> str:
    """Reinstate a suspended record: active again, its suspension fields removed."""
    status, _ = _status_of(text)
    if status != "suspended":
        raise EditError(
            f"the record is {status}: only a suspended record is reinstated"
            + (" (a revoked device needs a new request)" if status == "revoked" else "")
        )
    return apply(
        text,
        [
            Change(("status",), "active"),
            Change(("status_reason",), None),
            Change(("status_date",), None),
            Change(("status_ticket",), None),
        ],
    )


def retire(text: str, reason: str, day: dt.date, ticket: str | None = None) -> str:
    """Retire: the record becomes history; its address, FQDN and account may be reused."""
    if reason not in RETIRE_REASONS:
        raise EditError(f"--reason must be one of {', '.join(RETIRE_REASONS)}")
    status, _ = _status_of(text)
    if status == "retired":
        raise EditError("the record is already retired")
    # A ticket of an earlier status change would mislead: it goes unless a new one is given.
    return apply(text, _status_changes("retired", reason, day, ticket))


def renew(
    text: str, approved_on: dt.date, expires_on: dt.date, as_of: dt.date, max_days: int
) -> str:
    """Renew a legacy exception: a new approval day and a new expiry, within the site's term."""
    status, data = _status_of(text)
    if not isinstance(data.get("exception"), dict):
        raise EditError("the record has no exception to renew (only legacy records have one)")
    if status in ("revoked", "retired"):
        raise EditError(f"the record is {status}: a new request needs a new record and exception")
    if approved_on > as_of:
        raise EditError(f"--approved-on {approved_on} is after {as_of}")
    if expires_on <= approved_on:
        raise EditError(f"--expires {expires_on} is not after --approved-on {approved_on}")
    if expires_on <= as_of:
        raise EditError(f"--expires {expires_on} is not after {as_of}: it would be expired")
    term = (expires_on - approved_on).days
    if term > max_days:
        raise EditError(
            f"a term of {term} days is longer than the site allows "
            f"(policy.max_exception_days: {max_days})"
        )
    return apply(
        text,
        [
            Change(("exception", "approved_on"), approved_on.isoformat()),
            Change(("exception", "expires_on"), expires_on.isoformat()),
        ],
    )


# --- files -------------------------------------------------------------------------------


def find_record(root: Path, name: str) -> Path:
    """The file of the record called ``name`` (``devices/<unit>/<name>.yaml``)."""
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", name):
        raise UsageError(f"{name!r} is not a record name")
    found = sorted(p for p in (root / DEVICES_DIR).glob(f"*/{name}.yaml") if p.is_file())
    if not found:
        raise UsageError(f"no record named {name} under {root / DEVICES_DIR}")
    if len(found) > 1:
        raise EditError(f"{name} is in several units: {', '.join(str(p) for p in found)}")
    if found[0].is_symlink():
        raise EditError(f"{found[0]} is a symbolic link; records must be regular files")
    return found[0]


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, keeping its permissions."""
    mode = path.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- checking an edit before it is written ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    """The inventory validated with an edit made in memory."""

    findings: list[Finding]  # every finding of the inventory with the edit
    files_checked: int
    #: Errors on the record that the edit adds (empty: the edit may be written).
    introduced: list[Finding]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.is_error)


def _key(finding: Finding) -> tuple[str, str]:
    return (finding.rule, finding.message)


def check(inventory: Path, path: Path, after_text: str, as_of: dt.date) -> Checked:
    """Validate the inventory with ``path`` holding ``after_text``, without writing it.

    One validation when the edited record has no error. Only when it has
    some is the inventory as it stands validated too, to tell the errors the
    record already had (an emergency revoke of a broken record must still go
    through) from the ones the edit adds.
    """
    shown = display_path(path)
    relative = path.relative_to(inventory).as_posix()
    edited = OverlaySource(FolderSource(inventory), {relative: after_text.encode("utf-8")})
    after = load(inventory, as_of, shown=display_path(inventory), source=edited)
    errors = [f for f in after.findings if f.path == shown and f.is_error]
    introduced: list[Finding] = []
    if errors:
        before = load(inventory, as_of, shown=display_path(inventory))
        old = {_key(f) for f in before.findings if f.path == shown and f.is_error}
        introduced = [f for f in errors if _key(f) not in old]
    return Checked(after.findings, after.files_checked, introduced)


def replace_if_unchanged(path: Path, before_text: str, after_text: str) -> None:
    """Write ``after_text`` unless the file no longer holds ``before_text`` (edited meanwhile)."""
    if path.read_text(encoding="utf-8") != before_text:
        raise EditError(f"{display_path(path)} changed while it was being checked; run again")
    write_atomic(path, after_text)


# --- one edit, checked, then written ----------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What ``change_record`` did: ``changed`` False when the text was already so.

    ``introduced``: errors the edit would have added to the record (nothing
    was written); ``after``: the inventory checked with the edit (None if it
    was not made); ``diff``: the unified diff of the record.
    """

    path: str
    changed: bool
    diff: str = ""
    introduced: list[Finding] = field(default_factory=list)
    after: Checked | None = None


def change_record(
    root: Path, name: str, as_of: dt.date, operation: Callable[[str], str]
) -> Outcome:
    """Edit the record ``name`` in memory, check it, and write it only if it adds no error.

    Raises EditError (the operation refused, or the file changed meanwhile) or
    UsageError (no such record).
    """
    path = find_record(root, name)
    shown = display_path(path)
    before_text = path.read_text(encoding="utf-8")
    after_text = operation(before_text)
    if after_text == before_text:
        return Outcome(shown, changed=False)
    after = check(root, path, after_text, as_of)
    if after.introduced:
        return Outcome(shown, changed=False, introduced=after.introduced)
    replace_if_unchanged(path, before_text, after_text)
    diff = "".join(
        difflib.unified_diff(
            before_text.splitlines(keepends=True),
            after_text.splitlines(keepends=True),
            shown if shown.startswith("/") else f"a/{shown}",
            shown if shown.startswith("/") else f"b/{shown}",
        )
    )
    return Outcome(shown, changed=True, diff=diff, after=after)
