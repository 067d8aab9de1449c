"""How Postfix reads the files relaygate writes: one reader per format, one continuation rule.

Every reader of relaygate's Postfix artifacts (the verifier, ``relaygate query``,
the effective-settings check the deploy runs) goes through this module, so
the artifacts are read back exactly one way, and that way is Postfix's:

- A *logical line* starts with a non-whitespace character. A line that
  starts with whitespace continues the previous logical line (main.cf(5),
  master.cf(5) and postmap(1) agree on this); the pieces are joined with one
  space. Empty lines and lines whose first non-whitespace character is ``#``
  are comments, wherever they are. relaygate never writes a continuation, so
  ``Line.continued`` lets the verifier refuse one; readers that interpret
  (query, the relay check) use the joined text, as Postfix does.
- A table source (access(5), cidr_table(5)) entry is ``key whitespace value``.
- main.cf: ``name = value``; a later line for the same name wins.
- ``postconf -P`` (and master.cf.fragment): ``service/type/parameter=value``.
- A restriction list splits on commas and whitespace, but ``{...}`` stays one
  token (``static:{REJECT some text}``, ``cidr:{ {10.0.0.1/32 OK} }``).
- ``$name`` / ``${name}`` expand to other parameters; ``$$`` is a literal ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from relaygate.errors import InternalError

_MAX_DEPTH = 20
_PARAMETER = re.compile(r"[a-z0-9_]+")
_REFERENCE = re.compile(r"\$(?:\$|\{([a-z0-9_]+)\}|\(([a-z0-9_]+)\)|([a-z0-9_]+))")


@dataclass(frozen=True, slots=True)
class Line:
    """One logical line: where it starts, its text, and whether it was continued."""

    number: int
    text: str
    continued: bool


def logical_lines(text: str) -> list[Line]:
    """The logical lines of a Postfix configuration or table source (module docstring)."""
    lines: list[Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.lstrip()
        if not stripped or stripped[0] == "#":
            continue
        if len(stripped) < len(raw):  # it starts with whitespace
            if lines:
                last = lines[-1]
                lines[-1] = Line(last.number, f"{last.text} {raw.strip()}", True)
            else:  # Postfix warns and drops it; keep it visible as a continued line
                lines.append(Line(number, raw.strip(), True))
            continue
        lines.append(Line(number, raw.rstrip(), False))
    return lines


@dataclass(frozen=True, slots=True)
class Entry:
    """One table entry: key and value (value empty when the line had none)."""

    number: int
    key: str
    value: str
    continued: bool


def table_entries(text: str) -> list[Entry]:
    """Every entry of a table source, in file order (cidr tables match first-to-last)."""
    entries = []
    for line in logical_lines(text):
        parts = line.text.split(None, 1)
        key, value = parts[0], parts[1] if len(parts) > 1 else ""
        entries.append(Entry(line.number, key, value.strip(), line.continued))
    return entries


@dataclass(frozen=True, slots=True)
class Parameter:
    number: int
    name: str
    value: str
    continued: bool


def parameter_lines(text: str) -> list[Parameter]:
    """Every ``name = value`` line of main.cf text (``postconf -n`` output, a fragment)."""
    found = []
    for line in logical_lines(text):
        name, equals, value = line.text.partition("=")
        name = name.strip()
        if not equals or not _PARAMETER.fullmatch(name):
            raise InternalError(f"line {line.number} is not a main.cf line: {line.text[:80]!r}")
        found.append(Parameter(line.number, name, value.strip(), line.continued))
    return found


def parameters(text: str) -> dict[str, str]:
    """main.cf text as name -> value; a later line for a name wins, as in Postfix."""
    return {p.name: p.value for p in parameter_lines(text)}


@dataclass(frozen=True, slots=True)
class Override:
    """One ``postconf -P`` line: a parameter of one master.cf service."""

    number: int
    service: str  # service name, e.g. ``submission`` or ``127.0.0.1:2525``
    type: str  # inet | unix | pass | fifo | unix-dgram
    name: str
    value: str

    @property
    def key(self) -> str:
        return f"{self.service}/{self.type}"


def override_lines(text: str) -> list[Override]:
    """Every ``service/type/parameter=value`` line (``postconf -P`` output, master.cf.fragment)."""
    found = []
    for line in logical_lines(text):
        key, equals, value = line.text.partition("=")
        parts = key.strip().rsplit("/", 2)
        if not equals or len(parts) != 3 or not all(parts):
            raise InternalError(f"line {line.number} is not a postconf -P line: {line.text!r}")
        found.append(Override(line.number, parts[0], parts[1], parts[2], value.strip()))
    return found


def overrides(text: str) -> dict[str, dict[str, str]]:
    """``service/type`` -> parameter -> value, from ``postconf -P`` style text."""
    services: dict[str, dict[str, str]] = {}
    for item in override_lines(text):
        services.setdefault(item.key, {})[item.name] = item.value
    return services


@dataclass(frozen=True, slots=True)
class Service:
    """One master.cf service as ``postconf -M`` prints it (overrides not included)."""

    service: str
    type: str
    command: str
    arguments: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.service}/{self.type}"


def services(text: str) -> list[Service]:
    """master.cf entries from ``postconf -M`` (or master.cf) text; ``-o`` arguments kept."""
    found = []
    for line in logical_lines(text):
        fields = line.text.split()
        if len(fields) < 8:
            raise InternalError(f"line {line.number} is not a master.cf entry: {line.text!r}")
        found.append(Service(fields[0], fields[1], fields[7], tuple(fields[8:])))
    return found


#: What ends a token outside braces (a run of commas and whitespace, as
#: ``str.isspace`` has it) or opens one; inside braces only a brace matters.
#: ``tokens`` looks only at these, not at every character.
_OUTSIDE = re.compile(r"[\s,]+|[{}]")
_INSIDE = re.compile(r"[{}]")


def tokens(value: str) -> list[str]:
    """A restriction list split as Postfix splits it (module docstring)."""
    found: list[str] = []
    start = 0  # where the current token starts
    depth = 0
    position = 0
    while match := (_INSIDE if depth else _OUTSIDE).search(value, position):
        position = match.end()
        char = match.group()
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise InternalError(f"unbalanced braces in {value!r}")
        else:  # a run of separators outside braces ends the token
            if match.start() > start:
                found.append(value[start : match.start()])
            start = position
    if depth != 0:
        raise InternalError(f"unbalanced braces in {value!r}")
    if start < len(value):
        found.append(value[start:])
    return found


def inline_items(body: str) -> list[str]:
    """The rules of an inline table ``{ {rule}, {rule} }`` (body without the outer braces)."""
    items = []
    for token in tokens(body):
        if not (token.startswith("{") and token.endswith("}")):
            raise InternalError(f"inline table rule {token!r} is not in braces")
        items.append(token[1:-1].strip())
    return items


def expand(value: str, params: Mapping[str, str], keep: frozenset[str] = frozenset()) -> str:
    """``$name``/``${name}`` replaced by ``params``; ``$$`` becomes ``$``; names in ``keep``
    (e.g. ``config_directory``) stay as written. A name that is not known is an error."""

    def one(text: str, depth: int) -> str:
        if depth > _MAX_DEPTH:
            raise InternalError("parameter references nest too deep")

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$$"
            name = match.group(1) or match.group(2) or match.group(3)
            if name in keep:
                return match.group(0)
            if name not in params:
                raise InternalError(f"${name} is not a known parameter")
            return one(params[name], depth + 1).replace("$", "$$")

        return _REFERENCE.sub(replace, text)

    return one(value, 0).replace("$$", "$")
