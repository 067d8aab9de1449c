"""A content-addressed cache of per-file results, shared safely between runs.

Input: keys that are hashes of everything a result depends on (the file's
bytes, the schema's text, the site/units/NetReg facts a check reads, the
as-of day, relaygate's version); values that are plain JSON. Output: the
value stored under a key, or None.

Invariants:

- The cache only ever saves time. Any problem with it (a corrupt database, a
  locked one, an unreadable folder, a link where a folder belongs) makes it
  answer "not cached" and the run computes the result itself; nothing here
  raises into the pipeline.
- An entry is trusted only if its MAC verifies under a secret key kept in the
  user's own cache folder (``$XDG_CACHE_HOME/relaygate/secret.key``), never
  beside the inventory. A cache folder committed to the repository by someone
  else, or an entry edited by hand, is foreign: ignored and rewritten.
- Writes are SQLite transactions (atomic); two runs sharing the folder wait
  for each other briefly and otherwise skip writing.
- Where: ``.relaygate/cache/`` beside the inventory folder (the folder holds a
  ``.gitignore`` of ``*`` so git never shows it), or
  ``$XDG_CACHE_HOME/relaygate/cache`` when that is not usable.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relaygate import __version__

CACHE_DIR = ".relaygate"
_DB = "cache.sqlite3"
_KEY_FILE = "secret.key"
_BUSY_SECONDS = 5.0
#: Bumped when the layout of entries changes, so old entries are never read.
FORMAT = "1"
_CHUNK = 500
#: Past this size the cache file is dropped and started again.
MAX_BYTES = 512 * 1024 * 1024  # keys per query, under SQLite's limit on parameters


def digest(*parts: str | bytes) -> str:
    """A hash of ``parts`` that cannot be confused with another split of the same bytes."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def canonical(value: Any) -> str:
    """The canonical JSON text of a plain value (the form facts are hashed in)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@functools.cache
def code_digest() -> str:
    """A hash of relaygate's own files (code, schemas, templates), read once per process.

    Part of every key beside the version, so a result computed by other code
    (an edited checkout, an upgrade that kept the version) is never read back.
    """
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in code_files(package):
        h.update(path.relative_to(package).as_posix().encode("utf-8", "surrogateescape"))
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def code_files(package: Path) -> list[Path]:
    """Every file of the package, in a stable order, through its folder links too.

    In a source checkout ``resources/templates``, ``schemas`` and ``playbooks``
    are links to the project's folders (a wheel has copies): a walk that did
    not follow them would leave the templates out of the digest, and an
    edited template would be served from the cache.
    """
    found: list[Path] = []
    for folder, subfolders, names in os.walk(package, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        found.extend(Path(folder) / name for name in names if os.path.isfile(Path(folder) / name))
    return sorted(found)


def user_cache_home() -> Path:
    configured = os.environ.get("XDG_CACHE_HOME")
    if configured and os.path.isabs(configured):
        return Path(configured)
    return Path.home() / ".cache"


def _real_folder(path: Path) -> bool:
    """Create ``path`` (0700) if missing; True if it is a real folder, not a link."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _secret() -> bytes | None:
    """The user's MAC key, created once; None when it cannot be kept safely."""
    folder = user_cache_home() / "relaygate"
    if not _real_folder(folder):
        return None
    path = folder / _KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return None
    else:
        # Written in one call; a reader that sees a short key refuses it below.
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            key = handle.read(33)
    except OSError:
        return None
    return key if len(key) == 32 else None


def location(inventory: Path) -> Path | None:
    """The cache folder for an inventory: beside it if usable, else the user's cache."""
    beside = inventory.resolve().parent / CACHE_DIR
    if _real_folder(beside) and _real_folder(beside / "cache"):
        ignore = beside / ".gitignore"
        with contextlib.suppress(OSError):
            if not os.path.lexists(ignore):
                ignore.write_text("*\n", encoding="utf-8")
        if os.access(beside / "cache", os.W_OK):
            return beside / "cache"
    fallback = user_cache_home() / "relaygate" / "cache"
    return fallback if _real_folder(fallback) else None


