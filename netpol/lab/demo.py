"""`netpol demo`: the whole system live, on three nodes built in network namespaces.

1. The bundled example cluster, spread over three nodes (node-c takes the monitoring pods),
   is built as a fabric and node namespaces (`netpol.lab.cluster`, bridge `cni0`, no routes between
   nodes: the agents add them).
2. The in-process API server (`netpol.testing.apiserver`) listens inside the fabric, where
   the nodes reach it; it holds the namespaces and Node objects (InternalIP, podCIDR).
3. One `netpol agent` process per node runs inside that node's namespace
   (`ip netns exec … netpol agent --kubeconfig …`), watching the API server.
4. Every pod is a namespace attached by `netpol-cni` (ADD, with host-local IPAM asked for the
   pod's address from the manifests), then published to the API server, as a kubelet would.
5. Scenarios change the cluster through the API. After each, the demo waits until every node
   whose program changed has logged a successful sync that took the change (the "synced" log
   record says up to which resourceVersion each kind was taken) — the change → enforcement
   time — then probes every pair of pods on every port with real packets, compares each cell
   with `netpol.semantics.reference`, and prints a matrix.
6. One scenario changes nothing in the API: a pod sends TCP SYNs from a raw socket
   (`netpol.lab.spoof`) with the address of a pod the policies allow at the destination —
   netpol-cni's anti-spoofing must drop every one — then from its own address (the policies
   drop those). A sniffer in the destination's namespace counts what arrives; the allowed pod
   then sends as many SYNs, honestly, and the count ends when all of those have arrived (they
   were sent last: whatever was sent before them has had its chance) — no sleep.

Exit 0 only if every cell of every scenario matched, no forged or blocked SYN arrived and every
honest one did. Everything is torn down at the end, on errors and on Ctrl-C/SIGTERM
(`netpol.lab.cluster`'s guarantees): namespaces, processes, and files.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from netpol.compile.compiler import compile_cluster
from netpol.compile.ir import NodeProgram
from netpol.errors import LabError
from netpol.lab import spoof as lab_spoof
from netpol.lab.cluster import FABRIC_BRIDGE, UPLINK, Lab, LabPlan, open_lab, plan_lab
from netpol.lab.verify import (
    PROBE_TIMEOUT,
    PROCESS_SLACK,
    CellResult,
    plan_cells,
    probe_and_confirm,
    probe_cells,
    start_servers,
)
from netpol.labels import Labels
from netpol.load.decode import decode_document
from netpol.load.encode import encode_namespace, encode_network_policy, encode_node, encode_pod
from netpol.load.manifests import build_state, load_state
from netpol.model import ClusterState, IPAddress, NetworkPolicy, Node, Pod
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reference import Endpoint, allowed
from netpol.testing.apiserver import FakeApiServer

API_ADDRESS = ipaddress.ip_address("192.168.254.1")  # the API server, on the fabric bridge
API_PORT = 6443
THIRD_NODE = Node("node-c", Labels({"kubernetes.io/hostname": "node-c"}),
                  (ipaddress.ip_address("192.168.50.12"),), (ipaddress.ip_network("10.244.2.0/24"),))
ENFORCE_TIMEOUT = 60.0  # seconds a node gets to enforce a change: a hang bound (it takes ~50 ms)
LEAK_PROBE_SECONDS = 1.0  # how long the leak window is probed (at least one round, however long)
REFERENCE_PLUGINS = Path("/usr/lib/cni")
SPOOF_SCRIPT = str(Path(lab_spoof.__file__).resolve())
SPOOF_PACKETS = 20  # SYNs per sender in the spoofing scenario
SPOOF_TIMEOUT = 30.0  # seconds the sniffer waits for the honest SYNs: a hang bound (they take ~1 ms)


# ── the cluster (pure) ──────────────────────────────────────────────────────────────────────


def on_three_nodes(state: ClusterState) -> ClusterState:
    """The example with a third node: the monitoring namespace's pods move to node-c, their
    addresses renumbered into its podCIDR (same last octet)."""
    cidr = THIRD_NODE.pod_cidrs[0]
    pods: list[Pod] = []
    for original in state.pods:
        pod = original
        if pod.namespace == "monitoring" and not pod.host_network:
            moved = sum(1 for p in pods if p.node_name == THIRD_NODE.name)
            address = ipaddress.ip_address(int(cidr.network_address) + 40 + moved)
            pod = dataclasses.replace(pod, node_name=THIRD_NODE.name, ips=(address,))
        pods.append(pod)
    return ClusterState.build(namespaces=state.namespaces, pods=pods, policies=state.policies,
                              nodes=(*state.nodes, THIRD_NODE))


def without_node_routes(plan: LabPlan) -> LabPlan:
    """Keep only the on-link routes between node addresses: routes to pod subnets are the
    agents' job (host-gw), and the demo shows they do it."""
    nodes = tuple(dataclasses.replace(n, routes=tuple(r for r in n.routes if "dev" in r)) for n in plan.nodes)
    return dataclasses.replace(plan, nodes=nodes)


