"""Property tests: random valid inventories compile and the verifier agrees;
random mutations of a record are refused with a located finding or compile cleanly."""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

import netaddr
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaygate import addresses, checks
from relaygate import compile as compile_
from relaygate.addresses import PrefixIndex
from relaygate.findings import Finding
from relaygate.load import FORBIDDEN_CHARACTERS, Document
from relaygate.model import ModSegment
from relaygate.verify import verify

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from synth import generate

DAY = dt.date(2026, 11, 29)
SETTINGS = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@SETTINGS
@given(records=st.integers(min_value=1, max_value=60), seed=st.integers(0, 2**16))
def test_random_valid_inventories_compile_and_agree(records: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, records, seed)
        result = compile_.build(root, DAY)
        assert result.validation.findings == []
        assert result.artifacts is not None
        assert result.validation.inventory is not None
        assert verify(result.validation.inventory, result.artifacts) == []


_FIELDS = ("address", "auth", "kind", "status", "fqdn", "name", "unit", "netreg")
_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "OK",
            "RELAY",
            "0.0.0.0/0",
            "10.0.0.1\nOK",
            "no",
            "ip",
            "none",
            "revoked",
            "server",
            "10.200.0.1/16",
            "a@b",
            "x" * 300,
            "::1",
            "static",
        ]
    ),
    st.text(max_size=20),
    st.integers(-5, 10**6),
    st.booleans(),
    st.none(),
)


@SETTINGS
@given(
    seed=st.integers(0, 2**16),
    field=st.sampled_from(_FIELDS),
    value=_VALUES,
    pick=st.integers(0, 29),
)
def test_mutations_are_refused_with_a_located_finding_or_compile_cleanly(
    seed: int, field: str, value: object, pick: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, 30, seed)
        records = sorted((root / "devices").glob("*/*.yaml"))
        record = records[pick % len(records)]
        data = yaml.safe_load(record.read_text())
        data = {k: (str(v) if hasattr(v, "isoformat") else v) for k, v in data.items()}
        data[field] = value
        record.write_text(yaml.safe_dump(data, allow_unicode=True))
        result = compile_.build(root, DAY)  # raises only relaygate's own errors
        if result.artifacts is None:
            errors = [f for f in result.validation.findings if f.is_error]
            assert errors, "refused without a finding"
            assert all(f.line >= 1 and f.column >= 1 and f.path for f in errors)
        else:
            assert result.validation.inventory is not None
            assert verify(result.validation.inventory, result.artifacts) == []


