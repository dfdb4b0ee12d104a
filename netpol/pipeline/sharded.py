"""Every node's `nft -f` ruleset, decoded, compiled and printed by processes sharded by namespace.

A policy selects pods of its own namespace only. So a process given some namespaces needs only
their policies (and every pod, since peers are cluster-wide) to compile and print those
namespaces' pods on every node (`PodsText`) and the sets they name. The parent joins each node's
parts in the order one process produces them (`script_text`): the output is byte for byte
`render(compile_cluster(state)[node])`, which tests/unit/pipeline/test_sharded.py holds.
ClusterNetworkPolicies select pods of any namespace: every process reads all of them, and a
chain that two shards print (a side of cluster policies alone) is joined once.

`render_documents` forks once the manifests are parsed (`netpol.pipeline.phases` reads and
parses them): each process decodes the pods, namespaces and nodes and only its own shard's
policies. Per-policy work (decoding, resolving selectors, spelling sets, printing rules) is most
of a large cluster's compile; it is split between the processes, where splitting by node would
repeat it in each. Only printed text comes back, through a pipe. One shard runs in the calling
process. Input with any problem is decoded again, whole and in order, so the error report is
exactly `load_state`'s.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import traceback
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from netpol.backends.nftables import PodsText, pods_text, render, script_text, set_lines
from netpol.compile.compiler import NodeCompiler, compile_cluster, node_names, node_pod_cidrs
from netpol.compile.ir import PeerSet, PortSet
from netpol.errors import WorkerError
from netpol.load.decode_fast import own_copy
from netpol.load.manifests import (
    Labelled,
    build_state,
    check_consistency,
    decode_parsed,
    state_or_problems,
)
from netpol.model import ClusterState

POLICY_WEIGHT = 4  # a policy costs about four times a pod to decode, compile and print (10k benchmark)
SPLIT_MIN_WORK = 10_000  # pods + POLICY_WEIGHT × policies; below, forking saves nothing (1k benchmark)
PARENT_SHARE = 0.9  # of one shard's work: the parent then receives and joins the rest (10k benchmark)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0))


@dataclass
class ShardOutput:
    """What a shard sends back: per node, its pods' printed part and the names of the sets they
    use (peer sets, port sets); and the declarations of those sets."""

    nodes: dict[str, tuple[PodsText, list[str], list[str]]] = field(default_factory=dict)
    set_lines: dict[str, tuple[str, ...]] = field(default_factory=dict)


def balance(weights: dict[str, int], count: int) -> dict[str, int]:
    """Namespace → shard index: the namespaces, sorted, cut into at most `count` runs, numbered
    from 0, of about equal weight but the first, which gets PARENT_SHARE of one: the calling
    process runs it and then joins everything. Runs, because a node's pods are in namespace
    order: each shard's pods then come as one block."""
    total = sum(weights.values())
    shares = [PARENT_SHARE, *[1.0] * (count - 1)]
    ends = [total * sum(shares[:i + 1]) / sum(shares) for i in range(len(shares))]
    owners: dict[str, int] = {}
    index, running, filled = 0, 0, False
    for namespace in sorted(weights):
        weight = weights[namespace]
        if filled and index < count - 1 and running + weight / 2 > ends[index]:
            index, filled = index + 1, False
        owners[namespace] = index
        running += weight
        filled = True
    return owners


def shard_namespaces(owners: dict[str, int]) -> list[frozenset[str]]:
    return [frozenset(ns for ns, k in owners.items() if k == index) for index in sorted(set(owners.values()))]


def compile_shard(state: ClusterState, namespaces: Collection[str]) -> ShardOutput:
    """Compile and print the pods of `namespaces` on every node."""
    compiler = NodeCompiler(state, namespaces=namespaces)
    programs = [compiler.compile(node) for node in node_names(state)]
    del compiler  # its caches: the printing's own take their place
    out = ShardOutput()
    for program in programs:
        node = program.node
        out.nodes[node] = (pods_text(program.pods), [s.name for s in program.peer_sets],
                           [s.name for s in program.port_sets])
        used: list[PeerSet | PortSet] = [*program.peer_sets, *program.port_sets]
        for peer_set in used:
            if peer_set.name not in out.set_lines:
                out.set_lines[peer_set.name] = set_lines(peer_set)
    return out


Tell = Callable[[bool], bool]  # a shard says whether its input decoded cleanly; True: go on
Work = Callable[[int, Tell], "ShardOutput | None"]


