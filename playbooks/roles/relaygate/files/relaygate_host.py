#!/usr/bin/env python3
"""relaygate host helper: the per-file work of a relay deploy, run on the relay by Ansible.

Input: a bundle made by ``relaygate_release.py`` from a verified ``relaygate compile``
output: JSON with ``format`` ``relaygate-bundle/1`` and ``files``, a mapping of NAME to
TEXT. NAME is the file's place in a generation folder: ``postfix/X`` becomes ``X``,
``nftables/relay.nft`` becomes ``relay.nft``. The deploy ships this script with the bundle
appended as its last line (``# relaygate-bundle: JSON``): one file, copied and validated
once, carries the code and the release it applies. ``--bundle FILE`` reads another file.

Layout on the relay (CONF is the Postfix config folder, ``postfix -c CONF``)::

    CONF/relaygate -> relaygate.generations/<id>   the live maps: a symlink, switched by rename
    CONF/relaygate.generations/<id>/               one generation: map sources, their .lmdb,
                                                   main.cf.fragment, relay.nft, GENERATION
    CONF/relaygate.generations/rollback/           this run's rollback point: main.cf, master.cf,
                                                   link, nft.listing, nft-state.json (taken right
                                                   before the change, gone when the run ends)
    CONF/relaygate.generations/previous/           the same for the last successful change: the
                                                   previous generation of every file
    CONF/relaygate.generations/nft-state.json      the ruleset last loaded: sha256 and listing

Invariants:

- a generation folder is complete (every lmdb map built, GENERATION written) before it is
  renamed into ``relaygate.generations/``, and before the symlink points at it;
- ``rollback/`` is taken right before a change and describes the state that worked; a failed
  run restores it byte for byte and removes it, so the relay ends exactly as it began;
- ``commit`` (after the health gate) turns ``rollback/`` into ``previous/``; the generations
  named by the live link and by ``previous/`` are never pruned;
- only ``snapshot``, ``stage``, ``switch``, ``nft-load``, ``rollback`` and ``commit`` write,
  and only under CONF (``rollback`` also reloads Postfix and the ``inet relaygate`` table);
- every subcommand prints one JSON object on stdout; exit 0 means done, 1 means refused (the
  reason is in the JSON ``error`` and on stderr).

Output of any command that Postfix or nft runs here is treated as a failure when the task
says so (``postmap`` warnings, cidr parse warnings): Postfix often warns and exits 0.

Runs on the relay's own Python 3.9+ with the standard library only.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import shlex
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUNDLE_FORMAT = "relaygate-bundle/1"
BUNDLE_MARKER = "# relaygate-bundle: "
LIVE = "relaygate"
GENERATIONS = "relaygate.generations"
PREVIOUS = "previous"
ROLLBACK = "rollback"
NFT_STATE = "nft-state.json"
RECORD = "GENERATION"
TABLE = "inet relaygate"
FRAGMENT = "main.cf.fragment"
MASTER_FRAGMENT = "master.cf.fragment"
RULESET = "relay.nft"
#: The files a revoke replaces; everything else comes from the live generation.
REVOKE_FILES = ("refused_clients", "refused_clients.cidr", "refused_logins", RULESET)
#: The map sources the mass-change guard counts as allow entries, with their kind.
ALLOW_MAPS = (
    ("legacy_clients", "legacy"),
    ("legacy_clients.cidr", "legacy"),
    ("sender_login", "sender"),
)
#: main.cf parameters a fragment may set: the relay policy and our own restriction classes.
FRAGMENT_PARAMS = (
    "smtpd_restriction_classes",
    "smtpd_sender_login_maps",
    "smtpd_relay_restrictions",
)
FRAGMENT_PREFIX = "relaygate_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
PARAM_LINE = re.compile(r"([a-z][a-z0-9_]*) = (\S.*)")
#: master.cf.fragment: ``service/type/parameter=value``; only smtpd parameters of a service.
MASTER_LINE = re.compile(r"([A-Za-z0-9_.:-]+/(?:inet|unix|pass))/(smtpd_[a-z0-9_]+)=(\S.*)")
RESERVED = frozenset({RECORD, PREVIOUS, ROLLBACK, NFT_STATE})
GENERATION_NAME = re.compile(r"[0-9a-f]{16}(-\d+)?")


class Refused(Exception):
    """A check failed: the message says what and where."""


# --- small utilities -----------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise Refused(
            f"{shlex.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
        )
    return done


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write beside ``path`` and rename over it: a reader sees the old or the new bytes."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def is_lmdb_source(name: str) -> bool:
    """Every map source except cidr tables, the fragments and the ruleset is built into lmdb."""
    return not name.endswith((".cidr", ".lmdb", ".fragment")) and name not in (RULESET, RECORD)


def generation_id(files: dict[str, bytes]) -> str:
    """The identity of a file set: same files, same id, whatever the compile date."""
    listing = json.dumps({name: sha256(data) for name, data in sorted(files.items())})
    return sha256(listing.encode("utf-8"))


def map_entries(text: str) -> list[tuple[str, str]]:
    """(key, value) of every entry of a Postfix table source (comments and blanks skipped)."""
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, *value = line.split(None, 1)
        entries.append((key, " ".join(" ".join(value).split())))
    return entries


def fragment_params(text: str) -> dict[str, str]:
    """The ``name = value`` lines of a main.cf fragment; raises Refused on anything else."""
    params: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        match = PARAM_LINE.fullmatch(line)
        if match is None:
            raise Refused(f"{FRAGMENT}:{number}: not a 'name = value' line: {line[:80]!r}")
        name, value = match.groups()
        if name not in FRAGMENT_PARAMS and not name.startswith(FRAGMENT_PREFIX):
            raise Refused(f"{FRAGMENT}:{number}: parameter {name!r} is not one relaygate manages")
        if name in params:
            raise Refused(f"{FRAGMENT}:{number}: parameter {name!r} is set twice")
        params[name] = value
    return params


# --- the bundle and the generations ----------------------------------------------------------


def load_bundle(path: Path) -> dict[str, bytes]:
    """The bundle in ``path``: a JSON file, or this script's last line ``# relaygate-bundle: ``."""
    try:
        text = path.read_text(encoding="utf-8")
        _head, marker, tail = text.rpartition(f"\n{BUNDLE_MARKER}")
        document = json.loads(tail if marker else text)
    except (OSError, ValueError) as error:
        raise Refused(f"{path}: no readable bundle: {error}") from error
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise Refused(f"{path}: not a {BUNDLE_FORMAT} bundle")
    files = document.get("files")
    if not isinstance(files, dict) or not files:
        raise Refused(f"{path}: the bundle has no files")
    result: dict[str, bytes] = {}
    for name, text in files.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise Refused(f"{path}: bundle entries must be text")
        parts = name.split("/")
        if (
            not NAME_PATTERN.fullmatch(name)
            or ".." in parts
            or name.endswith(".lmdb")
            or parts[0] in RESERVED
        ):
            raise Refused(f"{path}: refusing file name {name!r}")
        result[name] = text.encode("utf-8")
    for required in (FRAGMENT, RULESET, "legacy_clients", "refused_clients", "sender_login"):
        if required not in result:
            raise Refused(f"{path}: the bundle lacks {required}")
    return result


