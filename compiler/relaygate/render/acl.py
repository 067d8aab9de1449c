"""MOD-segment ACLs: Cisco IOS, Junos, and Aerleon/Capirca naming definitions.

For every MOD segment: permit each registered device to reach the relay
hosts (legacy devices on the relay port, authenticated ones on the
submission port), deny every other SMTP port from the segment, permit the
rest. Suspended legacy devices are permitted to the relay port too, as the
relay's nft ruleset admits them: Postfix then answers them with the reason
(the three targets agree; the verifier compares them). Remarks and term
names carry the record name and its MOD ticket (a suspended device's status
ticket).

The routers themselves cannot be reached from here; the deploy turns these
files into a change package for the network team.
"""

from __future__ import annotations

from dataclasses import dataclass

import netaddr

from relaygate.addresses import inside
from relaygate.errors import RenderRefused
from relaygate.model import ModSegment, Status
from relaygate.policy import Policy, RefusedClient
from relaygate.render import Artifacts, Header, guards, render_template, target

PERMIT = "permit"
DENY = "deny"
#: Ports denied from MOD segments unless a rule above permits them; the site's
#: own relay and submission ports are added (see ``smtp_ports``).
SMTP_PORTS = (25, 465, 587)


def smtp_ports(policy: Policy) -> tuple[int, ...]:
    return tuple(
        sorted({*SMTP_PORTS, int(policy.site.relay_port), int(policy.site.submission_port)})
    )


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    ticket: str
    source: str  # net/len
    port: int


def _ios_source(cidr: str) -> str:
    network = netaddr.IPNetwork(cidr)
    full = 32 if network.version == 4 else 128
    if network.prefixlen == full:
        return f"host {network.ip}"
    if network.version == 4:
        return f"{network.network} {network.hostmask}"
    return cidr


def _ios_host(address: str) -> str:
    return f"host {address}"


def _segment_rules(policy: Policy, segment: ModSegment, version: int) -> list[Rule]:
    legacy, authenticated = policy.segment_clients(segment)
    rules = [
        Rule(
            guards.name(c.name),
            guards.ticket(c.ticket),
            guards.cidr(c.address),
            int(policy.site.relay_port),
        )
        for c in legacy
        if c.network.version == version
    ]
    rules += [
        Rule(guards.name(c.name), "", guards.cidr(c.address), int(policy.site.submission_port))
        for c in authenticated
        if c.network.version == version
    ]
    rules += [
        Rule(
            guards.name(c.name),
            guards.ticket(c.ticket),
            guards.cidr(c.address),
            int(policy.site.relay_port),
        )
        for c in suspended_legacy(policy)
        if c.network.version == version and inside(c.network, segment.prefixes)
    ]
    return sorted(rules, key=lambda r: (netaddr.IPNetwork(r.source).first, r.port, r.name))


def suspended_legacy(policy: Policy) -> list[RefusedClient]:
    """Suspended legacy devices: nft admits them to the relay port so Postfix can say why."""
    return [c for c in policy.refused if c.status is Status.SUSPENDED and c.account is None]


def _relays(policy: Policy, version: int) -> list[str]:
    return sorted(
        (
            guards.network(a)
            for h in policy.site.relay_hosts
            for a in h.addresses
            if a.version == version
        ),
        key=lambda text: int(netaddr.IPAddress(text)),
    )


def acl_name(segment: ModSegment, version: int) -> str:
    return guards.acl_name(f"RELAYGATE-{segment.name.upper()}-V{version}")


@target("acl")
def render(policy: Policy, header: Header) -> Artifacts:
    artifacts: Artifacts = {}
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for segment in policy.site.mod_segments:
        seg = guards.name(segment.name)
        for version in (4, 6):
            has_prefix = any(p.version == version for p in segment.prefixes)
            rules = _segment_rules(policy, segment, version)
            if not has_prefix and not rules:
                continue
            relays = _relays(policy, version)
            if rules and not relays:  # legacy.no-relay-address stops this in validation
                raise RenderRefused(
                    f"{segment.name}: IPv{version} clients but no IPv{version} relay address"
                )
            context = {
                "header": header.lines("!"),
                "name": acl_name(segment, version),
                "segment": seg,
                "vlan": int(segment.vlan),
                "version": version,
                "rules": rules,
                "relays": relays,
                "smtp_ports": smtp_ports(policy),
                "permit": PERMIT,
                "deny": DENY,
                "ios_source": _ios_source,
                "ios_host": _ios_host,
            }
            artifacts[f"acl/ios/{seg}-v{version}.acl"] = render_template(
                "acl/ios.acl.j2", **context
            )
            context["header"] = header.lines("#")
            artifacts[f"acl/junos/{seg}-v{version}.conf"] = render_template(
                "acl/junos.conf.j2", **context
            )
            groups.append(
                (
                    f"RELAYGATE_{seg.upper().replace('-', '_')}_V{version}",
                    [(r.source, r.name) for r in rules],
                )
            )
    relay_hosts = [
        (guards.cidr(a), guards.name(h.name)) for h in policy.site.relay_hosts for a in h.addresses
    ]
    artifacts["acl/aerleon/RELAYGATE.net"] = render_template(
        "acl/aerleon.net.j2", header=header.lines("#"), groups=groups, relay_hosts=relay_hosts
    )
    artifacts["acl/aerleon/RELAYGATE.svc"] = render_template(
        "acl/aerleon.svc.j2",
        header=header.lines("#"),
        relay_port=int(policy.site.relay_port),
        submission_port=int(policy.site.submission_port),
        smtp_ports=smtp_ports(policy),
    )
    return artifacts
