#!/usr/bin/env python3
"""relaygate release check: decide on the controller whether a compiled folder may be deployed.

Input: the folder ``relaygate compile --out DIR`` wrote, with ``manifest.json`` listing every
artifact and its sha256.

``verify --out DIR`` prints one JSON object. When the folder is exactly what the compiler
wrote (a ``relaygate`` manifest, every checksum and size matching, no file missing, no file
extra, no symlink), it holds ``ok: true`` and what the deploy needs, all read from the
verified bytes (never re-read after checking):

- ``bundle``: the files a relay receives (``postfix/*`` and ``nftables/relay.nft``) under
  their names in a generation folder (see relaygate_host.py);
- ``allow_entries``: every allow entry as ``kind<TAB>key<TAB>value`` (legacy clients from
  ``legacy_clients`` and ``legacy_clients.cidr``, sender logins from ``sender_login``), for
  the mass-change guard;
- ``probe`` / ``revoke_probe``: the SMTP cases the health gate sends through XCLIENT, with
  the answer each must get (``accept`` = 2xx to RCPT, ``refuse`` = 5xx);
- ``generation``: the id of the bundle's file set (same files, same id).

Otherwise it holds ``ok: false`` and ``problems``, and exits 1. Exit 2 is a usage error.

``acl-package --out DIR --package PKG [--check]`` writes the MOD ACL change package for the
network team: per segment, the ACLs now compiled, the package they replace (``previous/``)
and ``CHANGE.diff``, a unified diff between the two. An unchanged segment is not touched,
so a second run changes nothing. ``--check`` writes nothing and reports the same result.

Standard library only; runs on the controller's Python (``ansible_playbook_python``).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "relaygate-bundle/1"
REQUIRED = (
    "postfix/main.cf.fragment",
    "postfix/legacy_clients",
    "postfix/legacy_clients.cidr",
    "postfix/refused_clients",
    "postfix/refused_clients.cidr",
    "postfix/refused_logins",
    "postfix/sender_login",
    "nftables/relay.nft",
)
FRAGMENT_PARAMS = (
    "smtpd_restriction_classes",
    "smtpd_sender_login_maps",
    "smtpd_relay_restrictions",
)
FRAGMENT_PREFIX = "relaygate_"
PARAM_LINE = re.compile(r"([a-z][a-z0-9_]*) = (\S.*)")
MASTER_LINE = re.compile(r"([A-Za-z0-9_.:-]+/(?:inet|unix|pass))/(smtpd_[a-z0-9_]+)=(\S.*)")
HEX64 = re.compile(r"[0-9a-f]{64}")
#: Sender used where a case needs one the policy does not know (RFC 2606 reserved domain).
PROBE_SENDER = "relaygate-probe@probe.invalid"
#: Unknown clients for the refuse case come from TEST-NET-1 (RFC 5737): never a campus device.
UNKNOWN_CLIENTS = ipaddress.ip_network("192.0.2.0/24")
CLASS_NAME = re.compile(r"relaygate_s_[0-9a-f]{12}")
MAIL = re.compile(
    r"[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
#: No compiled entry is broader than this (relaygate's render guard refuses it).
BROADEST = {4: 8, 6: 32}
ACL_FILE = re.compile(r"acl/(?P<target>ios|junos)/(?P<segment>[a-z0-9-]+)-v[46]\.(acl|conf)")


class Refused(Exception):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_relative(path: str) -> bool:
    pure = PurePosixPath(path)
    return (
        bool(path)
        and "\\" not in path
        and not pure.is_absolute()
        and all(part not in ("", ".", "..") for part in path.split("/"))
    )


def read_verified(out: Path) -> tuple[dict[str, Any], dict[str, bytes], list[str]]:
    """The manifest and every artifact's bytes, plus every reason to refuse the folder."""
    problems: list[str] = []
    if not out.is_dir():
        return {}, {}, [f"{out}: not a folder"]
    manifest_path = out / MANIFEST
    if manifest_path.is_symlink() or not manifest_path.is_file():
        return {}, {}, [f"{out}: no {MANIFEST}: not a folder written by `relaygate compile`"]
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        return {}, {}, [f"{MANIFEST}: not valid JSON ({error})"]
    if not isinstance(manifest, dict) or manifest.get("tool") != "relaygate":
        return {}, {}, [f"{MANIFEST}: not written by relaygate (tool is not 'relaygate')"]
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        return manifest, {}, [f"{MANIFEST}: no artifacts listed"]
    files: dict[str, bytes] = {}
    for path, entry in sorted(artifacts.items()):
        if not isinstance(path, str) or not safe_relative(path) or path == MANIFEST:
            problems.append(f"{MANIFEST}: refusing artifact path {path!r}")
            continue
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not HEX64.fullmatch(entry["sha256"])
            or not isinstance(entry.get("bytes"), int)
        ):
            problems.append(f"{MANIFEST}: entry for {path} has no sha256 and size")
            continue
        target = out / path
        if target.is_symlink() or not target.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
            continue
        data = target.read_bytes()
        if len(data) != entry["bytes"] or sha256(data) != entry["sha256"]:
            problems.append(f"{path}: changed after compiling (sha256 does not match the manifest)")
            continue
        files[path] = data
    for found in sorted(out.rglob("*")):
        relative = found.relative_to(out).as_posix()
        if found.is_symlink():
            problems.append(f"{relative}: a symlink; a compiled folder has none")
        elif found.is_file() and relative != MANIFEST and relative not in artifacts:
            problems.append(f"{relative}: not in the manifest (added after compiling)")
        elif not found.is_file() and not found.is_dir():
            problems.append(f"{relative}: not a regular file")
    for required in REQUIRED:
        if required not in artifacts:
            problems.append(f"{required}: missing from the manifest; the relay needs it")
    return manifest, files, problems


