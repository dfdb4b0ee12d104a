"""`netpol verify`: real packets through the compiled rulesets, every cell checked against the
reference semantics.

`netpol.lab.cluster` builds the cluster in network namespaces. This module decides the cells and what
the semantics expect of each (`plan_cells`, pure), loads every node's ruleset, runs one server
per pod and per probed node and one concurrent prober per source pod (`verify`, I/O), compares
(`compare`, pure) and writes the report (`format_report`, pure). A cell is (source pod,
destination pod, port and protocol, address family both pods have), or a pod → node cell
(source pod, node address, port and protocol, its family): from every pod to every address
that the lab puts on a node's namespace and the state knows as that node's
(`plan_node_targets`), its own node and the others. A mismatch is probed once more,
patiently, before it is reported, so a slow machine is not mistaken for a wrong ruleset.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from netpol.backends.nftables import render as render_nftables
from netpol.compile.compiler import compile_cluster, require_node
from netpol.compile.ir import NodeProgram
from netpol.errors import LabError
from netpol.lab import traffic as lab_traffic
from netpol.lab.cluster import Lab, LabPlan, lab_pods, open_lab, plan_lab
from netpol.model import ClusterState, IPAddress, Pod
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reference import Endpoint, allowed, endpoint

Renderer = Callable[[NodeProgram], str]
NodeTargets = Mapping[str, tuple[IPAddress, ...]]  # node name → the addresses probed on it
PROBE_TIMEOUT = 0.4  # seconds a blocked cell costs; an open one answers within microseconds
# Seconds a mismatch gets on its second try, before it is reported. Only a cell the semantics
# says is open can be wronged by a slow machine (a handshake or an echo that comes late), and
# its second try ends as soon as it answers: so this is a hang bound, paid in full only by a
# cell that really is blocked.
CONFIRM_TIMEOUT = 30.0
IPTABLES_VARIANTS = {"iptables": "nft", "iptables-legacy": "legacy"}  # --backend → apply_iptables variant
PROBED_PROTOCOLS = ("TCP", "UDP")
TRAFFIC_SCRIPT = str(Path(lab_traffic.__file__).resolve())
PROCESS_SLACK = 30.0  # seconds on top of the probing itself before a prober counts as hung


@dataclass(frozen=True)
class Cell:
    """One question: can `src` open (`port`, `protocol`) on `dst` over this address family?
    `dst` is a pod key, or with `to_node` a node's name (a pod → node cell, to `dst_ip`)."""

    src: str
    dst: str
    src_ip: IPAddress
    dst_ip: IPAddress
    port: int
    protocol: str
    expected: bool  # the semantics' answer
    to_node: bool = False

    @property
    def family(self) -> int:
        return self.dst_ip.version

    def __str__(self) -> str:
        dst = f"node {self.dst} ({self.dst_ip})" if self.to_node else self.dst
        return f"{self.src} -> {dst} {self.port}/{self.protocol} (IPv{self.family})"


@dataclass(frozen=True)
class CellResult:
    """A cell and what the kernel did: `open`, `blocked`, `refused` or `error: …`."""

    cell: Cell
    outcome: str
    retried: bool = False  # a mismatch on the first try, probed again

    @property
    def kernel_open(self) -> bool:
        return self.outcome == "open"

    @property
    def mismatch(self) -> bool:
        return self.kernel_open != self.cell.expected

    def __str__(self) -> str:
        expected = "open" if self.cell.expected else "blocked"
        return f"{self.cell}: kernel={self.outcome} semantics={expected}"


@dataclass(frozen=True)
class Report:
    results: tuple[CellResult, ...]
    notes: tuple[str, ...]
    nodes: int
    pods: int
    probes: int
    seconds: float

    @property
    def mismatches(self) -> tuple[CellResult, ...]:
        return tuple(r for r in self.results if r.mismatch)


# ── pure: cells, comparison, report ─────────────────────────────────────────────────────────


def split_probes(probes: Iterable[Probe]) -> tuple[tuple[Probe, ...], tuple[str, ...]]:
    """The probes verify sends (TCP, UDP), and a note for those it cannot (SCTP, ICMP)."""
    usable = tuple(p for p in probes if p.protocol in PROBED_PROTOCOLS and p.port is not None)
    skipped = [str(p) for p in probes if p not in usable]
    note = (f"skipped {len(skipped)} probe(s) verify cannot send (only TCP and UDP): {', '.join(skipped)}",)
    return usable, note if skipped else ()


