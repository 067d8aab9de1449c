"""Reading a git repository: refs, and the files of a tree, from git objects only.

Every call runs ``git -C <folder> ...`` with a timeout; a failure is a
``UsageError`` (bad ref, no repository), never a crash. Nothing here writes
to the working tree, the index or HEAD.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from relaygate.errors import InternalError, UsageError

_GIT_TIMEOUT = 120
#: The mode git gives a symbolic link.
LINK_MODE = "120000"


def _git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Run git and return stdout; a failure is a usage problem (bad ref, no repo)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(cwd), *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=_GIT_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise UsageError(f"cannot run git: {error}") from error
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or f"exit {done.returncode}"
        raise UsageError(f"git {args[0]} failed: {message}")
    return done.stdout


def repo_top(path: Path) -> Path:
    """The top folder of the git work tree that holds ``path``."""
    try:
        top = _git(path, "rev-parse", "--show-toplevel")
    except UsageError as error:
        raise UsageError(f"{path} is not inside a git repository ({error})") from error
    return Path(top.decode().strip()).resolve()


def resolve_commit(top: Path, ref: str) -> str:
    """The commit id ``ref`` names; a usage error if it names none."""
    if not ref or ref.startswith("-"):
        raise UsageError(f"{ref!r} is not a git ref")
    try:
        sha = _git(top, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    except UsageError as error:
        raise UsageError(
            f"git ref {ref!r} not found (in CI, check out with fetch-depth: 0)"
        ) from error
    return sha.decode().strip()


@dataclass(frozen=True, slots=True)
class Blob:
    """One file of a tree: its mode, blob id and bytes."""

    mode: str
    sha: str
    data: bytes

    @property
    def is_link(self) -> bool:
        return self.mode == LINK_MODE


def read_tree(top: Path, commit: str, subfolder: str) -> dict[str, Blob]:
    """Every file under ``subfolder`` at ``commit``, by path relative to it, in memory.

    One ``git ls-tree`` and one ``git cat-file --batch``; submodules are
    skipped. An empty result when the folder does not exist at ``commit``.
    """
    spec = [] if subfolder in ("", ".") else ["--", subfolder]
    listing = _git(top, "ls-tree", "-r", "-z", "--full-tree", commit, *spec)
    entries: list[tuple[str, str, str]] = []
    prefix = "" if subfolder in ("", ".") else subfolder.rstrip("/") + "/"
    for raw in listing.split(b"\0"):
        if not raw:
            continue
        meta, _, path_bytes = raw.partition(b"\t")
        mode, kind, sha = meta.decode().split(" ")
        path = path_bytes.decode("utf-8", "surrogateescape")
        if kind != "blob" or not path.startswith(prefix):
            continue
        entries.append((mode, sha, path[len(prefix) :]))
    if not entries:
        return {}
    batch = _git(
        top, "cat-file", "--batch", stdin="".join(f"{s}\n" for _, s, _ in entries).encode()
    )
    blobs: dict[str, Blob] = {}
    offset = 0
    for mode, sha, relative in entries:
        newline = batch.index(b"\n", offset)
        header = batch[offset:newline].decode().split(" ")
        if header[0] != sha or header[1] != "blob":
            raise InternalError(f"git cat-file answered {header!r} for {sha}")
        size = int(header[2])
        blobs[relative] = Blob(mode, sha, batch[newline + 1 : newline + 1 + size])
        offset = newline + 1 + size + 1
    return blobs


def export_tree(top: Path, commit: str, subfolder: str, dest: Path) -> int:
    """Write the files under ``subfolder`` at ``commit`` into ``dest``; return how many.

    Symbolic links are recreated as links. ``dest`` exists afterwards even
    when the folder did not exist at ``commit``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    blobs = read_tree(top, commit, subfolder)
    for relative, blob in blobs.items():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if blob.is_link:
            os.symlink(blob.data.decode("utf-8", "surrogateescape"), target)
        else:
            target.write_bytes(blob.data)
    return len(blobs)


def changed_paths(top: Path, commit: str) -> list[str]:
    """Every path the working tree changes against ``commit``: modified, added, deleted,
    renamed (both names) and untracked files that are not ignored."""
    changed = _git(top, "diff", "--name-only", "--no-renames", "-z", commit, "--")
    untracked = _git(top, "ls-files", "--others", "--exclude-standard", "-z")
    names = (changed + untracked).decode("utf-8", "surrogateescape").split("\0")
    return sorted({name for name in names if name})
