#!/usr/bin/python
"""Ansible module relaygate_relay: apply a verified relaygate release to one Postfix relay."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: relaygate_relay
short_description: Apply a verified relaygate release to one Postfix relay, or roll it back
description:
  - One process does the whole per-relay change under an exclusive lock on the relay
    (C(CONFIG/relaygate.lock)) - pre-flight checks, plan, snapshot named by the run, the new
    generation of maps built beside the live one, C(main.cf) and C(master.cf) switched by
    one rename each, C(postfix check), the nft ruleset, C(postfix reload), the health gate
    from a campus-side probe, and commit; any failure after the snapshot rolls the relay
    back to it and fails.
  - Check mode plans only, and reports the change with a native diff per file and per nft set.
  - Every Postfix command runs with C(-c CONFIG).
options:
  config:
    description: The Postfix config folder (C(postfix -c)).
    type: path
    required: true
  files:
    description: The release's files by name in a generation folder (C(relaygate release verify)).
    type: dict
  mode:
    description:
      - C(full) applies the whole release; C(revoke) applies only new refusals (refused maps
        and C(nft add element) into the revoked/suspended sets) on top of the live policy;
        C(inspect) reports the live allow entries and changes nothing.
    type: str
    choices: [full, revoke, inspect]
    default: full
  run_id:
    description: Names this run's snapshot and lock holder; unique per run.
    type: str
  lock_timeout:
    description: Seconds to wait for another run's lock on this relay before failing.
    type: float
    default: 60
  nft_cmd:
    description: The nft command as words (a lab puts it in a namespace).
    type: list
    elements: str
    default: [nft]
  allow_entries:
    description: The release's allow entries, for the mass-change guard (re-checked under the lock).
    type: list
    elements: str
    default: []
  mass_change_share:
    description: Refuse when more than this share of the relay's allow entries would go.
    type: float
    default: 0.3
  allow_mass_change:
    description: Let a mass change through.
    type: bool
    default: false
  allow_revoke_extra:
    description: In revoke mode, go on although the release changes more than refusals (only
      the refusals are applied).
    type: bool
    default: false
  min_free_mb:
    description: Refuse before changing anything when the config folder's file system has less free.
    type: int
    default: 64
  probe_cases:
    description: The health gate's cases (C(relaygate release verify) C(probe.full) or
      C(probe.revoke)).
    type: list
    elements: dict
    default: []
  probe_ports:
    description: "The relay and submission ports, C({relay - 25, submission - 587})."
    type: dict
    default: {}
  probe_address:
    description: The relay's address as campus clients reach it.
    type: str
  probe_exec:
    description: Words put before the probe's Python to run it on the campus side of the firewall.
    type: list
    elements: str
    default: []
  probe_python:
    description: The Python that runs the probe there.
    type: str
    default: python3
  probe_recipient:
    description: The RCPT address of the probe (never delivered; the probe sends no DATA).
    type: str
    default: relaygate-probe@example.net
  probe_login:
    description: The SASL login of the probe's authenticated cases (none, no such cases).
    type: str
  probe_password:
    description: Its password.
    type: str
  probe_timeout:
    description: Seconds a probe waits to connect; a dropped connection counts as refused.
    type: float
    default: 2
  probe_attempts:
    description: Attempts before the health gate fails (Postfix restarts its services on reload).
    type: int
    default: 4
  postfwd_exec:
    description:
      - Words put before postfwd and before the daemon's health check, so both run where the
        relay's Postfix runs (a lab relay in a network namespace - C(ip netns exec NS)).
        Empty - on the relay host itself.
    type: list
    elements: str
    default: []
  postfwd_cmd:
    description: The postfwd program (Debian's prefork postfwd2; the options used are its).
    type: str
    default: postfwd2
  postfwd_user:
    description: The user and group the daemon drops to (Debian's package creates C(postfw)).
    type: str
    default: postfw
  postfwd_args:
    description: More words for the daemon's start, e.g. C(--min_servers=2) on a small relay.
    type: list
    elements: str
    default: []
  postfwd_wait:
    description: Seconds the daemon has to answer after a start or reload before the gate fails.
    type: float
    default: 10
  postfwd_run_dir:
    description:
      - The daemon's pidfile and cache socket (made, owned by I(postfwd_user)). Not under the
        Postfix config folder - C(postfix check) warns of files there that root does not own.
        One per relay instance on a host.
    type: path
    default: /run/relaygate-postfwd
notes:
  - When the release holds C(postfwd/postfwd.cf) (volume limits), the module validates it with
    C(postfwd -C) before any change, then starts the relay's own postfwd instance (its ruleset
    C(CONFIG/relaygate.generations/postfwd/postfwd.cf), its pidfile in I(postfwd_run_dir)) or
    reloads it with a SIGHUP to its policy server, which keeps listening; it runs with
    C(--keep_rates), so a reload keeps the counters. The health gate requires it to answer a
    policy request with DUNNO, and the port's listener to be that instance (its pidfile's
    process tree, C(ss -ltnp)). The daemon runs one policy server per smtpd process the relay
    may run (the smtpd services' maxproc, C(postconf -F)) plus a margin; an smtpd service
    without a limit (maxproc 0) is refused before any change. It is started as its user with
    CAP_NET_BIND_SERVICE (C(setpriv)), so a port below 1024 works; its options are kept in
    C(CONFIG/relaygate.generations/postfwd/postfwd.env) for the role's boot-time unit.
    A fast revoke never touches it. The host's stock postfwd service and its
    C(/etc/postfix/postfwd.cf) are never touched.
author: relaygate maintainers
"""

EXAMPLES = r"""
- name: Deploy the verified release to this relay
  relaygate_relay:
    config: /etc/postfix
    files: "{{ relaygate_new.bundle.files }}"
    run_id: "{{ relaygate_run_id }}"
    probe_cases: "{{ relaygate_new.probe.full }}"
    probe_ports: "{{ relaygate_new.probe.ports }}"
    probe_address: 10.1.0.25
"""

RETURN = r"""
live:
  description: The generation live after the run.
  type: str
  returned: always
changes:
  description: What changed (or would change, in check mode), one line each.
  type: list
  returned: always
actions:
  description: What the run did on the relay, in order (including a rollback).
  type: list
  returned: always
probe:
  description: Every health-gate case with the answer it got.
  type: list
  returned: when the gate ran
entries:
  description: The live allow entries (mode inspect).
  type: list
  returned: mode inspect
postfwd:
  description: The volume-limit daemon after the run (pid, port, its answer to the gate's request).
  type: dict
  returned: when the release has volume limits
"""

import contextlib  # noqa: E402 - the documentation strings come first in an Ansible module
import fcntl  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

GENERATIONS = "relaygate.generations"
LOCK = "relaygate.lock"
RUNS = "runs"
PREVIOUS = "previous"
NFT_STATE = "nft-state.json"
PENDING = "reload-pending"
RECORD = "GENERATION"
TABLE = ("inet", "relaygate")
FRAGMENT = "main.cf.fragment"
MASTER_FRAGMENT = "master.cf.fragment"
RULESET = "relay.nft"
#: The compiled postfwd ruleset (volume limits), in the release and in each generation.
POSTFWD_RULESET = "postfwd/postfwd.cf"
#: The relay's postfwd instance: its ruleset (a copy of the live generation's, at a path that
#: does not move, so a SIGHUP rereads it), its pidfile, and run/ (the daemon's own sockets).
POSTFWD_STATE = "postfwd"
#: Where the compiled main.cf sends its end-of-data check (the daemon's listening port).
POLICY_SERVICE = re.compile(r"check_policy_service\s*\{?\s*inet:([^:\s,}]+):(\d+)")
#: A client no campus record can hold (TEST-NET-1, RFC 5737): in no rule, so postfwd says DUNNO.
GATE_CLIENT = "192.0.2.1"
#: postfwd policy servers beyond one per smtpd process the relay may run (the health gate's
#: request, a check tool). A Postfix reload does not add processes: sessions held across it
#: keep their old processes counted against maxproc (measured on Postfix 3.7).
POSTFWD_SPARE = 10
#: More policy servers than this is refused: lower the smtpd services' maxproc.
POSTFWD_MAX_SERVERS = 2000
#: The start options of the running instance, read by the boot-time unit (systemd
#: EnvironmentFile): the one place the command line is kept between runs.
POSTFWD_ENV = "postfwd.env"
#: The compiled fragment names maps under this folder; the relay serves them from a generation.
MAPS_PREFIX = "${config_directory}/relaygate/"
REVOKE_MAPS = ("refused_clients", "refused_clients.cidr", "refused_logins")
REVOKE_SETS = ("revoked_v4", "revoked_v6", "suspended_v4", "suspended_v6")
ALLOW_MAPS = (("legacy_clients", "legacy"), ("legacy_clients.cidr", "legacy"))
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
PARAM_LINE = re.compile(r"([a-z][a-z0-9_]*) =(?: (.*))?")
#: A line of `postconf -n` or `postconf -P`: ``name = value`` (``name =`` for an empty value).
POSTCONF_LINE = re.compile(r"(\S+) =(?: (.*))?")
MASTER_LINE = re.compile(r"([A-Za-z0-9_.:\[\]-]+/(?:inet|unix|pass))/([a-z][a-z0-9_]*)=(.*)")
GENERATION_NAME = re.compile(r"[0-9a-f]{16}(-\d+)?")
LIVE_REF = re.compile(r"relaygate\.generations/([0-9a-f]{16}(?:-\d+)?)/")
#: What `postfix check` itself logs (postfix-script, postconf, postsuper), not mail traffic.
CHECK_LOG_LINE = re.compile(
    r"/(postfix-script|postconf|postsuper|postfix)\[\d+\]: (warning|fatal|error):"
)
RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,80}")