def _pair_cells(state: ClusterState, src: Pod, dst: Pod, probe: Probe) -> Iterator[Cell]:
    assert probe.port is not None  # split_probes keeps only probes with ports
    for s in src.ips:
        for d in dst.ips:
            if s.version == d.version:
                verdict = allowed(state, Endpoint(s, src), Endpoint(d, dst), probe.port, probe.protocol)
                yield Cell(src.key, dst.key, s, d, probe.port, probe.protocol, verdict.allowed)


def _node_cells(state: ClusterState, src: Pod, node: str, addresses: Iterable[IPAddress],
                probe: Probe) -> Iterator[Cell]:
    assert probe.port is not None  # split_probes keeps only probes with ports
    for s in src.ips:
        for d in addresses:
            if s.version == d.version:
                verdict = allowed(state, Endpoint(s, src), endpoint(state, d), probe.port, probe.protocol)
                yield Cell(src.key, node, s, d, probe.port, probe.protocol, verdict.allowed, to_node=True)


def plan_cells(state: ClusterState, probes: Sequence[Probe], only_node: str | None = None,
               node_targets: NodeTargets | None = None) -> tuple[Cell, ...]:
    """Every (source pod, destination pod, probe, shared family) the lab can send, with the
    semantics' verdict; then, given `node_targets` (see `plan_node_targets`), every (source pod, node
    address, probe) of a shared family: pod → node cells. With `only_node`, only cells with an
    end on that node (a pod → node cell has two: the source pod's node and the target node)."""
    pods = lab_pods(state)
    pod_cells = (
        cell
        for src in pods for dst in pods
        if only_node is None or only_node in (src.node_name, dst.node_name)
        for probe in probes
        for cell in _pair_cells(state, src, dst, probe)
    )
    node_cells = (
        cell
        for src in pods for node, addresses in sorted((node_targets or {}).items())
        if only_node is None or only_node in (src.node_name, node)
        for probe in probes
        for cell in _node_cells(state, src, node, addresses, probe)
    )
    return (*pod_cells, *node_cells)


def _owner_is(state: ClusterState, ip: IPAddress, node: str) -> bool:
    """`ip` is `node`'s in the state, and only its: no pod (that takes part) and no other node
    claims it, so a cell to it asks the semantics about that node and nothing else."""
    claimants = [name for name, addresses in state.node_addresses.items() if ip in addresses]
    return claimants == [node] and endpoint(state, ip) == Endpoint(ip, None, node)


def plan_node_targets(state: ClusterState, plan: LabPlan) -> dict[str, tuple[IPAddress, ...]]:
    """Per node the lab builds, the addresses pod → node cells probe: those the lab puts on the
    node's namespace (`NodePlan.fabric_addresses`, its uplink) that the state knows as that
    node's (`ClusterState.node_addresses`) and nobody else's. An invented fabric address is not
    the node's in the state (the semantics cannot judge it) and is never probed; neither is an
    address the lab does not create, so no cell sends a packet beyond the lab."""
    return {node.name: tuple(a for a in node.fabric_addresses if _owner_is(state, a, node.name))
            for node in plan.nodes}


def unprobed_node_note(state: ClusterState, targets: NodeTargets) -> tuple[str, ...]:
    """A note naming the node addresses of the state that no cell probes: the lab builds only
    nodes with pods, and puts one address per family (the first of its status addresses no
    other node has) on each."""
    left = sorted(((name, ip) for name, addresses in state.node_addresses.items() for ip in addresses
                   if ip not in targets.get(name, ())), key=lambda n: (n[0], n[1].version, int(n[1])))
    if not left:
        return ()
    listed = ", ".join(f"{name} {ip}" for name, ip in left)
    return (f"{len(left)} node address(es) not probed (the lab builds only nodes with pods, with one "
            f"address per family from status.addresses): {listed}",)


def compare(cells: Sequence[Cell], outcomes: Mapping[int, str]) -> tuple[CellResult, ...]:
    """Each cell with the kernel's outcome (`outcomes` is keyed by the cell's index)."""
    return tuple(CellResult(cell, outcomes.get(i, "error: not probed")) for i, cell in enumerate(cells))