def text_of(files: dict[str, bytes], path: str) -> str:
    try:
        return files[path].decode("utf-8")
    except UnicodeDecodeError as error:
        raise Refused(f"{path}: not UTF-8 text") from error


def map_entries(text: str) -> list[tuple[str, str]]:
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, *value = line.split(None, 1)
        entries.append((key, " ".join(" ".join(value).split())))
    return entries


def fragment_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        match = PARAM_LINE.fullmatch(line)
        if match is None:
            raise Refused(f"postfix/main.cf.fragment:{number}: not a 'name = value' line")
        name, value = match.groups()
        if name not in FRAGMENT_PARAMS and not name.startswith(FRAGMENT_PREFIX):
            raise Refused(f"postfix/main.cf.fragment:{number}: {name!r} is not ours to set")
        params[name] = value
    return params


def check_master_fragment(text: str) -> None:
    """master.cf.fragment may only set smtpd parameters of services, one per line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line and not line.startswith("#") and MASTER_LINE.fullmatch(line) is None:
            raise Refused(
                f"postfix/master.cf.fragment:{number}: not a 'service/type/smtpd_parameter=value'"
            )


def check_map_values(bundle: dict[str, str], fragment: dict[str, str]) -> None:
    """Every map entry has the shape relaygate writes; a checksum list cannot promise that.

    A manifest rewritten together with an artifact passes the checksums, so the
    entries themselves are checked: legacy clients map to a declared class,
    classes allow senders with OK, refusals are REJECT replies, logins own
    plain addresses, and no client key is broader than relaygate ever writes.
    """
    classes = {c for c in fragment.get("smtpd_restriction_classes", "").split(", ") if c}
    if any(CLASS_NAME.fullmatch(c) is None for c in classes):
        raise Refused("postfix/main.cf.fragment: a restriction class that is not relaygate's")
    for name in (
        "legacy_clients",
        "legacy_clients.cidr",
        "refused_clients",
        "refused_clients.cidr",
    ):
        for key, value in map_entries(bundle[name]):
            try:
                network = ipaddress.ip_network(key, strict=True)
            except ValueError as error:
                raise Refused(f"postfix/{name}: {key!r} is not a canonical address") from error
            if network.prefixlen < BROADEST[network.version]:
                raise Refused(f"postfix/{name}: {key} is broader than any compiled entry")
            if name.startswith("legacy") and value not in classes:
                raise Refused(f"postfix/{name}: {key} maps to {value!r}, not a declared class")
            if name.startswith("refused") and not value.startswith("REJECT "):
                raise Refused(f"postfix/{name}: {key} maps to {value!r}, not a REJECT reply")
    for key, value in map_entries(bundle["refused_logins"]):
        if MAIL.fullmatch(key) is None or not value.startswith("REJECT "):
            raise Refused(f"postfix/refused_logins: {key!r} -> {value!r} is not a login refusal")
    for name in sorted(n for n in bundle if n.startswith("senders/")):
        if name.removeprefix("senders/") not in classes:
            raise Refused(f"postfix/{name}: not a declared class")
        for key, value in map_entries(bundle[name]):
            if MAIL.fullmatch(key) is None or value != "OK":
                raise Refused(f"postfix/{name}: {key!r} -> {value!r} is not a sender allowed OK")
    for key, value in map_entries(bundle["sender_login"]):
        if MAIL.fullmatch(key) is None or any(MAIL.fullmatch(a) is None for a in value.split(",")):
            raise Refused(f"postfix/sender_login: {key!r} -> {value!r} is not sender -> logins")


def bundle_files(files: dict[str, bytes]) -> dict[str, str]:
    """Compiled path -> name in a generation folder (postfix/X -> X, the ruleset -> relay.nft)."""
    bundle = {
        path.removeprefix("postfix/"): text_of(files, path)
        for path in files
        if path.startswith("postfix/")
    }
    bundle["relay.nft"] = text_of(files, "nftables/relay.nft")
    return dict(sorted(bundle.items()))


def generation_id(bundle: dict[str, str]) -> str:
    """Same algorithm as relaygate_host.generation_id: the id of a file set."""
    listing = {name: sha256(text.encode("utf-8")) for name, text in sorted(bundle.items())}
    return sha256(json.dumps(listing).encode("utf-8"))


def single_address(key: str) -> str | None:
    """The address of a map key that names one host (a bare address, /32 or /128)."""
    try:
        network = ipaddress.ip_network(key, strict=True)
    except ValueError:
        return None
    return str(network.network_address) if network.num_addresses == 1 else None


def probe_cases(bundle: dict[str, str]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The health gate's cases for a full deploy and for a revoke, from the compiled maps."""
    legacy = map_entries(bundle["legacy_clients"]) + map_entries(bundle["legacy_clients.cidr"])
    refused = map_entries(bundle["refused_clients"]) + map_entries(bundle["refused_clients.cidr"])
    covered = []
    for key, _value in legacy + refused:
        try:
            covered.append(ipaddress.ip_network(key, strict=False))
        except ValueError:
            continue
    cases: list[dict[str, str]] = []
    sender = PROBE_SENDER
    for key, sender_class in legacy:
        address = single_address(key)
        senders = map_entries(bundle.get(f"senders/{sender_class}", ""))
        if address and senders:
            sender = senders[0][0]
            cases.append({"client": address, "sender": sender, "expect": "accept"})
            # Its own address with a sender that is not its own: the class must refuse.
            cases.append({"client": address, "sender": PROBE_SENDER, "expect": "refuse"})
            break
    unknown = next(
        (
            str(host)
            for host in UNKNOWN_CLIENTS.hosts()
            if not any(host.version == net.version and host in net for net in covered)
        ),
        None,
    )
    if unknown is None:
        raise Refused(f"every address of {UNKNOWN_CLIENTS} is in a map: no refused probe client")
    cases.append({"client": unknown, "sender": sender, "expect": "refuse"})
    revoke = []
    for key, _reply in refused:
        address = single_address(key)
        if address:
            revoke.append({"client": address, "sender": sender, "expect": "refuse"})
    return cases + revoke[:1], revoke


