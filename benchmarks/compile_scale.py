"""Compiler scale on kube-burner-shaped clusters: manifest loading (JSON, YAML), compiling one node
and every node, ruleset sizes, incremental event → new ruleset latency, and the kernel's load time.

    python benchmarks/compile_scale.py [--sizes 1k,10k] [--targets] [--events 200] [--out results.json] [--no-kernel]
    python benchmarks/compile_scale.py --sizes 10k/10k/40 --cluster-policies 100 [--cnp-only] [--cnp-rounds 5]

A size is PODS[/POLICIES[/NODES]] with `k` for thousands (`10k`, `10k/10k/40`); policies default to
pods/10, nodes to pods/250. `--targets` adds the issue's 10k/10k/40 and 100k/10k/400, and 100
cluster policies. `--cluster-policies N` measures every size again with N ClusterNetworkPolicies
(`kube_burner.cluster_policies`: Admin and Baseline guardrails): the all-nodes compile with and
without them, alternately in the same run with the same processes, and their ratio (target
≤ 1.25); cluster-policy adds, changes and deletes on the busiest node's agent, each → its new
ruleset (target p99 ≤ 50 ms); the pod and policy events again with them; the kernel's load of
the largest ruleset with them. `--cnp-only` skips the other stages but the pod and policy
events the ones with cluster policies compare to. Every
measurement runs in a fresh child process, so its peak RSS is that measurement's own (see
run_process for why that is VmHWM, not plain wait4); one JSON object per measurement on stdout,
summary tables on stderr. Clusters are cached in
benchmarks/.cache/. One stage can be run, and profiled, on its own:

    python -m cProfile -s cumtime benchmarks/compile_scale.py --child compile-all --cluster FILE.json

The kernel stage loads the largest ruleset with `nft -f` inside a network namespace it creates
(`np-bench-*`) and always deletes; nothing runs in the root namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import random
import re
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import kube_burner

from netpol.backends.nftables import render, render_update
from netpol.compile.compiler import compile_node
from netpol.compile.incremental import IncrementalCompiler
from netpol.compile.resolver import EventType, Resolver
from netpol.gc import PacedCollector, without_cyclic_gc
from netpol.labels import Labels
from netpol.load.decode import KubeObject, decode_document
from netpol.load.manifests import build_state, check_consistency, load_state, parse_documents, read_text
from netpol.model import ClusterNetworkPolicy, ClusterState, NetworkPolicy, Pod
from netpol.pipeline.phases import render_paths

HERE = Path(__file__).parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
TARGETS = ("10k/10k/40", "100k/10k/400")
RESOLVER_STAGES = ("compile-all", "events")  # both start with the Resolver.from_state of compile-node
Row = dict[str, Any]


# == shared helpers ==========================================================================


def parse_size(text: str, seed: int = 1, cluster_policies: int = 0) -> kube_burner.Shape:
    """`10k` → 10,000 pods; `10k/10k/40` → pods/policies/nodes."""
    def number(part: str) -> int:
        part = part.strip().lower()
        return int(float(part[:-1]) * 1000) if part.endswith("k") else int(part)

    parts: list[int | None] = [number(p) for p in text.split("/")]
    if not 1 <= len(parts) <= 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PODS[/POLICIES[/NODES]]")
    pods, policies, nodes = [*parts, None, None][:3]
    return kube_burner.Shape.of(pods or 0, policies, nodes, seed, cluster_policies)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - start, 4)


def ruleset_stats(text: str) -> dict[str, int]:
    """Counted from the `nft -f` text: sets, maps, their elements, chains, rules in chains."""
    stats = {"bytes": len(text.encode()), "lines": text.count("\n"), "sets": 0, "maps": 0,
             "elements": 0, "chains": 0, "rules": 0}
    for body in re.findall(r"elements\s*=\s*\{([^}]*)\}", text):
        stats["elements"] += len([e for e in body.split(",") if e.strip()])
    in_chain = False
    for line in text.splitlines():
        word = line.strip()
        if re.match(r"(set|map)\s+\S+\s*\{", word):
            stats["sets" if word.startswith("set") else "maps"] += 1
        elif re.match(r"chain\s+\S+\s*\{", word):
            stats["chains"] += 1
            in_chain = not word.endswith("}")
        elif in_chain and word == "}":
            in_chain = False
        elif in_chain and word and not word.startswith(("comment ", "type ", "policy ", "#")):
            stats["rules"] += 1
    return stats


# == child stages: each runs in a fresh process and prints one JSON object ====================


def stage_generate(args: argparse.Namespace) -> Row:
    shape = parse_size(args.size, args.seed, args.cluster_policies or 0)
    items = kube_burner.generate(shape)
    out: Row = {"objects": kube_burner.summary(items)}
    with timed(out, "json_write_s"):
        kube_burner.write_json(items, args.cluster)
    if args.yaml_path:
        with timed(out, "yaml_write_s"):
            kube_burner.write_yaml(items, args.yaml_path)
    return out


def stage_import(args: argparse.Namespace) -> Row:
    """Nothing: the interpreter and netpol's imports alone, the floor of every other stage."""
    return {}


def stage_load(args: argparse.Namespace) -> Row:
    """What `load_state` does, step by step: read, parse (json.loads / YAML), decode+validate,
    cross-object checks + ClusterState."""
    source = str(args.cluster)
    out: Row = {"format": "yaml" if source.endswith((".yaml", ".yml")) else "json"}
    with timed(out, "read_s"):
        text = read_text(source)
    with timed(out, "parse_s"):
        documents, syntax_error = parse_documents(text, source)
    del text
    located: list[tuple[str, KubeObject]] = []
    problems = [syntax_error] if syntax_error else []
    with timed(out, "decode_s"):
        for i, doc in enumerate(documents):
            label = f"{source} (document {i + 1})" if len(documents) > 1 else source
            found, bad = decode_document(doc, label)
            located += [(label, obj) for obj in found]
            problems += bad
    del documents
    with timed(out, "build_s"):
        problems += check_consistency(located)
        state = build_state(obj for _, obj in located)
    out["total_s"] = round(out["read_s"] + out["parse_s"] + out["decode_s"] + out["build_s"], 4)
    out.update(problems=len(problems), pods=len(state.pods), policies=len(state.policies))
    return out