def bundle_path(args: argparse.Namespace) -> Path:
    return Path(args.bundle) if args.bundle else Path(__file__)


def generations(config: Path) -> Path:
    return config / GENERATIONS


def live_name(config: Path) -> str | None:
    """The generation the live symlink points at (None: no symlink)."""
    link = config / LIVE
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def read_generation(folder: Path) -> dict[str, bytes] | None:
    """The files of an intact generation folder, or None when anything is off."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        expected: dict[str, str] = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    files: dict[str, bytes] = {}
    for name, digest in expected.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            return None
        data = path.read_bytes()
        if sha256(data) != digest:
            return None
        if is_lmdb_source(name) and not (folder / f"{name}.lmdb").is_file():
            return None
        files[name] = data
    allowed = {RECORD} | set(expected) | {f"{n}.lmdb" for n in expected if is_lmdb_source(n)}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    if present - allowed or record.get("id") != generation_id(files):
        return None
    return files


def live_files(config: Path) -> dict[str, bytes] | None:
    name = live_name(config)
    return None if name is None else read_generation(generations(config) / name)


def snapshot_name(config: Path, which: str) -> str | None:
    """The generation a snapshot (previous/ or rollback/) names as live at its time."""
    link = generations(config) / which / "link"
    if not link.is_file():
        return None
    target = link.read_text(encoding="utf-8").strip()
    return Path(target).name if target else None


def wanted_files(config: Path, bundle: dict[str, bytes], mode: str) -> dict[str, bytes]:
    """The file set this run deploys: the whole bundle, or the live set with the revoke files."""
    if mode == "full":
        return dict(bundle)
    current = live_files(config)
    if current is None:
        raise Refused(
            f"{config}: no intact live relaygate generation; a revoke needs a full deploy first"
        )
    merged = dict(current)
    for name in REVOKE_FILES:
        merged[name] = bundle[name]
    return merged


def build_name(config: Path, generation: str) -> str:
    """A folder name for a new generation that no link or snapshot names."""
    busy = {live_name(config), snapshot_name(config, PREVIOUS), snapshot_name(config, ROLLBACK)}
    base = generation[:16]
    for suffix in ("", *(f"-{n}" for n in range(1, 100))):
        if base + suffix not in busy:
            return base + suffix
    raise Refused("no free generation name")  # pragma: no cover - needs 100 drifted rebuilds


# --- postconf, postmap, nft ------------------------------------------------------------------


def postconf_params(config: Path) -> dict[str, str]:
    done = run(["postconf", "-c", str(config), "-n"])
    params = {}
    for line in done.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            params[name.strip()] = " ".join(value.split())
    return params


def master_entry(config: Path, service: str) -> list[str]:
    """The master.cf entry of ``service/type`` as words (empty: no such service)."""
    return run(["postconf", "-c", str(config), "-M", service]).stdout.split()


def master_fragment_params(text: str) -> dict[str, str]:
    """``service/type/parameter`` -> value of a master.cf fragment; Refused on anything else."""
    params: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        match = MASTER_LINE.fullmatch(line)
        if match is None:
            raise Refused(f"{MASTER_FRAGMENT}:{number}: not a 'service/type/smtpd_parameter=value'")
        service, name, value = match.groups()
        key = f"{service}/{name}"
        if key in params:
            raise Refused(f"{MASTER_FRAGMENT}:{number}: {key} is set twice")
        params[key] = value
    return params


def master_params(config: Path, keys: list[str]) -> dict[str, str]:
    if not keys:
        return {}
    done = run(["postconf", "-c", str(config), "-P", *keys])
    have = {}
    for line in done.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            have[name.strip()] = " ".join(value.split())
    return have


def nft_listing(nft: list[str]) -> str | None:
    done = run([*nft, "list", "table", *TABLE.split()], check=False)
    return done.stdout if done.returncode == 0 else None


def nft_restore_script(listing: str | None) -> str:
    """An nft file that recreates ``listing`` (or removes our table) in one transaction."""
    head = f"table {TABLE}\ndelete table {TABLE}\n"
    return head + (listing or "")


def check_lmdb_source(config: Path, name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="relaygate-check-") as scratch:
        path = Path(scratch) / "map"
        path.write_bytes(data)
        done = run(["postmap", "-c", str(config), f"lmdb:{path}"], check=False)
        if done.returncode or done.stdout.strip() or done.stderr.strip():
            raise Refused(f"{name}: postmap refuses it: {(done.stderr or done.stdout).strip()}")


def check_cidr(config: Path, name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="relaygate-check-") as scratch:
        path = Path(scratch) / "map.cidr"
        path.write_bytes(data)
        # A lookup parses the whole table; exit 1 only means "127.0.0.1 not found".
        done = run(["postmap", "-c", str(config), "-q", "127.0.0.1", f"cidr:{path}"], check=False)
        if done.returncode not in (0, 1) or done.stderr.strip():
            raise Refused(f"{name}: the cidr table does not parse cleanly: {done.stderr.strip()}")


def check_ruleset(nft: list[str], data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="relaygate-check-") as scratch:
        path = Path(scratch) / RULESET
        path.write_bytes(data)
        done = run([*nft, "-c", "-f", str(path)], check=False)
        if done.returncode:
            raise Refused(f"{RULESET}: nft -c refuses it: {(done.stderr or done.stdout).strip()}")


# --- subcommands -----------------------------------------------------------------------------


def cmd_allow_entries(args: argparse.Namespace) -> dict[str, Any]:
    """The allow entries the relay serves now, as ``kind<TAB>key<TAB>value`` strings."""
    folder = Path(args.config) / LIVE
    entries: list[str] = []
    present = False
    for name, kind in ALLOW_MAPS:
        path = folder / name
        if path.is_file():
            present = True
            text = path.read_text(encoding="utf-8")
            entries.extend(f"{kind}\t{key}\t{value}" for key, value in map_entries(text))
    return {"present": present, "entries": sorted(set(entries))}


def cmd_check_bundle(args: argparse.Namespace) -> dict[str, Any]:
    """Validate every file of a bundle with the tool that will read it (the copy validator)."""
    config = Path(args.config)
    files = load_bundle(bundle_path(args))
    for name, data in sorted(files.items()):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise Refused(f"{name}: not UTF-8 text") from error
        if name == FRAGMENT:
            fragment_params(text)
        elif name == MASTER_FRAGMENT:
            master_fragment_params(text)
        elif name == RULESET:
            check_ruleset(shlex.split(args.nft), data)
        elif name.endswith(".cidr"):
            check_cidr(config, name, data)
        else:
            check_lmdb_source(config, name, data)
    return {"ok": True, "files": len(files)}


def unified(name: str, old: bytes | None, new: bytes | None) -> list[str]:
    before = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    after = (new or b"").decode("utf-8", "replace").splitlines(keepends=True)
    return list(
        difflib.unified_diff(
            before,
            after,
            fromfile=f"live/{name}" if old is not None else "/dev/null",
            tofile=f"new/{name}" if new is not None else "/dev/null",
        )
    )


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    """What this run would change on the relay; read-only, so it runs in --check too."""
    config = Path(args.config)
    nft = shlex.split(args.nft)
    bundle = load_bundle(bundle_path(args))
    wanted = wanted_files(config, bundle, args.mode)
    generation = generation_id(wanted)
    current = live_files(config)
    current_record = None
    if current is not None:
        current_record = generation_id(current)
    maps = current_record != generation
    diff: list[str] = []
    if maps:
        old = current or {}
        for name in sorted(set(old) | set(wanted)):
            if old.get(name) != wanted.get(name):
                diff += unified(name, old.get(name), wanted.get(name))
    params_set: list[str] = []
    params_remove: list[str] = []
    master_set: list[str] = []
    master_remove: list[str] = []
    service = False
    if args.mode == "full":
        want_master = master_fragment_params(wanted.get(MASTER_FRAGMENT, b"").decode("utf-8"))
        for needed in sorted({key.rsplit("/", 1)[0] for key in want_master}):
            if not master_entry(config, needed):
                raise Refused(
                    f"master.cf has no {needed} service, and {MASTER_FRAGMENT} sets its "
                    f"parameters; add the service to master.cf first (e.g. "
                    f"'{needed.split('/')[0]} inet n - y - - smtpd')"
                )
        old_master = master_fragment_params(
            (current or {}).get(MASTER_FRAGMENT, b"").decode("utf-8")
        )
        have_master = master_params(config, sorted(set(want_master) | set(old_master)))
        for key, value in want_master.items():
            if have_master.get(key) != " ".join(value.split()):
                master_set.append(f"{key}={value}")
                diff.append(f"+master.cf: {key} = {value}\n")
        master_remove = sorted(k for k in old_master if k not in want_master and k in have_master)
        diff += [f"-master.cf: {k} = {have_master[k]}\n" for k in master_remove]
        have = postconf_params(config)
        want = fragment_params(wanted[FRAGMENT].decode("utf-8"))
        for name, value in want.items():
            if have.get(name) != " ".join(value.split()):
                params_set.append(f"{name} = {value}")
                if name in have:
                    diff.append(f"-main.cf: {name} = {have[name]}\n")
                diff.append(f"+main.cf: {name} = {value}\n")
        params_remove = sorted(n for n in have if n.startswith(FRAGMENT_PREFIX) and n not in want)
        diff += [f"-main.cf: {n} = {have[n]}\n" for n in params_remove]
        if args.probe_service:
            entry = shlex.split(args.probe_service_entry)
            service = master_entry(config, f"{args.probe_service}/inet") != entry
            if service:
                diff.append(f"+master.cf: {' '.join(entry)}\n")
    state = read_nft_state(config)
    listing = nft_listing(nft)
    ruleset_sha = sha256(wanted[RULESET])
    nft_pending = state is None or state.get("source_sha256") != ruleset_sha
    if not nft_pending and state is not None and state.get("listing") != listing:
        nft_pending = True
        diff.append(f"~nft: the loaded table {TABLE} drifted from the deployed ruleset; reload\n")
    elif nft_pending and not maps:
        diff.append(f"~nft: table {TABLE} is not the deployed ruleset; reload\n")
    adopt = (config / LIVE).is_dir() and not (config / LIVE).is_symlink()
    pending = (
        maps
        or bool(params_set or params_remove or master_set or master_remove)
        or service
        or nft_pending
        or adopt
    )
    # An intact folder of this very generation (the previous one, after a rollback or a
    # revert) is switched back to as it is; otherwise a new folder is built.
    build = None
    stage = False
    if maps:
        existing = generations(config) / generation[:16]
        files = read_generation(existing) if existing.name != live_name(config) else None
        if files is not None and generation_id(files) == generation:
            build = existing.name
        else:
            build, stage = build_name(config, generation), True
    return {
        "mode": args.mode,
        "generation": generation[:16],
        "live": live_name(config),
        "live_intact": current is not None,
        "build": build,
        "stage": stage,
        "maps": maps,
        "adopt": adopt,
        "params_set": params_set,
        "params_remove": params_remove,
        "master_set": master_set,
        "master_remove": master_remove,
        "service": service,
        "nft": nft_pending,
        "pending": pending,
        "diff": "".join(diff),
    }


def read_nft_state(config: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((generations(config) / NFT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def cmd_snapshot(args: argparse.Namespace) -> dict[str, Any]:
    """Record the state before this run's change: the rollback point and the previous generation."""
    config = Path(args.config)
    folder = generations(config)
    folder.mkdir(mode=0o755, exist_ok=True)
    adopted = None
    live = config / LIVE
    if live.is_dir() and not live.is_symlink():
        # A map folder made by hand before relaygate: keep it as a generation of its own.
        adopted = build_name(config, "adopted")
        os.rename(live, folder / adopted)
        os.symlink(f"{GENERATIONS}/{adopted}", live)
    staging = Path(tempfile.mkdtemp(prefix=f".{ROLLBACK}.", dir=folder))
    for name in ("main.cf", "master.cf"):
        shutil.copy2(config / name, staging / name)
    (staging / "link").write_text(os.readlink(live) if live.is_symlink() else "", "utf-8")
    listing = nft_listing(shlex.split(args.nft))
    (staging / "nft.listing").write_text(json.dumps({"listing": listing}), "utf-8")
    state = folder / NFT_STATE
    if state.is_file():
        shutil.copy2(state, staging / NFT_STATE)
    os.chmod(staging, 0o755)
    target = folder / ROLLBACK
    if target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)
    return {"snapshot": str(target), "adopted": adopted}