def allow_entries(bundle: dict[str, str]) -> list[str]:
    entries = [f"legacy\t{k}\t{v}" for k, v in map_entries(bundle["legacy_clients"])]
    entries += [f"legacy\t{k}\t{v}" for k, v in map_entries(bundle["legacy_clients.cidr"])]
    entries += [f"sender\t{k}\t{v}" for k, v in map_entries(bundle["sender_login"])]
    return sorted(set(entries))


def verify(out: Path) -> dict[str, Any]:
    manifest, files, problems = read_verified(out)
    if problems:
        return {"ok": False, "problems": problems}
    try:
        bundle = bundle_files(files)
        fragment = fragment_params(bundle["main.cf.fragment"])
        check_master_fragment(bundle.get("master.cf.fragment", ""))
        check_map_values(bundle, fragment)
        probe, revoke_probe = probe_cases(bundle)
    except Refused as error:
        return {"ok": False, "problems": [str(error)]}
    return {
        "ok": True,
        "problems": [],
        "out": str(out.resolve()),
        "version": manifest.get("version"),
        "as_of": manifest.get("as_of"),
        "inventory_commit": manifest.get("inventory_commit"),
        "counts": manifest.get("counts", {}),
        "generation": generation_id(bundle)[:16],
        "bundle": {"format": BUNDLE_FORMAT, "files": bundle},
        "fragment": fragment,
        "allow_entries": allow_entries(bundle),
        "probe": probe,
        "revoke_probe": revoke_probe,
    }