def typical_and_worst_nodes(state: ClusterState) -> dict[str, str]:
    """The last node (workload pods only), and the node of Prometheus (cluster-wide named-port egress)."""
    nodes = {"typical": state.nodes[-1].name}
    prometheus = next((p.node_name for p in state.pods if p.key == "monitoring/prometheus-k8s-0"), None)
    if prometheus:
        nodes["prometheus"] = prometheus
    return nodes


def stage_compile_node(args: argparse.Namespace) -> Row:
    """Load, build the resolver, compile + render one typical node, then the Prometheus node."""
    out: Row = {}
    with timed(out, "load_s"):
        state = load_state([str(args.cluster)])
    with timed(out, "resolver_s"):
        resolver = Resolver.from_state(state)
    for role, node in typical_and_worst_nodes(state).items():
        part: Row = {"node": node}
        with timed(part, "compile_s"):
            program = compile_node(state, node, resolver)
        with timed(part, "render_s"):
            text = render(program)
        part.update(pods=len(program.pods), **ruleset_stats(text))
        out[role] = part
    typical = out["typical"]
    out["end_to_end_s"] = round(out["load_s"] + out["resolver_s"] + typical["compile_s"] + typical["render_s"], 4)
    return out


def stage_compile_all(args: argparse.Namespace) -> Row:
    """`netpol compile --all-nodes`: `render_paths` from the JSON file to every node's ruleset,
    in `--jobs` processes (netpol.pipeline.sharded). Only the time spent producing the rulesets counts,
    not this stage's statistics of them; the largest is kept for the kernel stage."""
    out: Row = {"jobs": args.jobs or "auto"}
    largest, largest_text, total_bytes, rulesets, spent = "", "", 0, 0, 0.0
    cpu_before = _cpu_s()
    produced = render_paths([str(args.cluster)], args.jobs, lambda n: out.update(processes=n))
    while True:
        start = time.perf_counter()
        item = next(produced, None)
        spent += time.perf_counter() - start
        if item is None:
            break
        name, text = item
        rulesets += 1
        total_bytes += len(text)
        if len(text) > len(largest_text):
            largest, largest_text = name, text
    cpu = _cpu_s() - cpu_before  # every process's: this one and the workers it reaped
    if args.out_nft:
        args.out_nft.write_text(largest_text)
    out["end_to_end_s"] = round(spent, 4)
    out["cpu_s"] = round(cpu, 4)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out["workers_peak_rss_mb"] = round(workers, 1) if out["processes"] > 1 else 0.0
    out.update(rulesets=rulesets, total_bytes=total_bytes, largest_node=largest, largest=ruleset_stats(largest_text))
    return out


def _cpu_s() -> float:
    """User + system CPU seconds of this process and of its children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- incremental events ----------------------------------------------------------------------

EVENT_KINDS = ("relabel-pod", "add-pod", "delete-pod", "add-policy", "update-policy")
EVENT_WEIGHTS = (30, 20, 20, 15, 15)


@dataclasses.dataclass
class Churn:
    """Random watch events against the resolver's current objects, as model objects (decoded
    before the clock starts: the agent's informer hands it decoded objects)."""

    resolver: Resolver
    rng: random.Random
    workload: list[str]  # namespaces kube-burner generated
    counter: int = 0

    def next(self) -> tuple[str, EventType, KubeObject]:
        self.counter += 1
        kind = self.rng.choices(EVENT_KINDS, EVENT_WEIGHTS)[0]
        maker: Callable[[], tuple[EventType, KubeObject]] = getattr(self, kind.replace("-", "_"))
        return (kind, *maker())

    def _workload_pod(self) -> Pod:
        prefix = kube_burner.NS_PREFIX
        keys = [k for k in self.resolver.pods if k.startswith(prefix)]
        return self.resolver.pods[self.rng.choice(keys)]

    def relabel_pod(self) -> tuple[EventType, KubeObject]:
        pod = self._workload_pod()
        labels = dict(pod.labels)
        labels["version"] = "v2" if labels.get("version") == "v1" else "v1"
        if self.rng.random() < 0.5:
            labels["num"] = str(self.rng.randint(1, 50))
        if self.rng.random() < 0.3:
            labels["tier"] = self.rng.choice(kube_burner.TIERS)
        return "MODIFIED", dataclasses.replace(pod, labels=Labels(labels))

    def add_pod(self) -> tuple[EventType, KubeObject]:
        template = self._workload_pod()
        nodes = sorted(self.resolver.nodes)
        self.rng.shuffle(nodes)
        for node in nodes:  # a node's /24 holds ~250 pods: find one with an address left
            used = {ip for p in self.resolver.pods.values() if p.node_name == node for ip in p.ips}
            cidr = self.resolver.nodes[node].pod_cidrs[0]
            ip = next((a for a in cidr.hosts() if a not in used and a != cidr.network_address + 1), None)
            if ip is not None:
                return "ADDED", dataclasses.replace(template, name=f"{template.name}-churn-{self.counter}",
                                                    ips=(ip,), node_name=node)
        return self.delete_pod()

    def delete_pod(self) -> tuple[EventType, KubeObject]:
        return "DELETED", self._workload_pod()

    def _policy(self, namespace: str, name: str) -> NetworkPolicy:
        index = int(namespace.rsplit("-", 1)[1])
        plan = kube_burner.NamespacePlan(namespace, index, "", "", 0)
        direction = self.rng.choice(("ingress", "egress"))
        doc = kube_burner.kube_burner_policy(direction, plan, self.rng.randint(0, 40), len(self.workload), name)
        objects, problems = decode_document(doc, "event")
        if problems or not isinstance(objects[0], NetworkPolicy):
            raise ValueError(f"generated policy does not decode: {problems}")
        return objects[0]

    def add_policy(self) -> tuple[EventType, KubeObject]:
        return "ADDED", self._policy(self.rng.choice(self.workload), f"churn-{self.counter}")

    def update_policy(self) -> tuple[EventType, KubeObject]:
        keys = sorted(k for k in self.resolver.policies if k.startswith(kube_burner.NS_PREFIX))
        namespace, name = self.rng.choice(keys).split("/")
        return "MODIFIED", self._policy(namespace, name)


