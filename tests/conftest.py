"""Shared helpers: build clusters from YAML text so tests read like the manifests they test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from netpol.load.manifests import load_text
from netpol.model import ClusterState
from netpol.semantics.reference import pods_connect

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def cluster(text: str) -> ClusterState:
    return load_text(textwrap.dedent(text), "<test>")


def pod_yaml(ns: str, name: str, ip: str, labels: str = "{}", ports: str = "[]", extra: str = "",
             node: str = "node-a") -> str:
    """One Pod document; `ip` may be 'a,b' for dual-stack, '' for none."""
    ips = [i for i in ip.split(",") if i]
    status = f"podIP: {ips[0]}, podIPs: [{', '.join('{ip: ' + i + '}' for i in ips)}]" if ips else ""
    return textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
        spec: {{nodeName: {node}, containers: [{{name: c, ports: {ports}}}] {extra}}}
        status: {{phase: Running, {status}}}
        """)


def connects(state: ClusterState, src: str, dst: str, port: int | None = 80, protocol: str = "TCP") -> bool:
    a, b = state.pod(src), state.pod(dst)
    assert a is not None and b is not None
    return pods_connect(state, a, b, port, protocol)


@pytest.fixture
def example_path() -> str:
    from pathlib import Path

    import netpol

    return str(Path(netpol.__file__).parent / "examples" / "shop")


def fresh_netns(prefix: str = "netpol-test") -> Iterator[str]:
    """A network namespace created for one test (or module) and always deleted."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)



LAB_LOCK = os.path.join(tempfile.gettempdir(), "netpol-tests-lab.lock")
# Every namespace `netpol verify` (netpol.lab.cluster) and test_nftables_packets create; other tests'
# `netpol-test-*` and benchmarks' `np-dp-*` namespaces come and go concurrently and are not ours.
LAB_NAME = re.compile(r"^np-[0-9a-f]{6}-(fab|node|n\d+|p\d+)$")


def lab_namespaces() -> list[str]:
    """`ip netns list` (names only), restricted to lab namespaces."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(name for line in listed.splitlines() if LAB_NAME.match(name := line.split()[0]))


@pytest.fixture
def netns_guard() -> Iterator[None]:
    """Lab tests one at a time across xdist workers (a file lock), and `ip netns list` after the
    test exactly as before it: nothing a lab created may outlive the test, even when it fails."""
    import fcntl

    with open(LAB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = lab_namespaces()
        yield
        assert lab_namespaces() == before, "network namespaces leaked"


# ── our table in a namespace, compared order-insensitively ──────────────────────────────────


def nft_table(netns: str) -> object:
    """The table as JSON, in an order of its own: hash sets list elements, and tables chains,
    in the order they were added."""
    listed = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "netpol"],
                            capture_output=True, text=True, check=True).stdout
    items = json.loads(listed)["nftables"]
    for item in items:
        for kind in ("set", "map"):
            if kind in item:
                item[kind].pop("handle", None)
                if "elem" in item[kind]:
                    item[kind]["elem"] = sorted(item[kind]["elem"], key=json.dumps)
        for kind in ("chain", "rule", "table"):
            if kind in item:
                item[kind].pop("handle", None)

    def place(item: dict) -> tuple[str, str]:  # chains list in creation order; rules keep theirs
        kind = next(iter(item))
        return kind, str(item[kind].get("chain", item[kind].get("name", "")))
    return sorted(items, key=place)


def nft_load(netns: str, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=text, text=True, check=True)
