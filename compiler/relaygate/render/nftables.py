"""nftables target: one ruleset file for every relay host.

The file replaces the ``inet relaygate`` table in one kernel transaction
(``table`` + ``delete table`` + the full table: ``flush table`` would keep
old set elements). It never touches other tables. Rules, in order: loopback
is accepted (local probes), revoked clients are dropped on the relay and
submission ports, legacy clients may reach the relay port, suspended legacy
clients may too (so Postfix can answer them with the reason), everyone else
is dropped on the relay port; submission is open to the campus networks only.
One set element per line, with the record name as its comment.
"""

from __future__ import annotations

from relaygate.model import Status
from relaygate.policy import Policy
from relaygate.render import Artifacts, Header, guards, render_template, target
from relaygate.render.acl import suspended_legacy

TABLE = "relaygate"
ACCEPT = "accept"
DROP = "drop"


def _elements(entries: list[tuple[str, str]], version: int) -> list[tuple[str, str]]:
    return [(guards.cidr(a), guards.name(n)) for a, n in entries if (":" in a) == (version == 6)]


@target("nftables")
def render(policy: Policy, header: Header) -> Artifacts:
    legacy = [(c.address, c.name) for c in policy.legacy]
    revoked = [(c.address, c.name) for c in policy.refused if c.status is Status.REVOKED]
    held = [(c.address, c.name) for c in suspended_legacy(policy)]
    campus = [(guards.network(n.prefix), guards.name(n.name)) for n in policy.site.campus_networks]
    sets = {}
    for set_name, entries in (("legacy", legacy), ("revoked", revoked), ("suspended", held)):
        for version in (4, 6):
            sets[f"{set_name}_v{version}"] = (version, _elements(entries, version))
    for version in (4, 6):
        sets[f"campus_v{version}"] = (
            version,
            [
                (a if "/" in a else f"{a}/{32 if version == 4 else 128}", n)
                for a, n in campus
                if (":" in a) == (version == 6)
            ],
        )
    text = render_template(
        "nftables/relay.nft.j2",
        header=header.lines("#"),
        table=TABLE,
        sets=sets,
        relay_port=int(policy.site.relay_port),
        submission_port=int(policy.site.submission_port),
        accept=ACCEPT,
        drop=DROP,
    )
    return {"nftables/relay.nft": text}
