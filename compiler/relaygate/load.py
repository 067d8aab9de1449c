"""Stage 1: read YAML files strictly and keep positions beside the data.

Input: a path. Output: a ``Document`` (plain dicts, lists, str, int, float,
bool, None) and the findings of this stage. A file that cannot be read safely
gives findings and no document; nothing is raised for bad user data.

What is refused, each with a located finding: files that are not regular
files, files over a size cap, a byte-order mark, invalid UTF-8, carriage
returns, control/bidirectional/invisible characters anywhere (comments
included), syntax errors, several documents, a top level that is not a
mapping, duplicate keys (naming both lines), anchors, aliases, merge keys,
explicit tags, non-string keys, and plain scalars that YAML 1.1 reads
differently than a person does (``no``, ``0755``, ``1:30``, ``0x1f``, ``.inf``).

Dates stay strings as written: the schema checks their format, the model
parses them. Positions are not stored in the data: ``Document.locate`` finds
the line and column of any JSON pointer by composing the kept text again, so
memory stays flat however many records there are.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from relaygate.findings import Finding
from relaygate.rules import rule

# libyaml is a declared requirement (PyYAML wheels carry it); without it
# parsing is about ten times slower, and the benchmark says so.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Tags already resolved, by (node kind, text, implicit flags): most scalars are keys
#: that every record repeats, and the resolver tries a list of regexes on each.
_RESOLVED: dict[tuple[Any, str, Any], str] = {}
_RESOLVED_MAX = 4096
_RESOLVED_TEXT = 64


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader, remembering the tag of short scalars.

    ``resolve`` is a pure function of its arguments for the safe loader (it
    has no path resolvers), so a remembered tag is the tag it would compute.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if not isinstance(value, str) or len(value) > _RESOLVED_TEXT:
            return super().resolve(kind, value, implicit)
        key = (kind, value, implicit)
        tag = _RESOLVED.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_RESOLVED) < _RESOLVED_MAX:
                _RESOLVED[key] = tag
        return tag


assert not _Base.yaml_path_resolvers, "path resolvers make a tag depend on the node's path"

Pointer = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_YAML_TAG = "tag:yaml.org,2002:"

_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_NULLS = frozenset({"", "~", "null"})

# Characters that make text look other than it reads: C0/C1 controls (except
# tab and newline; carriage returns have their own rule), format characters
# (bidirectional controls, zero-width characters, soft hyphen, tag
# characters), line and paragraph separators, invisible fillers, variation
# selectors and every space except U+0020. A test checks this class against
# the Unicode database so it cannot fall behind silently.
FORBIDDEN_CHARACTERS = re.compile(
    "["
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    "\u00a0\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f"
    "\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
    "]"
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Size caps, by kind of file. Records are small; a huge file is an attack."""

    record_bytes: int = 64 * 1024
    site_bytes: int = 1024 * 1024
    netreg_bytes: int = 64 * 1024 * 1024


@dataclass(slots=True)
class Document:
    """A loaded YAML file: its data, its text, and where each value stands.

    ``display`` is the path findings print; ``locate`` maps a JSON pointer to
    a 1-based (line, column), falling back to the nearest enclosing value.
    """

    path: Path
    display: str
    data: dict[str, Any]
    text: str
    _positions: dict[Pointer, tuple[int, int]] | None = field(default=None, repr=False)
    _key_positions: dict[Pointer, tuple[int, int]] | None = field(default=None, repr=False)

    def locate(self, pointer: Pointer = (), *, key: bool = False) -> tuple[int, int]:
        """Line and column of the value (or, with ``key``, the key) at ``pointer``."""
        if self._positions is None:
            self._positions, self._key_positions = _position_table(self.text)
        table = self._key_positions if key else self._positions
        assert table is not None
        probe = pointer
        while probe:
            if probe in table:
                return table[probe]
            if key:  # a key that does not exist: point at its mapping instead
                table = self._positions
            probe = probe[:-1]
        return self._positions.get((), (1, 1))

    def finding(
        self,
        rule_id: str,
        pointer: Pointer,
        message: str,
        *,
        key: bool = False,
        hint: str | None = None,
    ) -> Finding:
        """A finding of ``rule_id`` located at ``pointer`` in this document."""
        line, column = self.locate(pointer, key=key)
        return rule(rule_id).at(self.display, line, column, message, hint)