def test_a_value_shared_by_many_records_names_a_few_and_counts_the_rest() -> None:
    """Cross-record checks group by index: n findings of bounded size, never n x n names."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, 60, 1)
        records = sorted((root / "devices").glob("*/*.yaml"))
        shared = "shared-box@example.edu"
        holders = 0
        for record in records:
            data = yaml.safe_load(record.read_text())
            data = {k: (str(v) if hasattr(v, "isoformat") else v) for k, v in data.items()}
            if data.get("status") == "retired" or not data.get("senders"):
                continue
            data["senders"] = [shared]
            data.pop("shares_senders_with", None)
            record.write_text(yaml.safe_dump(data, allow_unicode=True))
            holders += 1
        result = compile_.build(root, DAY)
        owned = [f for f in result.validation.findings if f.rule == "sender.owned-by-another"]
        assert holders > 7
        assert len(owned) == holders  # one per record, however many share it
        for finding in owned:
            assert finding.message.endswith(f" and {holders - 1 - 5} more"), finding.message
            assert finding.message.count(".yaml)") == 5


_OCTETS = st.one_of(
    st.integers(0, 255).map(str),
    st.sampled_from(["00", "01", "010", "255", "256", "999", "0", "1000", "-1", "٣"]),
)
_V4_TEXT = st.builds(
    lambda octets, length: ".".join(octets) + ("" if length is None else f"/{length}"),
    st.lists(_OCTETS, min_size=4, max_size=4),
    st.one_of(
        st.none(),
        st.integers(0, 33).map(str),
        st.sampled_from(["08", "032", "", "255.255.255.0", "x"]),
    ),
)


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(text=_V4_TEXT)
def test_the_canonical_ipv4_shortcut_parses_as_the_long_way(text: str) -> None:
    """``addresses._parse`` builds canonical IPv4 text from integers; it must agree exactly."""
    fast = addresses._canonical_v4(text)
    slow = addresses._parse_text(text)
    if fast is None:
        # Positive control of the shortcut's reach: only non-canonical text goes the long way.
        assert isinstance(slow, str) or slow.problem is not None or slow.canonical != text
        return
    assert not isinstance(slow, str), (text, slow)
    assert fast == slow
    assert (fast.network.prefixlen, fast.network.value) == (
        slow.network.prefixlen,
        slow.network.value,
    )
    assert str(fast.network) == str(slow.network)


def test_the_ipv4_shortcut_takes_canonical_text_and_only_that() -> None:
    assert addresses._canonical_v4("10.1.2.3") is not None
    assert addresses._canonical_v4("10.1.2.0/24") is not None
    assert addresses._canonical_v4("0.0.0.0/0") is not None
    for text in ("10.1.2.3/32", "10.1.2.1/24", "010.1.2.3", "10.1.2.3/08", "1.2.3", "1.2.3.4 "):
        assert addresses._canonical_v4(text) is None, text


def _network(version: int, value: int, length: int) -> netaddr.IPNetwork:
    bits = 32 if version == 4 else 128
    value &= (1 << bits) - 1
    return netaddr.IPNetwork((value >> (bits - length) << (bits - length), length), version=version)


_V4 = st.builds(_network, st.just(4), st.integers(0, 2**32 - 1), st.integers(0, 32))
_SMALL_V4 = st.builds(
    _network, st.just(4), st.integers(0x0A000000, 0x0A0003FF), st.integers(20, 32)
)
_V6 = st.builds(_network, st.just(6), st.integers(0, 2**128 - 1), st.integers(0, 128))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    segments=st.lists(st.lists(st.one_of(_SMALL_V4, _V4, _V6), max_size=3), max_size=6),
    networks=st.lists(st.one_of(_SMALL_V4, _V4, _V6), min_size=1, max_size=10),
)
def test_the_prefix_index_places_networks_as_containment_does(
    segments: list[list[netaddr.IPNetwork]], networks: list[netaddr.IPNetwork]
) -> None:
    mod = [
        ModSegment(name=f"mod-{i}", vlan=i + 1, description="", prefixes=tuple(prefixes))
        for i, prefixes in enumerate(segments)
    ]
    index = PrefixIndex((s.name, s.prefixes) for s in mod)
    for network in networks:
        holding = [
            s.name
            for s in mod
            if any(p.version == network.version and network in p for p in s.prefixes)
        ]
        assert index.names(network) == sorted(holding)
        # The first in the segments' order, as the policy's scan used to find it.
        assert index.first(network) == (holding[0] if holding else None)


def _old_text_checks(document: Document) -> list[Finding]:
    """``checks.text_checks`` as it was before its shortcut for values with nothing to see."""
    found: list[Finding] = []
    literal: set[str] | None = None
    for pointer, value in checks._strings(document.data, ()):
        field = "/".join(map(str, pointer))
        if value != value.strip():
            found.append(
                document.finding("text.surrounding-whitespace", pointer, f"{field}: {value!r}")
            )
        if "\r" in value:
            found.append(
                document.finding(
                    "text.forbidden-character", pointer, f"{field}: carriage return in a value"
                )
            )
        elif "\n" in value.strip() and pointer[-1] not in checks.MULTILINE_FIELDS:
            found.append(
                document.finding(
                    "text.forbidden-character", pointer, f"{field}: line break in a one-line value"
                )
            )
        hits = FORBIDDEN_CHARACTERS.findall(value)
        if hits:
            if literal is None:
                literal = set(FORBIDDEN_CHARACTERS.findall(document.text))
            escaped = [c for c in hits if c not in literal]
            if escaped:
                found.append(
                    document.finding(
                        "text.forbidden-character",
                        pointer,
                        f"{field}: character U+{ord(escaped[0]):04X}",
                    )
                )
        elif "\t" in value:
            found.append(
                document.finding("text.forbidden-character", pointer, f"{field}: tab character")
            )
    return found


_TEXT = st.text(
    alphabet=st.sampled_from(list("ab -.@\t\n\r\x0b\x0c\u00a0\u2000\u202e\u200b\ufeff\u3000é")),
    max_size=8,
)
_VALUES = st.recursive(
    _TEXT | st.integers(0, 9),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["name", "note", "senders", "model"]), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    data=st.dictionaries(st.sampled_from(["name", "justification", "x"]), _VALUES, max_size=4),
    literal=_TEXT,
)
def test_text_checks_find_what_they_found_before_their_shortcut(
    data: dict[str, object], literal: str
) -> None:
    document = Document(path=Path("r.yaml"), display="r.yaml", data=data, text=f"a: {literal}\n")
    assert list(checks.text_checks(document)) == _old_text_checks(document)


def _v4_edges() -> list[int]:
    """Every first and last address (and its neighbours) of the special IPv4 ranges."""
    edges = {0, 1, 0x00FFFFFF, 0x01000000, 0xFFFFFFFE, 0xFFFFFFFF}
    for _, ranges in addresses._SPECIAL_V4:
        for first, last in ranges:
            edges |= {first - 1, first, first + 1, last - 1, last, last + 1}
    return sorted(e for e in edges if 0 <= e <= 0xFFFFFFFF)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.sampled_from(_v4_edges()), st.integers(0, 2**32 - 1)),
    length=st.integers(0, 32),
)
def test_the_ipv4_special_ranges_answer_as_netaddr_does(value: int, length: int) -> None:
    network = netaddr.IPNetwork((value, length), version=4).cidr
    assert addresses.special_kind(network) == addresses.special_kind_by_netaddr(network)


def test_every_ipv4_special_kind_is_reached_and_ordinary_addresses_pass() -> None:
    kinds = {
        addresses.special_kind(netaddr.IPNetwork((edge, 32), version=4)) for edge in _v4_edges()
    }
    assert kinds >= {
        None,
        "the broadcast address",
        "an address in 0.0.0.0/8 ('this network')",
        "an unspecified address",
        "a loopback address",
        "a link-local address",
        "a multicast address",
        "a reserved address",
    }
    assert addresses.special_kind(netaddr.IPNetwork("10.20.30.0/24")) is None
