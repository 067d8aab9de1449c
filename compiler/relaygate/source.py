"""Where an inventory's files come from: a folder, or a git tree held in memory.

``pipeline.load`` asks a source for a path's kind, a folder's entries and a
file's bytes, always by path relative to the inventory. Both sources refuse
the same things with the same findings (links, non-regular files, files over
the cap), so a base read from git objects and the same files checked out
give the same result, without writing the base anywhere.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from relaygate.findings import Finding
from relaygate.gitrepo import Blob
from relaygate.load import read_bytes
from relaygate.rules import rule

Kind = Literal["folder", "file", "link", "other", "missing"]


class Source(Protocol):
    """An inventory's files, by path relative to the inventory ("" is the inventory)."""

    @property
    def root(self) -> Path:
        """Where the inventory is (for a git tree, where it would be checked out)."""
        ...

    def kind(self, relative: str) -> Kind: ...

    def entries(self, relative: str) -> list[tuple[str, Kind]]:
        """A folder's entries by name; raises ``OSError`` when it cannot be listed."""
        ...

    def read(
        self, relative: str, display: str, max_bytes: int
    ) -> tuple[bytes | None, list[Finding]]:
        """A regular file's bytes within ``max_bytes``, or the findings that refuse it."""
        ...


def _kind(mode: int) -> Kind:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _entry_kind(entry: os.DirEntry[str]) -> Kind:
    """``_kind`` of an entry from the folder listing's own type (no ``lstat`` per file;
    ``os.DirEntry`` falls back to one where the file system does not say)."""
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "folder"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"


@dataclass(frozen=True, slots=True)
class FolderSource:
    """The files of an inventory folder on disk."""

    root: Path

    def kind(self, relative: str) -> Kind:
        try:
            return _kind(os.lstat(self.root / relative).st_mode)
        except FileNotFoundError:
            return "missing"

    def entries(self, relative: str) -> list[tuple[str, Kind]]:
        found: list[tuple[str, Kind]] = []
        with os.scandir(self.root / relative) as entries:
            for entry in entries:
                try:
                    kind = _entry_kind(entry)
                except FileNotFoundError:
                    kind = "missing"
                found.append((entry.name, kind))
        return sorted(found)

    def read(
        self, relative: str, display: str, max_bytes: int
    ) -> tuple[bytes | None, list[Finding]]:
        return read_bytes(os.path.join(self.root, relative), display, max_bytes)


@dataclass(slots=True)
class TreeSource:
    """The files of an inventory at a git commit (``gitrepo.read_tree``), in memory."""

    root: Path
    blobs: dict[str, Blob]
    _folders: dict[str, dict[str, Kind]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for relative, blob in self.blobs.items():
            parts = relative.split("/")
            for depth in range(len(parts)):
                folder = "/".join(parts[:depth])
                name = parts[depth]
                last = depth == len(parts) - 1
                kind: Kind = ("link" if blob.is_link else "file") if last else "folder"
                self._folders.setdefault(folder, {})[name] = kind
        self._folders.setdefault("", {})

    def kind(self, relative: str) -> Kind:
        if relative in self._folders:
            return "folder"
        folder, _, name = relative.rpartition("/")
        return self._folders.get(folder, {}).get(name, "missing")

    def entries(self, relative: str) -> list[tuple[str, Kind]]:
        return sorted(self._folders.get(relative, {}).items())

    def read(
        self, relative: str, display: str, max_bytes: int
    ) -> tuple[bytes | None, list[Finding]]:
        kind = self.kind(relative)
        if kind == "missing":
            return None, [rule("file.missing").at(display, 1, 1, "file not found")]
        if kind != "file":
            what = "a symbolic link" if kind == "link" else "not a regular file"
            return None, [rule("file.not-regular").at(display, 1, 1, what)]
        data = self.blobs[relative].data
        if len(data) > max_bytes:
            return None, [
                rule("file.too-large").at(
                    display, 1, 1, f"{len(data)} bytes is over the cap of {max_bytes} bytes"
                )
            ]
        return data, []