@dataclass(slots=True)
class LoadResult:
    document: Document | None
    findings: list[Finding]


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def _position_table(
    text: str,
) -> tuple[dict[Pointer, tuple[int, int]], dict[Pointer, tuple[int, int]]]:
    """Positions of every value and key of a document that already loaded cleanly."""
    values: dict[Pointer, tuple[int, int]] = {}
    keys: dict[Pointer, tuple[int, int]] = {}
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:  # pragma: no cover - only called on text that composed before
        return values, keys
    if root is None:
        return values, keys
    stack: list[tuple[Node, Pointer]] = [(root, ())]
    while stack:
        node, pointer = stack.pop()
        values.setdefault(pointer, (node.start_mark.line + 1, node.start_mark.column + 1))
        # Children are pushed in reverse so they are visited in document order:
        # for a duplicate key the first occurrence, the one the data keeps, wins.
        if isinstance(node, MappingNode):
            for key_node, _ in node.value:
                child = (*pointer, str(key_node.value))
                keys.setdefault(
                    child, (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                )
            for key_node, value_node in reversed(node.value):
                stack.append((value_node, (*pointer, str(key_node.value))))
        elif isinstance(node, SequenceNode):
            for index in reversed(range(len(node.value))):
                stack.append((node.value[index], (*pointer, index)))
    return values, keys


class _Builder:
    """Turns a composed node tree into plain Python values, collecting findings."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.findings: list[Finding] = []
        #: Set when the data cannot stand in for the file (it would mislead later stages).
        self.fatal = False

    def _at(self, rule_id: str, node: Node, message: str) -> None:
        self.findings.append(
            rule(rule_id).at(
                self.display, node.start_mark.line + 1, node.start_mark.column + 1, message
            )
        )

    def build(self, node: Node, depth: int = 1) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if depth > MAX_DEPTH:
            self._at("yaml.too-deep", node, f"nesting deeper than {MAX_DEPTH} levels")
            return None
        if isinstance(node, SequenceNode):
            return [self.build(item, depth + 1) for item in node.value]
        if isinstance(node, MappingNode):
            return self.mapping(node, depth)
        raise AssertionError(f"unknown YAML node {type(node).__name__}")  # pragma: no cover

    def mapping(self, node: MappingNode, depth: int = 1) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._at("yaml.non-string-key", key_node, "a list or mapping used as a key")
                continue
            if key_node.tag == _MERGE:
                self._at("yaml.merge-key", key_node, "merge key '<<' is not allowed")
                continue
            if key_node.tag != _STR:
                self._at(
                    "yaml.non-string-key",
                    key_node,
                    f"key {key_node.value!r} is not read as text; quote it or rename it",
                )
                continue
            key = key_node.value
            if key in result:
                self._at(
                    "yaml.duplicate-key",
                    key_node,
                    f"duplicate key {key!r}; first defined on line {first_line[key]}",
                )
                continue
            first_line[key] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, depth + 1)
        return result

    def scalar(self, node: ScalarNode) -> Any:
        value: str = node.value
        # libyaml reports plain style as '' and the pure-Python parser as None.
        if node.style or node.tag == _STR:
            return value
        tag = node.tag
        if tag == _BOOL:
            if value in ("true", "false"):
                return value == "true"
            self._at(
                "yaml.ambiguous-scalar",
                node,
                f"plain {value!r} is read as the boolean {value.lower() in _TRUTHY}",
            )
            return value
        if tag == _INT:
            if _PLAIN_INT.fullmatch(value):
                digits = len(value.lstrip("-"))
                if digits > MAX_DIGITS:  # int() would refuse or crawl; no field needs it
                    self.fatal = True
                    self._at("schema.range", node, f"a number of {digits} digits is out of range")
                    return None
                return int(value)
            self._at(
                "yaml.ambiguous-scalar",
                node,
                f"plain {value!r} is read as a number in YAML 1.1"
                " (octal, hex, base 60 or underscores)",
            )
            return value
        if tag == _FLOAT:
            if _PLAIN_FLOAT.fullmatch(value):
                return float(value)
            self._at(
                "yaml.ambiguous-scalar",
                node,
                f"plain {value!r} is read as a special or base-60 number",
            )
            return value
        if tag == _NULL:
            if value in _NULLS:
                return None
            self._at("yaml.ambiguous-scalar", node, f"plain {value!r} is read as null")
            return value
        if tag == _TIMESTAMP:
            return value  # kept as written; the schema's date format decides
        if tag == _MERGE:
            self._at("yaml.merge-key", node, "merge key '<<' is not allowed")
            return value
        return value


_TRUTHY = frozenset({"yes", "true", "on", "y"})
#: Inventory files need a few levels; anything deeper is a mistake or an attack.
MAX_DEPTH = 16
#: No field holds a number longer than this; longer ones are refused unread.
MAX_DIGITS = 20


def _scan_events(text: str, display: str) -> list[Finding]:
    """Anchors, aliases and explicit tags, found on the event stream.

    Only called when the text contains '&', '*' or '!': the composed node tree
    no longer shows them.
    """
    found: list[Finding] = []

    def at(rule_id: str, event: Any, message: str) -> None:
        mark = event.start_mark
        found.append(rule(rule_id).at(display, mark.line + 1, mark.column + 1, message))

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            at("yaml.alias", event, f"alias *{event.anchor} is not allowed")
            continue
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            at("yaml.anchor", event, f"anchor &{anchor} is not allowed")
        tag = getattr(event, "tag", None)
        if tag is not None and isinstance(
            event, yaml.ScalarEvent | yaml.MappingStartEvent | yaml.SequenceStartEvent
        ):
            shown = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag
            at("yaml.tag", event, f"explicit tag {shown} is not allowed")
    return found


def _read_at_most(fd: int, limit: int, expected: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``, reading until the end of the file or the limit.

    The first read asks for ``expected`` bytes and one more (the size the file
    had a moment ago): a small file does not get a buffer of the cap's size.
    """
    first = os.read(fd, max(1, min(limit, expected + 1)))
    if not first or len(first) >= limit:
        return first
    chunks = [first]
    size = len(first)
    while size < limit:
        more = os.read(fd, min(limit - size, 1 << 16))
        if not more:
            break
        chunks.append(more)
        size += len(more)
    return b"".join(chunks)


def read_bytes(
    path: str | os.PathLike[str], display: str, max_bytes: int
) -> tuple[bytes | None, list[Finding]]:
    """The file's bytes if it is a regular file within ``max_bytes`` (nothing decoded yet).

    Plain ``os`` calls on the descriptor (no buffered file object): an
    inventory is thousands of small files, read on every run.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None, [rule("file.missing").at(display, 1, 1, "file not found")]
    except OSError as error:
        return None, [rule("file.unreadable").at(display, 1, 1, f"cannot read: {error.strerror}")]
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        return None, [rule("file.not-regular").at(display, 1, 1, f"{kind}")]
    if info.st_size > max_bytes:
        return None, [
            rule("file.too-large").at(
                display, 1, 1, f"{info.st_size} bytes is over the cap of {max_bytes} bytes"
            )
        ]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            raw = _read_at_most(fd, max_bytes + 1, info.st_size)
        finally:
            os.close(fd)
    except OSError as error:
        return None, [rule("file.unreadable").at(display, 1, 1, f"cannot read: {error.strerror}")]
    if len(raw) > max_bytes:  # grew after lstat
        return None, [
            rule("file.too-large").at(display, 1, 1, f"more than the cap of {max_bytes} bytes")
        ]
    return raw, []


def decode_text(raw: bytes, display: str) -> tuple[str | None, list[Finding]]:
    """UTF-8 text of a file's bytes; a byte-order mark is a finding and is dropped."""
    findings: list[Finding] = []
    if raw.startswith(b"\xef\xbb\xbf"):
        findings.append(rule("file.byte-order-mark").at(display, 1, 1, "UTF-8 byte-order mark"))
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        prefix = raw[: error.start].decode("utf-8", errors="replace")
        line, column = _line_col(prefix, len(prefix))
        findings.append(
            rule("file.not-utf8").at(
                display, line, column, f"byte 0x{raw[error.start]:02x} is not valid UTF-8"
            )
        )
        return None, findings
    return text, findings


def read_text(path: Path, display: str, max_bytes: int) -> tuple[str | None, list[Finding]]:
    """The file's text if it is a regular UTF-8 file within ``max_bytes``."""
    raw, findings = read_bytes(path, display, max_bytes)
    if raw is None:
        return None, findings
    return decode_text(raw, display)


def text_findings(text: str, display: str) -> list[Finding]:
    """Carriage returns and forbidden characters anywhere in the text."""
    findings: list[Finding] = []
    carriage = text.find("\r")
    if carriage >= 0:
        line, column = _line_col(text, carriage)
        findings.append(
            rule("file.line-endings").at(
                display, line, column, "carriage return (CR or CRLF line ending)"
            )
        )
    for match in FORBIDDEN_CHARACTERS.finditer(text):
        line, column = _line_col(text, match.start())
        findings.append(
            rule("file.forbidden-character").at(
                display, line, column, f"character U+{ord(match.group()):04X}"
            )
        )
    return findings


def load_document(path: Path, display: str, max_bytes: int) -> LoadResult:
    """Read and parse one file. Never raises for bad content."""
    text, findings = read_text(path, display, max_bytes)
    if text is None:
        return LoadResult(None, findings)
    return parse_text(path, display, text, findings)


def load_bytes(path: Path, display: str, raw: bytes) -> LoadResult:
    """Decode and parse bytes already read from ``path``. Never raises for bad content."""
    text, findings = decode_text(raw, display)
    if text is None:
        return LoadResult(None, findings)
    return parse_text(path, display, text, findings)


def parse_text(path: Path, display: str, text: str, findings: list[Finding]) -> LoadResult:
    """Parse already-decoded text; ``findings`` holds what reading found so far."""
    findings.extend(text_findings(text, display))
    try:
        if "&" in text or "*" in text or "!" in text:
            refused = _scan_events(text, display)
            if refused:
                return LoadResult(None, findings + refused)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.composer.ComposerError as error:
        mark = error.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if "single document" in f"{error.context} {error.problem}":
            return LoadResult(
                None,
                [
                    *findings,
                    rule("yaml.multiple-documents").at(
                        display, line, column, "a second document starts here"
                    ),
                ],
            )
        return LoadResult(
            None, [*findings, rule("yaml.syntax").at(display, line, column, str(error.problem))]
        )
    except yaml.reader.ReaderError as error:
        # A character YAML refuses (NUL and other controls): located by position.
        line, column = _line_col(text, min(error.position, len(text)))
        code = error.character if isinstance(error.character, int) else ord(error.character)
        message = f"unacceptable character #x{code:04x}: {error.reason}"
        return LoadResult(None, [*findings, rule("yaml.syntax").at(display, line, column, message)])
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = str(error.problem or error.context or "invalid YAML")
        return LoadResult(None, [*findings, rule("yaml.syntax").at(display, line, column, message)])
    except yaml.YAMLError as error:
        return LoadResult(None, [*findings, rule("yaml.syntax").at(display, 1, 1, str(error))])
    if not isinstance(root, MappingNode):
        line, column = (root.start_mark.line + 1, root.start_mark.column + 1) if root else (1, 1)
        what = (
            "empty" if root is None else "a list" if isinstance(root, SequenceNode) else "a scalar"
        )
        return LoadResult(
            None,
            [
                *findings,
                rule("yaml.not-mapping").at(
                    display, line, column, f"the file is {what}, not a mapping"
                ),
            ],
        )
    builder = _Builder(display)
    data = builder.mapping(root)
    findings.extend(builder.findings)
    if builder.fatal:
        return LoadResult(None, findings)
    return LoadResult(Document(path=path, display=display, data=data, text=text), findings)
