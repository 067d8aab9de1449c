"""Site sanity: campus networks are the campus's own space, and nft can load them.

nft keeps the campus networks in one interval set; overlapping elements make
``nft -f`` fail with "conflicting intervals", so every later deploy would
fail. Validate now refuses such a site. The proof loads the ruleset the old
compiler wrote for it into a network namespace this test creates (never the
host's), beside the example's ruleset as the positive control.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import netaddr
import pytest

from relaygate.model import NamedPrefix
from relaygate.pipeline import validate
from relaygate.policy import build_policy
from relaygate.render import Header
from relaygate.render.targets import render_all
from tests.conftest import AS_OF, EXAMPLE, require

DAY = dt.date.fromisoformat(AS_OF)
OVERLAP = "  - {name: engineering-v4, prefix: 10.40.0.0/16}\n"


@pytest.fixture
def namespace() -> Iterator[str]:
    require(os.geteuid() == 0, "needs root to create a network namespace")
    require(shutil.which("nft") is not None, "nft is not installed (Debian package nftables)")
    require(shutil.which("ip") is not None, "ip is not installed (Debian package iproute2)")
    name = f"relaygate-site-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    require(made.returncode == 0, f"`ip netns add {name}` failed: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _load(namespace: str, ruleset: str, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(ruleset)
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def _overlapping_site(tmp: Path) -> Path:
    root = tmp / "inventory"
    shutil.copytree(EXAMPLE, root)
    site = root / "site.yaml"
    text = site.read_text()
    anchor = "  - {name: research-park-v4, prefix: 172.16.0.0/16}\n"
    assert anchor in text
    site.write_text(text.replace(anchor, anchor + OVERLAP))
    return root


def _ruleset_without_the_check() -> str:
    """relay.nft as the compiler wrote it before validate refused overlapping campus networks.

    The example's checked model with the overlapping network added to its site,
    rendered by the real nftables target.
    """
    inventory = validate(EXAMPLE, DAY).inventory
    assert inventory is not None
    site = inventory.site
    wider = (
        *site.campus_networks,
        NamedPrefix("engineering-v4", netaddr.IPNetwork("10.40.0.0/16")),
    )
    widened = dataclasses.replace(inventory, site=dataclasses.replace(site, campus_networks=wider))
    return render_all(build_policy(widened), Header(site=site.name))["nftables/relay.nft"]


def test_validate_refuses_overlapping_campus_networks(tmp_path: Path) -> None:
    result = validate(_overlapping_site(tmp_path), DAY)
    assert [(Path(f.path).name, f.line, f.rule, f.message) for f in result.findings] == [
        (
            "site.yaml",
            9,
            "site.overlapping-campus",
            "engineering-v4 10.40.0.0/16 overlaps campus-v4 10.0.0.0/8",
        )
    ]
    assert result.inventory is None


@pytest.mark.integration
def test_nft_refuses_the_overlap_and_loads_the_example(namespace: str, tmp_path: Path) -> None:
    overlapping = _ruleset_without_the_check()
    assert "10.40.0.0/16 comment" in overlapping
    failed = _load(namespace, overlapping, tmp_path / "overlapping.nft")
    assert failed.returncode != 0, failed
    assert "conflicting intervals" in failed.stderr, failed.stderr
    # Positive control: the example's own ruleset, non-overlapping, loads in the same namespace.
    example = validate(EXAMPLE, DAY).inventory
    assert example is not None
    ruleset = render_all(build_policy(example), Header(site=example.site.name))[
        "nftables/relay.nft"
    ]
    loaded = _load(namespace, ruleset, tmp_path / "example.nft")
    assert loaded.returncode == 0, loaded.stderr
    listed = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "list", "set", "inet", "relaygate", "campus_v4"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "10.0.0.0/8" in listed and "172.16.0.0/16" in listed, listed
