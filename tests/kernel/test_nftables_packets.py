"""Real packets through a compiled ruleset: one node namespace (bridge cni0, br_netfilter), one
namespace per pod, TCP servers on the probed ports, every pair probed and compared with
`netpol.semantics.reference`. Everything lives in namespaces this test creates and always deletes;
traffic goes only between them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from netpol.backends.nftables import render
from netpol.compile.compiler import compile_cluster
from netpol.load.manifests import load_text
from netpol.model import ClusterState
from netpol.semantics.reference import pods_connect
from tests.kernel.conftest import lab_namespaces

pytestmark = [pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                                 reason="needs root and nft (make test installs nftables)"),
              pytest.mark.usefixtures("netns_guard")]  # not alongside test_verify's labs

CLUSTER = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: a}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: b}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: other, labels: {app: a}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIP: 10.244.0.12}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: b}}
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: http}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-out, namespace: other}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.244.0.0/24, except: [10.244.0.11/32]}}], ports: [{port: 9090}]}]
"""
PORTS = (8080, 9090)
SERVER = """
import socket, sys, threading
for port in map(int, sys.argv[2:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(64)
    threading.Thread(target=lambda s=s: [s.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
sys.stdout.write("ready\\n"); sys.stdout.flush(); sys.stdin.read()
"""
PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except OSError:
    print("blocked")
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def node_with_pods(state: ClusterState, node: str, ruleset: str | None = None) -> Iterator[dict[str, str]]:
    """Namespaces for the node and its pods; yields pod key → namespace name (and "" → the
    node's). Loads `ruleset`, by default the state's compiled one. Always cleaned up."""
    tag = uuid.uuid4().hex[:6]
    node_ns = f"np-{tag}-node"
    created: list[str] = []
    with ExitStack() as stack:
        stack.callback(lambda: [subprocess.run(["ip", "netns", "delete", n], check=False) for n in created])
        ip("netns", "add", node_ns)
        created.append(node_ns)
        ip("-n", node_ns, "link", "add", "cni0", "type", "bridge")
        ip("-n", node_ns, "addr", "add", "10.244.0.1/24", "dev", "cni0")
        ip("-n", node_ns, "link", "set", "cni0", "up")
        subprocess.run(["ip", "netns", "exec", node_ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1",
                        "net.ipv4.ip_forward=1"], check=True)
        pods = {}
        for i, pod in enumerate(p for p in state.active_pods if p.node_name == node):
            pod_ns = f"np-{tag}-p{i}"
            ip("netns", "add", pod_ns)
            created.append(pod_ns)
            ip("-n", node_ns, "link", "add", f"veth{i}", "type", "veth", "peer", "name", "eth0", "netns", pod_ns)
            ip("-n", node_ns, "link", "set", f"veth{i}", "master", "cni0", "up")
            ip("-n", pod_ns, "addr", "add", f"{pod.ips[0]}/24", "dev", "eth0")
            ip("-n", pod_ns, "link", "set", "eth0", "up")
            ip("-n", pod_ns, "link", "set", "lo", "up")
            server = subprocess.Popen(["ip", "netns", "exec", pod_ns, sys.executable, "-c", SERVER,
                                       str(pod.ips[0]), *map(str, PORTS)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            stack.callback(server.wait)
            stack.callback(server.kill)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            pods[pod.key] = pod_ns
        load(node_ns, ruleset if ruleset is not None else render(compile_cluster(state)[node]))
        pods[""] = node_ns
        yield pods


def load(netns: str, ruleset: str) -> None:
    loaded = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], text=True, capture_output=True,
                            input=ruleset, check=False)
    assert loaded.returncode == 0, loaded.stderr


OPEN_TIMEOUT = 30.0  # a connection expected to open: a hang bound (it takes microseconds)
BLOCKED_TIMEOUT = 0.5  # a connection expected to be dropped: slowness cannot make it open


def connects(netns: str, ip: object, port: int, expected: bool) -> bool:
    """A TCP connect from `netns`. Only a connection expected to open can be wronged by a slow
    machine (a late handshake), so it gets OPEN_TIMEOUT to answer; one expected to be dropped
    is declared dropped after BLOCKED_TIMEOUT."""
    timeout = OPEN_TIMEOUT if expected else BLOCKED_TIMEOUT
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PROBE, str(ip), str(port),
                          str(timeout)], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "open"


def test_every_cell_on_real_packets_matches_the_semantics():
    state = load_text(CLUSTER)
    before = lab_namespaces()  # other tests' (and benchmarks') namespaces come and go meanwhile
    mismatches = []
    with node_with_pods(state, "node-a") as namespaces:
        for src in state.active_pods:
            for dst in state.active_pods:
                if src == dst:
                    continue
                for port in PORTS:
                    expected = pods_connect(state, src, dst, port, "TCP")
                    got = connects(namespaces[src.key], dst.ips[0], port, expected)
                    if got != expected:
                        mismatches.append(f"{src.key} -> {dst.key}:{port} real={got}")
    assert lab_namespaces() == before, "namespaces leaked"
    assert not mismatches, mismatches
    assert not pods_connect(state, state.pod("other/c"), state.pod("shop/b"), 9090, "TCP")  # the except


NODE_A = """
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24]}
status: {addresses: [{type: InternalIP, address: 192.168.1.10}]}
"""


def test_a_pod_the_ruleset_does_not_know_yet_is_neither_reachable_nor_reaching():
    """The leak-window guard: pod c exists (its namespace, its address in node-a's podCIDR) but
    the loaded ruleset was compiled before the agent heard of it. Nothing reaches c and c
    reaches nothing — although no policy would stop c → a — until the ruleset knows c."""
    state = load_text(CLUSTER + NODE_A)
    c, a, b = state.pod("other/c"), state.pod("shop/a"), state.pod("shop/b")
    assert c is not None and a is not None and b is not None
    before_c = ClusterState.build(namespaces=state.namespaces, nodes=state.nodes, policies=state.policies,
                                  pods=[p for p in state.pods if p.key != c.key])
    assert pods_connect(state, c, a, 9090, "TCP") and pods_connect(state, a, c, 8080, "TCP")
    with node_with_pods(state, "node-a", ruleset=render(compile_cluster(before_c)["node-a"])) as namespaces:
        assert not connects(namespaces[c.key], a.ips[0], 9090, expected=False)
        assert not connects(namespaces[a.key], c.ips[0], 8080, expected=False)
        assert connects(namespaces[a.key], b.ips[0], 8080, expected=True)  # known pods are not affected
        load(namespaces[""], render(compile_cluster(state)["node-a"]))
        assert connects(namespaces[c.key], a.ips[0], 9090, expected=True)
        assert connects(namespaces[a.key], c.ips[0], 8080, expected=True)
