"""Notices: one ready-to-send message per technical contact, from a review.

Input: a ``review.Review``. Output: RFC 5322 messages (headers included, for
``sendmail -t``), written into a folder; nothing is sent. Only categories in
``review.NOTICE`` are told, and only about records (never unknown senders).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from relaygate.lifecycle.review import NOTICE, Item, Review, where

NOTICE_MARKER = "X-Relaygate-Review"


def notices(review: Review) -> dict[str, str]:
    """File name -> text of one notice per technical contact (RFC 5322, ready for sendmail -t)."""
    by_contact: dict[str, list[Item]] = {}
    for item in review.items:
        if item.category in NOTICE and item.device is not None:
            by_contact.setdefault(item.device.technical_contact.email, []).append(item)
    found: dict[str, str] = {}
    for email, members in sorted(by_contact.items()):
        person = members[0].device.technical_contact  # type: ignore[union-attr]
        names = sorted({i.name for i in members})
        subject = (
            f"SMTP relay access review: {len(names)} device{'s' if len(names) != 1 else ''} "
            "need your attention"
        )
        sender = review.notices_from
        headers = [f"From: {sender[0]} <{sender[1]}>"] if sender else []
        headers.append(f"To: {person.name} <{email}>")
        # The Dean, Department Head or Director who approved an exception hears of it too.
        approvers = sorted(
            {
                (d.exception.approver.email, d.exception.approver.name)
                for i in members
                if (d := i.device) is not None and d.exception is not None
            }
            - {(email, person.name)}
        )
        if approvers:
            headers.append("Cc: " + ", ".join(f"{name} <{mail}>" for mail, name in approvers))
        if sender and sender[2]:
            headers.append(f"Reply-To: {sender[2]}")
        lines = [
            *headers,
            f"Subject: {subject}",
            f"{NOTICE_MARKER}: as-of {review.as_of}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"Dear {person.name},",
            "",
            *_wrap(
                f"The access review of the {review.site} SMTP relay, as of {review.as_of}, "
                "lists these devices for which you are the technical contact. Devices that "
                f"send no mail through the relay for {review.inactivity_days} days are removed, "
                "and a legacy exception ends on its expiry date unless it is renewed."
            ),
        ]
        for item in sorted(members, key=Item.sort_key):
            device = item.device
            assert device is not None
            lines += [
                "",
                *_wrap(
                    f"* {device.name} ({device.model}, {device.fqdn}, {where(device)})", "", "  "
                ),
                *_wrap(f"{item.detail}.", "  ", "  "),
                *_wrap(f"What to do: {item.action}.", "  ", "  "),
            ]
        lines += [
            "",
            *_wrap(
                "Reply to this message if anything here is wrong. Changes are made as pull "
                "requests to the relay inventory, reviewed like any other change."
            ),
            "",
            "Mail platform team",
        ]
        found[f"{email}.txt"] = "\n".join(lines) + "\n"
    return found


def _wrap(text: str, first: str = "", rest: str = "") -> list[str]:
    """Mail-friendly lines (72 columns); long tokens such as addresses are never broken."""
    return textwrap.wrap(
        text,
        width=72,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def write_notices(review: Review, folder: Path) -> list[Path]:
    """Write the notices into ``folder``, replacing notices of earlier runs only.

    A file is ours when its header carries ``NOTICE_MARKER``; other files in
    the folder are left alone, so an old notice never lingers to be sent by
    mistake and nothing else is deleted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    wanted = notices(review)
    for old in sorted(folder.glob("*.txt")):
        if old.name not in wanted and old.is_file() and not old.is_symlink():
            head = old.read_text(encoding="utf-8", errors="replace")[:2000]
            if f"\n{NOTICE_MARKER}: " in head:
                old.unlink()
    written = []
    for name, text in wanted.items():
        target = folder / name
        temporary = folder / f".{name}.tmp"
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(target)
        written.append(target)
    return written
