"""Release: decide on the controller whether a compiled folder may be deployed.

Input: the folder ``relaygate compile --out DIR`` wrote (``manifest.json`` listing every
artifact with its sha256), and the policy repository the controller trusts (a git
checkout; its inventory folder and a trusted ref, ``HEAD`` by default).

Trust model. The compiled folder is untrusted: it may come from another job, a cache or
an artifact store, and anyone who can edit it can also rewrite its manifest. What the
controller trusts is its own checkout of the policy repository (reviewed, protected
branch) and the relaygate it has installed. ``verify_release`` therefore

1. checks the folder is exactly what a manifest lists (no file missing, extra, changed,
   or a symlink) - cheap, and it names the file that moved;
2. refuses a manifest that names no commit, a ``-dirty`` commit, a commit the trusted ref
   does not contain, or another relaygate version than the installed one;
3. exports the inventory at that commit (``git archive``), compiles it with the installed
   relaygate for the manifest's day, and requires every artifact, manifest included, to
   be byte for byte what the folder holds.

A folder that passes is what the reviewed inventory compiles to, whoever produced it.
The facts the deploy needs (the bundle for the relays, the allow entries for the
mass-change guard, the health probe's cases, the firewall sets for a revoke) are read
from the verified bytes only.

``acl_package`` writes the MOD ACL change package for the network team from a verified
folder: per segment the ACLs now compiled, the package they replace (``previous/``) and
``CHANGE.diff``; an unchanged segment is not touched.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import click

from relaygate import __version__
from relaygate import compile as compile_
from relaygate.verify import MANIFEST, map_entries, nft_sets

BUNDLE_FORMAT = "relaygate-bundle/2"
REQUIRED = (
    "postfix/main.cf.fragment",
    "postfix/legacy_clients",
    "postfix/legacy_clients.cidr",
    "postfix/refused_clients",
    "postfix/refused_clients.cidr",
    "nftables/relay.nft",
)
HEX64 = re.compile(r"[0-9a-f]{64}")
COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
#: A sender no record owns (RFC 2606 reserved domain): the probe's foreign sender of last resort.
PROBE_SENDER = "relaygate-probe@probe.invalid"
ACL_FILE = re.compile(r"acl/(?P<target>ios|junos)/(?P<segment>[a-z0-9-]+)-v[46]\.(acl|conf)")


@dataclass
class Verified:
    """A compiled folder as read: its manifest, every artifact's bytes, every problem."""

    manifest: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe_relative(path: str) -> bool:
    return (
        bool(path)
        and "\\" not in path
        and not PurePosixPath(path).is_absolute()
        and all(part not in ("", ".", "..") for part in path.split("/"))
    )


def read_folder(out: Path) -> Verified:
    """The manifest and every artifact's bytes, with every reason to refuse the folder."""
    result = Verified()
    if not out.is_dir():
        result.problems.append(f"{out}: not a folder")
        return result
    path = out / MANIFEST
    if path.is_symlink() or not path.is_file():
        result.problems.append(f"{out}: no {MANIFEST}: not a folder written by `relaygate compile`")
        return result
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        result.problems.append(f"{MANIFEST}: not valid JSON ({error})")
        return result
    if not isinstance(manifest, dict) or manifest.get("tool") != "relaygate":
        result.problems.append(f"{MANIFEST}: not written by relaygate (tool is not 'relaygate')")
        return result
    result.manifest = manifest
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        result.problems.append(f"{MANIFEST}: no artifacts listed")
        return result
    for name, entry in sorted(artifacts.items()):
        if not isinstance(name, str) or not _safe_relative(name) or name == MANIFEST:
            result.problems.append(f"{MANIFEST}: refusing artifact path {name!r}")
            continue
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not HEX64.fullmatch(entry["sha256"])
            or not isinstance(entry.get("bytes"), int)
        ):
            result.problems.append(f"{MANIFEST}: entry for {name} has no sha256 and size")
            continue
        target = out / name
        if target.is_symlink() or not target.is_file():
            result.problems.append(f"{name}: listed in the manifest but missing")
            continue
        data = target.read_bytes()
        if len(data) != entry["bytes"] or _sha256(data) != entry["sha256"]:
            result.problems.append(
                f"{name}: changed after compiling (sha256 does not match the manifest)"
            )
            continue
        result.files[name] = data
    for found in sorted(out.rglob("*")):
        relative = found.relative_to(out).as_posix()
        if found.is_symlink():
            result.problems.append(f"{relative}: a symlink; a compiled folder has none")
        elif found.is_file() and relative != MANIFEST and relative not in artifacts:
            result.problems.append(f"{relative}: not in the manifest (added after compiling)")
        elif not found.is_file() and not found.is_dir():
            result.problems.append(f"{relative}: not a regular file")
    for required in REQUIRED:
        if required not in artifacts:
            result.problems.append(f"{required}: missing from the manifest; the relay needs it")
    if not result.problems:
        result.files[MANIFEST] = path.read_bytes()
    return result


