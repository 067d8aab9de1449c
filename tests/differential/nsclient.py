"""The namespace client: SMTP connections from a lab namespace, many transactions each.

Run inside a client namespace (``ip netns exec NS python nsclient.py``); the
standard library only. Input on stdin: ``{"connections": [...]}``, each with
``host``, ``port``, ``source``, ``timeout``, optional ``auth``
(``{"user", "password"}``: a real ``AUTH PLAIN``, sent after STARTTLS when the
relay offers it, whether or not AUTH is offered), ``senders`` (pairs
``[text between MAIL FROM's angle brackets, send SMTPUTF8]``) and
``recipient``. Output on stdout: one JSON list,
per connection ``{"error", "auth", "transactions": [[mail, rcpt], ...]}``;
``error`` is ``"timeout"`` or ``"refused"`` when no SMTP session came up (the
firewall dropped or rejected it), and then there are no transactions.
Connections run concurrently, each on its own thread.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import sys
import threading
from typing import Any


def _reply(stream: Any) -> str:
    lines: list[str] = []
    while True:
        raw = stream.readline()
        if not raw:
            raise OSError(f"connection closed after {lines}")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(line)
        if line[3:4] != "-":
            return " ".join(lines)


def _say(stream: Any, command: str) -> str:
    stream.write(command.encode("utf-8") + b"\r\n")
    stream.flush()
    return _reply(stream)


def run(connection: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"error": None, "auth": None, "transactions": []}
    try:
        sock = socket.create_connection(
            (connection["host"], connection["port"]),
            timeout=connection["timeout"],
            source_address=(connection["source"], 0),
        )
    except TimeoutError:
        result["error"] = "timeout"
        return result
    except ConnectionRefusedError:
        result["error"] = "refused"
        return result
    sock.settimeout(30)
    try:
        stream = sock.makefile("rwb")
        _reply(stream)
        ehlo = _say(stream, "EHLO lab-client.example.edu")
        if "STARTTLS" in ehlo.upper():
            _say(stream, "STARTTLS")
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
            stream = sock.makefile("rwb")
            _say(stream, "EHLO lab-client.example.edu")
        auth = connection.get("auth")
        if auth:
            token = base64.b64encode(f"\0{auth['user']}\0{auth['password']}".encode()).decode()
            result["auth"] = _say(stream, f"AUTH PLAIN {token}")
        for sender, smtputf8 in connection["senders"]:
            parameter = " SMTPUTF8" if smtputf8 else ""
            mail = _say(stream, f"MAIL FROM:<{sender}>{parameter}")
            rcpt = None
            if mail.startswith("250"):
                rcpt = _say(stream, f"RCPT TO:<{connection['recipient']}>")
            _say(stream, "RSET")
            result["transactions"].append([mail, rcpt])
        _say(stream, "QUIT")
    except OSError as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        sock.close()
    return result


def main() -> None:
    connections = json.load(sys.stdin)["connections"]
    results: list[dict[str, Any]] = [{} for _ in connections]

    def one(index: int) -> None:
        results[index] = run(connections[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