def cmd_stage(args: argparse.Namespace) -> dict[str, Any]:
    """Build a complete generation folder beside the live one (postmap on a temporary name)."""
    config = Path(args.config)
    folder = generations(config)
    folder.mkdir(mode=0o755, exist_ok=True)
    wanted = wanted_files(config, load_bundle(bundle_path(args)), args.mode)
    name = args.build
    if name == live_name(config) or not GENERATION_NAME.fullmatch(name):
        raise Refused(f"refusing to build generation {name!r}")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder))
    try:
        for path, data in sorted(wanted.items()):
            target = staging / path
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            target.write_bytes(data)
            os.chmod(target, 0o644)
        for path in sorted(wanted):
            if is_lmdb_source(path):
                done = run(["postmap", "-c", str(config), f"lmdb:{staging / path}"], check=False)
                if done.returncode or done.stdout.strip() or done.stderr.strip():
                    raise Refused(f"postmap {path}: {(done.stderr or done.stdout).strip()}")
        digests = {path: sha256(data) for path, data in wanted.items()}
        record = {"id": generation_id(wanted), "files": digests}
        (staging / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        os.chmod(staging, 0o755)
        final = folder / name
        if final.exists():
            shutil.rmtree(final)  # a leftover that no link or snapshot names
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    if read_generation(folder / name) is None:
        raise Refused(f"generation {name} does not read back intact")
    return {"build": name}


def point_live_at(config: Path, target: str) -> None:
    """Replace the live symlink in one rename (a reader sees the old or the new folder)."""
    temp = config / f".{LIVE}.link-{os.getpid()}"
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    os.symlink(target, temp)
    os.replace(temp, config / LIVE)


def cmd_switch(args: argparse.Namespace) -> dict[str, Any]:
    config = Path(args.config)
    if read_generation(generations(config) / args.build) is None:
        raise Refused(f"generation {args.build} is not intact; not switching")
    before = live_name(config)
    point_live_at(config, f"{GENERATIONS}/{args.build}")
    return {"live": args.build, "was": before}


def cmd_nft_load(args: argparse.Namespace) -> dict[str, Any]:
    """nft -c -f, then nft -f (one transaction), then remember what the kernel holds."""
    config = Path(args.config)
    nft = shlex.split(args.nft)
    run([*nft, "-c", "-f", args.ruleset])
    run([*nft, "-f", args.ruleset])
    listing = nft_listing(nft)
    if listing is None:
        raise Refused(f"table {TABLE} is not loaded after nft -f")
    state = {"source_sha256": sha256(Path(args.ruleset).read_bytes()), "listing": listing}
    write_atomic(generations(config) / NFT_STATE, json.dumps(state, sort_keys=True).encode())
    return {"recorded": True}


def restore_file(path: Path, data: bytes) -> bool:
    if path.is_file() and path.read_bytes() == data:
        return False
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    write_atomic(path, data, mode)
    return True


def cmd_rollback(args: argparse.Namespace) -> dict[str, Any]:
    """Return the relay to this run's snapshot: main.cf, master.cf, maps, nft; reload."""
    config = Path(args.config)
    nft = shlex.split(args.nft)
    folder = generations(config)
    snapshot = folder / ROLLBACK
    if not (snapshot / "main.cf").is_file():
        raise Refused(f"{snapshot}: no snapshot to roll back to")
    actions: list[str] = []
    for name in ("main.cf", "master.cf"):
        if restore_file(config / name, (snapshot / name).read_bytes()):
            actions.append(f"restored {name}")
    link = (snapshot / "link").read_text(encoding="utf-8").strip()
    live = config / LIVE
    if not link:
        if live.is_symlink():
            live.unlink()
            actions.append(f"removed {LIVE} (there was none before)")
    elif not live.is_symlink() or os.readlink(live) != link:
        point_live_at(config, link)
        actions.append(f"{LIVE} -> {link}")
    wanted = json.loads((snapshot / "nft.listing").read_text(encoding="utf-8"))["listing"]
    if nft_listing(nft) != wanted:
        with tempfile.TemporaryDirectory(prefix="relaygate-rollback-") as scratch:
            script = Path(scratch) / "restore.nft"
            script.write_text(nft_restore_script(wanted), encoding="utf-8")
            run([*nft, "-f", str(script)])
        actions.append(f"reloaded table {TABLE}" if wanted else f"removed table {TABLE}")
    state = snapshot / NFT_STATE
    if state.is_file():
        restore_file(folder / NFT_STATE, state.read_bytes())
    elif (folder / NFT_STATE).is_file():
        (folder / NFT_STATE).unlink()
    if args.discard and args.discard != live_name(config):
        path = folder / args.discard
        if path.is_dir() and GENERATION_NAME.fullmatch(args.discard):
            shutil.rmtree(path)
            actions.append(f"discarded generation {args.discard}")
    if run(["postfix", "-c", str(config), "status"], check=False).returncode == 0:
        run(["postfix", "-c", str(config), "reload"])
        actions.append("reloaded postfix")
    # The relay is as it was before the run; previous/ still names the generation before it.
    shutil.rmtree(snapshot)
    return {"actions": actions}


def cmd_commit(args: argparse.Namespace) -> dict[str, Any]:
    """After the health gate: this run's snapshot becomes previous/; older generations go."""
    config = Path(args.config)
    folder = generations(config)
    snapshot = folder / ROLLBACK
    if snapshot.is_dir():
        if (folder / PREVIOUS).exists():
            shutil.rmtree(folder / PREVIOUS)
        os.rename(snapshot, folder / PREVIOUS)
    keep = {live_name(config), snapshot_name(config, PREVIOUS), PREVIOUS, NFT_STATE}
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path.name)
    return {"previous": snapshot_name(config, PREVIOUS), "removed": removed}