# --- authenticity: the folder is what the reviewed inventory compiles to ---------------------


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=120
    )


def _export_inventory(inventory: Path, commit: str, target: Path) -> str | None:
    """Write the inventory folder as it is at ``commit`` into ``target``; None or a problem."""
    top = _git(inventory, "rev-parse", "--show-toplevel")
    prefix = _git(inventory, "rev-parse", "--show-prefix")
    if top.returncode or prefix.returncode:
        return f"{inventory}: not inside a git repository ({top.stderr.strip()})"
    repo = Path(top.stdout.strip())
    inside = prefix.stdout.strip().rstrip("/")
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", commit, "--", inside or "."],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if archive.returncode:
        return f"git archive {commit} {inside}: {archive.stderr.decode(errors='replace').strip()}"
    tar_path = target.parent / "inventory.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(target.parent / "tree", filter="data")
    source = target.parent / "tree" / inside if inside else target.parent / "tree"
    if not source.is_dir():
        return f"the inventory folder {inside!r} does not exist at {commit}"
    os.rename(source, target)
    return None


def check_entries(files: dict[str, bytes]) -> list[str]:
    """Entries no relaygate release writes, whatever the manifest says (checked before the
    recompile, which needs a commit: a folder without one still gets a precise reason).

    Legacy clients map a canonical network no broader than /8 (IPv6 /32) to a restriction
    class the fragment defines; refused clients map to a REJECT reply.
    """
    problems: list[str] = []
    try:
        fragment = files["postfix/main.cf.fragment"].decode("utf-8")
        # A class is a parameter the fragment defines (listed in smtpd_restriction_classes
        # directly or through parameters of its own).
        classes = set(re.findall(r"^(relaygate_[a-z0-9_]+) = ", fragment, re.M))
        for name in (
            "refused_clients",
            "refused_clients.cidr",
            "legacy_clients",
            "legacy_clients.cidr",
        ):
            for key, value in _entries(files[f"postfix/{name}"].decode("utf-8")).items():
                try:
                    network = ipaddress.ip_network(key, strict=True)
                except ValueError:
                    problems.append(f"postfix/{name}: {key!r} is not a canonical address")
                    continue
                if network.prefixlen < (8 if network.version == 4 else 32):
                    problems.append(f"postfix/{name}: {key} is broader than any compiled entry")
                if name.startswith("legacy") and value not in classes:
                    problems.append(
                        f"postfix/{name}: {key} maps to {value!r}, not a class the fragment defines"
                    )
                if name.startswith("refused") and not value.startswith("REJECT "):
                    problems.append(f"postfix/{name}: {key} maps to {value!r}, not a REJECT reply")
    except (KeyError, UnicodeDecodeError) as error:
        problems.append(f"an artifact the relay needs is unreadable: {error}")
    return problems


