"""A private Postfix with an XCLIENT listener for each relay path.

Input: a folder for the instance and, per inventory, a compiled folder
(``relaygate compile --out``) and the site's two ports. Output: a running
Postfix on 127.0.0.1 with two smtpd listeners on free ports: one carries the
relay port's service (``smtp`` in the compiled master.cf fragment, or the
relay port's number), the other the submission service (``submission`` or
its port number). Both allow XCLIENT from 127.0.0.1, so one test process can
speak for any client address, hostname and login.

Invariants: nothing reads or writes the host's /etc/postfix (every command
has ``-c``); the compiled maps, main.cf.fragment and master.cf.fragment are
applied as the deploy applies them, on a base main.cf shaped like a Debian
relay's (``recipient_delimiter``, SMTPUTF8 and the lookup defaults left as a
stock relay has them, a certificate for STARTTLS). The base's only test
settings are XCLIENT from loopback, error limits high enough for hundreds of
refused transactions on one connection, no inflow pause (each accepted RCPT
opens a queue file that RSET discards, and nothing is ever delivered to give
the flow-control tokens back), and no local alias or recipient tables (no host
file is read); none of them is a relay policy parameter. ``deploy`` replaces
the whole configuration and reloads, and waits until no smtpd of the previous
configuration is left.

The instance, the maps, both fragments (services renamed to our listeners), the
certificate, the ports, start, stop and the maillog are ``tests.postfix_instance``'s,
as ``RunningRelay`` uses them; what is this module's own is the base main.cf above
and the redeploy with reload.
"""

from __future__ import annotations

from pathlib import Path

from tests.postfix_instance import (
    apply_fragment,
    apply_master_fragment,
    command,
    free_port,
    install_maps,
    listener_master_cf,
    make_instance,
    read_maillog,
    reload_postfix,
    renamed_services,
    require_silent_check,
    self_signed_certificate,
    start_postfix,
    stop_postfix,
    wait_listening,
)

#: What a stock Debian relay has in main.cf before relaygate's fragment is applied,
#: plus the test-only settings (XCLIENT, error limits) the module docstring names.
BASE_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
myhostname = relay.example.edu
smtpd_banner = $myhostname ESMTP
# Debian's debconf default is '+'; '-' is the other common choice. The compiled policy
# must mean the same with either (issue: extension addresses).
recipient_delimiter = +-
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_peername_lookup = no
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_soft_error_limit = 100000
smtpd_hard_error_limit = 100000
smtpd_error_sleep_time = 0
in_flow_delay = 0
smtpd_junk_command_limit = 1000000
"""


class XclientRelay:
    """The instance (``tests.postfix_instance.make_instance``) under ``root``, its two
    listeners on free ports; nothing runs until the first ``deploy``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = make_instance(root)
        self.relay_port = free_port()
        self.submission_port = free_port()
        self.started = False
        self.key, self.cert = self_signed_certificate(self.config, "relay.example.edu")

    def postconf(self, *args: str) -> str:
        return command("postconf", "-c", str(self.config), *args)

    def listeners(self) -> tuple[str, str]:
        """Our relay and submission listeners' master.cf names."""
        return f"127.0.0.1:{self.relay_port}", f"127.0.0.1:{self.submission_port}"

    def deploy(self, compiled: Path, relay_port: int, submission_port: int) -> None:
        """Replace the configuration with the compiled folder's and (re)load it."""
        (self.config / "main.cf").write_text(
            BASE_MAIN_CF.format(root=self.root, cert=self.cert, key=self.key)
        )
        (self.config / "master.cf").write_text(listener_master_cf(self.listeners()))
        install_maps(compiled, self.config)
        apply_fragment(compiled, self.config)
        services = renamed_services(relay_port, submission_port, *self.listeners())
        apply_master_fragment(compiled, self.config, services)
        if self.started:
            require_silent_check(self.config)
            reload_postfix(self.config)
        else:
            start_postfix(self.config)
            self.started = True
        wait_listening((self.relay_port, self.submission_port), self.log)

    def log(self, lines: int = 40) -> str:
        return read_maillog(self.root / "maillog", lines) or "(no maillog)"

    def stop(self) -> None:
        if self.started:
            stop_postfix(self.config)
            self.started = False
