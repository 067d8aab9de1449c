"""Stage 2: validate documents against the JSON Schemas in ``schemas/``.

Input: a ``Document``. Output: findings, each located at the offending value
(or, for an unknown field, its key) through the document's position table.

Formats are checked with relaygate's own parsers (``ip-host``, ``ip-prefix``,
``ip-host-or-prefix`` via netaddr, ``mail-address``, ``date``). A format
accepts any spelling that parses; the canonical spelling is a check of its own
(``address.not-canonical``) so the user is told which spelling to write.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from relaygate import addresses
from relaygate.errors import InternalError
from relaygate.findings import Finding
from relaygate.load import Document, Pointer

SchemaName = Literal["device", "site", "units", "netreg"]

MAIL_ADDRESS = re.compile(
    r"[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)

if TYPE_CHECKING:  # jsonschema is imported on first use: a warm run never needs it
    import jsonschema


def _is_host_or_prefix(value: object) -> bool:
    return not isinstance(value, str) or not isinstance(addresses.parse(value), str)


def _is_host(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = addresses.parse(value)
    return not isinstance(parsed, str) and parsed.is_host and "/" not in value


def _is_prefix(value: object) -> bool:
    return not isinstance(value, str) or not isinstance(addresses.parse(value), str)


def _is_mail_address(value: object) -> bool:
    return not isinstance(value, str) or (
        len(value) <= 254 and ".." not in value and MAIL_ADDRESS.fullmatch(value) is not None
    )


def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


_FORMATS: dict[str, Callable[[object], bool]] = {
    "ip-host-or-prefix": _is_host_or_prefix,
    "ip-host": _is_host,
    "ip-prefix": _is_prefix,
    "mail-address": _is_mail_address,
    "date": _is_date,
}

RULE_BY_KEYWORD = {
    "required": "schema.required",
    "additionalProperties": "schema.unknown-field",
    "unevaluatedProperties": "schema.unknown-field",
    "propertyNames": "schema.pattern",
    "type": "schema.type",
    "enum": "schema.enum",
    "const": "schema.enum",
    "format": "schema.format",
    "pattern": "schema.pattern",
    "minLength": "schema.length",
    "maxLength": "schema.length",
    "minItems": "schema.items",
    "maxItems": "schema.items",
    "uniqueItems": "schema.items",
    "minProperties": "schema.items",
    "maxProperties": "schema.items",
    "minimum": "schema.range",
    "maximum": "schema.range",
    "exclusiveMinimum": "schema.range",
    "exclusiveMaximum": "schema.range",
}


def schema_text(name: SchemaName) -> str:
    """The text of a bundled schema (``schemas/<name>.schema.json``)."""
    ref = resources.files("relaygate") / "resources" / "schemas" / f"{name}.schema.json"
    try:
        return ref.read_text(encoding="utf-8")
    except OSError as error:  # pragma: no cover - an installation problem
        raise InternalError(f"schema {name} is missing from the installation: {error}") from error


@cache
def validator(name: SchemaName) -> Any:
    """A compiled validator for one schema; the schema itself is checked first."""
    schema = _end_anchors(json.loads(schema_text(name)))
    import jsonschema  # noqa: PLC0415 - on first use only

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:  # pragma: no cover - guarded by tests
        raise InternalError(f"schema {name} is invalid: {error.message}") from error
    checker = jsonschema.FormatChecker(formats=())
    for format_name, function in _FORMATS.items():
        checker.checks(format_name)(function)
    strict = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    )
    return strict(schema, format_checker=checker)


def _end_anchors(node: Any) -> Any:
    """Make a pattern's final ``$`` mean end of text, as it does in ECMA-262.

    The schema files are written for editors (ECMA-262 regexes); Python's
    ``$`` also matches before a trailing newline, so ``"host.edu\n"`` would
    pass ``^...$``. ``\\Z`` is Python's end of text.
    """
    if isinstance(node, dict):
        return {
            key: (
                value[:-1] + r"\Z"
                if key == "pattern"
                and isinstance(value, str)
                and value.endswith("$")
                and not value.endswith("\\$")
                else _end_anchors(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_end_anchors(item) for item in node]
    return node


def _is_integer(_checker: object, value: object) -> bool:
    # JSON Schema lets 25.0 pass as an integer; it would render as "25.0".
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _non_ascii(value: Any) -> str | None:
    if isinstance(value, str) and not value.isascii():
        char = next(c for c in value if not c.isascii())
        return f"U+{ord(char):04X}"
    return None


def _format_problem(value: str, kind: str) -> tuple[str, str] | None:
    """A precise message and hint, with an example, for the formats people mistype most."""
    if kind == "mail-address":
        lower = value.lower()
        if lower != value and _is_mail_address(lower):
            return f"{_short(value)} has upper-case letters", f"write it in lower case: {lower}"
        return (
            f"{_short(value)} is not a mail address relaygate accepts",
            "write local-part@domain in lower-case ASCII, e.g. hodges-scans@lib.example.edu",
        )
    if kind == "date":
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            try:
                dt.date.fromisoformat(value)
            except ValueError as error:
                return (
                    f"{_short(value)} is not a calendar day ({error})",
                    "write a day that exists, as YYYY-MM-DD, e.g. 2027-06-15",
                )
        return f"{_short(value)} is not a date", "write it as YYYY-MM-DD, e.g. 2027-06-15"
    return None


def _findings(document: Document, error: jsonschema.ValidationError) -> Iterator[Finding]:
    pointer: Pointer = tuple(error.absolute_path)
    keyword = str(error.validator)
    rule_id = RULE_BY_KEYWORD.get(keyword)
    if rule_id is None:  # our schemas use a keyword this table does not know: our bug
        raise InternalError(f"schema keyword {keyword!r} has no rule id in relaygate.schema")
    field = "/".join(str(p) for p in pointer) or "(top level)"
    if "propertyNames" in error.relative_schema_path:
        yield document.finding(
            "schema.pattern",
            (*pointer, str(error.instance)),
            f"{field}: key {_short(error.instance)} is not in the required form",
            key=True,
        )
        return
    if keyword == "format" and str(error.validator_value).startswith("ip-"):
        reason = addresses.parse(error.instance) if isinstance(error.instance, str) else None
        if isinstance(reason, str):
            yield document.finding("address.invalid", pointer, f"{field}: {reason}")
            return
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        allowed = (
            set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        )
        for extra in sorted(k for k in error.instance if k not in allowed):
            close = difflib.get_close_matches(str(extra), sorted(allowed), n=1)
            yield document.finding(
                rule_id,
                (*pointer, extra),
                f"unknown field {extra!r} in {field}",
                key=True,
                hint=f"did you mean {close[0]!r}? Otherwise remove it" if close else None,
            )
        return
    if keyword == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield document.finding(rule_id, pointer, f"{field}: missing required field {missing!r}")
        return
    if keyword in ("pattern", "format") and (char := _non_ascii(error.instance)):
        yield document.finding(
            "text.non-ascii",
            pointer,
            f"{field}: {_short(error.instance)} contains the non-ASCII character {char}",
        )
        return
    if keyword == "format" and isinstance(error.instance, str):
        special = _format_problem(error.instance, str(error.validator_value))
        if special is not None:
            message, hint = special
            yield document.finding(rule_id, pointer, f"{field}: {message}", hint=hint)
            return
    if keyword == "type":
        expected = error.validator_value
        message = f"{field}: {_short(error.instance)} is not of type {expected!r}"
        if error.instance is None:
            message = f"{field}: no value given; expected {expected!r}"
        elif expected == "string" and not isinstance(error.instance, dict | list):
            message += "; quote it"
    elif keyword == "enum":
        message = f"{field}: {_short(error.instance)} is not one of {error.validator_value}"
    elif keyword == "format":
        message = f"{field}: {_short(error.instance)} is not a valid {error.validator_value}"
    elif keyword == "pattern":
        message = f"{field}: {_short(error.instance)} is not in the required form"
    else:
        text = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        message = f"{field}: {text}"
    yield document.finding(rule_id, pointer, message)


#: The formats both validators check, with the same functions. Every other
#: format (``hostname``) is an annotation only, in both.
_FAST_FORMATS: dict[str, Callable[[str], bool]] = {**_FORMATS, "hostname": lambda _value: True}
#: Integers the fast path sees exactly as Python does (JSON's safe range).
_SAFE_INTEGER = 2**53


@cache
def fast_validator(name: SchemaName) -> Any | None:
    """jsonschema-rs for one schema, or None when it is not installed or refuses the schema.

    It gets the schema as written: ECMA-262 patterns, whose ``$`` already means
    end of text. It only ever says "valid"; every finding comes from the
    reference validator (``validator``), which also decides whenever the fast
    one says "invalid".
    """
    try:
        import jsonschema_rs  # noqa: PLC0415 - optional, loaded on first use
    except ImportError:
        return None
    try:
        return jsonschema_rs.Draft202012Validator(
            json.loads(schema_text(name)), formats=_FAST_FORMATS, validate_formats=True
        )
    except Exception:  # any refusal means: use the reference validator
        return None


def _plain(value: Any) -> bool:
    """True when the fast path reads ``value`` exactly as the reference does.

    Floats are left to the reference (JSON Schema calls 25.0 an integer; the
    strict type checker here does not), and so are integers beyond 2**53.
    """
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_SAFE_INTEGER < value < _SAFE_INTEGER
    if isinstance(value, dict):
        return all(_plain(item) for item in value.values())
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return False


def fast_valid(data: Any, name: SchemaName) -> bool:
    """True only when jsonschema-rs accepts ``data`` and may be trusted to; never raises."""
    fast = fast_validator(name)
    if fast is None or not _plain(data):
        return False
    try:
        return bool(fast.is_valid(data))
    except Exception:  # e.g. a string Rust cannot hold: ask the reference
        return False


def check(document: Document, name: SchemaName) -> list[Finding]:
    """All schema findings of one document (empty when it is valid)."""
    if fast_valid(document.data, name):
        return []
    found: list[Finding] = []
    errors = list(validator(name).iter_errors(document.data))
    # A value that fails its format fails its pattern too: one finding says it, not two.
    formatted = {tuple(e.absolute_path) for e in errors if e.validator == "format"}
    for error in errors:
        if error.validator == "pattern" and tuple(error.absolute_path) in formatted:
            continue
        found.extend(_findings(document, error))
    return found


def strip_unknown_fields(data: dict[str, Any], name: SchemaName) -> bool:
    """Delete unknown fields in place if they are the only schema problems.

    Returns False (and changes nothing) when any other problem exists. Used so
    a misspelt field is reported without hiding the record's policy findings.
    """
    errors = list(validator(name).iter_errors(data))
    if any(error.validator != "additionalProperties" for error in errors):
        return False
    for error in errors:
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        if isinstance(error.instance, dict):
            for key in [k for k in error.instance if k not in known]:
                del error.instance[key]
    return True


def invalid_fields(data: dict[str, Any], name: SchemaName) -> frozenset[str] | None:
    """The top-level fields of ``data`` with a schema problem other than an unknown field.

    A missing required field counts as a field with a problem. None when a problem
    belongs to no single field (the document is not an object, say): nothing of it
    can then be checked. Unknown fields are not listed; ``strip_unknown_fields``
    sets them aside.
    """
    if not isinstance(data, dict):
        return None
    fields: set[str] = set()
    for error in validator(name).iter_errors(data):
        if error.validator == "additionalProperties":
            continue  # set aside by drop_unknown_fields, wherever it is
        path = tuple(error.absolute_path)
        if path:
            fields.add(str(path[0]))
        elif error.validator == "required" and isinstance(error.validator_value, list):
            fields.update(str(k) for k in error.validator_value if k not in data)
        else:
            return None
    return frozenset(fields)


def drop_unknown_fields(data: dict[str, Any], name: SchemaName) -> None:
    """Delete the unknown fields of ``data`` in place, whatever else is wrong with it."""
    for error in validator(name).iter_errors(data):
        if error.validator != "additionalProperties":
            continue
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        if isinstance(error.instance, dict):
            for key in [k for k in error.instance if k not in known]:
                del error.instance[key]


@cache
def values(name: SchemaName, *pointer: str) -> tuple[str, ...]:
    """The closed set (``enum``) at ``pointer`` in a bundled schema, in schema order.

    The one place a closed value set (kinds, statuses, status reasons, roles)
    is written; code that needs one reads it here or is tested against it.
    """
    node: Any = json.loads(schema_text(name))
    for step in pointer:
        node = node[step]
    enum = node.get("enum") if isinstance(node, dict) else None
    if not isinstance(enum, list) or not all(isinstance(v, str) for v in enum):
        raise InternalError(f"schema {name} has no closed set of text at {'/'.join(pointer)}")
    return tuple(enum)