@dataclass
class Scenario:
    title: str
    change: Callable[[Demo], None]
    focus: Probe  # the port whose matrix is printed


@dataclass(frozen=True)
class Spoofing:
    """`attacker` sends TCP SYNs to `victim`:`port` from `peer`'s IPv4 address (the policies
    allow the peer there), then from its own (they do not); then `peer` sends the same, honestly."""

    attacker: str
    peer: str
    victim: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.victim}:{self.port}"


SPOOF_KINDS = ("forged", "own", "honest")  # in the order they are sent: the honest SYNs close the count
# db/postgres-0 admits 5432 from backend's api pods (db/allow-postgres), not from the frontend.
# All three on node-a: bridged frames the agent's ruleset alone would pass, forged source and all.
SPOOFING = Spoofing("frontend/web-1", "backend/api-1", "db/postgres-0", 5432)


@dataclass(frozen=True)
class SpoofingResult:
    spoofing: Spoofing
    forged: IPAddress  # the peer's address, which the attacker forged
    sent: Mapping[str, int]  # kind (SPOOF_KINDS) → SYNs sent
    arrived: Mapping[str, int]  # kind → SYNs that reached the victim's interface

    @property
    def problems(self) -> list[str]:
        """What went wrong: a forged SYN arrived, or one from the attacker's own address (the
        policies block it), or an honest one did not (or none was sent)."""
        found = []
        if self.arrived["forged"]:
            found.append(f"{self.arrived['forged']} forged SYN(s) arrived")
        if self.arrived["own"]:
            found.append(f"{self.arrived['own']} SYN(s) from {self.spoofing.attacker}'s own address arrived")
        if not 0 < self.sent["honest"] == self.arrived["honest"]:
            found.append(f"{self.arrived['honest']} of {self.sent['honest']} honest SYNs arrived "
                         f"within {SPOOF_TIMEOUT:.0f} s")
        return found

    @property
    def held(self) -> bool:
        return not self.problems

    def tally(self, kind: str) -> str:
        return f"{self.sent[kind]} sent, {self.arrived[kind]} arrived"

    def lines(self) -> list[str]:
        s = self.spoofing
        return [f"spoofing: {s.attacker} forged {s.peer}'s address ({self.forged}) → {s.target}: "
                f"{self.tally('forged')}",
                f"honest {s.peer} → {s.target}: {self.tally('honest')}; "
                f"{s.attacker} from its own address: {self.tally('own')}",
                *(f"SPOOFING FAILED: {problem}" for problem in self.problems)]


def _ipv4(pod: Pod) -> IPAddress:
    found = next((ip for ip in pod.ips if ip.version == 4), None)
    if found is None:
        raise LabError(f"the spoofing scenario needs an IPv4 address on {pod.key}")
    return found


def _reaches(state: ClusterState, src: Pod, dst: Pod, port: int) -> bool:
    """Whether the semantics let `src` open TCP `port` on `dst` (IPv4)."""
    return allowed(state, Endpoint(_ipv4(src), src), Endpoint(_ipv4(dst), dst), port, "TCP").allowed


def _policy(state: ClusterState, key: str) -> NetworkPolicy:
    found = next((p for p in state.policies if p.key == key), None)
    if found is None:
        raise LabError(f"the example has no policy {key}")
    return found


def _nothing(demo: Demo) -> None:
    pass


