"""The intended policy, from the records alone (PRODUCT.md's guarantees).

Input: an ``InventorySpec`` (the generated records, not the compiler's model)
and a ``Cell``. Output: a ``Verdict``: relay or refuse, and why.

The rules, as the product states them:

- only active records relay; suspended, revoked and retired records, and
  addresses or logins no record has, are refused; so is a legacy record whose
  exception lapsed (expired, its NetReg reservation gone, its approver no
  longer listed), which must not stop the rest of the inventory compiling;
- a legacy device relays only on the relay port, only from its own address,
  and only with its own senders;
- an authenticated device relays only on the submission port, logged in as its
  own account, only from its record's addresses (a login is bound to them), and
  only with its own senders; the relay port offers no AUTH, so a login does not
  count there;
- the relay's own mail keeps working: a loopback client relays on the relay
  port (docs/security.md: processes on the relay submit through loopback SMTP);
  loopback is no record's address, so the submission port refuses it;
- the null sender (``<>``, ``<"">``, ``<@route:>``) is refused unless the
  record explicitly allows it (``allow_null_sender``); a record that does may
  use it in every spelling, under the same client, port and login rules.

Senders compare as RFC 5321 mailboxes, decided here and stated once: ASCII
letters fold to lower case, a source route is ignored, a quoted local part that
needs no quoting is the same local part, and one trailing dot of the domain is
the root of the DNS. Nothing else is the same mailbox: an address extension
(``x+tag``, ``x-tag``), the percent hack (``x%d@relay``) and a non-ASCII
look-alike (U+017F LATIN SMALL LETTER LONG S for ``s``) are other addresses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.differential.inventory import InventorySpec, Record
from tests.differential.matrix import Cell

_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@dataclass(frozen=True)
class Verdict:
    relay: bool
    reason: str

    def __str__(self) -> str:
        return f"{'RELAY' if self.relay else 'REFUSE'} ({self.reason})"


def _fold(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def mailbox(text: str) -> str | None:
    """The mailbox MAIL FROM:<text> names; None for the null sender."""
    if text.startswith("@") and ":" in text:  # a source route: @a,@b:mailbox
        text = text.split(":", 1)[1]
    if text in ("", '""'):
        return None
    if text.startswith('"'):
        end = text.find('"@', 1)
        if end > 0 and _DOT_ATOM.fullmatch(text[1:end]):
            text = text[1:end] + text[end + 1 :]
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    return _fold(text)


def _record_at(spec: InventorySpec, cell: Cell) -> Record | None:
    for record in spec.records:
        if cell.client.address.version == record.network.version and (
            cell.client.address in record.network
        ):
            return record
    return None


def intended(spec: InventorySpec, cell: Cell) -> Verdict:
    sender = mailbox(cell.sender)
    if cell.port == "relay":
        if cell.client.address.is_loopback:
            return Verdict(True, "the relay's own mail (loopback)")
        record = _record_at(spec, cell)
        if record is None:
            return Verdict(False, "no record holds this address")
        if not record.active:
            return Verdict(False, f"{record.name} is {record.status}")
        if not record.legacy:
            return Verdict(False, "an authenticated device relays on the submission port only")
        if record.lapse:
            return Verdict(False, f"{record.name}'s exception lapsed ({record.lapse})")
        return _own_sender(record, sender)
    if cell.login is None:
        return Verdict(False, "the submission port relays for logged-in clients only")
    owners = [r for r in spec.records if r.account == cell.login]
    if not owners:
        return Verdict(False, "no record has this login")
    owner = owners[0]
    if not owner.active:
        return Verdict(False, f"the login's record {owner.name} is {owner.status}")
    address = cell.client.address
    if address.version != owner.network.version or address not in owner.network:
        return Verdict(False, f"the login is bound to {owner.network}")
    return _own_sender(owner, sender)


def _own_sender(record: Record, sender: str | None) -> Verdict:
    if sender is None:
        if record.null_ok:
            return Verdict(True, f"{record.name} allows the null sender")
        return Verdict(False, f"the null sender; {record.name} does not allow it")
    if sender not in record.senders:
        return Verdict(False, f"not a sender of {record.name}")
    return Verdict(True, f"{record.name} with its own sender")