def full_state(resolver: Resolver) -> ClusterState:
    return ClusterState.build(resolver.namespaces.values(), resolver.pods.values(),
                              resolver.nodes.values(), resolver.policies.values(),
                              resolver.cluster_policies.values())


def apply_event(compiler: IncrementalCompiler, event: EventType, obj: KubeObject) -> tuple[Row, dict[str, str]]:
    """One event → the `nft -f` input that brings every changed node's kernel up to date: the
    incremental compiler's update, then per changed node either set-element commands or, where
    its structure changed, its whole new table. Timed."""
    start = time.perf_counter()
    update = compiler.apply(event, obj)
    applied = time.perf_counter()
    texts = {}
    slowest = 0.0
    for node, program in update.programs.items():
        old = update.previous[node]
        began = time.perf_counter()
        texts[node] = render(program) if old is None else render_update(old, program)
        slowest = max(slowest, time.perf_counter() - began)
    done = time.perf_counter()
    full = sum(1 for t in texts.values() if t and not t.startswith("# netpol update"))
    # One node's agent renders only its own update: the compile, then its node's text.
    return {"compile_ms": (applied - start) * 1000, "render_ms": (done - applied) * 1000,
            "one_node_ms": (applied - start + slowest) * 1000,
            "total_ms": (done - start) * 1000, "nodes": len(update.programs),
            "elements_only_nodes": len(update.elements_only), "full_tables": full,
            "bytes": sum(len(t) for t in texts.values())}, texts


def check_against_rebuild(compiler: IncrementalCompiler, nodes: list[str]) -> Row:
    """The incremental compiler's current rulesets of `nodes` equal a from-scratch compile."""
    state = full_state(compiler.resolver)
    fresh = Resolver.from_state(state)
    differ = [n for n in nodes if render(compile_node(state, n, fresh)) != render(compiler.program(n))]
    return {"checked_nodes": nodes, "differing_nodes": differ}


def summarize_events(samples: list[Row], kinds: tuple[str, ...] = EVENT_KINDS) -> Row:
    def stats(rows: list[Row]) -> Row:
        total = [r["total_ms"] for r in rows]
        one = [r["one_node_ms"] for r in rows]
        return {"count": len(rows), "p50_ms": round(percentile(total, 50), 2),
                "p99_ms": round(percentile(total, 99), 2), "max_ms": round(max(total), 2),
                "one_node_p50_ms": round(percentile(one, 50), 2), "one_node_p99_ms": round(percentile(one, 99), 2),
                "compile_p50_ms": round(percentile([r["compile_ms"] for r in rows], 50), 3),
                "compile_p99_ms": round(percentile([r["compile_ms"] for r in rows], 99), 3),
                "render_p50_ms": round(percentile([r["render_ms"] for r in rows], 50), 3),
                "nodes_mean": round(statistics.fmean(r["nodes"] for r in rows), 1),
                "elements_only_nodes_mean": round(statistics.fmean(r["elements_only_nodes"] for r in rows), 1),
                "full_tables_mean": round(statistics.fmean(r["full_tables"] for r in rows), 2),
                "bytes_p50": round(percentile([r["bytes"] for r in rows], 50))}

    out: Row = stats(samples) if samples else {"count": 0}
    out["by_kind"] = {k: stats(rows) for k in kinds if (rows := [s for s in samples if s["kind"] == k])}
    return out


def stage_events(args: argparse.Namespace) -> Row:
    """Build the incremental compiler once, then `--events` random events; stop early after
    `--event-budget` s, or in time to finish (and check) before the parent's `--stage-timeout`."""
    started = time.perf_counter()
    out: Row = {}
    with timed(out, "load_s"), without_cyclic_gc():
        state = load_state([str(args.cluster)])
    scope = None
    if args.agent_node:  # one node's agent: its compiler follows only that node
        scope = {typical_and_worst_nodes(state).get(args.agent_node) or state.nodes[-1].name}
        out["agent_node"] = next(iter(scope))
    with timed(out, "build_s"), without_cyclic_gc():
        compiler = IncrementalCompiler(state, nodes=scope)
        for node in scope or ():
            render(compiler.program(node))  # the agent's first sync: its whole table, before any event
    del state
    # A long-lived process holding millions of objects: move them out of the cyclic collector's
    # sight and collect between events, as the agent does between syncs (netpol.gc.
    # PacedCollector: else collections walking the new 100k-address tuples add 100s of ms to
    # single events). The collections' own time is reported, outside the events' clock.
    collector = PacedCollector()
    collector.start()
    gc_pauses: list[float] = []
    workload = sorted(n for n in compiler.resolver.namespaces if n.startswith(kube_burner.NS_PREFIX))
    rng = random.Random(args.seed)
    churn = Churn(compiler.resolver, rng, workload)
    samples: list[Row] = []
    touched: set[str] = set()
    check_cost = 0.0 if args.no_check else 2.0 * (out["load_s"] + out["build_s"])
    deadline = min(time.perf_counter() + args.event_budget,
                   started + 0.9 * args.stage_timeout - check_cost)
    while len(samples) < args.events and time.perf_counter() < deadline:
        kind, event, obj = churn.next()
        sample, texts = apply_event(compiler, event, obj)
        samples.append({"kind": kind, **sample})
        touched |= set(texts)
        began = time.perf_counter()
        collector.collect_if_due()
        gc_pauses.append((time.perf_counter() - began) * 1000)
    collector.stop()
    out["events"] = summarize_events(samples)
    out["gc_between_events"] = {"total_s": round(sum(gc_pauses) / 1000, 3),
                                "max_ms": round(max(gc_pauses, default=0.0), 2)}
    out["stopped_early"] = len(samples) < args.events
    if touched and not args.no_check and time.perf_counter() + check_cost < started + 0.95 * args.stage_timeout:
        with timed(out, "check_s"):
            out["check"] = check_against_rebuild(compiler, sorted(rng.sample(sorted(touched), min(3, len(touched)))))
    return out