def check_authentic(verified: Verified, inventory: Path, trusted_ref: str = "HEAD") -> list[str]:
    """Why ``verified`` is not what the reviewed inventory compiles to (empty: it is)."""
    manifest = verified.manifest
    commit = manifest.get("inventory_commit")
    if not isinstance(commit, str) or not commit:
        return [f"{MANIFEST}: names no inventory commit; compile from a git checkout"]
    if commit.endswith("-dirty") or not COMMIT.fullmatch(commit):
        return [
            f"{MANIFEST}: inventory commit {commit!r} is not a clean commit; only a committed,"
            " reviewed inventory is deployed"
        ]
    if manifest.get("version") != __version__:
        return [
            f"{MANIFEST}: compiled by relaygate {manifest.get('version')}, the controller has"
            f" {__version__}; install the same release to verify it"
        ]
    try:
        as_of = dt.date.fromisoformat(str(manifest.get("as_of")))
    except ValueError:
        return [f"{MANIFEST}: as_of {manifest.get('as_of')!r} is not a date"]
    known = _git(inventory, "cat-file", "-e", f"{commit}^{{commit}}")
    if known.returncode:
        return [f"inventory commit {commit} is not in the policy repository at {inventory}"]
    reviewed = _git(inventory, "merge-base", "--is-ancestor", commit, trusted_ref)
    if reviewed.returncode:
        return [f"inventory commit {commit} is not contained in the trusted ref {trusted_ref}"]
    with tempfile.TemporaryDirectory(prefix="relaygate-release-") as scratch:
        exported = Path(scratch) / "inventory"
        problem = _export_inventory(inventory, commit, exported)
        if problem:
            return [problem]
        rebuilt = compile_.build(exported, as_of, commit)
    if rebuilt.artifacts is None:
        return [f"the inventory at {commit} does not compile (it has errors)"]
    wanted = {path: text.encode("utf-8") for path, text in rebuilt.artifacts.items()}
    problems = []
    for path in sorted(set(wanted) | set(verified.files)):
        if wanted.get(path) != verified.files.get(path):
            what = (
                "missing" if path not in verified.files else "extra" if path not in wanted else ""
            )
            problems.append(
                f"{path}: {what or 'differs'} from what the inventory at {commit[:12]} compiles"
                " to (edited after compiling?)"
            )
    return problems


# --- what the deploy needs, read from the verified bytes ------------------------------------


def _text(files: dict[str, bytes], path: str) -> str:
    return files[path].decode("utf-8")


def bundle_files(files: dict[str, bytes]) -> dict[str, str]:
    """Compiled path -> name in a generation folder.

    postfix/X -> X, the nft ruleset -> relay.nft, postfwd/postfwd.cf under its own name.
    """
    bundle = {
        path.removeprefix("postfix/"): _text(files, path)
        for path in files
        if path.startswith("postfix/")
    }
    bundle["relay.nft"] = _text(files, "nftables/relay.nft")
    bundle.update({path: _text(files, path) for path in files if path.startswith("postfwd/")})
    return dict(sorted(bundle.items()))


def generation_id(bundle: dict[str, str]) -> str:
    """The id of a file set (the relay module computes the same): same files, same id."""
    listing = {name: _sha256(text.encode("utf-8")) for name, text in sorted(bundle.items())}
    return _sha256(json.dumps(listing).encode("utf-8"))


def _entries(text: str) -> dict[str, str]:
    problems: list[str] = []
    return map_entries(text, "", problems)


def allow_entries(bundle: dict[str, str]) -> list[str]:
    """Every allow entry as ``kind<TAB>key<TAB>value`` (the mass-change guard's unit)."""
    entries = [f"legacy\t{k}\t{v}" for k, v in _entries(bundle["legacy_clients"]).items()]
    entries += [f"legacy\t{k}\t{v}" for k, v in _entries(bundle["legacy_clients.cidr"]).items()]
    entries += [f"sender\t{k}\t{v}" for k, v in _entries(bundle.get("sender_login", "")).items()]
    entries += [f"login\t{k}\t{v}" for k, v in _entries(bundle.get("logins", "")).items()]
    return sorted(set(entries))


def _host(key: str) -> str | None:
    try:
        network = ipaddress.ip_network(key, strict=True)
    except ValueError:
        return None
    return str(network.network_address) if network.num_addresses == 1 else None


def _ports(ruleset: str) -> tuple[int, int]:
    """(relay port, submission port) as the compiled ruleset opens them."""
    relay = re.search(r"tcp dport (\d+) ip6? saddr @legacy_v[46] accept", ruleset)
    submission = re.search(r"tcp dport (\d+) ip6? saddr @campus_v[46] accept", ruleset)
    return (int(relay.group(1)) if relay else 25, int(submission.group(1)) if submission else 587)


