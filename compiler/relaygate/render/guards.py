"""Render-time guards: every value is re-checked where it enters generated text.

Validation should already have refused anything unsafe; these guards are the
second wall. A value that fails here raises ``RenderRefused`` (an internal
error), so the compile fails closed instead of emitting a line nobody
reviewed. Each guard returns the exact text to emit.
"""

from __future__ import annotations

import re
from functools import lru_cache

import netaddr

from relaygate import addresses
from relaygate.errors import RenderRefused
from relaygate.load import FORBIDDEN_CHARACTERS
from relaygate.policy import CLASS_PATTERN
from relaygate.schema import MAIL_ADDRESS

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TICKET = re.compile(r"[A-Z][A-Z0-9]{1,9}-[0-9]{1,9}")
_ACL_NAME = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,62}")
#: No device entry may be broader than this, whatever the site policy says.
_BROADEST = {4: 8, 6: 32}


def _refuse(kind: str, value: object) -> RenderRefused:
    return RenderRefused(f"refusing to render {kind} {value!r}: it did not pass the render guard")


def address(value: str | netaddr.IPNetwork) -> str:
    """A canonical, non-special address or prefix no broader than /8 (IPv4) or /32 (IPv6)."""
    text = value if isinstance(value, str) else addresses.canonical_text(value)
    if not _address_passes(text):
        raise _refuse("address", value)
    return text


@lru_cache(maxsize=1 << 16)
def _address_passes(text: str) -> bool:
    """The verdict of ``address`` on a text: a pure function of it, so each address is
    judged once per process however many artifacts print it (most print it twice)."""
    parsed = addresses.parse(text)
    if isinstance(parsed, str) or parsed.problem or parsed.canonical != text:
        return False
    return not (
        addresses.special_kind(parsed.network)
        or parsed.network.prefixlen < _BROADEST[parsed.version]
    )


def network(value: str | netaddr.IPNetwork) -> str:
    """A site network (campus, relay host): canonical, may be broad but never /0."""
    text = value if isinstance(value, str) else addresses.canonical_text(value)
    parsed = addresses.parse(text)
    if isinstance(parsed, str) or parsed.problem or parsed.network.prefixlen == 0:
        raise _refuse("network", value)
    return text


def cidr(value: str | netaddr.IPNetwork) -> str:
    """An address as net/len, the form nft, Junos, cidr maps and Aerleon accept."""
    text = address(value)
    return text if "/" in text else f"{text}/{32 if ':' not in text else 128}"


def mail(value: str) -> str:
    if not isinstance(value, str) or not MAIL_ADDRESS.fullmatch(value) or ".." in value:
        raise _refuse("mail address", value)
    return value


def name(value: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _refuse("name", value)
    return value


def ticket(value: str | None) -> str:
    if value is None or value == "":
        return ""
    if not _TICKET.fullmatch(value):
        raise _refuse("ticket", value)
    return value


def class_name(value: str) -> str:
    if not CLASS_PATTERN.fullmatch(value):
        raise _refuse("restriction class", value)
    return value


def acl_name(value: str) -> str:
    if not _ACL_NAME.fullmatch(value):
        raise _refuse("ACL name", value)
    return value


def text_line(value: str) -> str:
    """One line of text for a comment or header: printable, no line break or control."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 200
        or not value.isprintable()
        or value != value.strip()
        or FORBIDDEN_CHARACTERS.search(value)
    ):
        raise _refuse("text", value)
    return value
