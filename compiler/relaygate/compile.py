"""Stage 7: compile a checked inventory into artifacts, verify, and write them.

``build`` is pure apart from reading the inventory: validate -> policy ->
render -> verify -> manifest. ``write`` replaces the output folder
atomically: the new tree is built beside it and swapped in with renames;
files whose bytes did not change are hard-linked from the old tree, so only
what changed is written, and an unchanged output is not touched at all. The
swap is two renames (old tree aside, new tree in): a reader never sees a
half-written tree, though for an instant there is no tree at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaygate import __version__
from relaygate.cache import Cache
from relaygate.errors import UsageError, VerificationFailed
from relaygate.model import Inventory
from relaygate.pipeline import (
    LoadedInventory,
    ValidationResult,
    load,
    validate,  # noqa: F401 - callers reach it as compile.validate
)
from relaygate.policy import build_policy
from relaygate.render import Artifacts, Header
from relaygate.render.targets import render_all
from relaygate.verify import MANIFEST, verify


@dataclass(frozen=True, slots=True)
class CompileResult:
    validation: ValidationResult
    artifacts: Artifacts | None  # None when the inventory has errors


def inventory_commit(root: Path) -> str | None:
    """The git commit of the inventory, with "-dirty" if it has local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "."],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty.strip() else head


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest(
    artifacts: Artifacts, as_of: dt.date, commit: str | None, counts: dict[str, dict[str, int]]
) -> str:
    """``manifest.json``: the JSON text of ``manifest_document``, indented by two, keys sorted.

    The artifacts (thousands of entries, all of one shape) are written here in
    exactly the form ``json.dumps(..., indent=2, sort_keys=True)`` gives, which
    formats them in pure Python once it indents; the rest goes through it. A
    test holds the two to the same bytes.
    """
    rest = manifest_document({}, as_of, commit, counts)
    del rest["artifacts"]  # sorts before every other key: written first, below
    if not artifacts:
        return json.dumps({"artifacts": {}, **rest}, indent=2, sort_keys=True) + "\n"
    entries = []
    for path, text in sorted(artifacts.items()):
        data = text.encode("utf-8")
        entries.append(
            f"    {json.dumps(path)}: {{\n"
            f'      "bytes": {len(data)},\n'
            f'      "sha256": "{hashlib.sha256(data).hexdigest()}"\n'
            "    }"
        )
    others = json.dumps(rest, indent=2, sort_keys=True).removeprefix("{\n")
    return '{\n  "artifacts": {\n' + ",\n".join(entries) + "\n  },\n" + others + "\n"