def scenarios(example: ClusterState) -> list[Scenario]:
    deny = [p for p in example.policies if p.name == "default-deny"]
    dns = [p for p in example.policies if p.name == "allow-dns"]
    def tcp(port: int) -> Probe:
        return Probe("TCP", port)

    web_to_api = [_policy(example, "backend/allow-api"), _policy(example, "frontend/allow-web")]
    rest = [p for p in example.policies if p not in (*deny, *dns, *web_to_api)]
    web3 = Pod("frontend", "web-3", Labels({"app": "web", "tier": "frontend"}),
               (ipaddress.ip_address("10.244.2.13"),), THIRD_NODE.name)
    web3 = dataclasses.replace(web3, ports=next(p for p in example.pods if p.key == "frontend/web-1").ports)
    return [
        Scenario("no policies: every pod reaches every pod", _nothing, tcp(8443)),
        Scenario("default-deny in frontend, backend and db (with DNS egress allowed)",
                 lambda d: d.apply_policies([*deny, *dns]), tcp(8443)),
        Scenario("allow frontend → backend on the named port `api` (8443): ingress and egress",
                 lambda d: d.apply_policies(web_to_api), tcp(8443)),
        Scenario("the rest of the example's policies (postgres, metrics, grafana)",
                 lambda d: d.apply_policies(rest), tcp(5432)),
        Scenario(f"spoofing: {SPOOFING.attacker} forges {SPOOFING.peer}'s address towards {SPOOFING.target} "
                 "(no API change)", lambda d: d.spoof(SPOOFING), tcp(5432)),
        Scenario("relabel frontend/web-2 app=web → app=canary: it loses the backend",
                 lambda d: d.relabel("frontend/web-2", {"app": "canary", "tier": "frontend"}), tcp(8443)),
        Scenario("delete db/allow-postgres: the API can no longer reach postgres",
                 lambda d: d.delete_policy("db/allow-postgres"), tcp(5432)),
        Scenario("add pod frontend/web-3 on node-c (netpol-cni ADD): it reaches the backend",
                 lambda d: d.add_pod(web3), tcp(8443)),
        Scenario("remove pod backend/worker-1 (netpol-cni DEL)", lambda d: d.remove_pod("backend/worker-1"),
                 tcp(8443)),
    ]


# ── the live cluster (I/O) ──────────────────────────────────────────────────────────────────


Revisions = Mapping[str, int]  # kind → the resourceVersion a sync must have taken that kind to


def _revision(version: object) -> int:
    """A resourceVersion of the demo's API server as a number (-1 if it is none)."""
    return int(version) if isinstance(version, str) and version.isdigit() else -1


