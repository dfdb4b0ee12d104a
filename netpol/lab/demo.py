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
6. The last scenarios add the cluster-wide guardrails of `netpol/examples/guards.yaml`, one by
   one (ClusterNetworkPolicy, enforced by the same agents): an Admin Deny that overrides a
   namespace's NetworkPolicy allow, an Admin Pass that delegates back to the NetworkPolicy tier,
   a Baseline default-deny, and the NetworkPolicy that opens it for one pod.
7. One scenario changes nothing in the API: a pod sends TCP SYNs from a raw socket
   (`netpol.lab.spoof`) with the address of a pod the policies allow at the destination —
   netpol-cni's anti-spoofing must drop every one — then from its own address (the policies
   drop those). A sniffer in the destination's namespace counts what arrives; the allowed pod
   then sends as many SYNs, honestly, and the count ends when all of those have arrived (they
   were sent last: whatever was sent before them has had its chance) — no sleep.

With `--image REF` the nodes run the built image as the install bundle's DaemonSet says
(`netpol.lab.nodes.ImageNodes`: install-cni, then the agent, in podman; an HTTPS API server that
enforces the bundle's ClusterRole; pods attached by the plugin install-cni put on each node), and
one more scenario is a rolling update of one node's agent: SIGTERM to its container, then a new
pod, while chosen cells are probed again and again (`traffic.py watch`) from the SIGTERM until
the new agent's first sync — a denied cell must stay denied and an allowed one open throughout.

Exit 0 only if every cell of every scenario matched, no forged or blocked SYN arrived and every
honest one did (and, with an image, the rolling update left no window and the API server refused
no request). Everything is torn down at the end, on errors and on Ctrl-C/SIGTERM
(`netpol.lab.cluster`'s guarantees): namespaces, processes, containers and files.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
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
from netpol.lab.nodes import (
    API_ADDRESS,
    ImageNodes,
    NodeSoftware,
    assigned_addresses,
    checkout_nodes,
    image_nodes,
)
from netpol.lab.verify import (
    PROBE_TIMEOUT,
    PROCESS_SLACK,
    Attempt,
    Cell,
    CellResult,
    plan_cells,
    probe_and_confirm,
    probe_cells,
    process_output,
    start_servers,
    watch_cells,
)
from netpol.labels import Labels
from netpol.load.decode import decode_document
from netpol.load.encode import (
    encode_cluster_network_policy,
    encode_namespace,
    encode_network_policy,
    encode_node,
    encode_pod,
)
from netpol.load.manifests import build_state, load_state
from netpol.model import ClusterNetworkPolicy, ClusterState, IPAddress, NetworkPolicy, Node, Pod
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reference import Endpoint, allowed
from netpol.sources.events import KIND_NAMES
from netpol.testing.apiserver import FakeApiServer

THIRD_NODE = Node("node-c", Labels({"kubernetes.io/hostname": "node-c"}),
                  (ipaddress.ip_address("192.168.50.12"),), (ipaddress.ip_network("10.244.2.0/24"),))
ENFORCE_TIMEOUT = 60.0  # seconds a node gets to enforce a change: a hang bound (it takes ~50 ms)
LEAK_PROBE_SECONDS = 1.0  # how long the leak window is probed (at least one round, however long)
RESTARTED_NODE = "node-a"  # whose agent the rolling update replaces: it holds the most pods
# Cells watched through the rolling update, spread over those with an end on that node: enough
# SYNs on denied cells (one per cell every PROBE_TIMEOUT, ~17 ms apart in all) without slowing
# the new agent's start on a 2-core machine; allowed cells are tried every WATCH_INTERVAL.
WATCHED_DENIED, WATCHED_ALLOWED, WATCH_INTERVAL = 24, 12, 0.1
SPOOF_SCRIPT = str(Path(lab_spoof.__file__).resolve())
SPOOF_PACKETS = 20  # SYNs per sender in the spoofing scenario
SPOOF_TIMEOUT = 30.0  # seconds the sniffer waits for the honest SYNs: a hang bound (they take ~1 ms)
GUARDS = Path(__file__).resolve().parent.parent / "examples" / "guards.yaml"  # the guardrail scenarios'


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


@dataclass(frozen=True)
class RestartResult:
    """A rolling update of `node`'s agent, as the watched cells saw it. Times are seconds after
    the SIGTERM; attempts are those begun from the SIGTERM to the new agent's first sync."""

    node: str
    exit_code: int | None  # the old agent's (None: it outlived the grace period and podman)
    exited: float
    synced: float
    ready: float
    cells: tuple[Cell, ...]
    attempts: tuple[Attempt, ...]
    installed: tuple[str, ...] = ()  # what the new pod's init containers printed

    def tried(self, expected: bool, since: float = 0.0) -> tuple[int, int]:
        """(attempts, of them open) on the cells the semantics open (`expected`) or deny, begun
        from `since` to the first sync."""
        chosen = [a for a in self.attempts
                  if self.cells[a.cell].expected == expected and since <= a.started <= self.synced]
        return len(chosen), sum(1 for a in chosen if a.outcome == "open")

    @property
    def problems(self) -> list[str]:
        found = []
        if self.exit_code != 0:
            found.append(f"the old agent exited with {self.exit_code} on SIGTERM, not 0")
        denied, leaked = self.tried(False)
        allowed, opened = self.tried(True)
        if not denied or not allowed:
            found.append(f"too little was tried during the restart ({denied} connections on denied cells, "
                         f"{allowed} on allowed ones)")
        if leaked:
            found.append(f"{leaked} of {denied} connections on denied cells got through during the restart")
        if opened != allowed:
            found.append(f"{allowed - opened} of {allowed} connections on allowed cells failed "
                         "during the restart")
        return found

    def lines(self) -> list[str]:
        denied, leaked = self.tried(False)
        allowed, opened = self.tried(True)
        gap, gap_leaked = self.tried(False, self.exited)
        count = Counter(c.expected for c in self.cells)
        return [f"old agent exited {self.exit_code} {self.exited:.2f} s after SIGTERM; the new pod's agent "
                f"synced {self.synced:.2f} s after it, Ready at {self.ready:.2f} s",
                *(f"new pod: {line}" for line in self.installed),
                f"from SIGTERM to that first sync: {count[False]} denied cells tried {denied} times, "
                f"{leaked} got through ({gap} tries, {gap_leaked} through, with no agent running or synced); "
                f"{count[True]} allowed cells tried {allowed} times, {opened} got through",
                *(f"ROLLING UPDATE FAILED: {problem}" for problem in self.problems)]


def watched_cells(state: ClusterState, probes: Sequence[Probe], node: str) -> tuple[Cell, ...]:
    """WATCHED_DENIED denied and WATCHED_ALLOWED allowed IPv4 TCP cells with an end on `node`,
    spread evenly over all of them (pod to itself left out: it never crosses a rule). TCP only:
    the handshake is the kernel's, so a busy machine cannot make an open cell look blocked (a
    UDP echo needs the server process to run within the timeout)."""
    cells = [c for c in plan_cells(state, probes, node)
             if c.family == 4 and c.protocol == "TCP" and c.src != c.dst]

    def spread(chosen: list[Cell], count: int) -> list[Cell]:
        return chosen if len(chosen) <= count else [chosen[i * len(chosen) // count] for i in range(count)]
    return (*spread([c for c in cells if not c.expected], WATCHED_DENIED),
            *spread([c for c in cells if c.expected], WATCHED_ALLOWED))


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
        *guardrail_scenarios(load_state([str(GUARDS)]), tcp(8080)),
    ]


def guardrail_scenarios(guards: ClusterState, http: Probe) -> list[Scenario]:
    """`netpol/examples/guards.yaml`, one object per scenario (see the file's comments)."""
    def cluster_policy(name: str) -> ClusterNetworkPolicy:
        found = next((p for p in guards.cluster_policies if p.name == name), None)
        if found is None:
            raise LabError(f"{GUARDS} has no ClusterNetworkPolicy {name}")
        return found

    scrape = _policy(guards, "monitoring/prometheus-scrape")
    return [
        Scenario("Admin tier: frontend-guard denies monitoring → frontend, overriding frontend/allow-web",
                 lambda d: d.apply_cluster_policies([cluster_policy("frontend-guard")]), http),
        Scenario("Admin tier: delegate-prometheus (priority 5) passes Prometheus to the NetworkPolicy tier",
                 lambda d: d.apply_cluster_policies([cluster_policy("delegate-prometheus")]), http),
        Scenario("Baseline tier: monitoring-default-deny: monitoring sends to no pod",
                 lambda d: d.apply_cluster_policies([cluster_policy("monitoring-default-deny")]), http),
        Scenario("NetworkPolicy monitoring/prometheus-scrape opens the Baseline deny for Prometheus",
                 lambda d: d.apply_policies([scrape]), http),
    ]


ROLLING_UPDATE = Scenario(f"rolling update of {RESTARTED_NODE}'s agent: SIGTERM to its container, then a new "
                          "pod (install-cni, then the agent), cells probed throughout",
                          lambda d: d.rolling_update(RESTARTED_NODE), Probe("TCP", 5432))


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
    nodes: NodeSoftware  # what runs the agents and attaches the pods
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    out: TextIO = sys.stdout
    probes: Sequence[Probe] = ()
    leak: str = ""  # what the last add_pod measured while the agents did not know the pod
    spoofing: SpoofingResult | None = None  # what the last spoof measured
    restart: RestartResult | None = None  # what the last rolling update measured
    written_at: float = 0.0  # when a change that did more than write to the API wrote to it
    programs: dict[str, NodeProgram] = field(default_factory=dict)  # what the API's objects compiled to
    writes: list[tuple[str, int, list[dict[str, Any]]]] = field(default_factory=list)  # see `wrote`

    # changes

    def apply_policies(self, policies: Sequence[NetworkPolicy]) -> None:
        for policy in policies:
            self.api.apply(encode_network_policy(policy))
            self.wrote("NetworkPolicy")

    def apply_cluster_policies(self, policies: Sequence[ClusterNetworkPolicy]) -> None:
        for policy in policies:
            self.api.apply(encode_cluster_network_policy(policy))
            self.wrote("ClusterNetworkPolicy")

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
        pod = self.attach(pod, netns)
        with_pod = ClusterState.build(namespaces=self.state.namespaces, nodes=self.state.nodes,
                                      policies=self.state.policies, pods=(*self.state.pods, pod),
                                      cluster_policies=self.state.cluster_policies)
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

    def start_agent(self, node: str) -> AgentProcess:
        agent = self.agents[node] = AgentProcess(node, self.nodes.start_agent(node))
        agent.start_following()
        return agent

    def rolling_update(self, node: str) -> None:
        """What a DaemonSet's rolling update does to `node` (image only): SIGTERM to the agent's
        container, and once it is gone a new pod, install-cni first — while watched cells are
        probed without pause from before the SIGTERM until the new agent's first sync."""
        if not isinstance(self.nodes, ImageNodes):
            raise LabError("the rolling update runs the image's DaemonSet: netpol demo --image REF")
        cells = watched_cells(self.state, self.probes, node)
        watch = watch_cells(self.lab, cells, PROBE_TIMEOUT, WATCH_INTERVAL)
        sigterm = time.monotonic()
        exit_code, exited = self.nodes.stop_agent(node)
        self.start_agent(node)
        synced = self.wait_enforced({node: {}}, sigterm)
        self.nodes.wait_ready(node)
        ready = time.monotonic() - sigterm
        attempts = [dataclasses.replace(a, started=a.started - sigterm) for a in watch.stop()]
        self.restart = RestartResult(node, exit_code, exited, synced, ready, cells, tuple(attempts),
                                     tuple(self.nodes.pods[node].installed))

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
        counts = process_output(sniffer, f"the sniffer in {victim.key}", SPOOF_TIMEOUT + PROCESS_SLACK)
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
        return int(process_output(proc, f"the {kind.kind} sender in {sender.key}", PROCESS_SLACK))

    # the CNI plugin, as a kubelet/containerd would call it

    def cni(self, command: str, pod: Pod, netns: str) -> dict[str, Any] | None:
        return self.nodes.cni(command, pod, netns)

    def attach(self, pod: Pod, netns: str) -> Pod:
        """CNI ADD of `pod` into `netns`: the pod with the addresses it got (the manifest's when
        the demo pins them; else the IPAM plugin's, which the API is then told)."""
        got = assigned_addresses(self.cni("ADD", pod, netns))
        if self.nodes.pinned and got[:1] != pod.ips[:1]:
            raise LabError(f"host-local gave {pod.key} {got[0] if got else 'nothing'}, not {pod.ips[0]}")
        if not got:
            raise LabError(f"netpol-cni gave {pod.key} no address")
        return pod if self.nodes.pinned else dataclasses.replace(pod, ips=got)

    # observing

    def api_objects(self) -> list[dict[str, Any]]:
        """Every object the API server holds, with its kind."""
        return [dict(raw, kind=kind) for kind in KIND_NAMES for raw in self.api.objects(kind)]

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


@contextmanager
def live_cluster(example: ClusterState, out: TextIO, image: str | None = None) -> Iterator[Demo]:
    """The live cluster (see the module), with this checkout on the nodes or, given `image`,
    that image as its DaemonSet runs it; torn down on the way out."""
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
        nodes: NodeSoftware = (image_nodes(lab, image, work, stack) if image
                               else checkout_nodes(lab, work, stack))
        fabric_of = {n.name: n.fabric_addresses for n in plan.nodes}
        published = [dataclasses.replace(n, addresses=fabric_of.get(n.name, n.addresses))
                     for n in state.nodes]
        nodes.api.apply_all([*(encode_namespace(n) for n in state.namespaces),
                             *(encode_node(n) for n in published)])
        demo = Demo(lab, nodes.api, work, state, nodes, out=out)
        demo.programs = compile_cluster(demo.current_state())  # no pods yet
        for node in plan.nodes:
            demo.start_agent(node.name)
        setup = time.monotonic()
        pods = []
        for planned in state.pods:
            if not planned.host_network:
                netns = next(p.netns for p in plan.pods if p.key == planned.key)
                demo.sandbox(netns)
            pods.append(planned if planned.host_network else demo.attach(planned, netns))
        for pod in pods:
            nodes.api.apply(encode_pod(pod))
            demo.wrote("Pod")
        targets = demo.take_targets()
        demo.wait_enforced({node: targets.get(node, {}) for node in demo.agents}, setup)
        demo.state = demo.current_state()
        yield demo


def run_demo(example_path: str, out: TextIO = sys.stdout, image: str | None = None) -> int:
    example = load_state([example_path])
    steps = [*scenarios(example), *([ROLLING_UPDATE] if image else [])]
    mismatched = spoofed = restarted = 0
    started = time.monotonic()
    with live_cluster(example, out, image) as demo:
        probes = demo.probes = default_probes(on_three_nodes(example))
        start_servers(demo.lab, demo.state, probes)
        print(demo.nodes.describe(len(demo.lab.pod_netns)), file=out)
        for line in demo.nodes.notes():
            print(f"    {line}", file=out)
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
            for measured in (demo.spoofing, demo.restart):
                for line in measured.lines() if measured is not None else ():
                    print(f"    {line}", file=out)
            spoofed += demo.spoofing is not None and not demo.spoofing.held
            restarted += demo.restart is not None and bool(demo.restart.problems)
            demo.spoofing = demo.restart = None
            print(_matrix(new_state, results, step.focus), file=out)
            for r in bad[:20]:
                print(f"    MISMATCH {r}", file=out)
            for agent in demo.agents.values():
                while not agent.log.empty():
                    print(f"    agent {agent.log.get_nowait()}", file=out)
            out.flush()  # a scenario is done: whoever reads our output (a pipe) sees it now
        refused = demo.nodes.audit()
        for i, line in enumerate(refused or demo.nodes.summary()):
            print(f"{'' if i else chr(10)}{line}", file=out)
    total = time.monotonic() - started
    verdict = "every cell matched the semantics" if not mismatched else f"{mismatched} mismatches"
    if spoofed:
        verdict += ", and the spoofing scenario failed"
    if restarted:
        verdict += ", and the rolling update left a window"
    if refused:
        verdict += f", and the API server refused {len(refused)} request(s)"
    print(f"\n{len(steps)} scenarios, {verdict} ({total:.1f} s, everything torn down)", file=out)
    return 0 if not (mismatched or spoofed or restarted or refused) else 3
