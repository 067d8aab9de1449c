"""A raw SMTP client for the XCLIENT relay: one connection, many transactions.

Input: the relay's loopback port, the client address and hostname to present
(XCLIENT ADDR= and NAME=), an optional login (XCLIENT LOGIN= on a service that
offers AUTH; elsewhere a real ``AUTH PLAIN``, which such a service must refuse).
Output: per MAIL FROM, a ``Transaction`` with the MAIL and RCPT replies, each
transaction ended by RSET.

Envelope addresses go out exactly as written, so quoting, routes and
look-alikes reach smtpd as an attacker would send them; the SMTPUTF8
parameter is sent when the caller asks for it.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class SmtpError(RuntimeError):
    """The conversation went off the rails (not a refusal: a refusal is an answer)."""


@dataclass(frozen=True)
class Transaction:
    mail: str  # the reply to MAIL FROM
    rcpt: str | None  # the reply to RCPT TO, None when MAIL was refused

    @property
    def accepted(self) -> bool:
        return self.mail.startswith("250") and self.rcpt is not None and self.rcpt.startswith("250")

    @property
    def reply(self) -> str:
        return self.rcpt if self.rcpt is not None else f"MAIL: {self.mail}"


def xtext(value: str) -> str:
    """RFC 3461 xtext, as XCLIENT attribute values need it."""
    return "".join(
        c if "!" <= c <= "~" and c not in "+=" else "".join(f"+{b:02X}" for b in c.encode())
        for c in value
    )


class Session:
    """One SMTP connection to 127.0.0.1:port that speaks for ``client``."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.stream = self.sock.makefile("rwb")
        self.features: list[str] = []
        self.auth_reply: str | None = None

    def _reply(self) -> str:
        lines: list[str] = []
        while True:
            raw = self.stream.readline()
            if not raw:
                raise SmtpError(f"connection closed after {lines}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                break
        return "\n".join(lines)

    def say(self, command: str) -> str:
        self.stream.write(command.encode("utf-8") + b"\r\n")
        self.stream.flush()
        return self._reply()

    def _ehlo(self) -> None:
        reply = self.say("EHLO differential.test")
        if not reply.startswith("250"):
            raise SmtpError(f"EHLO: {reply}")
        self.features = [line[4:].upper() for line in reply.splitlines()[1:]]

    def _starttls(self) -> None:
        reply = self.say("STARTTLS")
        if not reply.startswith("220"):
            raise SmtpError(f"STARTTLS: {reply}")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the private relay's self-signed certificate
        self.sock = context.wrap_socket(self.sock)
        self.stream = self.sock.makefile("rwb")

    def start(self, client: Address, hostname: str | None, login: str | None) -> None:
        banner = self._reply()
        if not banner.startswith("220"):
            raise SmtpError(f"banner: {banner}")
        self._ehlo()
        if "STARTTLS" in self.features:
            self._starttls()
            self._ehlo()
        address = f"IPV6:{client}" if client.version == 6 else str(client)
        attributes = [f"ADDR={address}", f"NAME={xtext(hostname) if hostname else '[UNAVAILABLE]'}"]
        offers_auth = any(f.startswith("AUTH") for f in self.features)
        if login and offers_auth:
            attributes.append(f"LOGIN={xtext(login)}")
        reply = self.say("XCLIENT " + " ".join(attributes))
        if not reply.startswith("220"):
            raise SmtpError(f"XCLIENT {' '.join(attributes)}: {reply}")
        self._ehlo()
        if login and not offers_auth:
            # No AUTH here: try it anyway, as a client would; the refusal is recorded.
            token = base64.b64encode(f"\0{login}\0secret".encode()).decode()
            self.auth_reply = self.say(f"AUTH PLAIN {token}")

    def transaction(self, sender: str, recipient: str, smtputf8: bool) -> Transaction:
        parameter = " SMTPUTF8" if smtputf8 else ""
        mail = self.say(f"MAIL FROM:<{sender}>{parameter}")
        rcpt = self.say(f"RCPT TO:<{recipient}>") if mail.startswith("250") else None
        rset = self.say("RSET")
        if not rset.startswith("250"):
            raise SmtpError(f"RSET: {rset}")
        return Transaction(mail, rcpt)

    def close(self) -> None:
        try:
            self.say("QUIT")
        except (OSError, SmtpError):
            pass
        finally:
            self.sock.close()