# --- the MOD ACL change package --------------------------------------------------------------


def segment_files(folder: Path) -> dict[str, bytes]:
    """target/file -> bytes of one segment's ACLs in a package folder (ios/, junos/)."""
    found: dict[str, bytes] = {}
    for target in ("ios", "junos"):
        for path in sorted((folder / target).glob("*")) if (folder / target).is_dir() else []:
            if path.is_file() and not path.is_symlink():
                found[f"{target}/{path.name}"] = path.read_bytes()
    return found


def change_diff(segment: str, old: dict[str, bytes], new: dict[str, bytes], source: str) -> str:
    lines = [f"# MOD segment {segment}: ACL change ({source})\n"]
    for name in sorted(set(old) | set(new)):
        if old.get(name) == new.get(name):
            continue
        lines += difflib.unified_diff(
            old.get(name, b"").decode("utf-8").splitlines(keepends=True),
            new.get(name, b"").decode("utf-8").splitlines(keepends=True),
            fromfile=f"previous/{name}" if name in old else "/dev/null",
            tofile=name if name in new else "/dev/null",
        )
    return "".join(lines)


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def acl_package(out: Path, package: Path, check: bool) -> dict[str, Any]:
    manifest, files, problems = read_verified(out)
    if problems:
        return {"ok": False, "problems": problems}
    compiled: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        match = ACL_FILE.fullmatch(path)
        if match:
            name = f"{match['target']}/{PurePosixPath(path).name}"
            compiled.setdefault(match["segment"], {})[name] = data
    existing = (
        {p.name for p in package.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if package.is_dir()
        else set()
    )
    source = f"relaygate {manifest.get('version')}, as of {manifest.get('as_of')}"
    commit = manifest.get("inventory_commit")
    if commit:
        source += f", inventory {commit}"
    changed: dict[str, str] = {}
    for segment in sorted(set(compiled) | existing):
        folder = package / segment
        old = segment_files(folder)
        new = compiled.get(segment, {})
        if old == new:
            continue
        diff = change_diff(segment, old, new, source)
        changed[segment] = diff
        if check:
            continue
        # Build the segment's new package beside it and swap it in with renames.
        package.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{segment}.", dir=package))
        write_tree(staging, new)
        write_tree(staging / "previous", old)
        (staging / "CHANGE.diff").write_text(diff, encoding="utf-8")
        for item in [staging, *staging.rglob("*")]:
            os.chmod(item, 0o755 if item.is_dir() else 0o644)
        if folder.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{segment}.old.", dir=package))
            os.rename(folder, retired / "tree")
            os.rename(staging, folder)
            shutil.rmtree(retired)
        else:
            os.rename(staging, folder)
    return {
        "ok": True,
        "problems": [],
        "package": str(package),
        "changed": sorted(changed),
        "diff": "".join(changed[s] for s in sorted(changed)),
    }


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="relaygate_release.py", description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="verify a compiled folder and extract the deploy data")
    check.add_argument("--out", required=True, type=Path)
    pack = sub.add_parser("acl-package", help="write the MOD ACL change package")
    pack.add_argument("--out", required=True, type=Path)
    pack.add_argument("--package", required=True, type=Path)
    pack.add_argument("--check", action="store_true", help="write nothing")
    args = top.parse_args(argv)
    if args.command == "verify":
        result = verify(args.out)
    else:
        result = acl_package(args.out, args.package, args.check)
    print(json.dumps(result, sort_keys=True))
    if not result["ok"]:
        for problem in result["problems"]:
            print(f"relaygate_release.py: {problem}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
