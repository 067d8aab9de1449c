"""The lab's SMTP client: JSON sessions on stdin, JSON results on stdout.

Run inside a client namespace (``ip netns exec NS python client.py``); the
standard library only, so it runs with any Python. Each session connects from
its ``source`` address (``smtplib`` ``source_address``) and speaks raw
commands, so envelope addresses reach the relay exactly as written (smtplib's
own ``mail()`` would re-quote them, which would spoil the evasion probes).

Input: ``{"sessions": [Session, ...]}`` with, per session: ``host``, ``port``,
``source``, ``timeout``, ``helo``, optional ``auth`` (``{"user", "password"}``,
sent as ``AUTH PLAIN`` whether or not it is offered), ``mail_from`` (text
between the angle brackets; may be empty), ``rcpt_to`` (list), optional
``token`` and ``subject`` (the message carries ``X-Lab-Token: token``),
``data`` (send DATA even when every RCPT was refused; default true) and
``starttls`` (default true: STARTTLS when the relay offers it, then EHLO
again; the relay's certificate is a throwaway one and is not verified).

Output: one JSON list, one result per session, in order: ``connected``,
``error`` (``timeout``, ``refused`` or another text, None on success),
``banner``, ``ehlo``, ``tls`` (the STARTTLS reply, None when not tried),
``features`` (EHLO keywords, after STARTTLS when it was done), ``auth``, ``mail``,
``rcpt`` (one reply per recipient) and ``data``; each reply is
``[code, text]`` or None when that step was not reached.
"""

from __future__ import annotations

import base64
import contextlib
import json
import smtplib
import ssl
import sys
from typing import Any

Reply = list[Any] | None


def _reply(code: int, text: bytes | str) -> list[Any]:
    message = text.decode(errors="replace") if isinstance(text, bytes) else text
    return [code, message.replace("\n", " ")]


def _message(session: dict[str, Any]) -> bytes:
    token = session.get("token", "")
    lines = [
        f"From: <{session['mail_from']}>",
        "To: <lab-recipient@example.net>",
        f"Subject: {session.get('subject', 'lab message')}",
        f"X-Lab-Token: {token}",
        "",
        "Sent by the relaygate lab.",
        "",
    ]
    return "\r\n".join(lines).encode()


def run(session: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "connected": False,
        "error": None,
        "banner": None,
        "ehlo": None,
        "tls": None,
        "features": [],
        "auth": None,
        "mail": None,
        "rcpt": [],
        "data": None,
    }
    client = smtplib.SMTP(timeout=float(session.get("timeout", 5.0)))
    client.source_address = (session["source"], 0)
    try:
        try:
            code, text = client.connect(session["host"], int(session["port"]))
        except TimeoutError:
            result["error"] = "timeout"
            return result
        except ConnectionRefusedError:
            result["error"] = "refused"
            return result
        result["connected"] = True
        result["banner"] = _reply(code, text)
        code, text = client.ehlo(session.get("helo", "lab-client.example.edu"))
        result["ehlo"] = _reply(code, text)
        if session.get("starttls", True) and client.has_extn("starttls"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            # smtplib names the server by the host given to SMTP(), empty here
            # (connect() was called instead); the name is not checked anyway.
            client._host = "relay.lab.invalid"  # type: ignore[attr-defined]
            code, text = client.starttls(context=context)
            result["tls"] = _reply(code, text)
            code, text = client.ehlo(session.get("helo", "lab-client.example.edu"))
            result["ehlo"] = _reply(code, text)
        result["features"] = sorted(
            f"{name.upper()} {value.strip()}".strip()
            for name, value in client.esmtp_features.items()
        )
        auth = session.get("auth")
        if auth:
            token = base64.b64encode(f"\0{auth['user']}\0{auth['password']}".encode()).decode()
            result["auth"] = _reply(*client.docmd("AUTH", f"PLAIN {token}"))
        result["mail"] = _reply(*client.docmd("MAIL", f"FROM:<{session['mail_from']}>"))
        for recipient in session["rcpt_to"]:
            result["rcpt"].append(_reply(*client.docmd("RCPT", f"TO:<{recipient}>")))
        if session.get("data", True):
            try:
                result["data"] = _reply(*client.data(_message(session)))
            except smtplib.SMTPDataError as refused:
                result["data"] = _reply(refused.smtp_code, refused.smtp_error)
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    except (smtplib.SMTPException, OSError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        client.close()
    return result


def main() -> None:
    request = json.load(sys.stdin)
    json.dump([run(session) for session in request["sessions"]], sys.stdout)


if __name__ == "__main__":
    main()