# --- the health probe ------------------------------------------------------------------------


def split_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def code_of(reply: tuple[int, bytes]) -> tuple[int, str]:
    return reply[0], reply[1].decode("utf-8", "replace")


def probe_case(
    listen: tuple[str, int], case: dict[str, str], recipient: str, timeout: float
) -> dict[str, Any]:
    """One XCLIENT session: present the client address, send MAIL and RCPT, never DATA."""
    client = case["client"]
    address = f"IPV6:{client}" if ":" in client else client
    result: dict[str, Any] = dict(case)
    with smtplib.SMTP(listen[0], listen[1], timeout=timeout) as session:
        session.ehlo("relaygate-probe")
        code, text = code_of(session.docmd("XCLIENT", f"ADDR={address} NAME=[UNAVAILABLE]"))
        if code != 220:
            result.update(got="error", reply=f"XCLIENT {code} {text}")
            return result
        # XCLIENT restarts the session: the server expects a new EHLO.
        session.ehlo_resp = None
        session.does_esmtp = False
        session.ehlo("relaygate-probe")
        code, text = code_of(session.docmd("MAIL", f"FROM:<{case['sender']}>"))
        if code == 250:
            code, text = code_of(session.docmd("RCPT", f"TO:<{recipient}>"))
        session.docmd("RSET")
    result["reply"] = f"{code} {text}"
    result["got"] = "accept" if 200 <= code < 300 else "refuse" if 500 <= code < 600 else "error"
    return result


