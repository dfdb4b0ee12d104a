"""New-connection rate through a node's compiled ruleset: is the dataplane cost independent of the
number of NetworkPolicies in the cluster?

    python benchmarks/dataplane.py [--seconds 5] [--rounds 3] [--policies 0,100,1000,10000] [--udp]
                                   [--json FILE]

Method. One topology, built once in network namespaces this script creates (unique names
`np-dp-<6hex>-…`) and always deletes: a node namespace with bridge `cni0` (10.244.0.1/24),
br_netfilter (`net.bridge.bridge-nf-call-iptables=1`) and forwarding on, and two pod namespaces,
client and server, attached to `cni0` by veths. Nothing is created in or loaded into the root
namespace; traffic flows only between these namespaces; the only ruleset ever touched is our
own `table inet netpol` in the node namespace.

Configurations, measured on that same topology: `none` (no table at all: no nftables, no
conntrack in the node namespace) and, for each N in --policies, the ruleset `netpol` compiles
for the node in a synthetic cluster with N NetworkPolicies (`synthetic.py`'s realistic mix over
N/2 pods on N/200 nodes, our node's pods renumbered into the bridge subnet, plus the client
and server pods). The server's namespace is default-deny with several policies, the last of
which admits the client on the test port; the client's namespace is default-deny with an
egress allow: every measured SYN takes the accept path through the client's egress chain and
the server's ingress chain. The other policies select the other pods of the cluster (at
N=10,000 some 2,600 of them select pods on this node), so the dispatch maps, pod chains and
peer sets are the size N gives them.

Before every measurement the ruleset is verified on real packets (the test port connects,
another listening port does not; both connect with no policy), and the node namespace's
conntrack table is flushed over ctnetlink (its entries are ours alone): every run starts from
the same empty table instead of 120 s of TIME_WAIT entries left by the runs before it.

Load: a client process in the client namespace with several worker processes, each keeping
`--concurrency` non-blocking connects in flight (epoll): connect, wait for the server's FIN,
close, reconnect, for --seconds. The server (SO_REUSEPORT listeners, one per process) accepts
and closes. A connection counts when the client sees EOF, so the loop is closed and every
count is one SYN through `ct state new` and the pod chains, and six packets through the
`established` fast path. With --udp, the same for UDP flows: a new socket (new source port)
sends one datagram and waits for the echo (lost after 1 s). Each worker measures --seconds from
when it actually starts (on a busy machine a worker can start late), and goes on past that, if
it has completed nothing yet, until its first flow completes; the rate is the sum of the
workers' completed flows per second of their own windows.

Rounds interleave the configurations (ABCDE ABCDE …) so drift hits all alike. The VM is
shared: each run starts when other work leaves the CPUs idle (--quiet-below, waiting at most
--quiet-wait), and records the CPU share other people's processes took during it (from
/proc/PID/stat); a configuration's median, min and max count only the clean runs (that share
below --clean-below) when it has any, else every run. Ratios are to the `none` and the
`0 policies` medians: `0 policies` / `none` is the price of a stateful table at all (conntrack
plus the base chain; --breakdown adds a table with an empty forward chain and one with only
`ct state established,related accept` to split that price), N policies / `0 policies` what the
policies add. Prints one JSON object
(every run, with the machine's CPU shares) on stdout and to --json FILE, a table on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import multiprocessing
import os
import re
import secrets
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import synthetic

from netpol.backends.iptables import SET_PREFIXES, IptablesBundle
from netpol.backends.iptables import render as render_iptables
from netpol.backends.nftables import dispatch_chain, render
from netpol.compile.compiler import compile_node
from netpol.compile.ir import NodeProgram
from netpol.dataplane.iptables import apply_iptables
from netpol.load.manifests import load_text
from netpol.model import Direction

NODE = "node-0"
GATEWAY = "10.244.0.1/24"
CLIENT_IP, SERVER_IP = "10.244.0.250", "10.244.0.251"
CLIENT_POD, SERVER_POD = "bench-client/loadgen-0", "bench-server/web-0"
INGRESS_POD, INGRESS_IP = "ingress-nginx/controller-0", "10.64.1.250"  # on node-1: no namespace for it
PORT, BLOCKED_PORT = 8080, 9999  # the server listens on both; only PORT is admitted
MAX_LOCAL_HOST = 249  # other pods of our node get 10.244.0.2-249
NODE_SYSCTLS = {"net.bridge.bridge-nf-call-iptables": "1", "net.ipv4.ip_forward": "1"}
CLIENT_SYSCTLS = {"net.ipv4.ip_local_port_range": "1024 65535", "net.ipv4.tcp_tw_reuse": "1"}
SERVER_SYSCTLS = {"net.core.somaxconn": "8192", "net.ipv4.tcp_max_syn_backlog": "8192"}
# ctnetlink "delete every entry": nlmsghdr (type CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE, REQUEST|ACK) + nfgenmsg
CT_FLUSH = struct.pack("=IHHII", 20, (1 << 8) | 2, 0x1 | 0x4, 1, 0) + struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
UDP_LOST_AFTER = 1.0
PATIENT_CONNECT = 30.0  # seconds a connect that must succeed gets: a hang bound, it takes microseconds
BLOCKED_CONNECT = 0.5  # seconds before a connect that must be dropped counts as dropped
FIRST_FLOW_PATIENCE = 60.0  # seconds a load worker waits past its window for its first completed flow
NO_TABLE = "table inet netpol {}\ndelete table inet netpol\n"  # our table only, whether or not it exists
SCRIPT = str(Path(__file__).resolve())
# --breakdown: where `0 policies` loses against `none`: a base chain alone, then conntrack alone
_HOOK = "\tchain forward { type filter hook forward priority filter; policy accept;"
BREAKDOWN = {"empty hook": NO_TABLE + f"table inet netpol {{\n{_HOOK} }}\n}}\n",
             "conntrack only": NO_TABLE + f"table inet netpol {{\n{_HOOK} ct state established,related accept; }}\n}}\n"}


# ---------------------------------------------------------------- the cluster and its ruleset

def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"env": "prod"}}}


def _policy(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _dns_egress(ns: str) -> dict[str, Any]:
    dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    return _policy(ns, "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [dns]})


def bench_policies() -> list[dict[str, Any]]:
    """The client's and the server's namespaces: default-deny, DNS, the usual allows; the policy
    admitting the client sorts last, so its rule comes late in the server's ingress chain."""
    by_name = {"kubernetes.io/metadata.name": "bench-client"}
    server_ns = [
        _dns_egress("bench-server"),
        _policy("bench-server", "allow-ingress-nginx", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
             "ports": [{"port": "http"}]}]}),
        _policy("bench-server", "allow-metrics", {"podSelector": {}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}},
                       "podSelector": {"matchLabels": {"tier": "worker"}}}], "ports": [{"port": "metrics"}]}]}),
        _policy("bench-server", "allow-partners", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}],
             "ports": [{"protocol": "TCP", "port": 443}]}]}),
        _policy("bench-server", "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy("bench-server", "web-from-loadgen", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": by_name}, "podSelector": {"matchLabels": {"app": "loadgen"}}}],
             "ports": [{"port": "http"}, {"protocol": "UDP", "port": PORT}]}]}),
    ]
    to_web = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "bench-server"}},
                      "podSelector": {"matchLabels": {"app": "web"}}}],
              "ports": [{"protocol": "TCP", "port": PORT}, {"protocol": "UDP", "port": PORT}]}
    client_ns = [
        _dns_egress("bench-client"),
        _policy("bench-client", "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        _policy("bench-client", "loadgen-to-web", {"podSelector": {"matchLabels": {"app": "loadgen"}},
                                                   "policyTypes": ["Egress"], "egress": [to_web]}),
    ]
    return server_ns + client_ns


