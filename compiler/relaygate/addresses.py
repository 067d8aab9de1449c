"""Strict IP address and prefix parsing, backed by netaddr.

Different parsers read the same text differently: ``010.1.1.1`` is 10.1.1.1
to one and 8.1.1.1 to another (nft reads octal), ``10.1.1.70/26`` is a host
to one and a network to another (nft silently masks it). relaygate therefore
accepts only one spelling of each address, the canonical one, and says which
spelling it wanted when it refuses another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import netaddr
from netaddr import ip as netaddr_ip

_IPV4_SHAPE = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
_PREFIX_LEN = re.compile(r"0|[1-9][0-9]{0,2}")
#: The longest spelling of an IPv6 prefix with an embedded IPv4 address is 49.
MAX_TEXT = 64


@dataclass(frozen=True, slots=True)
class Parsed:
    """An address or prefix that parsed.

    ``canonical`` is the one spelling relaygate accepts; ``problem`` says why
    ``text`` is not that spelling (None when it is). ``network`` always has
    its host bits cleared.
    """

    text: str
    network: netaddr.IPNetwork
    canonical: str
    problem: str | None

    @property
    def is_host(self) -> bool:
        return bool(self.network.prefixlen == _max_len(self.network.version))

    @property
    def version(self) -> Literal[4, 6]:
        return 4 if self.network.version == 4 else 6


def _max_len(version: int) -> int:
    return 32 if version == 4 else 128


@lru_cache(maxsize=1 << 16)
def canonical_text(network: netaddr.IPNetwork) -> str:
    """The canonical spelling: a bare address for a host, ``net/len`` otherwise.

    Cached (netaddr's formatting dominates plan and verify): networks that
    compare equal have the same first and last address, hence the same text.
    """
    if network.prefixlen == _max_len(network.version):
        return str(network.ip)
    return f"{network.network}/{network.prefixlen}"


def parse(text: str) -> Parsed | str:
    """Parse ``text`` as an IP host or prefix; return an error message if it is not one.

    Cached: the schema format, the model and the checks each parse every
    address, and netaddr dominates the cost. Callers must not mutate
    ``Parsed.network`` (it may be shared).
    """
    if not isinstance(text, str) or not text:
        return "empty address"
    return _parse(text)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
#: An IPv4 host or prefix already in its one canonical spelling (no leading
#: zeros, a prefix length below 32 without leading zeros): ``_parse`` builds it
#: from integers, skipping netaddr's text parsing; everything else goes the
#: long way. A test compares both ways on every shape.
_CANONICAL_V4 = re.compile(
    rf"({_OCTET})\.({_OCTET})\.({_OCTET})\.({_OCTET})(?:/(3[01]|[12]?[0-9]))?"
)


def _canonical_v4(text: str) -> Parsed | None:
    """The parse of a canonical IPv4 host or prefix, or None to take the long way."""
    match = _CANONICAL_V4.fullmatch(text)
    if match is None:
        return None
    a, b, c, d, length = match.groups()
    value = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    bits = 32 if length is None else int(length)
    if value & ((1 << (32 - bits)) - 1):
        return None  # host bits set: the long way says so
    network = netaddr.IPNetwork((value, bits), version=4)
    return Parsed(text=text, network=network, canonical=text, problem=None)


@lru_cache(maxsize=1 << 16)
def _parse(text: str) -> Parsed | str:
    fast = _canonical_v4(text)
    if fast is not None:
        return fast
    return _parse_text(text)


def _parse_text(text: str) -> Parsed | str:
    if text != text.strip() or any(c.isspace() for c in text):
        return "whitespace in an address"
    if len(text) > MAX_TEXT:
        return "longer than any IP address or prefix"
    if "%" in text:
        return "zone ids (%...) are not allowed"
    address, slash, length = text.partition("/")
    problem: str | None = None
    if slash:
        if "." in length or ":" in length:
            try:
                mask = netaddr.IPAddress(length)
            except (netaddr.AddrFormatError, ValueError):
                return f"{length!r} is not a prefix length"
            if not mask.is_netmask():
                return f"{length!r} is not a netmask"
            length = str(mask.netmask_bits())
            problem = "a netmask instead of a prefix length"
        elif not _PREFIX_LEN.fullmatch(length):
            if length.isascii() and length.isdigit():
                length = str(int(length))
                problem = "leading zeros in the prefix length"
            else:
                return f"{length!r} is not a prefix length"
    is_ipv4 = ":" not in address
    if is_ipv4:
        if not _IPV4_SHAPE.fullmatch(address):
            return f"{address!r} is not a dotted-quad IPv4 address (short forms are refused)"
        octets = address.split(".")
        if any(int(octet) > 255 for octet in octets):
            return f"{address!r} has an octet over 255"
        if any(len(octet) > 1 and octet.startswith("0") for octet in octets):
            address = ".".join(str(int(octet)) for octet in octets)
            problem = problem or "leading zeros (other tools read them as octal)"
    try:
        ip = netaddr.IPAddress(address, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return f"{address!r} is not an IP address"
    max_len = _max_len(ip.version)
    bits = int(length) if slash else max_len
    if bits > max_len:
        return f"/{bits} is longer than an IPv{ip.version} address"
    network = netaddr.IPNetwork(f"{ip}/{bits}")
    if network.ip != network.network:
        problem = problem or f"host bits set; the network is {network.network}/{bits}"
        network = netaddr.IPNetwork(f"{network.network}/{bits}")
    canonical = canonical_text(network)
    if problem is None and text != canonical:
        problem = "not the canonical spelling"
    return Parsed(text=text, network=network, canonical=canonical, problem=problem)


def _ranges(*items: netaddr.IPNetwork | netaddr.IPRange) -> tuple[tuple[int, int], ...]:
    return tuple((int(item.first), int(item.last)) for item in items)


#: netaddr's own IPv4 tables behind ``is_loopback``, ``is_link_local``,
#: ``is_multicast`` and ``is_reserved``, as integer ranges, in the order
#: ``special_kind`` asks (a test holds both ways to the same answers).
_SPECIAL_V4 = (
    ("a loopback address", _ranges(netaddr_ip.IPV4_LOOPBACK)),
    ("a link-local address", _ranges(netaddr_ip.IPV4_LINK_LOCAL)),
    ("a multicast address", _ranges(netaddr_ip.IPV4_MULTICAST)),
    ("a reserved address", _ranges(*netaddr_ip.IPV4_RESERVED)),
)


def special_kind(network: netaddr.IPNetwork) -> str | None:
    """Why this network can never be a device address, or None if it can be.

    IPv4 is answered from integer ranges (the render guard asks it of every
    address); IPv6 through netaddr's methods (``special_kind_by_netaddr``).
    """
    if network.version != 4:
        return special_kind_by_netaddr(network)
    ip = int(network.first)
    if ip != 0:
        if ip == 0xFFFFFFFF:
            return "the broadcast address"
        if ip >> 24 == 0:
            return "an address in 0.0.0.0/8 ('this network')"
    if ip == 0:
        return "an unspecified address"
    for name, ranges in _SPECIAL_V4:
        if any(first <= ip <= last for first, last in ranges):
            return name
    return None


def special_kind_by_netaddr(network: netaddr.IPNetwork) -> str | None:
    """``special_kind`` through netaddr's address methods (any IP version)."""
    ip = network.network
    if network.version == 4 and int(ip) != 0:
        if int(ip) == 0xFFFFFFFF:
            return "the broadcast address"
        if network.first >> 24 == 0:
            return "an address in 0.0.0.0/8 ('this network')"
    checks = (
        ("an unspecified address", int(ip) == 0),
        ("a loopback address", ip.is_loopback()),
        ("a link-local address", ip.is_link_local()),
        ("a multicast address", ip.is_multicast()),
        (
            "an IPv4-mapped or IPv4-compatible IPv6 address",
            network.version == 6 and (ip.is_ipv4_mapped() or ip.is_ipv4_compat()),
        ),
        ("a reserved address", ip.is_reserved()),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


def inside(network: netaddr.IPNetwork, prefixes: Iterable[netaddr.IPNetwork]) -> bool:
    """Whether ``network`` lies wholly inside one of ``prefixes`` (same IP version)."""
    return any(
        p.version == network.version and p.first <= network.first and network.last <= p.last
        for p in prefixes
    )


class PrefixIndex:
    """Named prefixes (e.g. MOD segments) by (IP version, prefix length, network bits).

    Which names hold a network: one dictionary lookup per prefix length in
    use, not a comparison with every prefix. A prefix holds a network when it
    is no longer than the network's and their leading bits agree. Names keep
    the order they were given in (``first`` is the first of them that holds
    the network, as a scan in that order would find).
    """

    def __init__(self, named: Iterable[tuple[str, Iterable[netaddr.IPNetwork]]]) -> None:
        self._table: dict[tuple[int, int, int], list[tuple[int, str]]] = {}
        for order, (name, prefixes) in enumerate(named):
            for prefix in prefixes:
                bits = 32 if prefix.version == 4 else 128
                key = (prefix.version, prefix.prefixlen, prefix.first >> (bits - prefix.prefixlen))
                self._table.setdefault(key, []).append((order, name))
        self._lengths = tuple(sorted({(version, length) for version, length, _ in self._table}))

    def _holding(self, network: netaddr.IPNetwork) -> list[tuple[int, str]]:
        version, length, first = network.version, network.prefixlen, network.first
        bits = 32 if version == 4 else 128
        found: list[tuple[int, str]] = []
        for v, prefix_length in self._lengths:
            if v == version and prefix_length <= length:
                found += self._table.get((v, prefix_length, first >> (bits - prefix_length)), [])
        return found

    def names(self, network: netaddr.IPNetwork) -> list[str]:
        """Every name with a prefix that holds all of ``network``, sorted."""
        return sorted({name for _, name in self._holding(network)})

    def first(self, network: netaddr.IPNetwork) -> str | None:
        """The first name (in the given order) with a prefix that holds ``network``."""
        found = self._holding(network)
        return min(found)[1] if found else None
