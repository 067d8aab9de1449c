"""Log files and streams: opening, decompressing, fingerprinting, cutting into lines.

Input: a path, ``-`` (standard input), or a named pipe. Output: a ``Source``
(the decompressed byte stream and what is known about the file) and, through
``LineReader``, lists of complete text lines.

Invariants:

* Compression is recognised by magic bytes, never by name; a binary
  systemd journal (``LPKSHHRH``) is refused with the command that exports it.
* Memory is bounded and time linear whatever the input: the stream is read
  in ``CHUNK_BYTES`` chunks; a line longer than ``MAX_LINE_BYTES`` is skipped
  (counted in ``overlong``), without ever being held whole.
* ``\\r\\n`` line ends are read as ``\\n``; bytes that are not UTF-8 become U+FFFD.
* A regular uncompressed file may still be growing: its last line without a
  newline is left for the next run (``partial``). A compressed file, standard
  input and a pipe are finished when they end: their last line counts.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import lzma
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

MAX_LINE_BYTES = 1 << 20
#: A read: with what is left of the last line (at most 64 KiB, else every line of the
#: block is measured) a block stays under MAX_LINE_BYTES, so no line in it can be longer.
CHUNK_BYTES = MAX_LINE_BYTES - (64 << 10)
FINGERPRINT_BYTES = 4096
STDIN = Path("-")
JOURNAL_MAGIC = b"LPKSHHRH"


class SourceError(Exception):
    """The file cannot be read as a log; the message says why and what to do."""


class _Prefixed:
    """A read-only stream that gives ``head`` and then the rest of ``raw`` (no seeking)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head = head
        self.raw = raw
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size < 0 or size >= len(self.head):
                data, self.head = self.head, b""
                rest = self.raw.read(-1 if size < 0 else size - len(data))
                data += rest or b""
            else:
                data, self.head = self.head[:size], self.head[size:]
        else:
            data = self.raw.read(size) or b""
        self.position += len(data)
        return data

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        """Nothing: the raw file is the Source's to close (standard input stays open)."""


@dataclass(slots=True)
class Source:
    """An opened log: its decompressed stream and the facts ingest needs."""

    path: Path
    raw: BinaryIO
    stream: BinaryIO
    compressed: bool
    seekable: bool  # an uncompressed regular file: offsets can be sought
    finished: bool  # its end is final (compressed, stdin, pipe): the last line counts
    size: int | None
    mtime: dt.datetime | None  # None for standard input and pipes
    _counter: _Prefixed | None = None

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == STDIN else str(self.path)

    def raw_position(self) -> int:
        """Bytes of the file read so far (for progress)."""
        if self._counter is not None:
            return self._counter.tell()
        return self.raw.tell()

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            if self.path != STDIN:
                self.raw.close()


def _read_exactly(raw: BinaryIO, count: int) -> bytes:
    """Up to ``count`` bytes; a pipe may hand them over in pieces."""
    data = b""
    while len(data) < count:
        more = raw.read(count - len(data))
        if not more:
            break
        data += more
    return data


def open_source(path: Path) -> Source:
    """Open a log file, ``-`` or a pipe; raises SourceError (or OSError) if it cannot be read."""
    # Closed by Source.close (standard input stays open).
    raw = sys.stdin.buffer if path == STDIN else open(path, "rb")  # noqa: SIM115
    try:
        info = os.fstat(raw.fileno())
        regular = stat.S_ISREG(info.st_mode)
        magic = _read_exactly(raw, 8)
        if magic.startswith(JOURNAL_MAGIC):
            raise SourceError(
                "a binary systemd journal file: relaygate reads journal exports; run "
                f"`journalctl --file {path} -o json > {path.name}.json` (or -o short-iso) "
                "and ingest that"
            )
        counter = _Prefixed(magic, raw)
        stream: BinaryIO
        compressed = True
        if magic.startswith(b"\x1f\x8b"):
            stream = cast(BinaryIO, gzip.GzipFile(fileobj=cast(Any, counter), mode="rb"))
        elif magic.startswith(b"BZh"):
            stream = cast(BinaryIO, bz2.BZ2File(cast(Any, counter), mode="rb"))
        elif magic.startswith(b"\xfd7zXZ\x00"):
            stream = cast(BinaryIO, lzma.LZMAFile(cast(Any, counter), mode="rb"))  # noqa: SIM115
        else:
            compressed = False
            stream = cast(BinaryIO, counter)
    except BaseException:
        if path != STDIN:
            raw.close()
        raise
    return Source(
        path=path,
        raw=raw,
        stream=stream,
        compressed=compressed,
        seekable=regular and not compressed,
        finished=compressed or not regular,
        size=info.st_size if regular else None,
        mtime=dt.datetime.fromtimestamp(info.st_mtime) if regular else None,
        _counter=counter,
    )


def fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


def read_head(source: Source) -> bytes:
    """The first ``FINGERPRINT_BYTES`` of the decompressed stream."""
    return _read_exactly(source.stream, FINGERPRINT_BYTES)


def skip_to(source: Source, head: bytes, offset: int) -> bytes:
    """Position the stream after ``offset`` bytes (a line boundary); the bytes left of head.

    Raises SourceError when the byte before ``offset`` is not a newline: the
    file changed since it was read.
    """
    if offset <= len(head):
        if head[offset - 1 : offset] != b"\n":
            raise SourceError(f"byte {offset} is not a line boundary; the file changed")
        return head[offset:]
    if source.seekable:
        source.raw.seek(offset - 1)
        source._counter = None
        source.stream = source.raw
    else:
        count = offset - 1 - len(head)
        while count > 0:
            data = source.stream.read(min(count, CHUNK_BYTES))
            if not data:
                raise SourceError("the file is shorter than the part already read")
            count -= len(data)
    if source.stream.read(1) != b"\n":
        raise SourceError(f"the file is shorter than the {offset} bytes already read, or changed")
    return b""


class LineReader:
    """Complete lines of a stream in chunks; counts what it had to leave out."""

    def __init__(self, source: Source, first: bytes, limit: int = MAX_LINE_BYTES) -> None:
        self.source = source
        self.first = first
        self.limit = limit
        self.consumed = 0  # bytes of complete lines (and skipped long lines) handed over
        self.partial = False  # a last line without newline was left for the next run
        self.overlong = 0
        self.first_overlong: int | None = None  # where the first one starts (byte)

    def chunks(self) -> Iterator[list[str]]:
        limit = self.limit
        buffer = self.first
        discarding = 0  # bytes of an overlong line skipped so far (0: not skipping)
        read = self.source.stream.read
        while True:
            data = read(CHUNK_BYTES)
            at_end = not data
            if discarding and data:
                cut = data.find(b"\n")
                if cut < 0:
                    discarding += len(data)
                    continue
                self.overlong += 1
                self.consumed += discarding + cut + 1
                discarding = 0
                data = data[cut + 1 :]
            if data:
                buffer = buffer + data if buffer else data
            cut = buffer.rfind(b"\n")
            if cut >= 0:
                yield self._lines(buffer[:cut])
                self.consumed += cut + 1
                buffer = buffer[cut + 1 :]
            if len(buffer) > limit:
                if self.first_overlong is None:
                    self.first_overlong = self.consumed
                discarding = len(buffer)
                buffer = b""
            if at_end:
                break
        if discarding:
            # Too long to be a log line, finished or not: counted once it ends (or the
            # stream does); a growing file is re-read from its start next time.
            self.overlong += 1
            if self.source.finished:
                self.consumed += discarding
        elif buffer:
            if self.source.finished:
                yield self._lines(buffer)
                self.consumed += len(buffer)
            else:
                self.partial = True

    def _lines(self, block: bytes) -> list[str]:
        text = block.decode("utf-8", "replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):
                text = text[:-1]
        lines = text.split("\n")
        if len(block) > self.limit and max(map(len, lines)) > self.limit:  # rare: see CHUNK_BYTES
            kept = [line for line in lines if len(line) <= self.limit]
            self.overlong += len(lines) - len(kept)
            if self.first_overlong is None:
                position = 0
                for raw in block.split(b"\n"):
                    if len(raw) > self.limit:
                        break
                    position += len(raw) + 1
                self.first_overlong = self.consumed + position
            return kept
        return lines


_ROTATED = re.compile(r"^(?P<base>.+?)(?:[.-](?P<number>\d+))?(?:\.(?:gz|bz2|xz))?$")


def rotation_order(paths: Sequence[Path]) -> list[Path]:
    """Oldest first: ``mail.log.2.gz``, ``mail.log.1``, ``mail.log``; dated rotations by date.

    Files of one log are grouped by base name; groups keep the order of their
    first argument (``-`` stays where it was given). The order matters only
    for a message whose smtpd and qmgr lines fall on either side of a rotation.
    """
    groups: dict[str, list[tuple[int, int, Path]]] = {}
    for index, path in enumerate(paths):
        match = _ROTATED.match(path.name) if path != STDIN else None
        base = str(path.parent / (match["base"] if match else path.name))
        number = match["number"] if match else None
        if path == STDIN:
            base = f"\0stdin{index}"
        if number is None:
            rank = 0
        elif len(number) >= 8:  # a date (dateext): older dates first, all before the live file
            rank = int(number) - 10**12
        else:
            rank = -int(number)
        groups.setdefault(base, []).append((rank, index, path))
    ordered: list[Path] = []
    for members in groups.values():
        ordered.extend(path for _, _, path in sorted(members))
    return ordered