def late_note(results: Sequence[CellResult]) -> tuple[str, ...]:
    """A note for cells that matched only on their second, patient try: not a mismatch, but a
    sign the machine was too busy to answer within PROBE_TIMEOUT."""
    late = sum(1 for r in results if r.retried and not r.mismatch)
    if not late:
        return ()
    return (f"{late} cell(s) answered only on the second try (a busy machine, not a mismatch)",)


def format_report(report: Report) -> str:
    lines = [f"note: {note}" for note in report.notes]
    lines += [str(r) for r in report.mismatches]
    to_node = sum(1 for r in report.results if r.cell.to_node)
    lines.append(f"{len(report.results)} cells probed, {len(report.mismatches)} mismatches "
                 f"({len(report.results) - to_node} pod -> pod, {to_node} pod -> node; {report.nodes} "
                 f"nodes, {report.pods} pods, {report.probes} probes, {report.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


# ── I/O: servers, probers, the run ──────────────────────────────────────────────────────────


def start_servers(lab: Lab, state: ClusterState, probes: Sequence[Probe],
                  only: Iterable[str] | None = None, node_targets: NodeTargets | None = None) -> None:
    """One server per pod (of `only`, pod keys, if given) on every probed port, both protocols,
    and one per node of `node_targets` on its target addresses; returns once all are bound."""
    ports = {proto: ",".join(sorted({str(p.port) for p in probes if p.protocol == proto}))
             for proto in PROBED_PROTOCOLS}

    def serve(netns: str, ips: Iterable[IPAddress]) -> subprocess.Popen[str]:
        return lab.spawn(netns, [sys.executable, TRAFFIC_SCRIPT, "serve", f"--ips={','.join(map(str, ips))}",
                                 f"--tcp={ports['TCP']}", f"--udp={ports['UDP']}"])

    servers = []
    wanted = set(only) if only is not None else None
    for pod in lab_pods(state):
        if wanted is None or pod.key in wanted:
            servers.append((f"pod {pod.key}", serve(lab.pod_netns[pod.key], pod.ips)))
    for node, addresses in sorted((node_targets or {}).items()):
        if addresses:
            servers.append((f"node {node}", serve(lab.node_netns[node], addresses)))
    for where, proc in servers:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise LabError(f"the server in {where} did not start: {proc.communicate()[1].strip()}")


def _collect(proc: subprocess.Popen[str], netns: str, targets: list[list[str | int]],
             timeout: float) -> dict[str, str]:
    """Hand one prober its targets; its answers, keyed by cell index (as text)."""
    request = json.dumps({"timeout": timeout, "targets": targets})
    budget = timeout * (1 + len(targets) / lab_traffic.MAX_IN_FLIGHT) + PROCESS_SLACK
    try:
        out, err = proc.communicate(request, timeout=budget)
    except subprocess.TimeoutExpired:
        raise LabError(f"the prober in {netns} did not finish within {budget:.0f} s") from None
    if proc.returncode != 0:
        raise LabError(f"the prober in {netns} failed: {err.strip() or proc.returncode}")
    result: dict[str, str] = json.loads(out)
    return result


def probe_cells(lab: Lab, cells: Sequence[Cell], indexes: Iterable[int], timeout: float) -> dict[int, str]:
    """Probe the cells at `indexes`: one prober per source pod, all at once."""
    by_source: dict[str, list[list[str | int]]] = {}
    for i in indexes:
        cell = cells[i]
        by_source.setdefault(cell.src, []).append([str(i), str(cell.dst_ip), cell.port, cell.protocol])
    prober = [sys.executable, TRAFFIC_SCRIPT, "probe"]
    probers = {src: lab.spawn(lab.pod_netns[src], prober) for src in by_source}
    with ThreadPoolExecutor(max_workers=max(1, len(probers))) as pool:
        futures = [pool.submit(_collect, probers[src], lab.pod_netns[src], targets, timeout)
                   for src, targets in by_source.items()]
        try:
            return {int(k): v for f in futures for k, v in f.result().items()}
        except BaseException:
            for proc in probers.values():  # Ctrl-C or a failed prober: the others stop now, so
                proc.kill()                # leaving the pool does not wait for them to finish
            raise


@dataclass(frozen=True)
class Attempt:
    """One connection a watcher tried: the cell's index, when it began (time.monotonic()), what
    the kernel did."""

    cell: int
    started: float
    outcome: str


@dataclass
class Watch:
    """Cells probed again and again (`traffic.py watch`, one watcher per source pod) until `stop`."""

    lab: Lab
    watchers: dict[str, subprocess.Popen[str]]

    def stop(self) -> list[Attempt]:
        """Close the watchers' stdin; every attempt they made, in order of start."""
        attempts = []
        for src, proc in self.watchers.items():
            out = process_output(proc, f"the watcher in {self.lab.pod_netns[src]}", PROCESS_SLACK)
            attempts += [Attempt(int(i), float(at), str(outcome)) for i, at, outcome in json.loads(out)]
        return sorted(attempts, key=lambda a: a.started)


def watch_cells(lab: Lab, cells: Sequence[Cell], timeout: float = PROBE_TIMEOUT,
                interval: float = 0.1) -> Watch:
    """Every cell probed continuously (see `traffic.py watch`) from when this returns until
    `Watch.stop()`."""
    by_source: dict[str, list[list[str | int]]] = {}
    for i, cell in enumerate(cells):
        by_source.setdefault(cell.src, []).append([str(i), str(cell.dst_ip), cell.port, cell.protocol])
    watchers = {}
    for src, targets in by_source.items():
        proc = lab.spawn(lab.pod_netns[src], [sys.executable, TRAFFIC_SCRIPT, "watch"])
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"timeout": timeout, "interval": interval, "targets": targets}) + "\n")
        proc.stdin.flush()
        watchers[src] = proc
    for src, proc in watchers.items():  # each has begun: its first attempts are out
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "watching":
            said = proc.communicate()[1].strip()
            raise LabError(f"the watcher in {lab.pod_netns[src]} did not start: {said}")
    return Watch(lab, watchers)