class Cache:
    """Entries in one SQLite file; every failure degrades to a miss."""

    def __init__(self, folder: Path, secret: bytes) -> None:
        self.folder = folder
        self._secret = secret
        self._pending: dict[str, str] = {}
        #: Objects built from entries in this process (shared by both sides of a plan).
        self.objects: dict[str, Any] = {}
        #: Values already read and verified in this process, by key (read-only).
        self._read: dict[str, Any] = {}
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        # Every key starts with the entry format, relaygate's version and its code.
        self._seed = hashlib.sha256(
            f"relaygate-cache\0{FORMAT}\0{__version__}\0{code_digest()}\0".encode()
        )
        self._connect(retry=True)

    @classmethod
    def for_inventory(cls, inventory: Path) -> Cache | None:
        """The cache of ``inventory``, or None when no safe place or key exists."""
        secret = _secret()
        folder = location(inventory)
        if secret is None or folder is None:
            return None
        return cls(folder, secret)

    def _connect(self, *, retry: bool) -> None:
        path = self.folder / _DB
        try:
            if os.path.lexists(path):
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode):
                    return  # a link or something else: never open it
                if info.st_size > MAX_BYTES and retry:
                    # Entries of old versions and old files are never pruned one by
                    # one; past the cap the cache starts again.
                    raise sqlite3.DatabaseError("over the size cap")
            db = sqlite3.connect(path, timeout=_BUSY_SECONDS, isolation_level=None)
            db.execute(
                "CREATE TABLE IF NOT EXISTS entries"
                " (key TEXT PRIMARY KEY, mac TEXT NOT NULL, value TEXT NOT NULL)"
            )
            db.execute("SELECT count(*) FROM entries WHERE key = ''").fetchone()
            self._db = db
        except sqlite3.DatabaseError:
            # Not a database (or a damaged one): it is only a cache, so start again.
            if retry:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(OSError):
                        os.unlink(f"{path}{suffix}")
                self._connect(retry=False)
        except OSError:
            return

    def _mac(self, key: str, value: str) -> str:
        # A keyed BLAKE2b is a MAC by itself (no HMAC construction needed).
        mac = hashlib.blake2b(key=self._secret, digest_size=32)
        mac.update(key.encode("ascii"))
        mac.update(b"\0")
        mac.update(value.encode("utf-8", "surrogatepass"))
        return mac.hexdigest()

    def key(self, *parts: str | bytes) -> str:
        """A cache key over ``parts``, relaygate's version and the entry format."""
        h = self._seed.copy()
        for part in parts:
            data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
        return h.hexdigest()

    def _authentic(self, key: str, row: tuple[Any, Any] | None) -> str | None:
        """The stored text of ``row`` if its MAC verifies under ``key`` (else a miss)."""
        mac, value = row if row is not None else (None, None)
        if not isinstance(mac, str) or not isinstance(value, str):
            self.misses += 1
            return None
        if not hmac.compare_digest(mac, self._mac(key, value)):
            self.misses += 1
            return None  # foreign or damaged: recomputed and overwritten
        return value

    def _decode(self, key: str, row: tuple[Any, Any] | None) -> Any | None:
        value = self._authentic(key, row)
        if value is None:
            return None
        try:
            decoded = json.loads(value)
        except ValueError:
            self.misses += 1
            return None
        self.hits += 1
        return decoded

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """The authentic values among ``keys`` (absent keys are misses), in few queries.

        The entries read from the database are decoded as one JSON array: one
        parse, and the field names that every record repeats are one string
        each, not one per record (a tenth of a 10k-record plan's memory).
        """
        found: dict[str, Any] = {}
        rows: dict[str, tuple[Any, Any]] = {}
        if self._db is not None:
            wanted = [k for k in keys if k not in self._pending and k not in self._read]
            try:
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for key, mac, value in self._db.execute(
                        f"SELECT key, mac, value FROM entries WHERE key IN ({marks})",
                        chunk,
                    ):
                        rows[key] = (mac, value)
            except sqlite3.Error:
                rows = {}
        stored: dict[str, str] = {}
        for key in keys:
            known = self._read.get(key)
            if known is not None:
                found[key] = known
                continue
            pending = self._pending.get(key)
            if pending is not None:
                found[key] = json.loads(pending)
                continue
            if key in stored:
                continue
            value = self._authentic(key, rows.get(key))
            if value is not None:
                stored[key] = value
        del rows
        for key, decoded in self._decode_all(stored).items():
            if decoded is not None:
                found[key] = self._read[key] = decoded
        return found

    def _decode_all(self, stored: dict[str, str]) -> dict[str, Any]:
        """Authentic entries' values, decoded together; one by one if that fails."""
        if not stored:
            return {}
        try:
            together = json.loads(f"[{','.join(stored.values())}]")
        except ValueError:
            together = None
        if isinstance(together, list) and len(together) == len(stored):
            self.hits += len(stored)
            return dict(zip(stored, together, strict=True))
        # Every entry is one JSON document as ``put`` wrote it (a valid MAC means
        # ``put`` wrote it, with this user's secret), so this is reached only when
        # one is not: each is then decoded alone. The count check cannot tell
        # values that parse together but split otherwise; only ``put`` writes
        # values, so there are none.
        decoded: dict[str, Any] = {}
        for key, value in stored.items():
            try:
                decoded[key] = json.loads(value)
            except ValueError:
                self.misses += 1
                continue
            self.hits += 1
        return decoded

    def get(self, key: str) -> Any | None:
        """The value under ``key`` if present and authentic, else None."""
        known = self._read.get(key)
        if known is not None:
            return known
        pending = self._pending.get(key)
        if pending is not None:
            return json.loads(pending)
        if self._db is None:
            self.misses += 1
            return None
        try:
            row = self._db.execute(
                "SELECT mac, value FROM entries WHERE key = ?", (key,)
            ).fetchone()
        except sqlite3.Error:
            row = None
        value = self._decode(key, row)
        if value is not None:
            self._read[key] = value
        return value

    def put(self, key: str, value: Any) -> None:
        """Remember ``value`` (plain JSON data); written by ``flush``."""
        self._pending[key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def flush(self) -> None:
        """Write pending entries in one transaction; on contention or damage, drop them."""
        if self._db is None or not self._pending:
            self._pending.clear()
            return
        rows = [(k, self._mac(k, v), v) for k, v in self._pending.items()]
        self._pending.clear()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


@contextlib.contextmanager
def opened(inventory: Path, enabled: bool) -> Iterator[Cache | None]:
    """The inventory's cache for one command (None with ``--no-cache``), flushed and closed."""
    store = Cache.for_inventory(inventory) if enabled else None
    try:
        yield store
    finally:
        if store is not None:
            store.close()


#: The ``--no-cache`` option every command that loads an inventory takes.
NO_CACHE_HELP = "Compute everything afresh; neither read nor write the cache."