def _unknown_campus(bundle: dict[str, str]) -> str | None:
    """A campus IPv4 address that no map names: the probe's unknown client."""
    sets = nft_sets(bundle["relay.nft"])
    taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for name in (
        "legacy_clients",
        "legacy_clients.cidr",
        "refused_clients",
        "refused_clients.cidr",
    ):
        for key in _entries(bundle[name]):
            try:
                taken.append(ipaddress.ip_network(key, strict=False))
            except ValueError:
                continue
    for prefix in sorted(sets.get("campus_v4", set())):
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            continue
        for count, host in enumerate(network.hosts()):
            if count > 4096:
                break
            if int(host) & 0xFF in (0, 255, 1):
                continue
            if not any(host.version == net.version and host in net for net in taken):
                return str(host)
    return None


def probe_cases(bundle: dict[str, str], login: str | None = None) -> dict[str, Any]:
    """The health gate's cases, sent from campus-side addresses through the firewall.

    Each case: ``port`` (relay or submission), ``source`` (the client address the probe
    sends from), ``sender`` (``""`` is the null sender), ``login`` (true: AUTH with the
    probe login first), ``expect`` (accept = 250 to RCPT; refuse = dropped, refused or a
    5xx reply; greet = the port answers 220 and EHLO), and ``why``.
    """
    legacy = _entries(bundle["legacy_clients"])
    refused = {**_entries(bundle["refused_clients"]), **_entries(bundle["refused_clients.cidr"])}
    classes: dict[str, list[str]] = {
        # Only addresses: a class may also allow the null sender (key <>).
        name.removeprefix("senders/"): [k for k in _entries(text) if "@" in k]
        for name, text in bundle.items()
        if name.startswith("senders/")
    }
    cases: list[dict[str, Any]] = []
    device: str | None = None
    own = PROBE_SENDER
    for key, sender_class in sorted(legacy.items()):
        address = _host(key)
        if address and ":" not in address and classes.get(sender_class):
            device, own = address, classes[sender_class][0]
            foreign = next(
                (s[0] for c, s in sorted(classes.items()) if c != sender_class and s), PROBE_SENDER
            )
            cases += [
                _case("relay", device, own, "accept", "legacy device, its own sender"),
                _case("relay", device, foreign, "refuse", "legacy device, a foreign sender"),
                _case("relay", device, "", "refuse", "legacy device, the null sender"),
            ]
            local, _, domain = own.partition("@")
            if f"{local}+probe@{domain}" not in classes[sender_class]:
                cases.append(
                    _case(
                        "relay",
                        device,
                        f"{local}+probe@{domain}",
                        "refuse",
                        "legacy device, its sender with an extension",
                    )
                )
            break
    unknown = _unknown_campus(bundle)
    if unknown:
        cases += [
            _case("relay", unknown, own, "refuse", "unknown campus client"),
            _case("submission", unknown, "", "greet", "campus client reaches submission"),
        ]
    revoked = next(
        (h for k in sorted(refused) if (h := _host(k)) and ":" not in h and k not in legacy),
        None,
    )
    revoke_cases: list[dict[str, Any]] = []
    if revoked:
        revoke_cases = [
            _case("relay", revoked, own, "refuse", "revoked or suspended client"),
            _case("submission", revoked, own, "refuse", "revoked or suspended client"),
        ]
    if login:
        bound = _login_binding(bundle, login)
        owners = _entries(bundle.get("sender_login", ""))
        senders = [k for k, v in owners.items() if login in v.split(",")]
        if bound and bound[1] in classes:
            senders = senders or classes[bound[1]]
        everyone = [x for names in classes.values() for x in names] + list(owners)
        foreign = next((x for x in sorted(everyone) if x not in senders), PROBE_SENDER)
        source = (bound[0] if bound else None) or unknown or device
        if senders and source:
            cases += [
                _case("submission", source, senders[0], "accept", "login, its own sender", True),
                _case("submission", source, foreign, "refuse", "login, a foreign sender", True),
                _case("submission", source, "", "refuse", "login, the null sender", True),
                _case("submission", source, senders[0], "refuse", "its address, no login"),
            ]
            if bound and unknown:
                # The relay binds the login to its record's addresses: elsewhere it is refused.
                cases.append(
                    _case(
                        "submission", unknown, senders[0], "refuse", "login, another address", True
                    )
                )
    relay_port, submission_port = _ports(bundle["relay.nft"])
    return {
        "ports": {"relay": relay_port, "submission": submission_port},
        "full": cases + revoke_cases,
        "revoke": [
            _case("relay", h, own, "refuse", "revoked or suspended client")
            for k in sorted(refused)
            if (h := _host(k)) and ":" not in h
        ],
        "sources": sorted({c["source"] for c in cases + revoke_cases}),
    }