# -- cluster policy events -------------------------------------------------------------------

CNP_EVENT_KINDS = ("add-cnp", "modify-cnp", "delete-cnp")


@dataclasses.dataclass
class ClusterChurn:
    """Random ClusterNetworkPolicy events: a new policy of a random kind of the generator's mix
    (`kube_burner.CLUSTER_MIX`), one changed (another subject, peers and ports of its kind, or a
    new priority: it moves in its tier), one deleted. Decoded before the clock starts."""

    resolver: Resolver
    rng: random.Random
    context: kube_burner.ClusterContext
    kinds: dict[str, str]  # policy name → its kind in the mix
    counter: int = 0

    @classmethod
    def of(cls, resolver: Resolver, rng: random.Random, seed: int) -> ClusterChurn:
        context = kube_burner.ClusterContext.of(
            [(n.name, dict(n.labels)) for n in resolver.namespaces.values()], seed)
        kinds = {p.name: p.name.rsplit("-", 1)[0] for p in resolver.cluster_policies.values()}
        return cls(resolver, rng, context, {n: k for n, k in kinds.items() if k in kube_burner.CLUSTER_MAKERS})

    def next(self) -> tuple[str, EventType, ClusterNetworkPolicy]:
        self.counter += 1
        kind = self.rng.choice(CNP_EVENT_KINDS) if len(self.kinds) > 1 else "add-cnp"
        if kind == "add-cnp":
            mix = kube_burner.CLUSTER_MIX
            made = self.rng.choices([k for k, _, _ in mix], [w for _, _, w in mix])[0]
            name = f"churn-{self.counter}-{made}"
            self.kinds[name] = made
            return kind, "ADDED", self._decode(kube_burner.cluster_policy(
                self.context, made, self.rng.randint(0, 40), name))
        name = self.rng.choice(sorted(self.kinds))
        current = self.resolver.cluster_policies[f"ClusterNetworkPolicy {name}"]
        if kind == "delete-cnp":
            del self.kinds[name]
            return kind, "DELETED", current
        if self.rng.random() < 0.5:  # reordered in its tier
            return kind, "MODIFIED", dataclasses.replace(current, priority=self.rng.randint(0, 999))
        return kind, "MODIFIED", self._decode(kube_burner.cluster_policy(
            self.context, self.kinds[name], self.rng.randint(0, 40), name))

    @staticmethod
    def _decode(doc: kube_burner.Manifest) -> ClusterNetworkPolicy:
        objects, problems = decode_document(doc, "event")
        if problems or not isinstance(objects[0], ClusterNetworkPolicy):
            raise ValueError(f"generated cluster policy does not decode: {problems}")
        return objects[0]


def stage_cnp_events(args: argparse.Namespace) -> Row:
    """One node's agent (`IncrementalCompiler(state, nodes={busiest})`, as `netpol agent` runs it)
    under `--events` ClusterNetworkPolicy adds, changes and deletes: each event → that node's
    new ruleset (`render_update`, or `render` when the table is replaced). The busiest node is
    Prometheus's (`--agent-node`); cluster policies select pods on every node, so nearly every
    event changes its ruleset."""
    started = time.perf_counter()
    out: Row = {}
    with timed(out, "load_s"), without_cyclic_gc():
        state = load_state([str(args.cluster)])
    node = typical_and_worst_nodes(state).get(args.agent_node or "prometheus") or state.nodes[-1].name
    out.update(agent_node=node, cluster_policies=len(state.cluster_policies))
    with timed(out, "build_s"), without_cyclic_gc():
        compiler = IncrementalCompiler(state, nodes={node})
        render(compiler.program(node))  # the agent's first sync: its whole table, before any event
    del state
    collector = PacedCollector()
    collector.start()
    churn = ClusterChurn.of(compiler.resolver, random.Random(args.seed), args.seed)
    samples: list[Row] = []
    check_cost = 0.0 if args.no_check else 2.0 * (out["load_s"] + out["build_s"])
    deadline = min(time.perf_counter() + args.event_budget, started + 0.9 * args.stage_timeout - check_cost)
    while len(samples) < args.events and time.perf_counter() < deadline:
        kind, event, obj = churn.next()
        sample, _ = apply_event(compiler, event, obj)
        samples.append({"kind": kind, **sample})
        collector.collect_if_due()
    collector.stop()
    events = summarize_events(samples, CNP_EVENT_KINDS)
    events["changed_node"] = sum(1 for s in samples if s["nodes"])
    out["events"] = events
    out["target_p99_ms"] = CNP_EVENT_TARGET_MS
    out["met"] = bool(samples) and events["one_node_p99_ms"] <= CNP_EVENT_TARGET_MS
    out["stopped_early"] = len(samples) < args.events
    if samples and not args.no_check and time.perf_counter() + check_cost < started + 0.95 * args.stage_timeout:
        with timed(out, "check_s"):
            out["check"] = check_against_rebuild(compiler, [node])
    return out


STAGES: dict[str, Callable[[argparse.Namespace], Row]] = {
    "generate": stage_generate, "import": stage_import, "load": stage_load,
    "compile-node": stage_compile_node, "compile-all": stage_compile_all, "events": stage_events,
    "cnp-events": stage_cnp_events,
}


