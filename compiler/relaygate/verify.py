"""Cross-target verifier: read the artifacts back and prove they agree.

Input: the checked ``Inventory`` (the expectation is derived from the records
directly, not from ``Policy``, so a bug in policy building is caught) and the
rendered artifacts as text. Output: a list of disagreements; ``compile``
refuses to write anything when it is not empty.

What is proven, per target:
- Postfix: the legacy client keys are exactly the active legacy devices, each
  bound to a class that allows exactly its senders; every right-hand side is
  a known action word or a defined class; the sender login map is exactly
  the authenticated devices' senders; every revoked or suspended device is
  refused; the relay restrictions are the compiled constant.
- nftables: every set: legacy = the active legacy devices, revoked = the
  revoked ones, suspended = the suspended legacy ones, campus = the site's
  campus networks, and no other set.
- ACLs: the relay-port permits of every segment (IOS and Junos, and the
  Aerleon groups) are exactly the active and suspended legacy devices inside
  it (suspended ones reach Postfix, which tells them why it refuses).
- Postfix: see above; the login map holds exactly the active authenticated
  records' logins, each bound to exactly its records' addresses and senders.
- postfwd: one daily limit rule per active login (the sum of its records'
  limits) before the authenticated stop, one per active legacy address after
  it, each with the limit ``relaygate.limits`` gives, and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

import netaddr

from relaygate import addresses
from relaygate.addresses import canonical_text
from relaygate.errors import InternalError
from relaygate.limits import record_limit
from relaygate.model import Device, Inventory, Status
from relaygate.policy import build_policy
from relaygate.render import Header, postfix, postfwd
from relaygate.render.postfix import syntax
from relaygate.render.targets import render_all

MANIFEST = "manifest.json"
_NFT_SETS = frozenset(
    f"{name}_v{version}"
    for name in ("legacy", "revoked", "suspended", "campus")
    for version in (4, 6)
)


@lru_cache(maxsize=1 << 16)
def _canonical(text: str) -> str:
    """The canonical spelling, or the text marked as odd: never raises on tampered input."""
    # Artifacts write hosts as net/len (nft sets, cidr maps, Junos): accept
    # exactly the full-length form of a canonical host, nothing looser.
    if text.endswith("/32") and ":" not in text:
        text = text.removesuffix("/32")
    elif text.endswith("/128") and ":" in text:
        text = text.removesuffix("/128")
    parsed = addresses.parse(text)
    if isinstance(parsed, str) or parsed.problem:
        return f"{text!r} (not a canonical address)"
    return parsed.canonical


def map_entries(text: str, path: str, problems: list[str]) -> dict[str, str]:
    """Key -> value of a Postfix map source as Postfix reads it (``syntax.table_entries``).

    relaygate writes one ``key<TAB>value`` line per entry: a continuation
    line, an entry without a value, a space instead of the tab, or a repeated
    key is a problem (the entry is still read the way Postfix reads it).
    """
    entries: dict[str, str] = {}
    for entry in syntax.table_entries(text):
        if entry.continued:
            problems.append(f"{path}:{entry.number}: a continuation line (leading whitespace)")
        if not entry.value or entry.key in entries:
            problems.append(f"{path}:{entry.number}: malformed or repeated entry {entry.key!r}")
            continue
        entries[entry.key] = entry.value
    for number, line in enumerate(text.splitlines(), 1):
        if line and not line[0].isspace() and not line.startswith("#") and "\t" not in line:
            problems.append(f"{path}:{number}: malformed entry {line!r} (no tab)")
    return entries


def _fragment(text: str, problems: list[str]) -> dict[str, str]:
    """main.cf.fragment as name -> value; continuations and repeats are problems."""
    found: dict[str, str] = {}
    try:
        lines = syntax.parameter_lines(text)
    except InternalError as error:
        problems.append(f"postfix/main.cf.fragment: {error}")
        return found
    for line in lines:
        if line.continued:
            problems.append(
                f"postfix/main.cf.fragment:{line.number}: a continuation line (leading whitespace)"
            )
        if line.name in found:
            problems.append(f"postfix/main.cf.fragment:{line.number}: {line.name} set twice")
        found[line.name] = line.value
    return found


def _class_names(fragment: dict[str, str], problems: list[str]) -> list[str]:
    """The restriction class names, through the ``relaygate_classes_N`` lists."""
    try:
        listed = syntax.expand(
            fragment.get("smtpd_restriction_classes", ""), fragment, frozenset({"config_directory"})
        )
    except InternalError as error:
        problems.append(f"postfix: smtpd_restriction_classes: {error}")
        return []
    return [c for c in syntax.tokens(listed) if c]


def _login_bindings(name: str, value: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """(cidr, sender class) of a login class definition; its exact form is checked later."""
    words = syntax.tokens(value) if value else []
    if len(words) < 2 or words[0] != "check_client_access" or not words[1].startswith("cidr:{"):
        problems.append(f"postfix: login class {name} is not an address check: {value!r}")
        return ()
    try:
        rules = syntax.inline_items(words[1].removeprefix("cidr:{").removesuffix("}"))
    except InternalError as error:
        problems.append(f"postfix: login class {name}: {error}")
        return ()
    bindings = []
    for rule in rules:
        parts = rule.split()
        if len(parts) != 2 or not postfix.SENDER_CLASS.fullmatch(parts[1]):
            problems.append(f"postfix: login class {name} has the rule {rule!r}")
            continue
        bindings.append((parts[0], parts[1]))
    return tuple(bindings)


def _senders(device: Device) -> tuple[str, ...]:
    """The sender keys a record's class must hold: its senders, and ``<>`` if it opts in."""
    return device.relay_senders