def _login_binding(bundle: dict[str, str], login: str) -> tuple[str, str] | None:
    """(address, sender class) a login is bound to, when the relay binds logins to addresses.

    A ``logins`` map names the login's restriction class; the class (main.cf.fragment)
    lists the login's addresses with their sender classes as an inline cidr table. The
    first host of the first one is where the probe must log in from. None when the
    policy binds no address (or only IPv6 ones).
    """
    klass = _entries(bundle.get("logins", "")).get(login)
    if not klass:
        return None
    line = re.search(rf"^{re.escape(klass)} = (.*)$", bundle["main.cf.fragment"], re.M)
    found = (
        re.search(r"cidr:\{ *\{ *([0-9a-fA-F.:]+/\d+) +(\S+?) *\}", line.group(1)) if line else None
    )
    if found is None:
        return None
    network = ipaddress.ip_network(found.group(1), strict=False)
    host = network.network_address if network.num_addresses == 1 else next(network.hosts())
    return (str(host), found.group(2)) if host.version == 4 else None


def _case(
    port: str, source: str, sender: str, expect: str, why: str, login: bool = False
) -> dict[str, Any]:
    return {
        "port": port,
        "source": source,
        "sender": sender,
        "login": login,
        "expect": expect,
        "why": why,
    }


@dataclass(frozen=True)
class Release:
    ok: bool
    problems: list[str]
    facts: dict[str, Any]


def verify_release(
    out: Path,
    inventory: Path | None,
    trusted_ref: str = "HEAD",
    probe_login: str | None = None,
) -> Release:
    """Verify ``out`` (checksums, then authenticity unless ``inventory`` is None)."""
    verified = read_folder(out)
    if verified.problems:
        return Release(False, verified.problems, {})
    problems = check_entries(verified.files)
    if problems:
        return Release(False, problems, {})
    if inventory is not None:
        problems = check_authentic(verified, inventory, trusted_ref)
        if problems:
            return Release(False, problems, {})
    try:
        bundle = bundle_files(verified.files)
    except UnicodeDecodeError as error:
        return Release(False, [f"an artifact is not UTF-8 text: {error}"], {})
    manifest = verified.manifest
    facts = {
        "out": str(out.resolve()),
        "version": manifest.get("version"),
        "as_of": manifest.get("as_of"),
        "inventory_commit": manifest.get("inventory_commit"),
        "authentic": inventory is not None,
        "counts": manifest.get("counts", {}),
        "generation": generation_id(bundle)[:16],
        "bundle": {"format": BUNDLE_FORMAT, "files": bundle},
        "allow_entries": allow_entries(bundle),
        "probe": probe_cases(bundle, probe_login),
    }
    return Release(True, [], facts)


# --- the MOD ACL change package ------------------------------------------------------------