def own_peak_rss_mb() -> float | None:
    """VmHWM: this process's own high-water mark since exec (wait4's ru_maxrss is not: see
    run_process)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(found.group(1)) / 1024, 1) if found else None


EXIT_MEMORY_LIMIT = 3


def child_main(args: argparse.Namespace) -> int:
    if args.memory_limit_gb:  # a MemoryError here beats the OOM killer picking a neighbour's process
        limit = int(args.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        if args.child in ("events", "cnp-events"):  # builds under without_cyclic_gc, then settles: see stage_events
            result = STAGES[args.child](args)
        else:
            with without_cyclic_gc():  # what the `netpol` command line does (netpol.gc)
                result = STAGES[args.child](args)
    except MemoryError:
        os.write(2, f"memory limit: over {args.memory_limit_gb} GB of address space\n".encode())
        os._exit(EXIT_MEMORY_LIMIT)
    result["vm_hwm_mb"] = own_peak_rss_mb()
    sys.stdout.write("\n" + json.dumps(result) + "\n")  # the last line is the result
    sys.stdout.flush()
    if sys.getprofile() is None:  # under cProfile, let it print its report
        os._exit(0)  # skip tearing down millions of objects: not part of any measurement
    return 0


# == parent: fresh processes, timeouts, the kernel stage, tables ==============================


def pss_mb(pid: int) -> float:
    """Proportional set size of `pid` and its children (a page shared by two counts half in
    each): what a process and the workers it forked use together."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for each in (pid, *map(int, children)):
        try:
            rollup = Path(f"/proc/{each}/smaps_rollup").read_text()
        except OSError:
            continue  # it just ended
        if found := re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE):
            total += int(found.group(1))
    return total / 1024


def run_process(argv: list[str], timeout: float, log: Path, sample_memory: bool = False) -> tuple[Row, str]:
    """Run `argv`: wall seconds and ru_maxrss from os.wait4, or a timeout. With `sample_memory`,
    also the highest combined PSS of it and its children, sampled every 10 ms (the sampling
    takes CPU from the measured run: its times are not for reporting).

    Linux carries the spawning process's RSS high-water mark into the child's ru_maxrss at exec
    (exec_mmap → setmax_mm_hiwater_rss), so ru_maxrss is at least this parent's RSS (~36 MB):
    our Python children report their own VmHWM as well, and `peak_rss_mb` is that when present."""
    load = round(os.getloadavg()[0], 2)  # the machine may be shared: say how busy it was
    start = time.perf_counter()
    peak_pss = 0.0
    with log.open("wb") as out, log.with_suffix(".stderr").open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if sample_memory:
                peak_pss = max(peak_pss, pss_mb(proc.pid))
            if time.perf_counter() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"status": "timeout", "wall_s": timeout, "loadavg_1m": load}, ""
            time.sleep(0.01)
    row: Row = {"status": "ok", "wall_s": round(time.perf_counter() - start, 3),
                "wait4_maxrss_mb": round(usage.ru_maxrss / 1024, 1), "loadavg_1m": load}
    if sample_memory:
        row["peak_pss_mb"] = round(peak_pss, 1)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.with_suffix(".stderr").read_text(errors="replace")[-1500:]
        row["status"] = f"exit {code}: {tail}"
        if "memory limit:" in tail:
            row["status"] = tail[tail.index("memory limit:"):].strip()
    return row, log.read_text(errors="replace")


def run_stage(stage: str, cluster: Path, opts: argparse.Namespace, work: Path, *extra: str,
              sample_memory: bool = False) -> Row:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--cluster", str(cluster),
            "--memory-limit-gb", str(opts.memory_limit_gb), *extra]
    row, stdout = run_process(argv, opts.timeout, work / f"{stage}-{cluster.stem}.log", sample_memory)
    if row["status"] == "ok":
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        row.update(json.loads(lines[-1]))
        row["peak_rss_mb"] = row.pop("vm_hwm_mb", None) or row["wait4_maxrss_mb"]
    return row


def ensure_cluster(shape: kube_burner.Shape, label: str, yaml_too: bool, opts: argparse.Namespace,
                   work: Path) -> tuple[Path, Path | None, Row | None]:
    """The cached JSON (and YAML) of this shape, generated in a child process if missing."""
    json_path = CACHE / f"{shape.name}.json"
    yaml_path = CACHE / f"{shape.name}.yaml" if yaml_too else None
    missing = not json_path.exists() or (yaml_path is not None and not yaml_path.exists())
    if not missing:
        return json_path, yaml_path, None
    CACHE.mkdir(parents=True, exist_ok=True)
    extra = ["--size", label, "--seed", str(shape.seed), "--cluster-policies", str(shape.cluster_policies)]
    if yaml_path is not None:
        extra += ["--yaml-path", str(yaml_path)]
    row = run_stage("generate", json_path, opts, work, *extra)
    return json_path, yaml_path, row


def run_nft(argv: list[str], timeout: float, log: Path) -> Row:
    """`argv` under GNU time when present: nft is then a grandchild of this process, and its
    ru_maxrss carries time's ~1 MB high-water mark instead of ours."""
    gnu_time = Path("/usr/bin/time")
    if not gnu_time.exists():
        return run_process(argv, timeout, log)[0]
    row, _ = run_process([str(gnu_time), "-f", "nft_maxrss_kb=%M", *argv], timeout, log)
    stderr = log.with_suffix(".stderr").read_text(errors="replace") if log.with_suffix(".stderr").exists() else ""
    if found := re.search(r"nft_maxrss_kb=(\d+)", stderr):
        row["peak_rss_mb"] = round(int(found.group(1)) / 1024, 1)
    return row