def nft_sets(text: str) -> dict[str, set[str]]:
    """Set name -> its elements (canonical) from a ruleset file or `nft list` output."""
    sets: dict[str, set[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if match := re.fullmatch(r"set (\w+) \{", line):
            current = match.group(1)
            sets[current] = set()
        elif current and line == "}" and raw.startswith("\t}"):
            current = None
        elif current and (match := re.match(r"([0-9a-f.:]+(?:/[0-9]+)?)\s+comment\s", line)):
            sets[current].add(_canonical(match.group(1)))
    return sets


def _ios_permits(text: str, port: int) -> set[str]:
    found: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] != ["permit", "tcp"] or parts[-2:] != ["eq", str(port)]:
            continue
        if parts[2] == "host":
            found.add(_canonical(parts[3]))
        elif "/" in parts[2]:
            found.add(_canonical(parts[2]))
        else:
            try:
                found.add(_canonical(str(netaddr.IPNetwork(f"{parts[2]}/{parts[3]}").cidr)))
            except (netaddr.AddrFormatError, ValueError, IndexError):
                found.add(f"{' '.join(parts[2:4])!r} (not a canonical address)")
    return found


def _junos_permits(text: str, port: int) -> set[str]:
    found: set[str] = set()
    for term in re.findall(r"term \S+ \{(.*?)then accept;", text, re.S):
        if f"destination-port {port};" not in term:
            continue
        source = re.search(r"source-address \{\s*([^;]+);", term)
        if source:
            found.add(_canonical(source.group(1)))
    return found


def _aerleon_groups(text: str) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if match := re.fullmatch(r"(\w+) =", line):
            current = match.group(1)
            groups[current] = set()
        elif current and line.startswith("    ") and line.strip():
            groups[current].add(_canonical(line.split()[0]))
        elif not line.strip():
            current = None
    return groups


def _compare(what: str, got: Iterable[str], want: Iterable[str], problems: list[str]) -> None:
    got_set, want_set = set(got), set(want)
    for extra in sorted(got_set - want_set):
        problems.append(f"{what}: {extra} is present but no active record grants it")
    for missing in sorted(want_set - got_set):
        problems.append(f"{what}: {missing} is missing")


def _first_difference(text: str, reference: str) -> str:
    """Where an artifact first departs from a fresh render, for the problem message."""
    lines, wanted = text.splitlines(), reference.splitlines()
    for number, (line, want) in enumerate(zip(lines, wanted, strict=False), 1):
        if line != want:
            return f"line {number} is {line!r}, a fresh render has {want!r}"
    if len(lines) > len(wanted):
        return f"line {len(wanted) + 1} is {lines[len(wanted)]!r}, a fresh render ends before it"
    if len(lines) < len(wanted):
        return f"ends at line {len(lines)}, a fresh render goes on with {wanted[len(lines)]!r}"
    return "differs from a fresh render of the inventory in line endings"


def verify(
    inventory: Inventory,
    artifacts: Mapping[str, str],
    reference: Mapping[str, str] | None = None,
) -> list[str]:
    """Every disagreement between the records and the artifacts (empty: they agree).

    Two independent proofs: the semantic checks below derive what must be
    allowed and refused from the records themselves; and every artifact must
    equal ``reference`` (by default a fresh render of the inventory), which
    catches anything added outside the entries (an nft rule, an ACL line, a
    Junos term). ``compile`` passes the artifacts it just rendered.
    """
    problems: list[str] = []
    if reference is None:
        reference = render_all(build_policy(inventory), Header(site=inventory.site.name))
    for path in sorted(set(artifacts) | set(reference)):
        if path == MANIFEST:
            continue
        if path not in reference:
            problems.append(f"{path}: not an artifact relaygate produces for this inventory")
        elif path in artifacts and artifacts[path] != reference[path]:
            problems.append(f"{path}: {_first_difference(artifacts[path], reference[path])}")
    site = inventory.site
    active = [d for d in inventory.devices if d.status is Status.ACTIVE]
    legacy = {canonical_text(d.network): _senders(d) for d in active if d.is_legacy}
    revoked = {canonical_text(d.network) for d in inventory.devices if d.status is Status.REVOKED}
    # Suspended legacy devices reach Postfix on the relay port (nft and the ACLs
    # admit them) so that it can tell them why they are refused.
    suspended = {
        canonical_text(d.network)
        for d in inventory.devices
        if d.status is Status.SUSPENDED and d.is_legacy
    }
    refused = {
        canonical_text(d.network)
        for d in inventory.devices
        if d.status in (Status.REVOKED, Status.SUSPENDED)
    }
    logins: dict[str, dict[str, tuple[str, ...]]] = {}
    for device in active:
        if not device.is_legacy and device.account:
            logins.setdefault(device.account, {})[canonical_text(device.network)] = _senders(device)

    def get(path: str) -> str:
        if path not in artifacts:
            problems.append(f"{path}: artifact missing")
            return ""
        return artifacts[path]

    # --- Postfix ---
    fragment = _fragment(get("postfix/main.cf.fragment"), problems)
    named = _class_names(fragment, problems)
    sender_classes = sorted(c for c in named if postfix.SENDER_CLASS.fullmatch(c))
    login_class_names = sorted(c for c in named if postfix.LOGIN_CLASS.fullmatch(c))
    defined = frozenset(sender_classes)  # membership tests: a list would make them quadratic
    for name in named:
        if name not in defined and not postfix.LOGIN_CLASS.fullmatch(name):
            problems.append(f"postfix: restriction class {name!r} is not a relaygate class")
    class_senders: dict[str, tuple[str, ...]] = {}
    for name in sender_classes:
        path = f"postfix/senders/{name}"
        entries = map_entries(get(path), path, problems)
        for sender, action in entries.items():
            if action != "OK":
                problems.append(f"{path}: {sender} maps to {action!r}, not OK")
        class_senders[name] = tuple(sorted(entries))
    bound: dict[str, tuple[str, ...]] = {}
    for path in ("postfix/legacy_clients", "postfix/legacy_clients.cidr"):
        for key, value in map_entries(get(path), path, problems).items():
            if value not in defined:
                problems.append(f"{path}: {key} maps to {value!r}, not a defined class")
                continue
            bound[_canonical(key)] = class_senders.get(value, ())
    _compare("postfix legacy clients", bound, legacy, problems)
    for address, senders in sorted(bound.items()):
        if address in legacy and senders != legacy[address]:
            problems.append(
                f"postfix: {address} may send as {senders}, the record says {legacy[address]}"
            )
    login_bindings: dict[str, tuple[tuple[str, str], ...]] = {}
    for name in login_class_names:
        login_bindings[name] = _login_bindings(name, fragment.get(name, ""), problems)
    login_map = map_entries(get("postfix/logins"), "postfix/logins", problems)
    _compare("postfix logins", login_map, logins, problems)
    for login, value in sorted(login_map.items()):
        if value not in login_bindings:
            problems.append(f"postfix/logins: {login} maps to {value!r}, not a login class")
            continue
        got = {
            _canonical(cidr): class_senders.get(sender_class, ("(undefined class)",))
            for cidr, sender_class in login_bindings[value]
        }
        if login in logins and got != logins[login]:
            problems.append(
                f"postfix: login {login} may relay {sorted(got.items())}, "
                f"the records say {sorted(logins[login].items())}"
            )
    refused_accounts = {
        d.account
        for d in inventory.devices
        if d.status in (Status.REVOKED, Status.SUSPENDED) and not d.is_legacy and d.account
    }
    logins_refused = map_entries(get("postfix/refused_logins"), "postfix/refused_logins", problems)
    _compare("postfix refused logins", logins_refused, refused_accounts, problems)
    for account, value in logins_refused.items():
        if not value.startswith("REJECT "):
            problems.append(f"postfix/refused_logins: {account} maps to {value!r}, not a REJECT")
    refused_seen: set[str] = set()
    for path in ("postfix/refused_clients", "postfix/refused_clients.cidr"):
        for key, value in map_entries(get(path), path, problems).items():
            if not value.startswith("REJECT "):
                problems.append(f"{path}: {key} maps to {value!r}, not a REJECT")
            refused_seen.add(_canonical(key))
    _compare("postfix refused clients", refused_seen, refused, problems)
    # The fragment must be exactly what the code constants say: no extra
    # parameter (mynetworks, a permit), no missing or reordered restriction,
    # every pinned setting, and each class defined from the constants.
    wanted = postfix.main_cf(
        sender_classes,
        {name: login_bindings[name] for name in login_class_names},
        site.volume_limits.port,
    )
    for name in sorted(set(fragment) | set(wanted)):
        if fragment.get(name) != wanted.get(name):
            problems.append(
                f"postfix: main.cf.fragment sets {name} = {fragment.get(name)!r}, "
                f"expected {wanted.get(name)!r}"
            )
    master: dict[str, str] = {}
    try:
        master = {
            f"{o.key}/{o.name}": o.value
            for o in syntax.override_lines(get("postfix/master.cf.fragment"))
        }
    except InternalError as error:
        problems.append(f"postfix/master.cf.fragment: {error}")
    expected_master = postfix.master_cf(site.relay_port, site.submission_port)
    if master != expected_master:
        problems.append(f"postfix: master.cf.fragment is {master!r}, expected {expected_master!r}")

    # --- postfwd: each active login and legacy device with its limit (relaygate.limits) ---
    login_limits: dict[str, int] = {}
    for device in active:
        if not device.is_legacy and device.account:
            limit = record_limit(device, site.volume_limits).per_day
            login_limits[device.account] = login_limits.get(device.account, 0) + limit
    legacy_limits = {
        canonical_text(d.network): record_limit(d, site.volume_limits).per_day
        for d in active
        if d.is_legacy
    }
    problems += postfwd.check(get(postfwd.ARTIFACT), login_limits, legacy_limits)

    # --- nftables ---
    sets = nft_sets(get("nftables/relay.nft"))
    _compare(
        "nftables legacy set",
        sets.get("legacy_v4", set()) | sets.get("legacy_v6", set()),
        legacy,
        problems,
    )
    _compare(
        "nftables revoked set",
        sets.get("revoked_v4", set()) | sets.get("revoked_v6", set()),
        revoked,
        problems,
    )
    _compare(
        "nftables suspended set",
        sets.get("suspended_v4", set()) | sets.get("suspended_v6", set()),
        suspended,
        problems,
    )
    _compare(
        "nftables campus set",
        sets.get("campus_v4", set()) | sets.get("campus_v6", set()),
        {canonical_text(n.prefix) for n in site.campus_networks},
        problems,
    )
    for name in sorted(set(sets) - _NFT_SETS):
        problems.append(f"nftables: set {name} is not one relaygate writes")

    # --- ACLs ---
    port = site.relay_port
    # Each address is parsed once and placed in its segments by integer range
    # (an address in two segments is expected in both).
    by_segment: dict[str, set[str]] = {segment.name: set() for segment in site.mod_segments}
    index = site.segment_index()
    networks = {canonical_text(d.network): d.network for d in inventory.devices}
    for text in set(legacy) | suspended:
        for name in index.names(networks[text]):
            by_segment[name].add(text)
    for segment in site.mod_segments:
        inside = by_segment[segment.name]
        ios: set[str] = set()
        junos: set[str] = set()
        for version in (4, 6):
            ios |= _ios_permits(artifacts.get(f"acl/ios/{segment.name}-v{version}.acl", ""), port)
            junos |= _junos_permits(
                artifacts.get(f"acl/junos/{segment.name}-v{version}.conf", ""), port
            )
        _compare(f"IOS ACL {segment.name}", ios, inside, problems)
        _compare(f"Junos filter {segment.name}", junos, inside, problems)
    groups = _aerleon_groups(get("acl/aerleon/RELAYGATE.net"))
    relay_addresses = {canonical_text(a) for h in site.relay_hosts for a in h.addresses}
    _compare(
        "Aerleon group RELAYGATE_RELAY_HOSTS",
        groups.get("RELAYGATE_RELAY_HOSTS", set()),
        relay_addresses,
        problems,
    )
    in_groups: set[str] = set()
    for name, members in groups.items():
        if name != "RELAYGATE_RELAY_HOSTS":
            in_groups |= members
    authenticated_in_mod = {
        canonical_text(d.network) for d in active if not d.is_legacy and index.names(d.network)
    }
    _compare("Aerleon groups", in_groups, set(legacy) | authenticated_in_mod | suspended, problems)
    return problems
