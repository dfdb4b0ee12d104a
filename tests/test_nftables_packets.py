"""Real packets through a compiled ruleset: one node namespace (bridge cni0, br_netfilter), one
namespace per pod, TCP servers on the probed ports, every pair probed and compared with
`netpol.semantics`. Everything lives in namespaces this test creates and always deletes;
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
from conftest import lab_namespaces

from netpol.backends.nftables import render
from netpol.ir import compile_cluster
from netpol.manifests import load_text
from netpol.model import ClusterState
from netpol.semantics import pods_connect

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
s = socket.socket(); s.settimeout(0.5)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except OSError:
    print("blocked")
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def node_with_pods(state: ClusterState, node: str) -> Iterator[dict[str, str]]:
    """Namespaces for the node and its pods; yields pod key → namespace name. Always cleaned up."""
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
        loaded = subprocess.run(["ip", "netns", "exec", node_ns, "nft", "-f", "-"], text=True, capture_output=True,
                                input=render(compile_cluster(state)[node]), check=False)
        assert loaded.returncode == 0, loaded.stderr
        yield pods


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
                    out = subprocess.run(["ip", "netns", "exec", namespaces[src.key], sys.executable, "-c", PROBE,
                                          str(dst.ips[0]), str(port)], capture_output=True, text=True, check=True)
                    got = out.stdout.strip() == "open"
                    if got != pods_connect(state, src, dst, port, "TCP"):
                        mismatches.append(f"{src.key} -> {dst.key}:{port} real={got}")
    assert lab_namespaces() == before, "namespaces leaked"
    assert not mismatches, mismatches
    assert not pods_connect(state, state.pod("other/c"), state.pod("shop/b"), 9090, "TCP")  # the except