def probe_once(args: argparse.Namespace, cases: list[dict[str, str]]) -> dict[str, Any]:
    relays = []
    for value in args.relay:
        try:
            with socket.create_connection(split_listen(value), timeout=args.timeout) as sock:
                banner = sock.recv(512).decode("utf-8", "replace").strip()
                sock.sendall(b"QUIT\r\n")
        except OSError as error:
            banner = f"unreachable: {error}"
        relays.append({"listen": value, "banner": banner, "ok": banner.startswith("220")})
    results = []
    for case in cases:
        try:
            results.append(
                probe_case(split_listen(args.xclient), case, args.recipient, args.timeout)
            )
        except (OSError, smtplib.SMTPException) as error:
            results.append({**case, "got": "error", "reply": f"{type(error).__name__}: {error}"})
    ok = all(r["ok"] for r in relays) and all(r["got"] == r["expect"] for r in results)
    return {"ok": ok, "relays": relays, "cases": results}


def cmd_probe(args: argparse.Namespace) -> dict[str, Any]:
    """The health gate: the relay answers on its ports and the policy answers as compiled."""
    cases = json.loads(args.cases)
    result: dict[str, Any] = {}
    for attempt in range(1, args.attempts + 1):
        # After `postfix reload` the master restarts its services; give it a moment.
        time.sleep(args.settle if attempt == 1 else args.delay)
        result = probe_once(args, cases)
        result["attempts"] = attempt
        if result["ok"]:
            return result
    failed = [
        f"{c['client']} from <{c['sender']}>: expected {c['expect']}, got {c['reply']}"
        for c in result["cases"]
        if c["got"] != c["expect"]
    ] + [f"{r['listen']}: {r['banner']}" for r in result["relays"] if not r["ok"]]
    raise Refused("health probe failed: " + "; ".join(failed))