def nft_load(ruleset: Path, timeout: float, work: Path) -> Row:
    """`nft -f` twice (create, then atomic replace) in a fresh network namespace, deleted after."""
    namespace = f"np-bench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        argv = ["ip", "netns", "exec", namespace, "nft", "-f", str(ruleset)]
        first = run_nft(argv, timeout, work / "nft-first.log")
        again = run_nft(argv, timeout, work / "nft-again.log") if first["status"] == "ok" else {}
        return {"status": first["status"], "namespace": namespace, "first_load": first, "replace": again}
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


def measure_size(shape: kube_burner.Shape, label: str, opts: argparse.Namespace, emit: Callable[[Row], None]) -> None:
    """Every stage for one cluster shape, each row emitted as soon as it is measured."""
    work = CACHE / "runs" / shape.name
    work.mkdir(parents=True, exist_ok=True)
    base: Row = {"benchmark": "compile_scale", "size": label, "pods": shape.pods,
                 "policies": shape.policies, "nodes": shape.nodes}
    yaml_too = shape.pods <= opts.yaml_max_pods
    json_path, yaml_path, generated = ensure_cluster(shape, label, yaml_too, opts, work)
    if generated is not None:
        emit({**base, "stage": "generate", **generated})
    largest = work / "largest.nft"
    largest.unlink(missing_ok=True)
    jobs = ["--jobs", str(opts.jobs)] if opts.jobs else []
    events_args = ["--events", str(opts.events), "--event-budget", str(opts.event_budget),
                   "--seed", str(opts.seed), "--stage-timeout", str(opts.timeout)]
    stages: list[tuple[str, str, Path, list[str]]] = [
        ("load-json", "load", json_path, []),
        *([("load-yaml", "load", yaml_path, [])] if yaml_path else []),
        ("compile-node", "compile-node", json_path, []),
        ("compile-all", "compile-all", json_path, ["--out-nft", str(largest), *jobs]),
        ("compile-all-1-job", "compile-all", json_path, ["--jobs", "1"]),
        ("compile-all-memory", "compile-all", json_path, jobs),  # again, its PSS sampled
        ("events", "events", json_path, events_args),
        ("agent-events", "events", json_path, [*events_args, "--agent-node", "prometheus"]),
    ]
    if opts.cnp_only:  # the events without cluster policies stay: the ones with them compare to them
        stages = [stage for stage in stages if stage[1] == "events"]
    resolver_failed = ""
    for name, stage, path, extra in stages:
        if resolver_failed and stage in RESOLVER_STAGES:  # each would build the same resolver first
            emit({**base, "stage": name, "status": f"skipped: {resolver_failed}"})
            continue
        row = run_stage(stage, path, opts, work, *extra, sample_memory=name == "compile-all-memory")
        emit({**base, "stage": name, **row})
        if stage == "compile-node" and row["status"] != "ok":  # the least any of them needs
            resolver_failed = f"{name} did not finish ({row['status'].split(chr(10))[0]})"
    if not opts.no_kernel and largest.exists():
        emit({**base, "stage": "kernel-load", "file_bytes": largest.stat().st_size,
              **nft_load(largest, opts.timeout, work)})
    if opts.cluster_policies and not resolver_failed:
        measure_cluster_policies(shape, label, opts, emit, json_path)


CNP_COMPILE_TARGET = 1.25  # all nodes with the cluster policies ÷ without, at most
CNP_EVENT_TARGET_MS = 50.0  # one cluster-policy event → the busiest node's new ruleset, p99


def measure_cluster_policies(shape: kube_burner.Shape, label: str, opts: argparse.Namespace,
                             emit: Callable[[Row], None], without: Path) -> None:
    """The same cluster plus `--cluster-policies` ClusterNetworkPolicies: every node's ruleset
    with and without them, alternately (`--cnp-rounds` each, with the same processes), their
    ratio against the target; cluster-policy events on the busiest node's agent; and the pod
    and policy events again, with the cluster policies present."""
    with_shape = dataclasses.replace(shape, cluster_policies=opts.cluster_policies)
    work = CACHE / "runs" / with_shape.name
    work.mkdir(parents=True, exist_ok=True)
    base: Row = {"benchmark": "compile_scale", "size": label, "pods": shape.pods, "policies": shape.policies,
                 "nodes": shape.nodes, "cluster_policies": with_shape.cluster_policies}
    with_path, _, generated = ensure_cluster(with_shape, label, False, opts, work)
    if generated is not None:
        emit({**base, "stage": "generate-cnp", **generated})
    largest = work / "largest.nft"
    largest.unlink(missing_ok=True)
    jobs = ["--jobs", str(opts.jobs)] if opts.jobs else []
    runs: dict[int, list[Row]] = {0: [], with_shape.cluster_policies: []}
    for turn in range(opts.cnp_rounds):  # alternately, the first of each pair swapping: drift hits both
        order = [(0, without), (with_shape.cluster_policies, with_path)]
        for count, path in order if turn % 2 == 0 else order[::-1]:
            extra = ["--out-nft", str(largest)] if count and turn == 0 else []
            row = run_stage("compile-all", path, opts, work, *extra, *jobs)
            row.update(round=turn)
            emit({**base, "stage": "compile-all-pair", "cluster_policies": count, **row})
            runs[count].append(row)
    emit({**base, "stage": "cnp-compile-ratio", **compile_ratio(runs[0], runs[with_shape.cluster_policies])})
    events_args = ["--event-budget", str(opts.event_budget), "--seed", str(opts.seed),
                   "--stage-timeout", str(opts.timeout)]
    stages: list[tuple[str, str, list[str]]] = [
        ("cnp-events", "cnp-events", ["--events", str(opts.cnp_events), "--agent-node", "prometheus", *events_args]),
        ("events-cnp", "events", ["--events", str(opts.events), *events_args]),
        ("agent-events-cnp", "events", ["--events", str(opts.events), "--agent-node", "prometheus", *events_args]),
    ]
    for name, stage, extra in stages:
        emit({**base, "stage": name, **run_stage(stage, with_path, opts, work, *extra)})
    if not opts.no_kernel and largest.exists():
        emit({**base, "stage": "kernel-load-cnp", "file_bytes": largest.stat().st_size,
              **nft_load(largest, opts.timeout, work)})