@dataclass
class AgentProcess:
    node: str
    proc: subprocess.Popen[str]
    # (monotonic time read, resource_versions) of every "synced" log record
    syncs: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    log: queue.Queue[str] = field(default_factory=queue.Queue)
    follower: threading.Thread | None = None

    def start_following(self) -> None:
        self.follower = threading.Thread(target=self.follow, name=f"log-{self.node}", daemon=True)
        self.follower.start()

    def follow(self) -> None:
        """Read the agent's JSON log lines (stderr) until it exits."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                self.log.put(f"{self.node}: {line.rstrip()}")  # not a log record: a crash report
                continue
            if record.get("msg") == "synced":
                self.syncs.append((time.monotonic(), dict(record.get("resource_versions") or {})))
            elif record.get("level") in ("warning", "error"):
                self.log.put(f"{self.node}: {record.get('msg')} {record.get('error', '')}".rstrip())

    def enforced_at(self, revisions: Revisions) -> float | None:
        """When the first sync was logged that had taken every kind in `revisions` at least to
        its revision (each kind's stream is ordered: so it holds every change up to there)."""
        for at, versions in list(self.syncs):
            if all(_revision(versions.get(kind)) >= revision for kind, revision in revisions.items()):
                return at
        return None

    def last_words(self) -> str:
        """What an exited agent said: read to the end of its log first (EOF comes at its exit)."""
        if self.follower is not None:
            self.follower.join(30)
        return " | ".join(self.log.get_nowait() for _ in range(self.log.qsize()))


@dataclass
class Demo:
    lab: Lab
    api: FakeApiServer
    work: Path
    state: ClusterState  # what the API server holds now (decoded)
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    out: TextIO = sys.stdout
    probes: Sequence[Probe] = ()
    leak: str = ""  # what the last add_pod measured while the agents did not know the pod
    spoofing: SpoofingResult | None = None  # what the last spoof measured
    written_at: float = 0.0  # when a change that did more than write to the API wrote to it
    programs: dict[str, NodeProgram] = field(default_factory=dict)  # what the API's objects compiled to
    writes: list[tuple[str, int, list[dict[str, Any]]]] = field(default_factory=list)  # see `wrote`

    # changes

    def apply_policies(self, policies: Sequence[NetworkPolicy]) -> None:
        for policy in policies:
            self.api.apply(encode_network_policy(policy))
            self.wrote("NetworkPolicy")

    def delete_policy(self, key: str) -> None:
        namespace, name = key.split("/")
        self.api.delete("NetworkPolicy", name, namespace)
        self.wrote("NetworkPolicy")

    def relabel(self, key: str, labels: dict[str, str]) -> None:
        pod = next(p for p in self.state.pods if p.key == key)
        self.api.apply(encode_pod(dataclasses.replace(pod, labels=Labels(labels))))
        self.wrote("Pod")

    def wrote(self, kind: str) -> None:
        """After one write of `kind` to the API: its revision and the objects it left (a copy,
        cheap: the compile waits for `take_targets`, so writes follow each other closely)."""
        self.writes.append((kind, self.api.revision, self.api_objects()))

    def take_targets(self) -> dict[str, dict[str, int]]:
        """For every node whose program the writes since the last call changed: the revision,
        per kind written, of the last write that changed it. A node a write leaves alone logs no
        sync for it, so only a write that changed a node's program can be waited for."""
        targets: dict[str, dict[str, int]] = {}
        for kind, revision, objects in self.writes:
            programs = compile_cluster(decoded(objects))
            for node, program in programs.items():
                if program != self.programs.get(node):
                    targets.setdefault(node, {})[kind] = revision
            self.programs = programs
        self.writes = []
        return {node: revisions for node, revisions in targets.items() if node in self.agents}

    def sandbox(self, netns: str) -> None:
        """A pod's network namespace with its loopback up (a runtime's `loopback` plugin)."""
        self.lab.add_netns(netns)
        self.lab.batch(netns, [("link", "set", "lo", "up")])

    def add_pod(self, pod: Pod) -> None:
        """CNI ADD, then — before the pod is published, while no agent knows it — try to reach
        it and from it, on cells its policies will allow: the leak window, measured."""
        netns = f"np-{self.lab.plan.tag}-p{len(self.lab.pod_netns)}"
        self.sandbox(netns)
        self.lab.pod_netns[pod.key] = netns
        self.cni("ADD", pod, netns)
        with_pod = ClusterState.build(namespaces=self.state.namespaces, nodes=self.state.nodes,
                                      policies=self.state.policies, pods=(*self.state.pods, pod))
        start_servers(self.lab, with_pod, self.probes, only=[pod.key])
        cells = [c for c in plan_cells(with_pod, self.probes, None)
                 if (c.src == pod.key) != (c.dst == pod.key) and c.expected and c.family == 4]
        attempts = opened = 0
        started = time.monotonic()
        while cells:  # at least one round, however late this thread gets to run
            outcomes = probe_cells(self.lab, cells, range(len(cells)), PROBE_TIMEOUT)
            attempts += len(outcomes)
            opened += sum(1 for o in outcomes.values() if o == "open")
            if time.monotonic() - started >= LEAK_PROBE_SECONDS:
                break
        self.leak = (f"leak window: {attempts} connections tried to and from {pod.key} after CNI ADD, "
                     f"before the agents knew it ({len(cells)} cells its policies allow): "
                     f"{opened} got through")
        self.written_at = time.monotonic()  # enforcement is timed from the API write
        self.api.apply(encode_pod(pod))
        self.wrote("Pod")

    def remove_pod(self, key: str) -> None:
        pod = next(p for p in self.state.pods if p.key == key)
        self.api.delete("Pod", pod.name, pod.namespace)
        self.wrote("Pod")
        self.cni("DEL", pod, self.lab.pod_netns[key])

    # spoofing: no change in the API, an attempt on the data plane

    def spoof(self, spoofing: Spoofing) -> None:
        """The attempt `spoofing` describes: a sniffer in the victim's namespace, then the senders
        one after the other (forged, own address, honest) and the sniffer's counts."""
        pods = {p.key: p for p in self.state.pods}
        missing = [k for k in (spoofing.attacker, spoofing.peer, spoofing.victim) if k not in pods]
        if missing:
            raise LabError(f"the spoofing scenario names pods the cluster does not have: {missing}")
        attacker, peer, victim = pods[spoofing.attacker], pods[spoofing.peer], pods[spoofing.victim]
        allowed_peer = _reaches(self.state, peer, victim, spoofing.port)
        if not allowed_peer or _reaches(self.state, attacker, victim, spoofing.port):
            raise LabError(f"the spoofing scenario needs {peer.key} allowed to {spoofing.target} "
                           f"and {attacker.key} not")
        forged = _ipv4(peer)
        senders = {"forged": (attacker, forged), "own": (attacker, _ipv4(attacker)), "honest": (peer, forged)}
        expected = [lab_spoof.Expected(kind, str(senders[kind][1]), lab_spoof.MARKER_SEQ + i)
                    for i, kind in enumerate(SPOOF_KINDS)]
        sniffer = self.start_sniffer(victim, spoofing.port, expected)
        sent = {e.kind: self.send_syns(senders[e.kind][0], e, _ipv4(victim), spoofing.port) for e in expected}
        counts = _output(sniffer, f"the sniffer in {victim.key}", SPOOF_TIMEOUT + PROCESS_SLACK)
        self.spoofing = SpoofingResult(spoofing, forged, sent, json.loads(counts))

    def start_sniffer(self, victim: Pod, port: int,
                      expected: Sequence[lab_spoof.Expected]) -> subprocess.Popen[str]:
        """The counting sniffer on the victim's interface, once it is listening."""
        argv = [sys.executable, SPOOF_SCRIPT, "sniff", f"--ifname={UPLINK}", f"--dst={_ipv4(victim)}",
                f"--dport={port}", *(f"--expect={e.kind},{e.src},{e.seq}" for e in expected),
                f"--until={SPOOF_KINDS[-1]}", f"--count={SPOOF_PACKETS}", f"--timeout={SPOOF_TIMEOUT}"]
        proc = self.lab.spawn(self.lab.pod_netns[victim.key], argv)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise LabError(f"the sniffer in {victim.key} did not start: {proc.communicate()[1].strip()}")
        return proc

    def send_syns(self, sender: Pod, kind: lab_spoof.Expected, dst: IPAddress, port: int) -> int:
        """SPOOF_PACKETS SYNs of `kind` from a raw socket in `sender`'s namespace: how many it sent."""
        argv = [sys.executable, SPOOF_SCRIPT, "send", f"--src={kind.src}", f"--dst={dst}", f"--dport={port}",
                f"--seq={kind.seq}", f"--count={SPOOF_PACKETS}"]
        proc = self.lab.spawn(self.lab.pod_netns[sender.key], argv)
        return int(_output(proc, f"the {kind.kind} sender in {sender.key}", PROCESS_SLACK))

    # the CNI plugin, as a kubelet/containerd would call it

    def cni_config(self, pod: Pod) -> dict[str, Any]:
        plan = next(n for n in self.lab.plan.nodes if n.name == pod.node_name)
        gateway = next(g for g in plan.gateways if g.version == 4)
        return {"cniVersion": "1.0.0", "name": "demo", "type": "netpol-cni", "bridge": "cni0",
                "isGateway": True, "isDefaultGateway": True, "dataDir": str(self.work / "cni-state"),
                "runtimeConfig": {"ips": [f"{ip}/{gateway.network.prefixlen}" for ip in pod.ips]},
                "ipam": {"type": "host-local", "dataDir": str(self.work / "ipam" / plan.name),
                         "ranges": [[{"subnet": str(gateway.network), "gateway": str(gateway.ip)}]]}}

    def cni(self, command: str, pod: Pod, netns: str) -> dict[str, Any] | None:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": pod.key.replace("/", "_"), "CNI_NETNS": f"/run/netns/{netns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": str(self.work / "bin")}
        node_netns = self.lab.node_netns[pod.node_name or ""]
        done = subprocess.run(["ip", "netns", "exec", node_netns, str(self.work / "bin" / "netpol-cni")],
                              input=json.dumps(self.cni_config(pod)), env=env, capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise LabError(f"netpol-cni {command} for {pod.key} failed: "
                           f"{done.stdout.strip()} {done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    # observing

    def api_objects(self) -> list[dict[str, Any]]:
        """Every object the API server holds, with its kind."""
        return [dict(raw, kind=kind) for kind in ("Namespace", "Node", "Pod", "NetworkPolicy")
                for raw in self.api.objects(kind)]

    def current_state(self) -> ClusterState:
        return decoded(self.api_objects())

    def wait_enforced(self, targets: Mapping[str, Revisions], since: float) -> float:
        """Seconds from `since` until every node in `targets` logged a sync that had taken what
        its target says (an empty target: any sync). Read from the agents' own log records, so
        a sync that started before the write is never taken for one that enforces it."""
        deadline = time.monotonic() + ENFORCE_TIMEOUT
        while True:
            done = {n: self.agents[n].enforced_at(revisions) for n, revisions in targets.items()}
            if all(t is not None for t in done.values()):
                return max([t - since for t in done.values() if t is not None], default=0.0)
            for agent in self.agents.values():
                if agent.proc.poll() is not None:
                    raise LabError(f"the agent of {agent.node} exited ({agent.proc.returncode}): "
                                   f"{agent.last_words()}")
            if time.monotonic() > deadline:
                raise LabError(f"nodes {sorted(n for n, t in done.items() if t is None)} did not sync "
                               f"within {ENFORCE_TIMEOUT:.0f} s")
            time.sleep(0.005)


def _output(proc: subprocess.Popen[str], what: str, timeout: float) -> str:
    """What a process the lab spawned printed, once it exited; LabError if it failed or hung."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise LabError(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise LabError(f"{what} failed: {err.strip() or proc.returncode}")
    return out


def decoded(objects: Sequence[dict[str, Any]]) -> ClusterState:
    """The cluster these API objects describe (the demo publishes only valid ones)."""
    found = []
    for raw in objects:
        decoded_objects, problems = decode_document(raw, "api")
        if problems:
            raise LabError(f"the demo published an invalid object: {problems[0]}")
        found += decoded_objects
    return build_state(found)


def _matrix(state: ClusterState, results: Sequence[CellResult], focus: Probe) -> str:
    """Rows sources, columns destinations, on the focus port: ● open, · blocked, ! mismatch."""
    pods = sorted({r.cell.src for r in results} | {r.cell.dst for r in results})
    cell = {(r.cell.src, r.cell.dst): r for r in results
            if r.cell.port == focus.port and r.cell.protocol == focus.protocol and r.cell.family == 4}
    width = max(len(p) for p in pods) if pods else 0
    lines = [f"    {focus.port}/{focus.protocol}  (rows: from, columns: to; ● open · blocked ! mismatch)"]
    lines.append(" " * (width + 5) + " ".join(f"{i:>2}" for i in range(len(pods))))
    for i, src in enumerate(pods):
        marks = []
        for dst in pods:
            r = cell.get((src, dst))
            marks.append(" -" if r is None else (" !" if r.mismatch else (" ●" if r.kernel_open else " ·")))
        lines.append(f"  {i:>2} {src:<{width}} {''.join(marks)}")
    return "\n".join(lines)


def _install_plugins(work: Path) -> None:
    """netpol-cni as a node gets it: its installer, run as a process (the plugin shares no code
    with netpol; it is installed beside it, as the `netpol_cni` package of this distribution)."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    installer = [sys.executable, "-m", "netpol_cni.install", str(work / "bin"), "--lib", str(work / "lib"),
                 "--python", python]
    done = subprocess.run(installer, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"installing netpol-cni failed: {done.stderr.strip() or done.returncode}")
    host_local = REFERENCE_PLUGINS / "host-local"
    if not host_local.exists():
        raise LabError("the demo needs host-local (Debian: apt-get install containernetworking-plugins)")
    (work / "bin" / "host-local").symlink_to(host_local)


@contextmanager
def live_cluster(example: ClusterState, out: TextIO) -> Iterator[Demo]:
    state = on_three_nodes(example)
    plan = without_node_routes(plan_lab(state))
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="netpol-demo-"))
        stack.callback(shutil.rmtree, work, True)
        lab = stack.enter_context(open_lab(plan, with_pods=False))
        fabric = plan.fabric_netns
        lab.batch(fabric, [("addr", "add", f"{API_ADDRESS}/32", "dev", FABRIC_BRIDGE),
                           *(("route", "add", f"{a}/32", "dev", FABRIC_BRIDGE)
                             for n in plan.nodes for a in n.fabric_addresses if a.version == 4)])
        for node in plan.nodes:
            lab.batch(node.netns, [("route", "add", f"{API_ADDRESS}/32", "dev", UPLINK)])
        api = FakeApiServer(bookmark_interval=5.0).start(str(API_ADDRESS), API_PORT, netns=fabric)
        stack.callback(api.stop)
        kubeconfig = api.kubeconfig(work / "kubeconfig")
        _install_plugins(work)
        fabric_of = {n.name: n.fabric_addresses for n in plan.nodes}
        nodes = [dataclasses.replace(n, addresses=fabric_of.get(n.name, n.addresses)) for n in state.nodes]
        api.apply_all([*(encode_namespace(n) for n in state.namespaces), *(encode_node(n) for n in nodes)])
        demo = Demo(lab, api, work, state, out=out)
        demo.programs = compile_cluster(demo.current_state())  # no pods yet
        for node in plan.nodes:
            proc = lab.spawn(node.netns, [sys.executable, "-m", "netpol.cli", "agent", "--node", node.name,
                                          "--kubeconfig", str(kubeconfig), "--listen", "127.0.0.1:9909",
                                          "--min-interval", "0.005", "--max-interval", "0.1"])
            agent = AgentProcess(node.name, proc)
            agent.start_following()
            demo.agents[node.name] = agent
        setup = time.monotonic()
        for pod in (p for p in state.pods if not p.host_network):
            plan_pod = next(p for p in plan.pods if p.key == pod.key)
            demo.sandbox(plan_pod.netns)
            result = demo.cni("ADD", pod, plan_pod.netns)
            assigned = result["ips"][0]["address"].split("/")[0] if result else ""
            if assigned != str(pod.ips[0]):
                raise LabError(f"host-local gave {pod.key} {assigned}, not {pod.ips[0]}")
        for pod in state.pods:
            api.apply(encode_pod(pod))
            demo.wrote("Pod")
        targets = demo.take_targets()
        demo.wait_enforced({node: targets.get(node, {}) for node in demo.agents}, setup)
        yield demo


def run_demo(example_path: str, out: TextIO = sys.stdout) -> int:
    example = load_state([example_path])
    steps = scenarios(example)
    mismatched = spoofed = 0
    started = time.monotonic()
    with live_cluster(example, out) as demo:
        full = on_three_nodes(example)
        probes = demo.probes = default_probes(full)
        start_servers(demo.lab, full, probes)
        print(f"3 nodes, {len(demo.lab.pod_netns)} pods attached by netpol-cni, one agent per node "
              f"(inside its namespace), API server at http://{API_ADDRESS}:{API_PORT}", file=out)
        for number, step in enumerate(steps, 1):
            changed_at = time.monotonic()
            step.change(demo)
            changed_at, demo.written_at = demo.written_at or changed_at, 0.0
            targets = demo.take_targets()
            touched = set(targets)
            enforced = demo.wait_enforced(targets, changed_at)
            new_state = demo.state = demo.current_state()
            results = probe_and_confirm(demo.lab, plan_cells(new_state, probes, None))
            bad = [r for r in results if r.mismatch]
            mismatched += len(bad)
            print(f"\n[{number}/{len(steps)}] {step.title}", file=out)
            print(f"    enforced on {', '.join(sorted(touched)) or 'no node (nothing to change)'} "
                  f"{enforced * 1000:.0f} ms after the API write; {len(results)} cells probed, "
                  f"{sum(r.kernel_open for r in results)} open, {len(bad)} mismatches", file=out)
            if demo.leak:
                print(f"    {demo.leak}", file=out)
                demo.leak = ""
            if demo.spoofing is not None:
                for line in demo.spoofing.lines():
                    print(f"    {line}", file=out)
                spoofed += not demo.spoofing.held
                demo.spoofing = None
            print(_matrix(new_state, results, step.focus), file=out)
            for r in bad[:20]:
                print(f"    MISMATCH {r}", file=out)
            for agent in demo.agents.values():
                while not agent.log.empty():
                    print(f"    agent {agent.log.get_nowait()}", file=out)
            out.flush()  # a scenario is done: whoever reads our output (a pipe) sees it now
    total = time.monotonic() - started
    verdict = "every cell matched the semantics" if not mismatched else f"{mismatched} mismatches"
    if spoofed:
        verdict += ", and the spoofing scenario failed"
    print(f"\n{len(steps)} scenarios, {verdict} ({total:.1f} s, everything torn down)", file=out)
    return 0 if not mismatched and not spoofed else 3