def _pod(key: str, ip: str, labels: dict[str, str], ports: list[dict[str, Any]], node: str = NODE) -> dict[str, Any]:
    ns, name = key.split("/")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "app:1", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def _bench_pods() -> list[dict[str, Any]]:
    web_ports = [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                 {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    return [_pod(CLIENT_POD, CLIENT_IP, {"app": "loadgen"}, []),
            _pod(SERVER_POD, SERVER_IP, {"app": "web", "tier": "web"}, web_ports),
            _pod(INGRESS_POD, INGRESS_IP, {"app": "ingress-nginx"}, [], node="node-1")]


def _onto_bridge(cluster: dict[str, list[dict[str, Any]]]) -> None:
    """Our node's pods into the bridge subnet 10.244.0.0/24 (synthetic numbers node-0 10.64.0.x)."""
    local = [p for p in cluster["pods"] if p["spec"]["nodeName"] == NODE]
    if len(local) > MAX_LOCAL_HOST - 1:
        raise SystemExit(f"{len(local)} pods on {NODE}: more than the bridge subnet holds")
    for host, pod in enumerate(local, start=2):
        ip = f"10.244.0.{host}"
        pod["status"].update(podIP=ip, podIPs=[{"ip": ip}])
    for node in cluster["nodes"]:
        if node["metadata"]["name"] == NODE:
            node["spec"]["podCIDR"] = "10.244.0.0/24"


def cluster_manifests(policies: int) -> list[dict[str, Any]]:
    """The cluster with `policies` NetworkPolicies (ours included when there are any)."""
    ours = bench_policies() if policies else []
    if policies and policies < len(ours):
        raise SystemExit(f"--policies: at least {len(ours)} (the client's and the server's own), or 0")
    cluster = synthetic.generate(max(200, policies // 2), policies - len(ours))
    _onto_bridge(cluster)
    extra = [_namespace("bench-client"), _namespace("bench-server"), _namespace("ingress-nginx"),
             *_bench_pods(), *ours]
    return [obj for kind in cluster.values() for obj in kind] + extra


@dataclass
class Ruleset:
    """One configuration's ruleset (None: no table at all) and what it is made of; `bundle`
    (with its `program`) instead of `text` for the iptables backend."""

    name: str
    policies: int | None
    text: str | None
    stats: dict[str, Any] = field(default_factory=dict)
    bundle: IptablesBundle | None = None
    program: NodeProgram | None = None


def _chain_rules(text: str) -> dict[str, int]:
    """Rules per chain of a rendered script (comment/type lines are not rules)."""
    rules: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("\tchain "):
            current = line[len("\tchain "):].rstrip(" {")
            rules[current] = 0
        elif line == "\t}":
            current = None
        elif current is not None and not line.lstrip().startswith(("comment ", "type ")):
            rules[current] += 1
    return rules


def _elements(text: str, kind: str) -> int:
    found = re.findall(rf"^\t{kind} .*?elements = {{ (.*) }};", text, flags=re.MULTILINE)
    return sum(len(listed.split(", ")) for listed in found)


def _chain_of(chains: dict[str, int], program: NodeProgram, ip: str, direction: Direction) -> int | None:
    """Rules in the chain the pod's address is dispatched to (None: not isolated that way)."""
    name = dispatch_chain(program, ipaddress.ip_address(ip), direction)
    return None if name is None else chains.get(name)


def ruleset_stats(program: NodeProgram, text: str) -> dict[str, Any]:
    """Size of the script and of what a packet meets: map/set elements, chain lengths on our path."""
    chains = _chain_rules(text)
    selecting = {p for pod in program.pods for side in (pod.ingress, pod.egress) for p in side.isolated_by}
    return {
        "lines": text.count("\n"), "bytes": len(text.encode()), "local_pods": len(program.pods),
        "policies_selecting_local_pods": len(selecting), "chains": len(chains), "rules": sum(chains.values()),
        "sets": len(re.findall(r"^\tset ", text, flags=re.MULTILINE)), "set_elements": _elements(text, "set"),
        "map_elements": _elements(text, "map"),
        "client_egress_chain_rules": _chain_of(chains, program, CLIENT_IP, "egress"),
        "server_ingress_chain_rules": _chain_of(chains, program, SERVER_IP, "ingress"),
        "longest_chain_rules": max((n for c, n in chains.items() if c != "forward"), default=0),
    }


def iptables_ruleset(nft: Ruleset) -> Ruleset:
    """The same node program through the iptables backend."""
    assert nft.program is not None
    started = time.perf_counter()
    bundle = render_iptables(nft.program)
    texts = (bundle.ipset, bundle.iptables, bundle.ip6tables)
    stats = {"lines": sum(t.count("\n") for t in texts), "bytes": sum(len(t) for t in texts),
             "render_s": round(time.perf_counter() - started, 2), "pods": nft.stats.get("pods")}
    return Ruleset(f"iptables {nft.name}", nft.policies, None, stats, bundle, nft.program)


def build_ruleset(policies: int) -> Ruleset:
    started = time.perf_counter()
    state = load_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_manifests(policies)}))
    loaded = time.perf_counter()
    program = compile_node(state, NODE)
    compiled = time.perf_counter()
    text = render(program)
    stats = ruleset_stats(program, text)
    stats.update(pods=len(state.pods), load_manifests_s=round(loaded - started, 2),
                 compile_s=round(compiled - loaded, 2), render_s=round(time.perf_counter() - compiled, 2))
    return Ruleset(f"{policies} policies", policies, text, stats, program=program)


# ---------------------------------------------------------------- namespaces and processes

def _run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, input=stdin, text=True, capture_output=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}…: {done.stderr.strip()}")
    return done


