"""The complete target registry: importing this module registers every renderer."""

from __future__ import annotations

from relaygate.policy import Policy
from relaygate.render import TARGETS, Artifacts, Header, acl, nftables, postfix, postfwd

MODULES = (acl, nftables, postfix, postfwd)


def render_all(policy: Policy, header: Header) -> Artifacts:
    """Every registered target's artifacts, keyed by path under the output folder."""
    artifacts: Artifacts = {}
    for name in sorted(TARGETS):
        for path, text in TARGETS[name](policy, header).items():
            if path in artifacts:  # pragma: no cover - a programming error
                raise RuntimeError(f"two targets write {path}")
            artifacts[path] = text
    return dict(sorted(artifacts.items()))