def compile_ratio(without: list[Row], with_: list[Row]) -> Row:
    """Medians of the all-nodes compile without and with the cluster policies, and their ratio
    (wall time, which the target is about; CPU time of every process, which a busy machine
    disturbs less)."""
    def column(rows: list[Row], key: str) -> list[float]:
        return [r[key] for r in rows if r["status"] == "ok" and key in r]

    out: Row = {"rounds": len(with_), "target_ratio": CNP_COMPILE_TARGET}
    for key, name in (("end_to_end_s", "s"), ("cpu_s", "cpu_s")):
        a, b = column(without, key), column(with_, key)
        out[f"without_{name}"], out[f"with_{name}"] = a, b
        if a and b:
            out[f"without_median_{name}"] = round(statistics.median(a), 3)
            out[f"with_median_{name}"] = round(statistics.median(b), 3)
            out["ratio" if name == "s" else "cpu_ratio"] = round(statistics.median(b) / statistics.median(a), 3)
    out["status"] = "ok" if "ratio" in out else "failed"
    out["met"] = out.get("ratio", float("inf")) <= CNP_COMPILE_TARGET
    for which, rows in (("without", without), ("with", with_)):
        ok = [r for r in rows if r["status"] == "ok"]
        if ok:
            out[f"processes_{which}"] = ok[0].get("processes")
            out[f"peak_rss_mb_{which}"] = max(r.get("peak_rss_mb") or 0 for r in ok)
            out[f"largest_{which}"] = ok[0].get("largest")
            out[f"total_bytes_{which}"] = ok[0].get("total_bytes")
    return out


def source_digest() -> Row:
    """Which compiler was measured: HEAD and a digest of netpol/ as it is on disk now."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "netpol").rglob("*.py")):
        digest.update(path.read_bytes())

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"git_head": git("rev-parse", "--short", "HEAD"), "netpol_sha256": digest.hexdigest()[:12],
            "netpol_dirty": bool(git("status", "--porcelain", "netpol"))}


def environment() -> Row:
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "kernel": platform.release(), "nft": nft, **source_digest()}


# -- tables ----------------------------------------------------------------------------------


def _get(row: Row | None, *path: str) -> Any:
    value: Any = row
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return "-"
        value = value[key]
    return value


def _ok(row: Row | None) -> str | None:
    """The row's status when it is not ok (shown instead of numbers)."""
    if row is None:
        return "-"
    status = str(row.get("status", "ok"))
    return None if status == "ok" else status.split(":", maxsplit=1)[0]


def print_tables(rows: list[Row]) -> None:
    rows = [r for r in rows if "size" in r]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    by = {(r["size"], r["stage"]): r for r in rows}
    out = sys.stderr
    print(f"\n{'size':>14} {'pods':>7} {'pol':>6} {'nodes':>5} | {'JSON load s':>11} {'parse':>6} {'decode':>6} "
          f"{'MB':>6} | {'YAML s':>7} | {'1 node s':>8} {'MB':>6} | {'all nodes s':>11} {'proc':>4} {'MB':>6} "
          f"{'+MB':>5} {'PSS':>5} | {'1 job s':>7} {'MB':>6}", file=out)
    for size in sizes:
        lj, ly, one, every, serial, pss = (by.get((size, s)) for s in (
            "load-json", "load-yaml", "compile-node", "compile-all", "compile-all-1-job", "compile-all-memory"))
        head = next(r for r in rows if r["size"] == size)
        print(f"{size:>14} {head['pods']:>7} {head['policies']:>6} {head['nodes']:>5} | "
              f"{_ok(lj) or _get(lj, 'total_s'):>11} {_get(lj, 'parse_s'):>6} {_get(lj, 'decode_s'):>6} "
              f"{_get(lj, 'peak_rss_mb'):>6} | {_ok(ly) or _get(ly, 'total_s'):>7} | "
              f"{_ok(one) or _get(one, 'end_to_end_s'):>8} {_get(one, 'peak_rss_mb'):>6} | "
              f"{_ok(every) or _get(every, 'end_to_end_s'):>11} {_get(every, 'processes'):>4} "
              f"{_get(every, 'peak_rss_mb'):>6} {_get(every, 'workers_peak_rss_mb'):>5} "
              f"{_get(pss, 'peak_pss_mb'):>5} | "
              f"{_ok(serial) or _get(serial, 'end_to_end_s'):>7} {_get(serial, 'peak_rss_mb'):>6}", file=out)
    print(f"\n{'size':>14} | {'largest KB':>10} {'lines':>7} {'sets':>5} {'elems':>7} {'chains':>6} {'rules':>6} | "
          f"{'events':>6} {'p50 ms':>8} {'p99 ms':>8} {'1 node p99':>10} {'agent p99':>9} {'MB':>6} | "
          f"{'nft -f s':>8} {'replace s':>9} {'MB':>6}", file=out)
    for size in sizes:
        every, ev, agent, k = (by.get((size, s)) for s in ("compile-all", "events", "agent-events", "kernel-load"))
        big = _get(every, "largest")
        kb = round(big["bytes"] / 1024) if isinstance(big, dict) else "-"
        print(f"{size:>14} | {kb:>10} {_get(big, 'lines'):>7} {_get(big, 'sets'):>5} {_get(big, 'elements'):>7} "
              f"{_get(big, 'chains'):>6} {_get(big, 'rules'):>6} | {_get(ev, 'events', 'count'):>6} "
              f"{_ok(ev) or _get(ev, 'events', 'p50_ms'):>8} {_get(ev, 'events', 'p99_ms'):>8} "
              f"{_get(ev, 'events', 'one_node_p99_ms'):>10} {_ok(agent) or _get(agent, 'events', 'p99_ms'):>9} "
              f"{_get(ev, 'peak_rss_mb'):>6} | {_ok(k) or _get(k, 'first_load', 'wall_s'):>8} "
              f"{_get(k, 'replace', 'wall_s'):>9} {_get(k, 'first_load', 'peak_rss_mb'):>6}", file=out)
    cnp_sizes = [size for size in sizes if (size, "cnp-compile-ratio") in by or (size, "cnp-events") in by]
    if not cnp_sizes:
        return
    print(f"\n{'size':>14} {'CNPs':>5} | {'all nodes s':>11} {'with CNPs':>9} {'ratio':>6} {'CPU':>6} {'≤ 1.25':>6} | "
          f"{'CNP events':>10} {'p50 ms':>7} {'p99 ms':>7} {'≤ 50':>5} | {'agent p99':>9} {'with':>6} | "
          f"{'all p99':>8} {'with':>6} | {'largest KB':>10} {'with':>6}", file=out)
    for size in cnp_sizes:
        ratio, cnp, agent, agent_cnp, ev, ev_cnp = (by.get((size, s)) for s in (
            "cnp-compile-ratio", "cnp-events", "agent-events", "agent-events-cnp", "events", "events-cnp"))
        sizes_kb = [round(b["bytes"] / 1024) if isinstance(b := _get(ratio, f"largest_{w}"), dict) else "-"
                    for w in ("without", "with")]
        print(f"{size:>14} {_get(ratio or cnp, 'cluster_policies'):>5} | "
              f"{_ok(ratio) or _get(ratio, 'without_median_s'):>11} {_get(ratio, 'with_median_s'):>9} "
              f"{_get(ratio, 'ratio'):>6} {_get(ratio, 'cpu_ratio'):>6} {_yes(_get(ratio, 'met')):>6} | "
              f"{_get(cnp, 'events', 'count'):>10} {_ok(cnp) or _get(cnp, 'events', 'one_node_p50_ms'):>7} "
              f"{_get(cnp, 'events', 'one_node_p99_ms'):>7} {_yes(_get(cnp, 'met')):>5} | "
              f"{_ok(agent) or _get(agent, 'events', 'p99_ms'):>9} {_ok(agent_cnp) or _get(agent_cnp, 'events', 'p99_ms'):>6} | "
              f"{_ok(ev) or _get(ev, 'events', 'p99_ms'):>8} {_ok(ev_cnp) or _get(ev_cnp, 'events', 'p99_ms'):>6} | "
              f"{sizes_kb[0]:>10} {sizes_kb[1]:>6}", file=out)