def _segment_files(folder: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for target in ("ios", "junos"):
        base = folder / target
        for path in sorted(base.glob("*")) if base.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                found[f"{target}/{path.name}"] = path.read_bytes()
    return found


def _change_diff(segment: str, old: dict[str, bytes], new: dict[str, bytes], source: str) -> str:
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


def _write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def acl_package(out: Path, package: Path, check: bool) -> dict[str, Any]:
    """Write (or, with ``check``, only report) the change package of every changed segment."""
    verified = read_folder(out)
    if verified.problems:
        return {"ok": False, "problems": verified.problems}
    compiled: dict[str, dict[str, bytes]] = {}
    for path, data in verified.files.items():
        if match := ACL_FILE.fullmatch(path):
            compiled.setdefault(match["segment"], {})[
                f"{match['target']}/{PurePosixPath(path).name}"
            ] = data
    existing = (
        {p.name for p in package.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if package.is_dir()
        else set()
    )
    manifest = verified.manifest
    source = f"relaygate {manifest.get('version')}, as of {manifest.get('as_of')}"
    if manifest.get("inventory_commit"):
        source += f", inventory {manifest['inventory_commit']}"
    changed: dict[str, str] = {}
    for segment in sorted(set(compiled) | existing):
        folder = package / segment
        old, new = _segment_files(folder), compiled.get(segment, {})
        if old == new:
            continue
        changed[segment] = _change_diff(segment, old, new, source)
        if check:
            continue
        package.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{segment}.", dir=package))
        _write_tree(staging, new)
        _write_tree(staging / "previous", old)
        (staging / "CHANGE.diff").write_text(changed[segment], encoding="utf-8")
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


# --- command line: relaygate release verify | acl-package ----------------------------------


def register(group: click.Group) -> None:
    """Add ``relaygate release`` to the CLI."""
    group.add_command(release_group)


@click.group("release")
def release_group() -> None:
    """Verify a compiled folder before a deploy; write the MOD ACL change package."""


@release_group.command("verify")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The folder.")
@click.option(
    "--inventory",
    "inventory",
    default="inventory",
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The inventory folder in the trusted checkout of the policy repository.",
)
@click.option(
    "--trusted-ref",
    default="HEAD",
    show_default=True,
    help="The manifest's commit must be contained in this ref of the policy repository.",
)
@click.option("--probe-login", default=None, help="The health probe's SASL login, if any.")
@click.option(
    "--checksums-only",
    is_flag=True,
    help="Check the manifest's checksums only, not that the inventory compiles to the folder.",
)
def verify_command(
    out: Path, inventory: Path, trusted_ref: str, probe_login: str | None, checksums_only: bool
) -> None:
    """Print (JSON) whether OUT may be deployed and what the deploy needs; exit 1 if not."""
    options = VerifyOptions(out, inventory, trusted_ref, probe_login, checksums_only)
    result = verify_release(
        options.out,
        None if options.checksums_only else options.inventory,
        options.trusted_ref,
        options.probe_login,
    )
    click.echo(json.dumps({"ok": result.ok, "problems": result.problems, **result.facts}))
    for problem in result.problems:
        click.echo(f"relaygate release: {problem}", err=True)
    sys.exit(0 if result.ok else 1)


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    out: Path
    inventory: Path
    trusted_ref: str
    probe_login: str | None
    checksums_only: bool


@release_group.command("acl-package")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The folder.")
@click.option("--package", required=True, type=click.Path(path_type=Path), help="Package folder.")
@click.option("--check", is_flag=True, help="Write nothing; report the same changes.")
def acl_package_command(out: Path, package: Path, check: bool) -> None:
    """Write the MOD ACL change package per changed segment; print the result as JSON."""
    result = acl_package(out, package, check)
    click.echo(json.dumps(result, sort_keys=True))
    for problem in result["problems"]:
        click.echo(f"relaygate release: {problem}", err=True)
    sys.exit(0 if result["ok"] else 1)


def blocking_widenings(out: Path, postconf_n: str, postconf_p: str, postconf_m: str) -> list[str]:
    """What in a relay's effective settings would widen the policy of ``out``, and a deploy
    would not repair: an override on a service, a setting that lets a client choose its
    own address or login, sender rewriting around the checks. (Compiled parameters and
    service settings the relay does not have yet are what the deploy sets.)"""
    from relaygate.render.postfix.effective import widenings  # noqa: PLC0415 - optional

    verified = read_folder(out)
    if verified.problems:
        return verified.problems
    artifacts = {path: data.decode("utf-8") for path, data in verified.files.items()}
    found = widenings(artifacts, postconf_n, postconf_p, postconf_m)
    return [problem for problem in found if "relaygate compiled" not in problem]


@release_group.command("widenings")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="The folder.")
@click.option("--postconf-n", required=True, help="The relay's `postconf -n` output.")
@click.option("--postconf-p", required=True, help="The relay's `postconf -P` output.")
@click.option("--postconf-m", required=True, help="The relay's `postconf -M` output.")
def widenings_command(out: Path, postconf_n: str, postconf_p: str, postconf_m: str) -> None:
    """Print (JSON) what in a relay's settings would widen OUT's policy; exit 1 if anything."""
    problems = blocking_widenings(out, postconf_n, postconf_p, postconf_m)
    click.echo(json.dumps({"ok": not problems, "problems": problems}))
    sys.exit(1 if problems else 0)