class Refused(Exception):
    """A check failed; the message says what and where."""


# --- small utilities ---------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(
    argv: list[str], check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, input=stdin)
    if check and done.returncode != 0:
        raise Refused(
            f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
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
    """Every map source except cidr tables, the fragments and the rulesets is built into lmdb."""
    return (
        not name.endswith((".cidr", ".lmdb", ".fragment"))
        and name not in (RULESET, RECORD)
        and not name.startswith(f"{POSTFWD_STATE}/")
    )


def generation_id(files: dict[str, bytes]) -> str:
    """The identity of a file set (relaygate's release computes the same)."""
    listing = json.dumps({name: sha256(data) for name, data in sorted(files.items())})
    return sha256(listing.encode("utf-8"))


def map_entries(text: str) -> dict[str, str]:
    """Key -> value of a Postfix table source as relaygate writes it (one entry a line)."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("\t") if "\t" in line else line.partition(" ")
        entries[key.strip()] = " ".join(value.split())
    return entries


def nft_sets(text: str) -> dict[str, set[str]]:
    """Set name -> elements (as written, without comments) of a ruleset or `nft list` output."""
    sets: dict[str, set[str]] = {}
    current = None
    in_elements = False
    for raw in text.splitlines():
        line = raw.strip()
        match = re.fullmatch(r"set (\w+) \{", line)
        if match:
            current, in_elements = match.group(1), False
            sets[current] = set()
            continue
        if current is None:
            continue
        if line.startswith("elements = {"):
            in_elements = True
            line = line[len("elements = {") :]
        if in_elements:
            for part in line.rstrip("}").split(","):
                word = part.strip().split(" ")[0]
                if word:
                    sets[current].add(canonical_element(word))
            if line.endswith("}"):
                in_elements = False
        elif line == "}":
            current = None
    return sets


def canonical_element(word: str) -> str:
    if word.endswith("/32") and ":" not in word:
        return word[:-3]
    if word.endswith("/128") and ":" in word:
        return word[:-4]
    return word


def fragment_params(text: str) -> dict[str, str]:
    """The ``name = value`` lines of main.cf.fragment (comments and blanks skipped)."""
    params: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PARAM_LINE.fullmatch(line)
        if match is None or match.group(1) in params:
            raise Refused(f"{FRAGMENT}:{number}: not one 'name = value' line: {line[:80]!r}")
        params[match.group(1)] = match.group(2) or ""
    return params


def master_fragment_params(text: str) -> dict[str, str]:
    """``service/type/parameter`` -> value of master.cf.fragment."""
    params: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = MASTER_LINE.fullmatch(line)
        if match is None:
            raise Refused(f"{MASTER_FRAGMENT}:{number}: not 'service/type/parameter=value'")
        key = f"{match.group(1)}/{match.group(2)}"
        if key in params:
            raise Refused(f"{MASTER_FRAGMENT}:{number}: {key} is set twice")
        params[key] = match.group(3)
    return params


def served(value: str, generation: str) -> str:
    """A compiled main.cf value as the relay serves it: maps read from the generation folder."""
    return value.replace(MAPS_PREFIX, f"${{config_directory}}/{GENERATIONS}/{generation}/")


def change_word(before: bool, after: bool) -> str:
    return "added" if not before else "removed" if not after else "changed"


def postconf_lines(text: str) -> dict[str, str]:
    """``name -> value`` (whitespace folded) of `postconf -n` or `postconf -P` output."""
    params = {}
    for line in text.splitlines():
        match = POSTCONF_LINE.fullmatch(line.strip())
        if match:
            params[match.group(1)] = words(match.group(2) or "")
    return params


def words(value: str) -> str:
    return " ".join(value.split())


class Relay:
    """One relay's Postfix config folder, its generations and its nft table."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.config = Path(params["config"])
        self.folder = self.config / GENERATIONS
        self.nft = list(params["nft_cmd"])
        self.actions: list[str] = []
        self.started = time.monotonic()
        self.changes: list[str] = []
        self.diff: list[dict[str, str]] = []

    def act(self, what: str) -> None:
        """Record what the run did, with the seconds since it started."""
        self.actions.append(f"{what} (+{time.monotonic() - self.started:.1f}s)")

    # -- postfix and nft --------------------------------------------------------------

    def postconf(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run(["postconf", "-c", str(config or self.config), *args])

    def main_params(self, config: Path | None = None) -> dict[str, str]:
        return postconf_lines(self.postconf("-n", config=config).stdout)

    def service_params(self, config: Path | None = None) -> dict[str, str]:
        """Every ``-o`` of every master.cf service: ``service/type/name`` -> value."""
        return postconf_lines(self.postconf("-P", config=config).stdout)

    def services(self, config: Path | None = None) -> set[str]:
        names = set()
        for line in self.postconf("-M", config=config).stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                names.add(f"{parts[0]}/{parts[1]}")
        return names

    def nft_listing(self) -> str | None:
        done = run([*self.nft, "list", "table", *TABLE], check=False)
        return done.stdout if done.returncode == 0 else None

    def postfix_running(self) -> bool:
        return run(["postfix", "-c", str(self.config), "status"], check=False).returncode == 0

    def maillog(self) -> Path | None:
        name = self.postconf("-h", "maillog_file").stdout.strip()
        path = Path(name) if name.startswith("/") else None
        return path if path is not None and path.is_file() else None

    def postfix_check(self) -> str:
        """Everything `postfix check` says, on its output and in the mail log; empty is clean."""
        log = self.maillog()
        size = log.stat().st_size if log else 0
        done = run(["postfix", "-c", str(self.config), "check"], check=False)
        said = (done.stdout + done.stderr).strip()
        if log is not None:
            # postfix-script warns through postlogd, which writes a moment later.
            time.sleep(0.3)
            with log.open("rb") as stream:
                stream.seek(size)
                tail = stream.read().decode("utf-8", "replace")
            said += "".join(
                line + "\n" for line in tail.splitlines() if CHECK_LOG_LINE.search(line)
            )
        if done.returncode:
            said = f"exit {done.returncode}: {said}"
        return said.strip()

    # -- generations --------------------------------------------------------------------

    def live_name(self, params: dict[str, str] | None = None) -> str | None:
        """The generation main.cf serves maps from (None: none; Refused: more than one)."""
        found = set()
        for value in (params if params is not None else self.main_params()).values():
            found.update(LIVE_REF.findall(value))
        if len(found) > 1:
            raise Refused(f"main.cf refers to more than one generation: {sorted(found)}")
        return next(iter(found), None)

    def read_generation(
        self, name: str | None, deep: bool
    ) -> tuple[dict[str, bytes] | None, list[str]]:
        """The files of a generation, and every way it differs from what was built (drift)."""
        if name is None:
            return None, ["no generation is live"]
        folder = self.folder / name
        try:
            record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            expected = record["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None, [f"generation {name}: no readable {RECORD}"]
        files: dict[str, bytes] = {}
        drift: list[str] = []
        for path, digest in sorted(expected.items()):
            target = folder / path
            if target.is_symlink() or not target.is_file():
                drift.append(f"{path}: missing")
                continue
            data = target.read_bytes()
            files[path] = data
            if sha256(data) != digest:
                drift.append(f"{path}: changed on the relay")
            if is_lmdb_source(path):
                built = folder / f"{path}.lmdb"
                if not built.is_file():
                    drift.append(f"{path}.lmdb: missing")
                elif deep and sha256(built.read_bytes()) != record.get("built", {}).get(path):
                    # The built map changed after it was built: name the entries that moved.
                    drift += self.lmdb_drift(folder / path, path) or [
                        f"{path}.lmdb: changed after it was built"
                    ]
        allowed = {RECORD} | set(expected) | {f"{n}.lmdb" for n in expected if is_lmdb_source(n)}
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
        drift += [f"{extra}: not part of the generation" for extra in sorted(present - allowed)]
        if not drift and record.get("id") != generation_id(files):
            drift.append(f"generation {name}: its record does not match its files")
        return files, drift

    def lmdb_drift(self, source: Path, name: str) -> list[str]:
        """Entries of a built map that its source does not give (or lacks), by Postfix's reading."""
        live = self.dump(source)
        with tempfile.TemporaryDirectory(prefix=".relaygate-drift-", dir=self.folder) as scratch:
            fresh = Path(scratch) / "map"
            shutil.copyfile(source, fresh)
            self.postmap(fresh)
            want = self.dump(fresh)
        problems = []
        for entry in sorted(live - want):
            problems.append(
                f"{name}.lmdb: entry {entry!r} is not in its source (added on the relay)"
            )
        for entry in sorted(want - live):
            problems.append(f"{name}.lmdb: entry {entry!r} of its source is missing")
        return problems

    def dump(self, source: Path) -> set[str]:
        return set(
            run(["postmap", "-c", str(self.config), "-s", f"lmdb:{source}"]).stdout.splitlines()
        )

    def postmap_all(self, sources: list[Path]) -> None:
        """postmap every source, a few at a time; any word on its output is a refusal."""
        pending = list(sources)
        while pending:
            batch, pending = pending[:8], pending[8:]
            started = [
                (
                    source,
                    subprocess.Popen(
                        ["postmap", "-c", str(self.config), f"lmdb:{source}"],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
                for source in batch
            ]
            for source, process in started:
                out, err = process.communicate()
                if process.returncode or out.strip() or err.strip():
                    raise Refused(f"postmap {source.name}: {(err or out).strip()}")

    def postmap(self, source: Path) -> None:
        done = run(["postmap", "-c", str(self.config), f"lmdb:{source}"], check=False)
        if done.returncode or done.stdout.strip() or done.stderr.strip():
            raise Refused(f"postmap {source.name}: {(done.stderr or done.stdout).strip()}")

    def free_name(self, generation: str, busy: set[str]) -> str:
        base = generation[:16]
        for suffix in ("", *(f"-{n}" for n in range(1, 100))):
            if base + suffix not in busy:
                return base + suffix
        raise Refused("no free generation name")

    def stage(self, name: str, wanted: dict[str, bytes], reuse: str | None) -> None:
        """Build a complete generation folder beside the live one, then rename it into place."""
        self.folder.mkdir(mode=0o755, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.folder))
        source = self.folder / reuse if reuse else None
        try:
            build: list[Path] = []
            for path, data in sorted(wanted.items()):
                target = staging / path
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                old = source / path if source else None
                if (
                    old is not None
                    and old.is_file()
                    and old.read_bytes() == data
                    and (not is_lmdb_source(path) or Path(f"{old}.lmdb").is_file())
                ):
                    # Same bytes as the live generation, checked for drift: copy, no rebuild.
                    shutil.copy2(old, target)
                    if is_lmdb_source(path):
                        shutil.copy2(f"{old}.lmdb", f"{target}.lmdb")
                    continue
                target.write_bytes(data)
                os.chmod(target, 0o644)
                if is_lmdb_source(path):
                    build.append(target)
            self.postmap_all(build)
            built = {
                p: sha256((staging / f"{p}.lmdb").read_bytes()) for p in wanted if is_lmdb_source(p)
            }
            record = {
                "id": generation_id(wanted),
                "files": {p: sha256(d) for p, d in wanted.items()},
                "built": built,
            }
            (staging / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            os.chmod(staging, 0o755)
            final = self.folder / name
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        self.act(f"built generation {name}")

    # -- the health gate -----------------------------------------------------------------

    def probe(self, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        params = self.module.params
        if not cases:
            return []
        if not params["probe_address"]:
            raise Refused("probe_address is not set: the health gate has no relay address to probe")
        request = {
            "address": params["probe_address"],
            "ports": params["probe_ports"] or {"relay": 25, "submission": 587},
            "recipient": params["probe_recipient"],
            "timeout": params["probe_timeout"],
            "login": params["probe_login"] or "",
            "password": params["probe_password"] or "",
            "cases": cases,
        }
        script = (
            PROBE_SOURCE
            + f"\nprint(json.dumps(main(json.loads({json.dumps(json.dumps(request))}))))\n"
        )
        argv = [*params["probe_exec"], params["probe_python"], "-"]
        results: list[dict[str, Any]] = []
        for attempt in range(1, params["probe_attempts"] + 1):
            done = run(argv, check=False, stdin=script)
            if done.returncode:
                raise Refused(
                    f"the health probe did not run ({' '.join(argv)}): {done.stderr.strip()}"
                )
            results = json.loads(done.stdout)
            if all(r["got"] == r["expect"] for r in results):
                return results
            if attempt < params["probe_attempts"]:
                time.sleep(1.0)
        failed = [
            f"{r['why']} ({r['source']} -> {r['port']} port, sender <{r['sender']}>"
            f"{', login' if r['login'] else ''}): expected {r['expect']},"
            f" got {r['got']}: {r['reply']}"
            for r in results
            if r["got"] != r["expect"]
        ]
        raise Refused("health gate failed from the campus side: " + "; ".join(failed))


def policy_port(fragment: dict[str, str]) -> int | None:
    """The loopback port the compiled main.cf sends its policy check to (None: no check)."""
    found = set()
    for name, value in fragment.items():
        for host, port in POLICY_SERVICE.findall(value):
            if host != "127.0.0.1":
                raise Refused(
                    f"{FRAGMENT}: {name} calls a policy service on {host}, not on 127.0.0.1;"
                    " the relay's postfwd listens on loopback only. Nothing was changed"
                )
            found.add(int(port))
    if len(found) > 1:
        raise Refused(f"{FRAGMENT} calls policy services on several ports: {sorted(found)}")
    return found.pop() if found else None


def postfwd_rules(text: str) -> int:
    """How many rules a postfwd ruleset holds: its logical lines (a line that starts with
    whitespace continues the one before), without comments, blanks and macro definitions."""
    count = 0
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line[:1] in (" ", "\t"):
            continue
        if not line.startswith("&&"):
            count += 1
    return count


def smtpd_processes(postconf: Any, fragment: dict[str, str]) -> int:
    """How many smtpd processes the relay's Postfix may run at once: the sum of the
    process limits of every master.cf service whose command is smtpd (``-`` is
    default_process_limit, with the compiled main.cf's value if it sets one).

    Each smtpd process keeps its connection to the policy server open between messages
    (smtpd_policy_service_max_idle), and postfwd serves one connection per policy server: the
    daemon needs at least this many servers, or a device holding sessions open makes the next
    check wait for its timeout and the message pass unlimited (default_action=DUNNO).
    Refused (before any change) when a service has no limit (maxproc 0) or the limit is not a
    number.
    """
    default = fragment.get("default_process_limit") or postconf("-h", "default_process_limit")
    fields: dict[str, dict[str, str]] = {}
    for line in postconf("-F", "*/*/process_limit", "*/*/command").splitlines():
        match = re.fullmatch(r"(\S+/(?:inet|unix|pass|unix-dgram|fifo))/(\w+) = ?(.*)", line)
        if match:
            fields.setdefault(match.group(1), {})[match.group(2)] = match.group(3).strip()
    total = 0
    for service, field in sorted(fields.items()):
        if (field.get("command") or "").split()[:1] != ["smtpd"]:
            continue
        limit = field.get("process_limit", "-")
        value = default.strip() if limit == "-" else limit
        where = "default_process_limit" if limit == "-" else f"master.cf {service} maxproc"
        if not value.isdigit():
            raise Refused(
                f"{where} is {value!r}, not a number: the volume-limit daemon needs one policy"
                f" server per smtpd process. Nothing was changed"
            )
        if int(value) == 0:
            raise Refused(
                f"{where} is 0 (no limit) for the smtpd service {service}: the volume-limit"
                " daemon needs one policy server per smtpd process, and an unlimited service"
                " can hold every server open so that further messages pass without a limit."
                f" Set a maxproc (master.cf column 7) for {service}. Nothing was changed"
            )
        total += int(value)
    return total


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    found, pending = [], [pid]
    while pending:
        for child in children(pending.pop()):
            found.append(child)
            pending.append(child)
    return found


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc; zombies left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


class Postfwd:
    """The relay's own postfwd instance (volume limits), run where its Postfix runs.

    It is known by its pidfile in the relay's state folder and by the arguments it was
    started with; the host's stock postfwd service is a different process and never touched.
    """

    def __init__(self, relay: Relay, params: dict[str, Any]) -> None:
        self.relay = relay
        self.exec = list(params["postfwd_exec"])
        self.cmd = str(params["postfwd_cmd"])
        self.user = str(params["postfwd_user"])
        self.args = list(params["postfwd_args"])
        self.wait = float(params["postfwd_wait"])
        self.state = relay.folder / POSTFWD_STATE
        self.run_dir = Path(params["postfwd_run_dir"])
        #: Policy servers the daemon may run (set by the plan from the relay's smtpd limits).
        self.servers = 0

    @property
    def ruleset(self) -> Path:
        return self.state / "postfwd.cf"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "postfwd.pid"

    def argv(self, port: int) -> list[str]:
        """The daemon's start command (without the exec words); also how it is recognised."""
        return [
            self.cmd,
            "--daemon",
            f"--file={self.ruleset}",
            "--interface=127.0.0.1",
            f"--port={port}",
            f"--pidfile={self.pidfile}",
            f"--cache_socket=unix::{self.run_dir / 'cache.sock'}",
            # Counters survive a reload; no answer ever comes from the request cache (the
            # compiled ruleset needs both, see relaygate.render.postfwd); no rule needs DNS.
            "--keep_rates",
            "--cache=0",
            "--nodns",
            f"--user={self.user}",
            f"--group={self.user}",
            *self.server_options(),
            *self.args,
        ]

    def server_options(self) -> list[str]:
        """One policy server per smtpd process Postfix may run, and a margin (see
        smtpd_processes); the spare counts kept within it, as Net::Server requires. None
        before the plan counted them (a run that only stops the daemon)."""
        if not self.servers:
            return []
        return [
            f"--max_servers={self.servers}",
            f"--min_servers={min(10, self.servers)}",
            f"--min_spare_servers={min(5, self.servers - 1)}",
            f"--max_spare_servers={min(50, self.servers - 1)}",
        ]

    def launcher(self) -> list[str]:
        """Runs postfwd as its user from the start, allowed to bind a port below 1024.

        postfwd2's master drops to ``--user`` before it forks the policy server, which binds
        the port: started as root with ``--user``, a privileged port is never bound (the
        policy server dies, nothing listens). Started as the user with only
        CAP_NET_BIND_SERVICE it binds it; the boot-time unit does the same (User=,
        AmbientCapabilities=).
        """
        return [
            "setpriv",
            f"--reuid={self.user}",
            f"--regid={self.user}",
            "--init-groups",
            "--inh-caps=+net_bind_service",
            "--ambient-caps=+net_bind_service",
        ]

    def plan_servers(self, smtpd: int) -> int:
        """The number of policy servers for a relay whose Postfix may run ``smtpd`` smtpd
        processes (Refused when that is more than a daemon should run)."""
        servers = smtpd + POSTFWD_SPARE
        if servers > POSTFWD_MAX_SERVERS:
            raise Refused(
                f"the relay's smtpd services may run {smtpd} processes at once; the"
                f" volume-limit daemon would need {servers} policy servers (more than"
                f" {POSTFWD_MAX_SERVERS}). Lower default_process_limit or the smtpd services'"
                " maxproc. Nothing was changed"
            )
        self.servers = servers
        return servers

    def validate(self, data: bytes) -> int:
        """Parse the ruleset with postfwd itself (``postfwd -C``); the number of rules.

        postfwd -C exits 1 whatever it finds, and skips a line it cannot read with a warning,
        going on with the rest: so any warning, or fewer rules parsed than the file has, is a
        refusal.
        """
        # In the system's temporary folder: check mode must not write under the config folder.
        handle, temp = tempfile.mkstemp(prefix="relaygate-postfwd-check.", suffix=".cf")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(temp, 0o644)
            try:
                done = run([*self.exec, self.cmd, "-C", f"--file={temp}"], check=False)
            except FileNotFoundError:
                raise Refused(
                    f"{self.cmd} is not installed on the relay (the postfwd package); the release"
                    " has volume limits. Nothing was changed"
                ) from None
        finally:
            os.unlink(temp)
        said = [
            re.sub(r"^\[LOG (\w+)\]:", r"\1:", line).replace(temp, POSTFWD_RULESET)
            for line in done.stdout.splitlines()
            if line.startswith("[LOG ")
        ]
        parsed = len(re.findall(r"^Rule\s+\d+:", done.stdout, re.MULTILINE))
        expected = postfwd_rules(data.decode("utf-8", "replace"))
        if said or parsed != expected or parsed == 0:
            detail = "; ".join(said[:5]) or (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise Refused(
                f"postfwd refuses {POSTFWD_RULESET} ({self.cmd} -C read {parsed} of"
                f" {expected} rules: {detail}); nothing was changed, the relay keeps its"
                " generation and its daemon's rules"
            )
        return parsed

    def pid(self) -> int | None:
        """The running instance's pid: the pidfile's process, if it is our postfwd."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        words = self.cmdline(pid)
        if words is None or f"--pidfile={self.pidfile}" not in words:
            return None  # a recycled pid, or another program
        return pid

    @staticmethod
    def cmdline(pid: int) -> list[str] | None:
        """A process's command line as words (postfwd rewrites it into one string)."""
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return raw.replace(b"\0", b" ").decode("utf-8", "replace").split()

    def running_argv(self) -> list[str] | None:
        pid = self.pid()
        return None if pid is None else self.cmdline(pid)

    def same_instance(self, port: int) -> bool:
        """The running instance was started as this run would start it (port, options)."""
        running = self.running_argv()
        wanted = self.argv(port)
        # The program's path may differ (postfwd2, /usr/sbin/postfwd2): compare the options.
        return running is not None and running[-(len(wanted) - 1) :] == wanted[1:]

    def answer(self, port: int) -> str:
        """postfwd's answer to one END-OF-MESSAGE request for a client in no rule."""
        request = (
            "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nprotocol_name=ESMTP\n"
            f"client_address={GATE_CLIENT}\nclient_name=unknown\nreverse_client_name=unknown\n"
            "helo_name=relaygate-gate\nsender=relaygate-gate@probe.invalid\n"
            "recipient=relaygate-gate@probe.invalid\nrecipient_count=1\nsasl_username=\n"
            "size=0\ninstance=relaygate.gate\n\n"
        )
        timeout = max(1.0, min(5.0, self.wait))
        script = (
            "import socket, sys\n"
            "try:\n"
            f"    s = socket.create_connection(('127.0.0.1', {port}), timeout={timeout})\n"
            f"    s.sendall({request!r}.encode())\n"
            "    data = b''\n"
            "    while not data.endswith(b'\\n\\n'):\n"
            "        chunk = s.recv(4096)\n"
            "        if not chunk:\n"
            "            break\n"
            "        data += chunk\n"
            "    said = data.decode('utf-8', 'replace').strip()\n"
            "    print(said or '(connection closed, no answer)')\n"
            "except OSError as error:\n"
            "    print('no answer: %s' % (error,))\n"
        )
        done = run([*self.exec, sys.executable, "-c", script], check=False)
        return (done.stdout.strip() or done.stderr.strip() or "no answer").splitlines()[0]

    def answers(self, port: int, seconds: float) -> str:
        """Wait up to ``seconds`` for ``action=DUNNO``; the last answer (Refused if never)."""
        deadline = time.monotonic() + seconds
        while True:
            said = self.answer(port)
            if said.lower() == "action=dunno":
                return said
            if time.monotonic() >= deadline:
                raise Refused(
                    f"health gate: the volume-limit daemon (postfwd on 127.0.0.1:{port}) does not"
                    f" answer a policy request with DUNNO (client {GATE_CLIENT}, in no rule):"
                    f" {said}"
                )
            time.sleep(0.3)

    def listeners(self, port: int) -> list[tuple[str, list[int]]]:
        """Every TCP socket listening on ``port`` where Postfix runs, with the processes
        that hold it (``ss -ltnp``, through the exec words)."""
        argv = [*self.exec, "ss", "-H", "-l", "-t", "-n", "-p", f"sport = :{port}"]
        try:
            done = run(argv, check=False)
        except FileNotFoundError:
            raise Refused("ss (iproute2) is not installed on the relay") from None
        if done.returncode:
            raise Refused(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        found = []
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4:
                pids = [int(pid) for pid in re.findall(r"pid=(\d+)", line)]
                found.append((parts[3], pids))
        return found

    def owns_port(self, port: int) -> list[int]:
        """The pids of this instance that listen on ``port``; Refused when anything else
        listens there too (a process that bound the port first would answer Postfix's
        checks, and Postfix obeys any action it answers), or nothing of ours does."""
        pid = self.pid()
        ours = set() if pid is None else {pid, *descendants(pid)}
        sockets = self.listeners(port)
        foreign = sorted(
            {
                f"{address} held by "
                + (
                    ", ".join(f"pid {p} ({self.name_of(p)})" for p in pids if p not in ours)
                    or "no process this host shows"
                )
                for address, pids in sockets
                if not pids or any(p not in ours for p in pids)
            }
        )
        if foreign or not sockets:
            raise Refused(
                f"health gate: the listener on 127.0.0.1:{port} is not the relay's postfwd"
                f" (pidfile {self.pidfile}: {pid if pid is not None else 'no live instance'}):"
                f" {'; '.join(foreign) or 'nothing listens'}. Postfix would obey whatever"
                " answers there; stop that process"
            )
        return sorted({p for _, pids in sockets for p in pids})

    @staticmethod
    def name_of(pid: int) -> str:
        words = Postfwd.cmdline(pid)
        return " ".join(words)[:80] if words else "gone"

    def install(self, data: bytes) -> None:
        """The daemon's ruleset becomes ``data`` (renamed into place)."""
        self.state.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(self.ruleset, data)
        # The pidfile and the cache socket: the daemon's user writes there, so not under the
        # Postfix config folder (postfix check warns of any file there root does not own).
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.chown(self.run_dir, user=self.user, group=self.user)

    @property
    def env_file(self) -> Path:
        return self.state / POSTFWD_ENV

    def env_text(self, port: int) -> bytes:
        """The boot-time unit's EnvironmentFile: the start options, as this module starts it.

        systemd splits ``$RELAYGATE_POSTFWD_ARGS`` at whitespace into words, so a word with
        whitespace (a path) is refused rather than split.
        """
        words = self.argv(port)[1:]
        bad = [word for word in words if re.search(r"[\s\"'\\$%]", word)]
        if bad:
            raise Refused(
                f"postfwd option {bad[0]!r} has a character the boot-time unit cannot pass"
                " (whitespace, quote, backslash, $ or %); use paths without them"
            )
        return (
            "# relaygate_relay writes this file each time it starts the relay's postfwd: the\n"
            "# options it runs with, read at boot by the relaygate-postfwd unit.\n"
            f"RELAYGATE_POSTFWD_ARGS={' '.join(words)}\n"
        ).encode()

    def record(self, port: int) -> None:
        """Keep the running instance's options for the boot-time unit."""
        self.state.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(self.env_file, self.env_text(port))

    def start(self, port: int) -> None:
        self.env_text(port)  # refuses options the boot-time unit could not pass
        stale = self.pidfile
        if stale.exists() and self.pid() is None:
            stale.unlink()  # a dead instance's pidfile
        run([*self.exec, *self.launcher(), *self.argv(port)])
        deadline = time.monotonic() + self.wait
        while self.pid() is None:
            if time.monotonic() >= deadline:
                raise Refused(f"postfwd did not start (no live pid in {self.pidfile})")
            time.sleep(0.1)
        self.record(port)

    def reload(self) -> None:
        """SIGHUP to the policy server: it rereads the ruleset and goes on listening.

        Not the master (``postfwd --reload``): postfwd 1.35's master passes the HUP on in a way
        that ends its policy server and respawns it after its respawn delay, and the port is
        closed meanwhile (about 4 s, measured on Debian 12). The counters live in the cache
        daemon and survive either way (``--keep_rates``); a rule whose limit changed starts a
        new counter (postfwd keys a counter by rule, limit and period).
        """
        pid = self.pid()
        if pid is None:
            raise Refused("postfwd is not running; nothing to reload")
        servers = [
            child
            for child in children(pid)
            if (self.cmdline(child) or [""])[-1].endswith("::policy")
        ]
        if len(servers) != 1:
            raise Refused(
                f"postfwd (pid {pid}) has {len(servers)} policy servers, not one; not reloaded"
            )
        os.kill(servers[0], signal.SIGHUP)

    def stop(self) -> None:
        """SIGTERM to the master; what is left after 3 s (a master busy respawning a policy
        server that cannot bind ignores it for a while) gets SIGKILL, children included."""
        pid = self.pid()
        if pid is None:
            return
        tree = [pid, *descendants(pid)]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in tree:
            # Only if the pid is still a postfwd process (not one that reused the number).
            if "postfwd" in " ".join(self.cmdline(process) or []):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process, signal.SIGKILL)
        if self.pidfile.exists():
            self.pidfile.unlink()
        # Not started at boot any more (a start writes it again).
        self.env_file.unlink(missing_ok=True)


# The probe runs where campus clients are (probe_exec), on its own Python, standard library only.
PROBE_SOURCE = r"""
import json, smtplib, socket, ssl, threading

def one(request, case):
    port = request["ports"][case["port"]]
    result = dict(case)
    try:
        session = smtplib.SMTP(timeout=request["timeout"], source_address=(case["source"], 0))
        code, text = session.connect(request["address"], port)
    except (OSError, smtplib.SMTPException) as error:
        result.update(got="refuse", reply="no connection: %s" % (error,))
        return result
    try:
        session.sock.settimeout(15)
        session._host = request["address"]  # for STARTTLS (connect() does not set it)
        if code != 220:
            result.update(got="refuse" if code >= 500 else "error", reply="%s %s" % (code, text))
            return result
        code, text = session.ehlo("relaygate-probe")
        if case["expect"] == "greet" or code != 250:
            result.update(got="greet" if code == 250 else "error", reply="%s %s" % (code, text))
            return result
        if case["login"]:
            if session.has_extn("starttls"):
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                session.starttls(context=context)
                session.ehlo("relaygate-probe")
            try:
                session.login(request["login"], request["password"])
            except smtplib.SMTPException as error:
                result.update(got="error", reply="AUTH: %s" % (error,))
                return result
        code, text = session.docmd("MAIL", "FROM:<%s>" % case["sender"])
        if code == 250:
            code, text = session.docmd("RCPT", "TO:<%s>" % request["recipient"])
        session.docmd("RSET")
        session.quit()
    except (OSError, smtplib.SMTPException) as error:
        result.update(got="error", reply="%s: %s" % (type(error).__name__, error))
        return result
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    result["reply"] = "%s %s" % (code, text)
    result["got"] = "accept" if 200 <= code < 300 else "refuse" if 500 <= code < 600 else "error"
    return result

def main(request):
    results = [None] * len(request["cases"])
    def work(index, case):
        try:
            results[index] = one(request, case)
        except Exception as error:
            results[index] = dict(case, got="error", reply="%s: %s" % (type(error).__name__, error))
    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(request["cases"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
"""


# --- the run -----------------------------------------------------------------------------


class Run:
    """One run on one relay: lock, pre-flight, plan, change, gate, commit or roll back."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.relay = Relay(module)
        self.run_id = self.params["run_id"] or ""
        self.snapshot: Path | None = None
        self.built: str | None = None
        self.lock_fd: int | None = None
        self.postfwd = Postfwd(self.relay, module.params)
        self.postfwd_touched = False
        self.old_port: int | None = None

    # -- lock -----------------------------------------------------------------------

    def lock(self) -> None:
        """One run per relay: an exclusive flock held until this process ends."""
        path = self.relay.config / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + float(self.params["lock_timeout"])
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                    os.close(fd)
                    raise Refused(
                        f"{self.relay.config} is locked by another relaygate run"
                        f" ({holder or 'unknown'}); waited {self.params['lock_timeout']:g} s."
                        " Nothing was changed on this relay;"
                        " run again when that run has ended."
                    ) from None
                time.sleep(0.1)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"run {self.run_id}, pid {os.getpid()}, since {stamp}\n".encode(),
            0,
        )
        self.lock_fd = fd

    def fault(self, step: str) -> None:
        """A named point of the run, where a deploy killed or held stops (does nothing here).

        The deploy tests run a copy of this module whose ``fault`` dies or waits at a
        chosen point; the module shipped has no test hook.
        """

    # -- pre-flight -----------------------------------------------------------------

    def preflight(self) -> None:
        relay = self.relay
        if not relay.postfix_running():
            raise Refused(
                f"Postfix is not running (postfix -c {relay.config} status); nothing was changed"
            )
        stat = os.statvfs(relay.config)
        free_mb = stat.f_bavail * stat.f_frsize // (1024 * 1024)
        need = max(int(self.params["min_free_mb"]), 1)
        if free_mb < need:
            raise Refused(
                f"only {free_mb} MB free under {relay.config}, less than min_free_mb={need};"
                " nothing was changed"
            )
        if self.params["mode"] != "revoke":
            self.check_before()

    def check_before(self) -> None:
        """`postfix check` must be silent before a change (a revoke checks right after its
        nft refusal, which it applies first, and rolls back if Postfix already warns)."""
        said = self.relay.postfix_check()
        if said:
            raise Refused(
                "postfix check already warns before any change; fix this first"
                " (nothing was changed): " + said
            )

    def check_overrides(
        self, config: Path, fragment: dict[str, str], master: dict[str, str]
    ) -> None:
        """No master.cf service may override a parameter the compiled main.cf.fragment sets."""
        found = []
        for key, value in sorted(self.relay.service_params(config).items()):
            service, _, name = key.rpartition("/")
            if name in fragment and key not in master:
                found.append(f"{service} -o {name}={value}")
            elif key in master and value != words(master[key]):
                found.append(f"{service} -o {name}={value} (compiled: {master[key]})")
        if found:
            raise Refused(
                "master.cf overrides what relaygate compiles (the service would not apply the"
                " compiled policy): "
                + "; ".join(found)
                + ". Remove these -o settings; nothing was changed"
            )

    def check_tls(self, config: Path, master: dict[str, str], main: dict[str, str]) -> None:
        """A service that may only AUTH after STARTTLS needs a certificate and key that load."""
        services = self.relay.service_params(config)
        for service in sorted({k.rsplit("/", 1)[0] for k in master}):

            def get(name: str, service: str = service) -> str:
                return services.get(f"{service}/{name}", main.get(name, ""))

            if get("smtpd_tls_auth_only") != "yes" and get("smtpd_tls_security_level") not in (
                "may",
                "encrypt",
            ):
                continue
            chain = get("smtpd_tls_chain_files")
            pairs = (
                [p.strip() for p in chain.replace(",", " ").split()]
                if chain
                else [get("smtpd_tls_cert_file"), get("smtpd_tls_key_file")]
            )
            missing = [
                p or "(not set)"
                for p in pairs
                if not p or not Path(p).is_file() or Path(p).stat().st_size == 0
            ]
            if missing:
                raise Refused(
                    f"{service} offers AUTH only after STARTTLS but has no certificate: "
                    + ", ".join(missing)
                    + "; nothing was changed"
                )
            if shutil.which("openssl"):
                for path in pairs:
                    text = Path(path).read_text(errors="replace")
                    if "CERTIFICATE" in text:
                        done = run(
                            ["openssl", "x509", "-noout", "-checkend", "0", "-in", path],
                            check=False,
                        )
                        if done.returncode:
                            raise Refused(
                                f"{service}: certificate {path} does not load or has expired"
                            )

    # -- plan -------------------------------------------------------------------------

    def plan(self) -> dict[str, Any]:
        relay = self.relay
        mode = self.params["mode"]
        files = {k: v.encode("utf-8") for k, v in (self.params["files"] or {}).items()}
        for name in files:
            parts = name.split("/")
            if (
                not NAME.fullmatch(name)
                or ".." in parts
                or name.endswith(".lmdb")
                or name == RECORD
            ):
                raise Refused(f"refusing file name {name!r} in the release")
        for required in (FRAGMENT, RULESET):
            if required not in files:
                raise Refused(f"the release lacks {required}")
        params = relay.main_params()
        live = relay.live_name(params)
        current, drift = relay.read_generation(live, deep=mode != "revoke") if live else (None, [])
        if mode == "revoke":
            if current is None:
                raise Refused(
                    "no live relaygate generation on this relay; a revoke needs a full deploy first"
                )
            extras = revoke_extras(current, files)
            if extras and not self.params["allow_revoke_extra"]:
                raise Refused(
                    f"the release changes more than refusals ({len(extras)}: "
                    + "; ".join(sample(extras))
                    + "). A revoke applies refusals only; deploy the rest with a full run, or let"
                    " this revoke go on with -e relaygate_allow_revoke_extra=true (it still applies"
                    " only the refusals). Nothing was changed"
                )
            wanted = dict(current)
            for name in REVOKE_MAPS:
                if name in files:
                    wanted[name] = files[name]
        else:
            wanted = files
        generation = generation_id(wanted)
        maps = current is None or generation_id(current) != generation or bool(drift)
        for problem in drift if live else []:
            relay.changes.append(f"drift: {problem}")
        busy = {n for n in (live, self.previous_live()) if n}
        name = live if not maps and live else None
        if name is None:
            candidate = self.relay.folder / generation[:16]
            existing, existing_drift = (
                relay.read_generation(candidate.name, deep=True)
                if candidate.is_dir() and candidate.name not in busy
                else (None, ["absent"])
            )
            if (
                existing is not None
                and not existing_drift
                and generation_id(existing) == generation
            ):
                name = candidate.name
            else:
                name = relay.free_name(generation, busy)
                self.built = name
        if maps:
            old = current or {}
            for path in sorted(set(old) | set(wanted)):
                if old.get(path) != wanted.get(path):
                    self.file_diff(path, old.get(path), wanted.get(path))
                    relay.changes.append(f"map {path}: {change_word(path in old, path in wanted)}")
        # main.cf: the compiled fragment, with maps served from the generation folder.
        fragment = fragment_params(wanted[FRAGMENT].decode("utf-8"))
        old_fragment = (
            fragment_params(current[FRAGMENT].decode("utf-8"))
            if current and FRAGMENT in current
            else {}
        )
        set_main = {
            k: served(v, name)
            for k, v in fragment.items()
            if params.get(k) != words(served(v, name))
        }
        remove_main = sorted(
            k
            for k in params
            if k not in fragment and (k in old_fragment or k.startswith("relaygate_"))
        )
        master = master_fragment_params(wanted.get(MASTER_FRAGMENT, b"").decode("utf-8"))
        old_master = master_fragment_params(
            (current or {}).get(MASTER_FRAGMENT, b"").decode("utf-8")
        )
        services = relay.services()
        for service in sorted({k.rsplit("/", 1)[0] for k in master}):
            if service not in services:
                raise Refused(
                    f"master.cf has no {service} service and {MASTER_FRAGMENT} sets its parameters;"
                    f" add the service to master.cf first. Nothing was changed"
                )
        have_master = relay.service_params()
        set_master = {k: v for k, v in master.items() if have_master.get(k) != words(v)}
        remove_master = sorted(k for k in old_master if k not in master and k in have_master)
        for key, value in sorted(set_main.items()):
            relay.changes.append(f"main.cf: {key} = {value}")
        relay.changes += [f"main.cf: remove {k}" for k in remove_main]
        relay.changes += [f"master.cf: {k}={v}" for k, v in sorted(set_master.items())]
        relay.changes += [f"master.cf: remove {k}" for k in remove_master]
        # nft: the ruleset of the generation, or the revoke's added elements.
        state = self.nft_state()
        listing = relay.nft_listing()
        ruleset = wanted[RULESET]
        nft_full = False
        nft_add: dict[str, list[str]] = {}
        if mode == "revoke":
            loaded = nft_sets(listing or "")
            for set_name, members in sorted(nft_sets(files[RULESET].decode("utf-8")).items()):
                if set_name in REVOKE_SETS:
                    missing = sorted(members - loaded.get(set_name, set()))
                    if missing:
                        nft_add[set_name] = missing
            if listing is None:
                raise Refused(
                    f"table {' '.join(TABLE)} is not loaded; a revoke needs a full deploy first"
                )
        else:
            nft_full = (
                state is None
                or state.get("source_sha256") != sha256(ruleset)
                or state.get("listing") != listing
            )
        if nft_full:
            sets_before = nft_sets(listing or "")
            sets_after = nft_sets(ruleset.decode("utf-8"))
            for set_name in sorted(set(sets_before) | set(sets_after)):
                old_set = sets_before.get(set_name, set())
                new_set = sets_after.get(set_name, set())
                if old_set != new_set:
                    self.set_diff(set_name, old_set, new_set)
            if state is not None and state.get("source_sha256") == sha256(ruleset):
                relay.changes.append(
                    f"nft: table {' '.join(TABLE)} drifted from the deployed ruleset; reload it"
                )
            else:
                relay.changes.append(f"nft: load {RULESET}")
        for set_name, elements in nft_add.items():
            loaded_set = nft_sets(listing or "").get(set_name, set())
            self.set_diff(set_name, loaded_set, loaded_set | set(elements))
            relay.changes.append(f"nft: add element {set_name} {{ {', '.join(elements)} }}")
        runs = relay.folder / RUNS
        names = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
        for stale in [n for n in names if not n.startswith(".")]:
            relay.changes.append(
                f"run {stale} ended without finishing: gate the relay as it is and commit"
            )
        reload_pending = (relay.folder / PENDING).exists()
        if reload_pending:
            relay.changes.append("postfix: a reload an earlier run did not finish")
        if set_main or remove_main or set_master or remove_master:
            self.text_diff(
                "main.cf + master.cf",
                params,
                set_main,
                remove_main,
                have_master,
                set_master,
                remove_master,
            )
        if relay.config.joinpath("relaygate").is_symlink():
            relay.changes.append(
                "remove the old live-map symlink relaygate (maps are served from a generation)"
            )
        limits = self.plan_limits(wanted, fragment, current)
        pending = bool(relay.changes)
        return {
            "limits": limits,
            "pending": pending,
            "live": live,
            "name": name,
            "wanted": wanted,
            "maps": maps,
            "drift": bool(drift),
            "fragment": fragment,
            "master": master,
            "set_main": set_main,
            "remove_main": remove_main,
            "set_master": set_master,
            "remove_master": remove_master,
            "switch": maps or bool(set_main or remove_main or set_master or remove_master),
            "nft_full": nft_full,
            "nft_add": nft_add,
            "ruleset": ruleset,
            "reload": reload_pending,
        }

    def plan_limits(
        self,
        wanted: dict[str, bytes],
        fragment: dict[str, str],
        current: dict[str, bytes] | None,
    ) -> dict[str, Any]:
        """What the relay's postfwd needs: start, reload, restart, stop or nothing.

        A full run validates a new ruleset with postfwd here, before anything changes. A
        revoke never touches the daemon; it only warns when the daemon is down.
        """
        daemon = self.postfwd
        relay = self.relay
        ruleset = wanted.get(POSTFWD_RULESET)
        port = policy_port(fragment)
        old_fragment = (current or {}).get(FRAGMENT)
        old_port = (
            policy_port(fragment_params(old_fragment.decode("utf-8"))) if old_fragment else None
        )
        limits: dict[str, Any] = {"ruleset": ruleset, "port": port, "old_port": old_port}
        limits["action"] = None
        if ruleset is not None and port is None:
            raise Refused(
                f"the release has {POSTFWD_RULESET} but {FRAGMENT} calls no policy service on"
                " 127.0.0.1 (check_policy_service inet:127.0.0.1:PORT); nothing was changed"
            )
        if ruleset is None and port is not None:
            raise Refused(
                f"{FRAGMENT} calls a policy service on 127.0.0.1:{port} but the release has no"
                f" {POSTFWD_RULESET}; nothing was changed"
            )
        pid = daemon.pid()
        if self.params["mode"] == "revoke":
            if ruleset is not None and pid is None:
                self.module.warn(
                    "postfwd (the volume limits) is not running on this relay: mail flows"
                    " without limits, and Postfix logs 'problem talking to server'. A revoke"
                    " does not touch it; a full deploy starts it."
                )
            limits["ruleset"] = None
            return limits
        installed = daemon.ruleset.read_bytes() if daemon.ruleset.is_file() else None
        if ruleset is None:
            if pid is not None or installed is not None:
                # A rollback may start it again as it ran: with its server count if it can.
                with contextlib.suppress(Refused):
                    daemon.plan_servers(
                        smtpd_processes(lambda *args: relay.postconf(*args).stdout, fragment)
                    )
                limits["action"] = "stop"
                relay.changes.append("postfwd: stop the relay's daemon (the release has no limits)")
            return limits
        assert port is not None
        # Before anything changes: a relay whose smtpd processes are unlimited is refused.
        if any(word.startswith("--max_servers") for word in daemon.args):
            raise Refused(
                "postfwd_args sets --max_servers: the module sets it from the relay's smtpd"
                " process limits (one policy server per smtpd process). Nothing was changed"
            )
        smtpd = smtpd_processes(lambda *args: relay.postconf(*args).stdout, fragment)
        limits["servers"] = daemon.plan_servers(smtpd)
        limits["smtpd"] = smtpd
        limits["rules"] = postfwd_rules(ruleset.decode("utf-8", "replace"))
        if installed != ruleset or pid is None:
            limits["rules"] = daemon.validate(ruleset)
        if pid is None:
            limits["action"] = "start"
            if installed is None:
                relay.changes.append(f"postfwd: start it on 127.0.0.1:{port}")
            else:
                relay.changes.append(
                    f"postfwd: not running (stopped or crashed; mail was not limited);"
                    f" start it again on 127.0.0.1:{port}"
                )
                self.module.warn(
                    "postfwd (the volume limits) was not running on this relay: mail flowed"
                    " without limits. This run starts it again."
                )
        elif not daemon.same_instance(port):
            limits["action"] = "restart"
            relay.changes.append(
                f"postfwd: restart it on 127.0.0.1:{port} (it runs with other options)"
            )
        elif daemon.answer(port).lower() != "action=dunno":
            limits["action"] = "restart"
            relay.changes.append(
                f"postfwd: runs but does not answer on 127.0.0.1:{port}; restart it"
            )
        elif installed != ruleset:
            limits["action"] = "reload"
            relay.changes.append("postfwd: reload the new ruleset (counters kept)")
        elif not daemon.env_file.is_file() or daemon.env_file.read_bytes() != daemon.env_text(port):
            limits["action"] = "record"
            relay.changes.append(
                f"postfwd: record its options in {GENERATIONS}/{POSTFWD_STATE}/{POSTFWD_ENV}"
                " for the boot-time unit"
            )
        if installed != ruleset:
            self.relay.diff.append(
                {
                    "before_header": f"{GENERATIONS}/{POSTFWD_STATE}/postfwd.cf (daemon)",
                    "after_header": f"{GENERATIONS}/new/{POSTFWD_RULESET}",
                    "before": (installed or b"").decode("utf-8", "replace"),
                    "after": ruleset.decode("utf-8", "replace"),
                }
            )
        return limits

    def previous_live(self) -> str | None:
        path = self.relay.folder / PREVIOUS / "main.cf"
        if not path.is_file():
            return None
        found = LIVE_REF.findall(path.read_text(errors="replace"))
        return found[0] if found else None

    def nft_state(self) -> dict[str, Any] | None:
        try:
            state = json.loads((self.relay.folder / NFT_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def file_diff(self, path: str, before: bytes | None, after: bytes | None) -> None:
        self.relay.diff.append(
            {
                "before_header": f"{GENERATIONS}/live/{path}"
                if before is not None
                else "/dev/null",
                "after_header": f"{GENERATIONS}/new/{path}" if after is not None else "/dev/null",
                "before": (before or b"").decode("utf-8", "replace"),
                "after": (after or b"").decode("utf-8", "replace"),
            }
        )

    def set_diff(self, name: str, before: set[str], after: set[str]) -> None:
        self.relay.diff.append(
            {
                "before_header": f"nft set {name} (loaded)",
                "after_header": f"nft set {name} (new)",
                "before": "".join(f"{e}\n" for e in sorted(before)),
                "after": "".join(f"{e}\n" for e in sorted(after)),
            }
        )

    def text_diff(
        self,
        what: str,
        params: dict[str, str],
        set_main: dict[str, str],
        remove_main: list[str],
        have_master: dict[str, str],
        set_master: dict[str, str],
        remove_master: list[str],
    ) -> None:
        keys = sorted(set(set_main) | set(remove_main))
        mkeys = sorted(set(set_master) | set(remove_master))
        before = [f"{k} = {params[k]}\n" for k in keys if k in params]
        before += [f"{k}={have_master[k]}\n" for k in mkeys if k in have_master]
        after = [f"{k} = {set_main[k]}\n" for k in keys if k in set_main]
        after += [f"{k}={set_master[k]}\n" for k in mkeys if k in set_master]
        self.relay.diff.append(
            {
                "before_header": f"{what} (live)",
                "after_header": f"{what} (new)",
                "before": "".join(before),
                "after": "".join(after),
            }
        )

    def mass_change_guard(self, wanted: dict[str, bytes]) -> None:
        if self.params["mode"] != "full" or self.params["allow_mass_change"]:
            return
        current = set(live_allow_entries(self.relay))
        if not current:
            return
        lost = current - set(self.params["allow_entries"])
        share = len(lost) / len(current)
        if share > float(self.params["mass_change_share"]):
            raise Refused(
                f"Mass change refused: {len(lost)} of {len(current)} allow entries ({share:.0%})"
                " would be removed or changed, more than"
                f" mass_change_share={self.params['mass_change_share']}. Nothing was changed; if"
                " this is intended, run again with -e relaygate_allow_mass_change=true."
            )

    # -- change -----------------------------------------------------------------------

    def take_snapshot(self) -> None:
        relay = self.relay
        runs = relay.folder / RUNS
        runs.mkdir(parents=True, exist_ok=True)
        for stale in sorted(runs.iterdir()):
            # We hold the lock: a run snapshot left here belongs to a run that died.
            shutil.rmtree(stale, ignore_errors=True)
            relay.act(f"removed the snapshot of run {stale.name}, which ended without finishing")
        staging = Path(tempfile.mkdtemp(prefix=".snapshot.", dir=runs))
        for name in ("main.cf", "master.cf"):
            shutil.copy2(relay.config / name, staging / name)
        (staging / "nft.json").write_text(json.dumps({"listing": relay.nft_listing()}))
        if self.postfwd.ruleset.is_file():
            shutil.copy2(self.postfwd.ruleset, staging / "postfwd.cf")
        if (relay.folder / NFT_STATE).is_file():
            shutil.copy2(relay.folder / NFT_STATE, staging / NFT_STATE)
        target = runs / self.run_id
        os.rename(staging, target)
        self.snapshot = target
        relay.act(f"snapshot {RUNS}/{self.run_id}")

    def prepare(self, plan: dict[str, Any]) -> Path:
        """main.cf and master.cf as they will be, built aside and checked before any change."""
        relay = self.relay
        staging = Path(tempfile.mkdtemp(prefix=".relaygate-switch.", dir=relay.config))
        try:
            for name in ("main.cf", "master.cf"):
                shutil.copy2(relay.config / name, staging / name)
            if plan["set_main"]:
                pairs = [f"{k}={v}" for k, v in sorted(plan["set_main"].items())]
                relay.postconf("-e", *pairs, config=staging)
            if plan["remove_main"]:
                relay.postconf("-X", *plan["remove_main"], config=staging)
            if plan["set_master"]:
                pairs = [f"{k}={v}" for k, v in sorted(plan["set_master"].items())]
                relay.postconf("-P", *pairs, config=staging)
            if plan["remove_master"]:
                relay.postconf("-PX", *plan["remove_master"], config=staging)
            # postconf warns (unused parameter, bad syntax) on stderr: any word is a refusal.
            for flag in ("-n", "-P", "-M"):
                said = run(["postconf", "-c", str(staging), flag]).stderr.strip()
                if said:
                    raise Refused(
                        f"the new configuration makes postconf warn: {said}; nothing was changed"
                    )
            self.check_overrides(staging, plan["fragment"], plan["master"])
            self.check_tls(staging, plan["master"], relay.main_params(staging))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def switch(self, plan: dict[str, Any], staging: Path) -> None:
        """Rename the prepared master.cf, then main.cf, into place."""
        relay = self.relay
        self.fault("staged")
        (relay.folder / PENDING).write_text(self.run_id)
        # master.cf first: the master reads it only on reload, so a new smtpd sees the new
        # main.cf with either service list, and never the old main.cf with the new one.
        os.replace(staging / "master.cf", relay.config / "master.cf")
        self.fault("master-switched")
        os.replace(staging / "main.cf", relay.config / "main.cf")
        relay.act(f"main.cf and master.cf switched to generation {plan['name']}")
        self.fault("main-switched")

    def load_nft(self, plan: dict[str, Any]) -> None:
        relay = self.relay
        nft = relay.nft
        if plan["nft_full"]:
            ruleset = relay.folder / plan["name"] / RULESET
            run([*nft, "-c", "-f", str(ruleset)])
            run([*nft, "-f", str(ruleset)])
            relay.act(f"loaded {RULESET} (table {' '.join(TABLE)} replaced in one transaction)")
        for set_name, elements in plan["nft_add"].items():
            run([*nft, "add", "element", *TABLE, set_name, "{ " + ", ".join(elements) + " }"])
            relay.act(f"nft add element {set_name} {{ {', '.join(elements)} }}")
        if plan["nft_full"] or plan["nft_add"]:
            listing = relay.nft_listing()
            source = plan["ruleset"] if plan["nft_full"] else None
            state = self.nft_state() or {}
            record = {
                "source_sha256": sha256(source)
                if source is not None
                else state.get("source_sha256"),
                "listing": listing,
            }
            write_atomic(relay.folder / NFT_STATE, json.dumps(record, sort_keys=True).encode())

    def reload(self) -> None:
        run(["postfix", "-c", str(self.relay.config), "reload"])
        pending = self.relay.folder / PENDING
        if pending.exists():
            pending.unlink()
        self.relay.act("reloaded postfix")

    def commit(self, plan: dict[str, Any]) -> None:
        relay = self.relay
        if self.snapshot is not None:
            previous = relay.folder / PREVIOUS
            if previous.exists():
                shutil.rmtree(previous)
            os.rename(self.snapshot, previous)
            self.snapshot = None
        link = relay.config / "relaygate"
        if link.is_symlink():
            link.unlink()
        keep = {plan["name"], self.previous_live(), PREVIOUS, NFT_STATE, RUNS, POSTFWD_STATE}
        for path in sorted(relay.folder.iterdir()):
            if path.name in keep or path.name.startswith("."):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            relay.act(f"dropped {path.name}")

    def apply_limits(self, limits: dict[str, Any]) -> None:
        """Give the relay's postfwd the release's ruleset: start, reload (SIGHUP) or restart."""
        action, daemon = limits["action"], self.postfwd
        if action not in ("start", "reload", "restart", "record"):
            return
        port, rules = limits["port"], limits.get("rules", "?")
        if action == "record":
            daemon.record(port)
            self.relay.act(f"recorded postfwd's options in {POSTFWD_ENV}")
            return
        self.postfwd_touched = True
        daemon.install(limits["ruleset"])
        if action == "reload":
            daemon.reload()
            daemon.record(port)
            self.relay.act(f"reloaded postfwd (SIGHUP; {rules} rules, counters kept)")
            return
        if action == "restart":
            daemon.stop()
        daemon.start(port)
        self.relay.act(f"{action}ed postfwd on 127.0.0.1:{port} ({rules} rules, --keep_rates)")

    def gate_limits(self, limits: dict[str, Any]) -> dict[str, Any] | None:
        """The health gate's daemon check: a policy request answered with DUNNO."""
        if limits["ruleset"] is None:
            return None
        port = limits["port"]
        said = self.postfwd.answers(port, float(self.params["postfwd_wait"]))
        self.relay.act(f"health gate: postfwd answers on 127.0.0.1:{port} ({said})")
        # The answer proves something answers; the listener's pid proves it is ours.
        listening = self.postfwd.owns_port(port)
        self.relay.act(
            f"health gate: only the relay's postfwd listens on 127.0.0.1:{port}"
            f" (pids {', '.join(map(str, listening))}; up to {self.postfwd.servers} policy"
            f" servers for {limits.get('smtpd', '?')} smtpd processes)"
        )
        return {
            "pid": self.postfwd.pid(),
            "port": port,
            "answer": said,
            "listeners": listening,
            "servers": self.postfwd.servers,
        }

    def rollback_limits(self, snapshot: Path) -> list[str]:
        """The daemon back to the snapshot's ruleset, on the port the old main.cf calls.

        Never raises: a daemon that will not come back is said in the rollback's report (mail
        flows without limits meanwhile), and the rest of the rollback goes on.
        """
        daemon, done = self.postfwd, []
        old = snapshot / "postfwd.cf"
        old_port = self.old_port
        try:
            if not old.is_file() or old_port is None:
                if daemon.pid() is not None:
                    daemon.stop()
                    done.append("stopped postfwd")
                daemon.ruleset.unlink(missing_ok=True)
                return done
            daemon.install(old.read_bytes())
            done.append("restored postfwd.cf")
            if daemon.pid() is not None and daemon.same_instance(old_port):
                try:
                    daemon.reload()
                    done.append("reloaded postfwd")
                    return done
                except Refused:
                    pass  # no policy server to HUP: start it afresh
            daemon.stop()
            daemon.start(old_port)
            done.append(f"restarted postfwd on 127.0.0.1:{old_port}")
        except (Refused, OSError) as error:
            done.append(f"postfwd NOT restored ({error}; mail flows without limits)")
        return done

    def rollback(self) -> list[str]:
        """Back to this run's snapshot: main.cf, master.cf, nft, reload; drop what it built."""
        relay = self.relay
        done: list[str] = []
        snapshot = self.snapshot
        if snapshot is None:
            return done
        for name in ("main.cf", "master.cf"):
            data = (snapshot / name).read_bytes()
            if (relay.config / name).read_bytes() != data:
                write_atomic(relay.config / name, data)
                done.append(f"restored {name}")
        wanted = json.loads((snapshot / "nft.json").read_text())["listing"]
        if relay.nft_listing() != wanted:
            script = f"table {' '.join(TABLE)}\ndelete table {' '.join(TABLE)}\n" + (wanted or "")
            with tempfile.NamedTemporaryFile(
                "w", suffix=".nft", dir=relay.folder, delete=False
            ) as handle:
                handle.write(script)
            try:
                run([*relay.nft, "-f", handle.name])
            finally:
                os.unlink(handle.name)
            done.append(f"restored table {' '.join(TABLE)}")
        if self.postfwd_touched:
            done += self.rollback_limits(snapshot)
        if (snapshot / NFT_STATE).is_file():
            shutil.copy2(snapshot / NFT_STATE, relay.folder / NFT_STATE)
        elif (relay.folder / NFT_STATE).is_file():
            (relay.folder / NFT_STATE).unlink()
        if relay.postfix_running():
            run(["postfix", "-c", str(relay.config), "reload"])
            done.append("reloaded postfix")
        pending = relay.folder / PENDING
        if pending.exists():
            pending.unlink()
        if self.built and self.built != relay.live_name() and (relay.folder / self.built).is_dir():
            shutil.rmtree(relay.folder / self.built)
            done.append(f"discarded generation {self.built}")
        shutil.rmtree(snapshot)
        self.snapshot = None
        return done

    def execute(self) -> dict[str, Any]:
        params = self.params
        relay = self.relay
        if params["mode"] == "inspect":
            # What the controller needs to judge the relay before any change: its allow
            # entries and its effective settings (postconf -n, -P, -M).
            return {
                "changed": False,
                "entries": sorted(live_allow_entries(relay)),
                "live": relay.live_name(),
                "postconf": {flag: relay.postconf(f"-{flag}").stdout for flag in ("n", "P", "M")},
            }
        if not RUN_ID.fullmatch(self.run_id):
            raise Refused(f"run_id {self.run_id!r} is not a plain name")
        self.lock()
        self.fault("locked")
        self.preflight()
        self.relay.act("pre-flight checks passed")
        plan = self.plan()
        result: dict[str, Any] = {
            "live": plan["live"],
            "generation": plan["name"],
            "changes": relay.changes,
        }
        if not plan["pending"]:
            return {**result, "changed": False, "actions": []}
        if self.module.check_mode:
            return {**result, "changed": True, "actions": [], "diff": relay.diff}
        self.mass_change_guard(plan["wanted"])
        staging = self.prepare(plan) if plan["switch"] else None
        try:
            return self.change(plan, staging, result)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)

    def change(
        self, plan: dict[str, Any], staging: Path | None, result: dict[str, Any]
    ) -> dict[str, Any]:
        params = self.params
        relay = self.relay
        self.old_port = plan["limits"]["old_port"]
        self.take_snapshot()
        self.fault("snapshot")
        try:
            if params["mode"] == "revoke":
                # The firewall first: a revoked client is dropped from this moment on.
                self.load_nft(plan)
                self.fault("nft")
                self.check_before()
            if plan["maps"] and self.built:
                # Files of a drifted generation are never linked into the new one.
                reuse = None if plan["drift"] else plan["live"]
                self.relay.stage(plan["name"], plan["wanted"], reuse)
                self.fault("staged-generation")
            # The daemon gets its new rules before Postfix calls it with the new main.cf.
            self.apply_limits(plan["limits"])
            if staging is not None:
                self.switch(plan, staging)
            said = relay.postfix_check()
            if said:
                raise Refused(f"postfix check warns after the switch: {said}")
            if params["mode"] != "revoke":
                self.load_nft(plan)
                self.fault("nft")
            if plan["switch"] or plan["reload"] or params["mode"] == "revoke":
                self.reload()
            self.fault("reloaded")
            probe = relay.probe(list(params["probe_cases"]))
            relay.act(f"health gate passed ({len(probe)} cases from the campus side)")
            daemon = self.gate_limits(plan["limits"])
            self.fault("probed")
            if plan["limits"]["action"] == "stop":
                self.postfwd.stop()
                self.postfwd.ruleset.unlink(missing_ok=True)
                relay.act("stopped postfwd (the release has no volume limits)")
            self.commit(plan)
        except Exception as error:
            undone = self.rollback()
            raise Refused(
                f"{error}. Rolled back: {', '.join(undone) or 'nothing had changed'}"
            ) from error
        return {
            **result,
            "changed": True,
            "actions": relay.actions,
            "probe": probe,
            **({"postfwd": daemon} if daemon else {}),
            "live": plan["name"],
            "diff": relay.diff,
        }


def live_allow_entries(relay: Relay) -> list[str]:
    """The allow entries the relay serves now (legacy clients and sender logins)."""
    try:
        live = relay.live_name()
    except Refused:
        return []
    if live is None:
        return []
    folder = relay.folder / live
    entries = []
    for name, kind in (*ALLOW_MAPS, ("sender_login", "sender"), ("logins", "login")):
        path = folder / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            entries += [f"{kind}\t{k}\t{v}" for k, v in map_entries(text).items()]
    return sorted(set(entries))


def sample(extras: list[str], each: int = 4) -> list[str]:
    """A few of each kind of extra change (maps, nft sets), and how many more there are."""
    shown = [e for e in extras if not e.startswith("nft ")][:each]
    shown += [e for e in extras if e.startswith("nft ")][:each]
    return shown + ([f"... {len(extras) - len(shown)} more"] if len(extras) > len(shown) else [])


def revoke_extras(old: dict[str, bytes], new: dict[str, bytes]) -> list[str]:
    """Changes from the live files to the release beyond refusing more clients or logins."""

    def text(files: dict[str, bytes], name: str) -> str:
        return files.get(name, b"").decode("utf-8", "replace")

    refused_old = {k for n in REVOKE_MAPS for k in map_entries(text(old, n))}
    refused_new = {k for n in REVOKE_MAPS for k in map_entries(text(new, n))}
    now = refused_new - refused_old
    extras = [f"refusal of {k} lifted" for k in sorted(refused_old - refused_new)]
    for name, kind in (*ALLOW_MAPS, ("sender_login", "sender"), ("logins", "login")):
        before, after = map_entries(text(old, name)), map_entries(text(new, name))
        for key in sorted(set(before) | set(after)):
            if before.get(key) == after.get(key):
                continue
            if key not in after and (
                key in now or (kind == "sender" and any(x in now for x in before[key].split(",")))
            ):
                continue
            what = "added" if key not in before else "removed" if key not in after else "changed"
            extras.append(f"{kind} allow entry {key} {what}")
    old_sets, new_sets = nft_sets(text(old, RULESET)), nft_sets(text(new, RULESET))
    for name in sorted(set(old_sets) | set(new_sets)):
        gone = old_sets.get(name, set()) - new_sets.get(name, set())
        added = new_sets.get(name, set()) - old_sets.get(name, set())
        if name in REVOKE_SETS:
            extras += [f"nft set {name}: {e} removed" for e in sorted(gone)]
            continue
        extras += [f"nft set {name}: {e} added" for e in sorted(added)]
        extras += [f"nft set {name}: {e} removed" for e in sorted(gone) if e not in now]
    return extras


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "path", "required": True},
            "files": {"type": "dict"},
            "mode": {"type": "str", "choices": ["full", "revoke", "inspect"], "default": "full"},
            "run_id": {"type": "str"},
            "lock_timeout": {"type": "float", "default": 60},
            "nft_cmd": {"type": "list", "elements": "str", "default": ["nft"]},
            "allow_entries": {"type": "list", "elements": "str", "default": []},
            "mass_change_share": {"type": "float", "default": 0.3},
            "allow_mass_change": {"type": "bool", "default": False},
            "allow_revoke_extra": {"type": "bool", "default": False},
            "min_free_mb": {"type": "int", "default": 64},
            "probe_cases": {"type": "list", "elements": "dict", "default": []},
            "probe_ports": {"type": "dict", "default": {}},
            "probe_address": {"type": "str"},
            "probe_exec": {"type": "list", "elements": "str", "default": []},
            "probe_python": {"type": "str", "default": "python3"},
            "probe_recipient": {"type": "str", "default": "relaygate-probe@example.net"},
            "probe_login": {"type": "str"},
            "probe_password": {"type": "str", "no_log": True},
            "probe_timeout": {"type": "float", "default": 2},
            "probe_attempts": {"type": "int", "default": 4},
            "postfwd_exec": {"type": "list", "elements": "str", "default": []},
            "postfwd_cmd": {"type": "str", "default": "postfwd2"},
            "postfwd_user": {"type": "str", "default": "postfw"},
            "postfwd_args": {"type": "list", "elements": "str", "default": []},
            "postfwd_wait": {"type": "float", "default": 10},
            "postfwd_run_dir": {"type": "path", "default": "/run/relaygate-postfwd"},
        },
        required_if=[
            ("mode", "full", ("files", "run_id")),
            ("mode", "revoke", ("files", "run_id")),
        ],
        supports_check_mode=True,
    )
    try:
        result = Run(module).execute()
    except Refused as error:
        module.fail_json(msg=str(error))
    except Exception as error:
        module.fail_json(msg=f"internal error in relaygate_relay: {type(error).__name__}: {error}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