def _yes(value: Any) -> str:
    return "met" if value is True else "NOT" if value is False else "-"


# -- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1k,10k", help="PODS[/POLICIES[/NODES]],… (default %(default)s)")
    parser.add_argument("--targets", action="store_true", help=f"also the issue's targets: {', '.join(TARGETS)}")
    parser.add_argument("--events", type=int, default=200, help="incremental events per size")
    parser.add_argument("--event-budget", type=float, default=300.0, help="stop the events after this many s")
    parser.add_argument("--out", type=Path, help="also write every row (and the environment) as one JSON file")
    parser.add_argument("--no-kernel", action="store_true", help="skip loading the ruleset with nft")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a measurement is stopped")
    parser.add_argument("--yaml-max-pods", type=int, default=10_000, help="measure YAML loading up to this size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, help="compile-all's processes (default: as `netpol compile "
                                                 "--all-nodes` decides); compile-all-1-job is always measured too")
    parser.add_argument("--cluster-policies", type=int,
                        help="also measure every size plus this many ClusterNetworkPolicies (default: 100 "
                             "with --targets, else none): all nodes with and without them, cluster-policy "
                             "events, pod and policy events with them")
    parser.add_argument("--cnp-rounds", type=int, default=5,
                        help="all-nodes compiles with and without the cluster policies, each (default %(default)s)")
    parser.add_argument("--cnp-events", type=int, default=150, help="cluster-policy events (default %(default)s)")
    parser.add_argument("--cnp-only", action="store_true",
                        help="only the cluster-policy measurements (and the pod/policy events they compare to)")
    parser.add_argument("--memory-limit-gb", type=float, default=12.0,
                        help="address-space limit of each measurement (0: none); over it, it fails cleanly")
    child = parser.add_argument_group("one stage in this process (used by the parent; for profiling)")
    child.add_argument("--child", choices=sorted(STAGES))
    child.add_argument("--cluster", type=Path, help="the cluster manifest file")
    child.add_argument("--size", help="generate: the shape")
    child.add_argument("--yaml-path", type=Path, help="generate: also write YAML here")
    child.add_argument("--out-nft", type=Path, help="compile-all: write the largest ruleset here")
    child.add_argument("--no-check", action="store_true", help="events: skip the from-scratch comparison")
    child.add_argument("--agent-node", choices=("typical", "prometheus"),
                       help="events: compile for this one node only, as its agent does")
    child.add_argument("--stage-timeout", type=float, default=float("inf"),
                       help="events: the parent's timeout; stop the events in time to report")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.child:
        return child_main(args)
    labels = [s for s in args.sizes.split(",") if s] + (list(TARGETS) if args.targets else [])
    if args.cluster_policies is None:
        args.cluster_policies = 100 if args.targets else 0
    shapes = [(label, parse_size(label, args.seed)) for label in labels]
    rows: list[Row] = []
    meta = environment()
    print(json.dumps({"benchmark": "compile_scale", "environment": meta}), flush=True)

    def emit(row: Row) -> None:
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.out:
            args.out.write_text(json.dumps({"environment": meta, "rows": rows}, indent=1))

    CACHE.mkdir(parents=True, exist_ok=True)  # a fresh clone has none: logs of every stage go here
    try:
        floor = run_stage("import", Path(os.devnull), args, CACHE)
        emit({"benchmark": "compile_scale", "stage": "import", **floor})
        for label, shape in shapes:
            measure_size(shape, label, args, emit)
    finally:
        print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