# --- command line ----------------------------------------------------------------------------

COMMANDS = {
    "allow-entries": cmd_allow_entries,
    "check-bundle": cmd_check_bundle,
    "plan": cmd_plan,
    "snapshot": cmd_snapshot,
    "stage": cmd_stage,
    "switch": cmd_switch,
    "nft-load": cmd_nft_load,
    "rollback": cmd_rollback,
    "commit": cmd_commit,
    "probe": cmd_probe,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="relaygate_host.py", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        command = sub.add_parser(name)
        if name != "probe":
            command.add_argument("--config", required=True, help="the Postfix config folder")
        if name in ("check-bundle", "plan", "snapshot", "nft-load", "rollback"):
            command.add_argument("--nft", default="nft", help="the nft command, e.g. 'nft'")
        if name in ("check-bundle", "plan", "stage"):
            command.add_argument("--bundle", help="default: the bundle appended to this script")
        if name in ("plan", "stage"):
            command.add_argument("--mode", choices=("full", "revoke"), default="full")
        if name == "plan":
            command.add_argument("--probe-service", default="")
            command.add_argument("--probe-service-entry", default="")
        if name in ("stage", "switch"):
            command.add_argument("--build", required=True)
        if name == "nft-load":
            command.add_argument("--ruleset", required=True)
        if name == "rollback":
            command.add_argument("--discard", default="")
        if name == "probe":
            command.add_argument("--relay", action="append", default=[], help="HOST:PORT")
            command.add_argument("--xclient", required=True, help="HOST:PORT allowing XCLIENT")
            command.add_argument("--recipient", required=True)
            command.add_argument("--cases", required=True, help="JSON list of cases")
            command.add_argument("--timeout", type=float, default=10.0)
            command.add_argument("--attempts", type=int, default=5)
            command.add_argument("--settle", type=float, default=0.5)
            command.add_argument("--delay", type=float, default=1.0)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = COMMANDS[args.command](args)
    except Refused as error:
        print(json.dumps({"error": str(error)}))
        print(f"relaygate_host.py {args.command}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