def manifest_document(
    artifacts: Artifacts, as_of: dt.date, commit: str | None, counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """What ``manifest.json`` says, as a value."""
    return {
        "tool": "relaygate",
        "version": __version__,
        "as_of": as_of.isoformat(),
        "inventory_commit": commit,
        "counts": counts,
        "artifacts": {
            path: {"sha256": _sha256(text), "bytes": len(text.encode("utf-8"))}
            for path, text in sorted(artifacts.items())
        },
    }


def build(
    root: Path, as_of: dt.date, commit: str | None = None, *, store: Cache | None = None
) -> CompileResult:
    """Validate and, when the inventory is clean, render and verify every artifact."""
    return build_loaded(load(root, as_of, store=store), as_of, commit, store=store)


def _artifacts_key(
    result: LoadedInventory, as_of: dt.date, commit: str | None, store: Cache
) -> str | None:
    """A key over everything the artifacts depend on: every file, the day, the commit."""
    parts = [f"{relative}\0{loaded.key}" for relative, loaded in sorted(result.files.items())]
    if any(loaded.key is None for loaded in result.files.values()):
        return None
    return store.key("artifacts-index", as_of.isoformat(), commit or "", result.shown, *parts)


def _cached_artifacts(store: Cache, key: str) -> Artifacts | None:
    """The artifacts stored under ``key`` (``_keep_artifacts``), or None unless all are there."""
    index = store.get(key)
    if not isinstance(index, dict) or not all(
        isinstance(path, str) and isinstance(text_key, str) for path, text_key in index.items()
    ):
        return None
    texts = store.get_many(list(index.values()))
    artifacts: Artifacts = {}
    for path, text_key in index.items():
        text = texts.get(text_key)
        if not isinstance(text, str):
            return None
        artifacts[path] = text
    return artifacts


def _keep_artifacts(store: Cache, key: str, artifacts: Artifacts) -> None:
    """Store ``artifacts`` as an index under ``key`` and each text under a hash of itself.

    Two compiles that share a file (the two sides of a plan, one record apart:
    all but a few of thousands of files) share its entry, and read back the
    same string: a plan holds one copy of what both sides render alike.
    """
    index = {}
    for path, text in artifacts.items():
        text_key = index[path] = store.key("artifact-text", text)
        store.put(text_key, text)
    store.put(key, index)


def build_loaded(
    result: LoadedInventory, as_of: dt.date, commit: str | None, *, store: Cache | None = None
) -> CompileResult:
    """Render and verify an inventory already loaded (``pipeline.load``); reads no file.

    With a ``store``, artifacts that were rendered and verified from exactly
    these files, day and commit are taken from the cache (a commit with local
    changes, ``...-dirty``, is never stored).
    """
    inventory = result.inventory
    if inventory is None or result.errors:
        return CompileResult(result, None)
    key = _artifacts_key(result, as_of, commit, store) if store is not None else None
    if store is not None and key is not None:
        cached = _cached_artifacts(store, key)
        if cached is not None:
            return CompileResult(result, cached)
    built = _render_and_verify(result, inventory, as_of, commit)
    # A tree with uncommitted changes is a state that the next edit replaces: its
    # artifacts (about 11 MB at 10k records) are not kept, or a working session
    # would fill the cache to its cap in a few dozen compiles.
    dirty = commit is not None and commit.endswith("-dirty")
    if store is not None and key is not None and built.artifacts is not None and not dirty:
        _keep_artifacts(store, key, built.artifacts)
    return built


def _render_and_verify(
    result: LoadedInventory, inventory: Inventory, as_of: dt.date, commit: str | None
) -> CompileResult:
    policy = build_policy(inventory)
    artifacts = render_all(policy, Header(site=inventory.site.name))
    # The verifier derives its expectation from the records as the relay
    # enforces them: a lapsed active record (expired exception, lost NetReg
    # reservation, departed approver) is held like a suspended one.
    problems = verify(inventory.effective(), artifacts, reference=artifacts)
    if problems:
        raise VerificationFailed(
            "the compiled artifacts disagree with the inventory:\n  " + "\n  ".join(problems)
        )
    counts = {
        "postfix": {
            "legacy_clients": len(policy.legacy),
            "restriction_classes": len(policy.classes),
            "sender_logins": len(policy.sender_logins),
            "refused": len(policy.refused),
        },
        "nftables": {
            "legacy": len(policy.legacy),
            "revoked": sum(1 for c in policy.refused if c.status.value == "revoked"),
        },
        "acl": {
            "segments": len(policy.site.mod_segments),
            "permits": len(policy.legacy) + sum(1 for c in policy.authenticated if c.segment),
        },
        "postfwd": {
            "logins": len(policy.login_limits),
            "legacy": len(policy.legacy),
        },
    }
    artifacts[MANIFEST] = manifest(artifacts, as_of, commit, counts)
    return CompileResult(result, artifacts)


def _read_file(path: str) -> bytes:
    """A whole regular file, with plain ``os`` calls (no buffered file object)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        # Sized by the file (one more byte sees the end): no large buffer per small file.
        chunks = [os.read(fd, os.fstat(fd).st_size + 1)]
        while chunks[-1] and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_tree(out: Path) -> dict[str, bytes]:
    """Every regular file under ``out`` by relative path, sorted (empty if it does not exist).

    Links are neither followed nor read. ``os.scandir`` rather than ``Path.rglob``:
    a compiled tree is thousands of small files, and pathlib's per-path cost was
    most of the time.
    """
    if not out.is_dir():
        return {}
    found: dict[str, bytes] = {}
    folders = [""]
    while folders:
        folder = folders.pop()
        with os.scandir(out / folder if folder else out) as entries:
            for entry in entries:
                relative = f"{folder}/{entry.name}" if folder else entry.name
                if entry.is_dir(follow_symlinks=False):
                    folders.append(relative)
                elif entry.is_file(follow_symlinks=False):
                    found[relative] = _read_file(entry.path)
    return dict(sorted(found.items()))


def _comparable(path: str, data: bytes | None) -> bytes | None:
    """The bytes that matter: the manifest's ``as_of`` only says when it was compiled.

    Without this, ``compile --check`` with the default as-of (today) would call
    an unchanged output stale every new day.
    """
    if path != MANIFEST or data is None:
        return data
    try:
        document = json.loads(data)
    except ValueError:
        return data
    if isinstance(document, dict):
        document.pop("as_of", None)
    return json.dumps(document, sort_keys=True).encode("utf-8")


def stale(out: Path, artifacts: Artifacts) -> list[str]:
    """Paths whose content differs between ``out`` and ``artifacts`` (added, changed, removed)."""
    current = read_tree(out)
    wanted = {path: text.encode("utf-8") for path, text in artifacts.items()}
    return sorted(
        p
        for p in set(current) | set(wanted)
        if (old := current.get(p)) != (new := wanted.get(p))
        and _comparable(p, old) != _comparable(p, new)
    )


def write(out: Path, artifacts: Artifacts) -> list[str]:
    """Replace ``out`` with exactly ``artifacts``; return the paths that changed."""
    changed = stale(out, artifacts)
    if not changed:
        return []
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    made: set[Path] = set()
    try:
        for path, text in artifacts.items():
            target = staging / path
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            old = out / path
            if path not in changed and old.is_file() and not old.is_symlink():
                os.link(old, target)
            else:
                target.write_bytes(text.encode("utf-8"))
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, retired / "tree")
            os.rename(staging, out)
            shutil.rmtree(retired)
        else:
            os.rename(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return changed