class _Worker:
    """`work(index, tell)` in a forked child; `decoded()` waits for what it told, `result()`
    reads what it returned. The pipe carries one status byte, then the pickled result."""

    def __init__(self, work: Work, index: int) -> None:
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: compute, write, and leave without tearing down the heap
            os.close(read)
            told: list[bool] = []

            def tell(ok: bool) -> bool:
                if not told:
                    told.append(ok)
                    os.write(write, b"+" if ok else b"-")
                return ok

            code = 0
            try:
                result: tuple[str, object] = ("ok", work(index, tell))
            except BaseException:  # reported to the parent, whatever it was
                result, code = ("error", traceback.format_exc()), 1
            try:
                tell(code == 0)
                with open(write, "wb") as pipe:  # streamed: no second copy of it in memory
                    pickle.dump(result, pipe, pickle.HIGHEST_PROTOCOL)
            finally:
                os._exit(code)
        os.close(write)
        self._read = read
        self._status: bytes | None = None

    def decoded(self) -> bool:
        """Whether the child's input decoded cleanly (False too if it failed or died)."""
        if self._status is None:
            self._status = os.read(self._read, 1)
        return self._status == b"+"

    def result(self) -> ShardOutput | None:
        self.decoded()
        read, self._read = self._read, -1
        with open(read, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        try:
            kind, value = pickle.loads(data)
        except (pickle.UnpicklingError, EOFError, ValueError):
            raise WorkerError(f"a compile worker died ({_describe(status)}) before it sent its "
                              "rulesets") from None
        if kind != "ok":
            raise WorkerError(f"a compile worker failed:\n{value}")
        return value  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Kill and reap it, and close its pipe, if `result` has not (an error or Ctrl-C in the
        parent)."""
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
        if self._read >= 0:
            os.close(self._read)
            self._read = -1


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _run_sharded(shards: int, work: Work) -> tuple[ShardOutput | None, list[ShardOutput | None]]:
    """Shard 0 here, the others in forked children: (shard 0's output, the others'). Shard 0's
    `tell` answers True only when every shard's input decoded cleanly."""
    workers = [_Worker(work, index) for index in range(1, shards)]
    try:
        own = work(0, lambda ok: ok and all([worker.decoded() for worker in workers]))
        return own, [worker.result() for worker in workers] if own is not None else []
    finally:
        for worker in workers:
            worker.stop()


# -- from a ClusterState -----------------------------------------------------------------------

def render_nodes(state: ClusterState, jobs: int | None = None) -> Iterator[tuple[str, str]]:
    """(node, `nft -f` script) for every node, in node order, compiled by `jobs` processes
    (default: one per available CPU), forked after the state was loaded."""
    weights: dict[str, int] = {}
    for pod in state.active_pods:
        weights[pod.namespace] = weights.get(pod.namespace, 0) + 1
    for policy in state.policies:
        weights[policy.namespace] = weights.get(policy.namespace, 0) + POLICY_WEIGHT
    shards = shard_namespaces(balance(weights, jobs or available_cpus()))
    if len(shards) <= 1:  # the compiler's caches go before printing; one ruleset at a time
        for node, program in compile_cluster(state).items():
            yield node, render(program)
        return
    own, others = _run_sharded(len(shards), lambda index, _: compile_shard(state, shards[index]))
    assert own is not None and all(o is not None for o in others)
    yield from _join(state, [own, *others])  # type: ignore[list-item]


# -- from parsed manifests --------------------------------------------------------------------

def render_documents(documents: list[Labelled], jobs: int | None = None,
                     planned: Callable[[int], None] | None = None) -> Iterator[tuple[str, str]]:
    """(node, `nft -f` script) for every node of the parsed, not yet decoded `documents`
    (`netpol.load.manifests.parse_paths`), as `render_nodes` of their state would print them;
    raises InputError as `load_state` does.

    With more than one job, the processes fork before decoding: each decodes every pod,
    namespace and node and its own shard's policies, and compiles. Without `jobs`, one process
    per available CPU when splitting pays (`splitting_pays`) and the caller runs no other
    thread, else one; `planned` is told how many processes compile. Any problem anywhere, and
    the parent decodes everything again, in order, to report them all.

    Memory, measured at 10k pods / 10k policies: the combined PSS of two processes peaks at
    ~265 MB, one process alone at ~261 MB. Each process frees the parsed documents once decoded
    (`documents` is handed over: the caller keeps no reference); that memory goes back whole
    only because nothing decoded keeps one of their strings or numbers (`decode_fast` copies
    what it keeps, `_raw_counts` the namespaces): with a name here and a label there pinning
    every arena, the two processes peaked at ~306 MB. Tried and dropped: freeing the documents
    in one process only, or in neither, and decoding the pods before forking (all more memory)."""
    tell_plan = planned or (lambda processes: None)
    weights, pods, policies = _raw_counts(documents)
    count = jobs or (available_cpus() if splitting_pays(pods, policies) and _may_fork() else 1)
    owners = balance(weights, count)
    shards = shard_namespaces(owners)
    tell_plan(len(shards) or 1)
    if len(shards) <= 1:
        state = state_or_problems([decode_parsed(documents)])
        documents.clear()
        yield from render_nodes(state, 1)
        return
    states: list[ClusterState] = []

    def work(index: int, tell: Tell) -> ShardOutput | None:
        state = _decode_shard(documents, owners, index)
        if not tell(state is not None) or state is None:
            return None  # a problem in some shard: the parent reports them all
        documents.clear()  # needed only to report problems: freed for the compile
        states.append(state)
        return compile_shard(state, shards[index])

    own, others = _run_sharded(len(shards), work)
    if own is None or any(o is None for o in others):  # a problem somewhere: report them all
        yield from render_nodes(state_or_problems([decode_parsed(documents)]), 1)  # raises InputError
        return
    yield from _join(states[0], [own, *others])  # type: ignore[list-item]


def _may_fork() -> bool:
    """Forking a process that runs other threads copies their locks in whatever state they are:
    by default, only a single-threaded caller (the command line) forks; `jobs` overrides."""
    return threading.active_count() == 1


def splitting_pays(pods: int, policies: int) -> bool:
    """Whether a second process is worth forking. Every process decodes and indexes every pod,
    but since nothing decoded pins the parsed documents, a second process costs little memory
    beyond its share of the work. Measured, one process → two (time; combined PSS):

        10k pods / 10k policies    2.55 s → 1.70 s;   261 MB → 265 MB
        10k pods / 1k policies     0.85 s → 0.77 s;   131 MB → 170 MB
        100k pods / 10k policies   11.0 s → 10.0-10.4 s;  1.32 GB → 1.35 GB
        1k pods / 100 policies     0.077 s → 0.076 s

    So: when there is enough work for the fork to pay (SPLIT_MIN_WORK)."""
    return pods + POLICY_WEIGHT * policies >= SPLIT_MIN_WORK


def _raw_namespace(doc: dict[str, Any]) -> str:
    """The namespace an object as parsed says it is in ("default" when it says none)."""
    meta = doc.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


def _raw_counts(documents: list[Labelled]) -> tuple[dict[str, int], int, int]:
    """Per namespace, its pods plus its policies × POLICY_WEIGHT; and the pods and policies in
    all: counted before decoding. (Cluster policies go to every shard: `_decode_shard`.)"""
    weights: dict[str, int] = {}
    totals = {"Pod": 0, "NetworkPolicy": 0}

    def count(kind: str, doc: dict[str, Any]) -> bool:
        if kind in totals:
            namespace = _raw_namespace(doc)
            if namespace not in weights:  # a key of our own: the parsed document's is freed later
                namespace = own_copy(namespace)
            weights[namespace] = weights.get(namespace, 0) + (1 if kind == "Pod" else POLICY_WEIGHT)
            totals[kind] += 1
        return False  # walk, never decode

    decode_parsed(documents, count)
    return weights, totals["Pod"], totals["NetworkPolicy"]


def _decode_shard(documents: list[Labelled], owners: dict[str, int], index: int) -> ClusterState | None:
    """Every namespace, node and pod, and the policies shard `index` owns (a namespace no shard
    owns belongs to shard 0); None if any of them has a problem."""

    def wanted(kind: str, doc: dict[str, Any]) -> bool:
        return kind != "NetworkPolicy" or owners.get(_raw_namespace(doc), 0) == index

    objects, problems = decode_parsed(documents, wanted)
    if problems or check_consistency(objects):
        return None
    return build_state(obj for _, obj in objects)


# -- joining -----------------------------------------------------------------------------------

def _join(state: ClusterState, outputs: list[ShardOutput]) -> Iterator[tuple[str, str]]:
    """Each node's script from the shards' parts, taken in shard order: shards are runs of
    namespaces in order (`balance`), and a node's pods are in namespace order. `state` needs
    every node, and may hold only some of the policies."""
    texts: dict[str, tuple[str, ...]] = {}
    for output in outputs:
        texts |= output.set_lines
    for node in node_names(state):
        shares = [output.nodes[node] for output in outputs if node in output.nodes]
        peers = sorted({name for _, peer_names, _ in shares for name in peer_names})
        ports = sorted({name for _, _, port_names in shares for name in port_names})
        lines = (line for name in (*peers, *ports) for line in texts[name])
        yield node, script_text(node, node_pod_cidrs(state, node), [part for part, _, _ in shares], lines)