def process_output(proc: subprocess.Popen[str], what: str, timeout: float) -> str:
    """What a process the lab spawned printed (its stdin closed first), once it exited;
    LabError if it failed or hung."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise LabError(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise LabError(f"{what} failed: {err.strip() or proc.returncode}")
    return out


def probe_and_confirm(lab: Lab, cells: Sequence[Cell],
                      confirm_timeout: float | None = None) -> tuple[CellResult, ...]:
    """Probe every cell; probe each mismatch once more, with a longer timeout (by default
    CONFIRM_TIMEOUT), before it counts."""
    patience = CONFIRM_TIMEOUT if confirm_timeout is None else confirm_timeout
    results = compare(cells, probe_cells(lab, cells, range(len(cells)), PROBE_TIMEOUT))
    suspects = [i for i, r in enumerate(results) if r.mismatch]
    again = probe_cells(lab, cells, suspects, patience) if suspects else {}
    return tuple(replace(r, outcome=again[i], retried=True) if i in again else r
                 for i, r in enumerate(results))


def verify(state: ClusterState, probes: Sequence[Probe] | None = None, only_node: str | None = None,
           render: Renderer = render_nftables, backend: str = "nftables", *,
           confirm_timeout: float | None = None) -> Report:
    """Build the cluster, load `render(program)` on every node, probe every cell (pod → pod and
    pod → node), compare. `confirm_timeout` (default CONFIRM_TIMEOUT): how long a mismatch's
    second try may wait."""
    started = time.monotonic()
    usable, notes = split_probes(probes or default_probes(state))
    programs = compile_cluster(state)
    if only_node is not None:
        require_node(list(programs), only_node)
    plan = plan_lab(state)
    targets = plan_node_targets(state, plan)
    cells = plan_cells(state, usable, only_node, targets)
    notes += unprobed_node_note(state, targets)
    with open_lab(plan) as lab:
        for node in lab.node_netns:
            if backend in IPTABLES_VARIANTS:
                lab.load_iptables(node, programs[node], IPTABLES_VARIANTS[backend])
            else:
                lab.load_ruleset(node, render(programs[node]))
        start_servers(lab, state, usable, node_targets=targets)
        results = probe_and_confirm(lab, cells, confirm_timeout)
        return Report(results, lab.plan.notes + notes + late_note(results), len(lab.node_netns),
                      len(lab.pod_netns), len(usable), time.monotonic() - started)
