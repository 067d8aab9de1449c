"""A private Postfix instance for tests: its own config, queue and data folders.

Nothing here reads or writes the host's /etc/postfix: main.cf and master.cf
are written from scratch into a temporary folder, and every Postfix command
is run with ``-c`` pointing at it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

#: The standard services, without chroot so temporary paths work as they are.
BASE_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""
#: With the submission service that master.cf.fragment configures.
MASTER_CF = BASE_MASTER_CF + "submission inet n       -       n       -       -       smtpd\n"

POSTFIX_TOOLS = ("postfix", "postmap", "postconf")


def available() -> bool:
    return all(shutil.which(tool) for tool in POSTFIX_TOOLS)


class PostfixUnavailable(RuntimeError):
    """A Postfix capability is missing; the message says which command showed it, and how."""


def map_types() -> list[str]:
    """The lookup table types this Postfix supports (``postconf -m``).

    Runs against an empty private config folder, never the host's /etc/postfix: with
    Postfix installed as "No configuration" that folder holds no main.cf, and a bare
    ``postconf`` exits fatally there. Raises PostfixUnavailable with the command, its
    exit code and its stderr when the answer cannot be had.
    """
    missing = [tool for tool in POSTFIX_TOOLS if shutil.which(tool) is None]
    if missing:
        raise PostfixUnavailable(f"Postfix is not installed: {', '.join(missing)} not on PATH")
    with tempfile.TemporaryDirectory(prefix="relaygate-postconf-") as empty:
        for name in ("main.cf", "master.cf"):
            (Path(empty) / name).write_text("")
        argv = ["postconf", "-c", empty, "-m"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PostfixUnavailable(
            f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip() or '(no stderr)'}"
        )
    return done.stdout.split()


def lmdb_missing() -> str | None:
    """None when this Postfix has lmdb maps; otherwise the real reason it cannot be used."""
    try:
        types = map_types()
    except PostfixUnavailable as error:
        return str(error)
    if "lmdb" not in types:
        return f"postfix-lmdb is not installed: `postconf -m` lists {' '.join(types)}"
    return None


def make_instance(root: Path) -> Path:
    """Create a config folder under ``root`` and return it."""
    config = root / "conf"
    (root / "queue").mkdir(parents=True)
    (root / "data").mkdir()
    config.mkdir()
    shutil.chown(root / "data", user="postfix")
    (config / "master.cf").write_text(MASTER_CF)
    (config / "main.cf").write_text(
        "compatibility_level = 3.6\n"
        f"queue_directory = {root / 'queue'}\n"
        f"data_directory = {root / 'data'}\n"
        "inet_interfaces = loopback-only\n"
        "mydestination =\n"
        "maillog_file = /dev/stdout\n"
    )
    return config


def install_maps(compiled: Path, config: Path) -> None:
    """Copy the compiled Postfix folder into CONFIG/relaygate and build the lmdb maps."""
    source = compiled / "postfix"
    target = config / "relaygate"
    shutil.copytree(source, target)
    for path in sorted(target.rglob("*")):
        if path.is_file() and not path.name.endswith((".cidr", ".fragment", ".lmdb")):
            subprocess.run(
                ["postmap", "-c", str(config), f"lmdb:{path}"],
                check=True,
                capture_output=True,
                text=True,
            )


def apply_fragment(compiled: Path, config: Path) -> None:
    """Apply main.cf.fragment with postconf -e, the way the deploy does."""
    for line in (compiled / "postfix" / "main.cf.fragment").read_text().splitlines():
        if line and not line.startswith("#"):
            subprocess.run(
                ["postconf", "-c", str(config), "-e", line],
                check=True,
                capture_output=True,
                text=True,
            )


def apply_master_fragment(compiled: Path, config: Path) -> None:
    """Apply master.cf.fragment with postconf -P (the submission service's settings)."""
    for line in (compiled / "postfix" / "master.cf.fragment").read_text().splitlines():
        if line and not line.startswith("#"):
            subprocess.run(
                ["postconf", "-c", str(config), "-P", line],
                check=True,
                capture_output=True,
                text=True,
            )


def check(config: Path) -> str:
    """`postfix check` output; any output at all (warnings too) is a failure."""
    done = subprocess.run(
        ["postfix", "-c", str(config), "check"], capture_output=True, text=True, check=False
    )
    return (
        f"exit {done.returncode}: {done.stdout}{done.stderr}".strip()
        if (done.returncode or done.stdout or done.stderr)
        else ""
    )


def query(config: Path, table: str, key: str) -> str | None:
    done = subprocess.run(
        ["postmap", "-c", str(config), "-q", key, table],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None