def netns_names() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]


class Topology:
    """Node, client and server namespaces; `close()` kills our processes and deletes them all."""

    def __init__(self) -> None:
        self.prefix = f"np-dp-{secrets.token_hex(3)}-"
        self.node, self.client, self.server = (self.prefix + role for role in ("node", "client", "server"))
        self.created: list[str] = []
        self.groups: list[subprocess.Popen[str]] = []
        self.server_group = 0

    def exec(self, ns: str, argv: list[str], stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", ns, *argv], stdin, check)

    def _add(self, ns: str) -> None:
        _run(["ip", "netns", "add", ns])
        self.created.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _sysctls(self, ns: str, values: dict[str, str]) -> None:
        self.exec(ns, ["sysctl", "-qw", *(f"{k}={v}" for k, v in values.items())])

    def _attach(self, pod_ns: str, veth: str, address: str) -> None:
        _run(["ip", "-n", self.node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod_ns])
        _run(["ip", "-n", self.node, "link", "set", veth, "master", "cni0", "up"])
        _run(["ip", "-n", pod_ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run(["ip", "-n", pod_ns, "link", "set", "eth0", "up"])

    def build(self) -> None:
        for ns in (self.node, self.client, self.server):
            self._add(ns)
        _run(["ip", "-n", self.node, "link", "add", "cni0", "type", "bridge"])
        _run(["ip", "-n", self.node, "addr", "add", GATEWAY, "dev", "cni0"])
        _run(["ip", "-n", self.node, "link", "set", "cni0", "up"])
        self._sysctls(self.node, NODE_SYSCTLS)
        self._sysctls(self.client, CLIENT_SYSCTLS)
        self._sysctls(self.server, SERVER_SYSCTLS)
        self._attach(self.client, "veth-client", CLIENT_IP)
        self._attach(self.server, "veth-server", SERVER_IP)

    def start(self, ns: str, args: list[str]) -> subprocess.Popen[str]:
        """This script in a child mode inside `ns`, in a process group of its own (killed by id)."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, SCRIPT, *args], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self.groups.append(proc)
        return proc

    def start_server(self, procs: int) -> None:
        server = self.start(self.server, ["_serve", str(procs)])
        if server.stdout is None or server.stdout.readline().strip() != "ready":
            raise RuntimeError("the server did not start")
        self.server_group = server.pid

    def call(self, ns: str, args: list[str], timeout: float) -> dict[str, Any]:
        """Run a child mode to completion; its JSON answer."""
        proc = self.start(ns, args)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            self._kill(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"child {args[0]} in {ns} exited {proc.returncode}")
        answer: dict[str, Any] = json.loads(out)
        return answer

    def _kill(self, proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc in self.groups:
            self.groups.remove(proc)

    def close(self) -> None:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            for proc in list(self.groups):
                self._kill(proc)
            for ns in reversed(self.created):
                subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)
            self.created.clear()
        finally:
            signal.signal(signal.SIGINT, interrupt)

    def load(self, ruleset: Ruleset) -> float:
        """Replace our table (or remove it), or load the iptables bundle instead; seconds the
        load took (`nft -f`, or ipset + iptables-restore + ip6tables-restore)."""
        if ruleset.bundle is None:
            self.clear_iptables()
        else:
            self.exec(self.node, ["nft", "-f", "-"], NO_TABLE)
        started = time.perf_counter()
        if ruleset.bundle is not None and ruleset.program is not None:
            self.iptables_used = True
            apply_iptables(ruleset.bundle, ruleset.program, self.node)
        else:
            self.exec(self.node, ["nft", "-f", "-"], ruleset.text or NO_TABLE)
        return time.perf_counter() - started

    def clear_iptables(self) -> None:
        """Nothing of iptables left in the node namespace (ours alone): the filter tables
        iptables-nft made there, hooks included, and our sets."""
        if not getattr(self, "iptables_used", False):
            return
        for family in ("ip", "ip6"):
            self.exec(self.node, ["nft", "delete", "table", family, "filter"], check=False)
        for name in self.exec(self.node, ["ipset", "list", "-n"]).stdout.split():
            if name.startswith(SET_PREFIXES):
                self.exec(self.node, ["ipset", "destroy", name])
        self.iptables_used = False

    def conntrack_count(self) -> int:
        return int(self.exec(self.node, ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)

    def flush_conntrack(self) -> int:
        """Empty the node namespace's conntrack table (ours alone); how many entries it held."""
        held = self.conntrack_count()
        self.call(self.node, ["_flush_conntrack"], timeout=30)
        return held


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    """The namespaces, always torn down: on return, exceptions, Ctrl-C and SIGTERM."""
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGINT too: a shell may start us ignoring it
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in handled}
    topo = Topology()
    try:
        topo.build()
        yield topo
    finally:
        topo.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------- child modes (inside the pod namespaces)

def _listener(kind: int, port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((SERVER_IP, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(8192)
    return sock


def _accept_forever(sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        conn.close()  # FIN: the client counts the connection when it sees EOF


def _echo_forever(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(64)
        sock.sendto(data, peer)


def child_serve(args: list[str]) -> int:
    """TCP accept-and-close on PORT (one SO_REUSEPORT listener per process), UDP echo on PORT,
    and one more TCP listener on BLOCKED_PORT; runs until killed."""
    procs = int(args[0])
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_accept_forever, args=(_listener(socket.SOCK_STREAM, PORT, True),))
               for _ in range(procs)]
    workers += [ctx.Process(target=_echo_forever, args=(_listener(socket.SOCK_DGRAM, PORT, True),))
                for _ in range(procs)]
    for worker in workers:
        worker.start()
    blocked = _listener(socket.SOCK_STREAM, BLOCKED_PORT, False)
    threading.Thread(target=_accept_forever, args=(blocked,), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin or kills our process group
    return 0


def child_flush_conntrack(args: list[str]) -> int:
    """Flush this namespace's conntrack table over ctnetlink (conntrack -F without the tool)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as nl:  # NETLINK_NETFILTER
        nl.bind((0, 0))
        nl.send(CT_FLUSH)
        reply = nl.recv(4096)
    error = struct.unpack_from("=i", reply, 16)[0]  # NLMSG_ERROR's errno, 0 = done
    print(json.dumps({"error": error}))
    return 0 if error == 0 else 1


def child_probe(args: list[str]) -> int:
    """`{"PORT": "open" | "blocked" | "refused"}` for TCP connects from here to the server; each
    argument is PORT:TIMEOUT, the timeout chosen by what the port is expected to do."""
    answer = {}
    for arg in args:
        port, timeout = int(arg.split(":")[0]), float(arg.split(":")[1])
        with socket.socket() as sock:
            sock.settimeout(timeout)
            try:
                sock.connect((SERVER_IP, port))
                answer[str(port)] = "open"
            except ConnectionRefusedError:
                answer[str(port)] = "refused"
            except OSError:
                answer[str(port)] = "blocked"
    print(json.dumps(answer))
    return 0


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _window(start: float, deadline: float) -> tuple[float, float]:
    """This worker's own window, as long as the planned one: a worker that gets its task late
    (a busy machine) still measures for the full time instead of not at all."""
    _sleep_until(start)
    begin = max(start, time.monotonic())
    return begin, begin + (deadline - start)


def _running(begin: float, end: float, done: int) -> tuple[float, float] | None:
    """While the worker should go on — its window, then, if no flow has completed yet, until
    the first one does (within FIRST_FLOW_PATIENCE) — the time now and the end of that phase."""
    now = time.monotonic()
    if now < end:
        return now, end
    patience = begin + FIRST_FLOW_PATIENCE
    return (now, patience) if not done and now < patience else None


def _tcp_worker(start: float, deadline: float, concurrency: int) -> tuple[int, int, float]:
    """Connections completed (EOF from the server seen) and failed in this worker's window
    (`_window`), and the window's real length."""
    poller = select.epoll()
    live: dict[int, socket.socket] = {}
    done = failed = 0

    def connect() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((SERVER_IP, PORT))  # EINPROGRESS; EPOLLIN fires on the server's FIN or an error
        live[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)

    begin, end = _window(start, deadline)
    for _ in range(concurrency):
        connect()
    while (running := _running(begin, end, done)) is not None:
        now, until = running
        for fd, _ in poller.poll(until - now):
            sock = live.pop(fd)
            try:
                done += sock.recv(1) == b""
            except OSError:
                failed += 1
            sock.close()  # closing the fd also removes it from the epoll set
            connect()
    return done, failed, time.monotonic() - begin


def _udp_worker(start: float, deadline: float, concurrency: int) -> tuple[int, int, float]:
    """UDP flows answered (a new socket, so a new source port, per flow) and lost in this
    worker's window (`_window`), and the window's real length."""
    poller = select.epoll()
    live: dict[int, tuple[socket.socket, float]] = {}
    done = failed = 0

    def send() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect((SERVER_IP, PORT))
        sock.send(b"x")
        live[sock.fileno()] = (sock, time.monotonic())
        poller.register(sock.fileno(), select.EPOLLIN)

    begin, end = _window(start, deadline)
    for _ in range(concurrency):
        send()
    next_sweep = begin + UDP_LOST_AFTER
    while (running := _running(begin, end, done)) is not None:
        now, until = running
        for fd, _ in poller.poll(max(0.0, min(until, next_sweep) - now)):
            sock, _sent = live.pop(fd)
            try:
                done += len(sock.recv(64)) > 0
            except OSError:
                failed += 1
            sock.close()
            send()
        if now >= next_sweep:
            for fd, (sock, sent) in list(live.items()):
                if now - sent > UDP_LOST_AFTER:
                    del live[fd]
                    sock.close()
                    failed += 1
                    send()
            next_sweep = now + UDP_LOST_AFTER / 4
    return done, failed, time.monotonic() - begin


def _tcp_retransmits() -> int:
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])


def _cpu_ticks() -> list[int]:
    """The machine's (not the namespace's) CPU time: user nice system idle iowait irq softirq …"""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _cpu_shares(before: list[int], after: list[int]) -> dict[str, float]:
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta[:8]) or 1  # guest time is already counted in user
    names = {"user": delta[0] + delta[1], "system": delta[2] + delta[5], "idle": delta[3] + delta[4],
             "softirq": delta[6]}
    return {k: round(v / total, 3) for k, v in names.items()}


def _process_ticks(ours: set[int]) -> dict[int, int]:
    """utime + stime by pid of every user-space process outside our process groups."""
    ticks = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if entry.name == "2" or fields[1] == "2" or int(fields[2]) in ours:  # kernel threads may do our work
            continue
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def _foreign_share(before: dict[int, int], after: dict[int, int], cpu: list[int], cpu_end: list[int]) -> float:
    """The machine's CPU share other people's processes took during the run."""
    used = sum(t - before.get(pid, 0) for pid, t in after.items())
    return round(used / max(1, sum(cpu_end[:8]) - sum(cpu[:8])), 3)


def background_busy(seconds: float = 0.5) -> float:
    """The machine's busy CPU share while we send nothing: other people's work on a shared VM."""
    before = _cpu_ticks()
    time.sleep(seconds)
    return round(1 - _cpu_shares(before, _cpu_ticks())["idle"], 3)


def wait_for_quiet(below: float, patience: float) -> tuple[float, float]:
    """On a shared VM, wait (up to `patience` s) until other work leaves the CPUs mostly idle;
    seconds waited and the busy share last seen."""
    started = time.monotonic()
    while (busy := background_busy()) > below and time.monotonic() - started < patience:
        time.sleep(0.5)
    return round(time.monotonic() - started, 1), busy


def child_load(args: list[str]) -> int:
    """`procs` worker processes × `concurrency` flows in flight for `seconds`; JSON totals."""
    protocol, seconds, procs, concurrency = args[0], float(args[1]), int(args[2]), int(args[3])
    ours = {os.getpgrp(), int(args[4])}  # this process and its workers, the server's group
    worker = _tcp_worker if protocol == "tcp" else _udp_worker
    retrans = _tcp_retransmits()
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        start = time.monotonic() + 0.3  # every worker forked and waiting
        pending = pool.starmap_async(worker, [(start, start + seconds, concurrency)] * procs)
        _sleep_until(start)
        cpu, others = _cpu_ticks(), _process_ticks(ours)
        _sleep_until(start + seconds)
        cpu_end, others_end = _cpu_ticks(), _process_ticks(ours)
        results = pending.get()
    done, failed = (sum(r[i] for r in results) for i in (0, 1))
    rate = sum(r[0] / r[2] for r in results if r[2] > 0)  # each worker over its own window
    print(json.dumps({"completed": done, "failed": failed, "seconds": seconds, "rate": round(rate, 1),
                      "worker_seconds": [round(r[2], 3) for r in results],
                      "tcp_retransmits": _tcp_retransmits() - retrans, "cpu": _cpu_shares(cpu, cpu_end),
                      "foreign_cpu": _foreign_share(others, others_end, cpu, cpu_end)}))
    return 0


CHILD_MODES: dict[str, Callable[[list[str]], int]] = {"_serve": child_serve, "_probe": child_probe,
                                                      "_load": child_load,
                                                      "_flush_conntrack": child_flush_conntrack}


# ---------------------------------------------------------------- the benchmark

def verify(topo: Topology, ruleset: Ruleset) -> dict[str, Any]:
    """Real packets: PORT open; BLOCKED_PORT open without policies, dropped with them. A port
    that must connect gets PATIENT_CONNECT (a slow handshake is not a broken ruleset); one that
    must not, BLOCKED_CONNECT. From an empty conntrack table: the runs before may have filled it."""
    topo.flush_conntrack()
    blocked_timeout = BLOCKED_CONNECT if ruleset.policies else PATIENT_CONNECT
    got = topo.call(topo.client, ["_probe", f"{PORT}:{PATIENT_CONNECT}", f"{BLOCKED_PORT}:{blocked_timeout}"],
                    timeout=2 * PATIENT_CONNECT + 60)
    expect_blocked = "blocked" if ruleset.policies else "open"
    if got != {str(PORT): "open", str(BLOCKED_PORT): expect_blocked}:
        raise RuntimeError(f"{ruleset.name}: the ruleset does not behave as compiled: {got}")
    return got


def measure(topo: Topology, protocol: str, args: argparse.Namespace) -> dict[str, Any]:
    """One timed run from an empty conntrack table (entries of earlier runs would linger 120 s)."""
    topo.flush_conntrack()
    waited, busy = wait_for_quiet(args.quiet_below, args.quiet_wait)
    result = topo.call(topo.client, ["_load", protocol, str(args.seconds), str(args.client_procs),
                                     str(args.concurrency), str(topo.server_group)],
                       timeout=args.seconds + FIRST_FLOW_PATIENCE + 60)
    result.update(conntrack_entries_after=topo.conntrack_count(), background_busy=busy, waited_for_quiet_s=waited)
    return result


def _ratio(value: float, base: float | None) -> float | None:
    return round(value / base, 3) if base else None


def counted(runs: list[dict[str, Any]], clean_below: float) -> list[dict[str, Any]]:
    """The runs other people's processes left alone (foreign CPU share below the threshold), or,
    when there are none, every run."""
    return [r for r in runs if r["foreign_cpu"] < clean_below] or runs


def summarize(runs: list[dict[str, Any]], clean_below: float, none: float, empty: float | None) -> dict[str, Any]:
    """Median and spread of the counted runs, ratios to the `none` and the `0 policies` medians."""
    rates = [r["rate"] for r in counted(runs, clean_below)]
    median = statistics.median(rates)
    return {"median": round(median, 1), "min": min(rates), "max": max(rates), "counted_rates": rates,
            "clean_runs": sum(r["foreign_cpu"] < clean_below for r in runs), "all_runs": len(runs),
            "ratio_to_none": _ratio(median, none), "ratio_to_0_policies": _ratio(median, empty),
            "failed": sum(r["failed"] for r in runs), "runs": runs}


def run_rounds(topo: Topology, rulesets: list[Ruleset], args: argparse.Namespace) -> dict[str, Any]:
    protocols = ["tcp", "udp"] if args.udp else ["tcp"]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {r.name: {p: [] for p in protocols} for r in rulesets}
    loads: dict[str, list[float]] = {r.name: [] for r in rulesets}
    for protocol in protocols:  # warm-up: ARP, caches, page cache of the interpreter
        topo.call(topo.client, ["_load", protocol, "1", str(args.client_procs), str(args.concurrency),
                                str(topo.server_group)], 1 + FIRST_FLOW_PATIENCE + 60)
    for round_no in range(args.rounds):
        for ruleset in rulesets:
            loads[ruleset.name].append(round(topo.load(ruleset), 3))
            if ruleset.text and "listed_bytes" not in ruleset.stats:  # what the kernel holds, as nft lists it
                ruleset.stats["listed_bytes"] = len(topo.exec(topo.node, ["nft", "list", "table", "inet", "netpol"]).stdout)
            verify(topo, ruleset)
            for protocol in protocols:
                run = measure(topo, protocol, args)
                runs[ruleset.name][protocol].append(run)
                print(f"round {round_no + 1}/{args.rounds} {ruleset.name:>16} {protocol}: {run['rate']:>9.0f} /s"
                      f"  (other processes took {run['foreign_cpu']:.0%} of the CPUs)", file=sys.stderr, flush=True)
    topo.load(Ruleset("none", None, None))
    return {"runs": runs, "loads": loads}


def results(rulesets: list[Ruleset], measured: dict[str, Any], protocols: list[str],
            clean_below: float) -> list[dict[str, Any]]:
    runs = measured["runs"]

    def median(name: str, protocol: str) -> float | None:
        if name not in runs:
            return None
        return float(statistics.median(r["rate"] for r in counted(runs[name][protocol], clean_below)))

    return [{"name": r.name, "policies": r.policies, "ruleset": r.stats,
             "nft_load_s": {"median": statistics.median(measured["loads"][r.name]), "all": measured["loads"][r.name]}
             if r.text or r.bundle else None,
             **{p: summarize(runs[r.name][p], clean_below, median("none", p) or 0.0, median("0 policies", p))
                for p in protocols}}
            for r in rulesets]


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(configs: list[dict[str, Any]], protocols: list[str]) -> None:
    """Per configuration: ruleset size, nft load time, the server's chain, and per protocol the
    median rate of the counted runs, their spread, clean/all runs, ratios to `none`, `0 policies`."""
    head = f"\n{'config':>16} {'lines':>6} {'bytes':>8} {'nft -f s':>8} {'chain':>5}"
    for p in protocols:
        head += f" {p + '/s':>8} {'min':>7} {'max':>7} {'clean':>5} {'÷none':>6} {'÷0pol':>6}"
    print(head, file=sys.stderr)
    for c in configs:
        s, load = c["ruleset"], c["nft_load_s"]
        row = (f"{c['name']:>16} {s.get('lines', '-'):>6} {s.get('bytes', '-'):>8} "
               f"{_cell(load and load['median'], '.3f'):>8} {s.get('server_ingress_chain_rules') or '-':>5}")
        for p in protocols:
            m = c[p]
            row += (f" {m['median']:>8.0f} {m['min']:>7.0f} {m['max']:>7.0f} {m['clean_runs']:>3}/{m['all_runs']}"
                    f" {_cell(m['ratio_to_none'], '.3f'):>6} {_cell(m['ratio_to_0_policies'], '.3f'):>6}")
        print(row, file=sys.stderr)


def _check_environment() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, nft)"
    if shutil.which("nft") is None or shutil.which("ip") is None:
        return "needs nft and ip (apt-get install nftables iproute2)"
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        return "needs br_netfilter (modprobe br_netfilter)"
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--policies", default="0,100,1000,10000", help="cluster sizes (default %(default)s)")
    parser.add_argument("--udp", action="store_true", help="also measure new UDP flows")
    parser.add_argument("--iptables", action="store_true",
                        help="also measure the iptables backend (ipset + iptables-restore) at every size")
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure a table with an empty forward chain, and with conntrack only")
    parser.add_argument("--client-procs", type=int, default=2, help="load processes (default %(default)s)")
    parser.add_argument("--server-procs", type=int, default=2, help="server processes (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32, help="flows in flight per load process")
    parser.add_argument("--quiet-below", type=float, default=0.1,
                        help="start a run when other work keeps the CPUs less busy than this (default %(default)s)")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="…but wait at most this many seconds for it (default %(default)s)")
    parser.add_argument("--clean-below", type=float, default=0.1,
                        help="count only runs during which other processes took less CPU than this share, "
                             "if there are any (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    return parser.parse_args()


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    rulesets = [Ruleset("none", None, None)]
    if args.breakdown:
        rulesets += [Ruleset(name, 0, text, {"lines": text.count("\n"), "bytes": len(text)})
                     for name, text in BREAKDOWN.items()]
    for n in (int(x) for x in args.policies.split(",")):
        print(f"compiling {n} policies …", file=sys.stderr, flush=True)
        rulesets.append(build_ruleset(n))
    if args.iptables:
        rulesets += [iptables_ruleset(r) for r in rulesets if r.program is not None]
    protocols = ["tcp", "udp"] if args.udp else ["tcp"]
    with topology() as topo:
        prefix = topo.prefix
        topo.start_server(args.server_procs)
        measured = run_rounds(topo, rulesets, args)
    return {"benchmark": "dataplane", "kernel": os.uname().release, "cpus": os.cpu_count(),
            "nft": subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False).stdout.strip(),
            "seconds": args.seconds, "rounds": args.rounds, "client_procs": args.client_procs,
            "server_procs": args.server_procs, "concurrency": args.concurrency,
            "sysctls": {"node": NODE_SYSCTLS, "client": CLIENT_SYSCTLS, "server": SERVER_SYSCTLS},
            "clean_below": args.clean_below, "netns_prefix": prefix,
            "configs": results(rulesets, measured, protocols, args.clean_below)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in CHILD_MODES:
        return CHILD_MODES[sys.argv[1]](sys.argv[2:])
    args = parse_args()
    if problem := _check_environment():
        print(f"dataplane: {problem}", file=sys.stderr)
        return 2
    before = netns_names()
    try:
        report = benchmark(args)
    except KeyboardInterrupt:
        print("interrupted; our namespaces and processes are gone", file=sys.stderr)
        return 130
    after = netns_names()
    report["netns_left_behind"] = [n for n in after if n.startswith(report["netns_prefix"])]
    report["netns_unchanged"] = after == before  # other people's namespaces may come and go meanwhile
    text = json.dumps(report)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print_table(report["configs"], ["tcp", "udp"] if args.udp else ["tcp"])
    return 1 if report["netns_left_behind"] else 0


if __name__ == "__main__":
    sys.exit(main())
