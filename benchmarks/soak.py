"""Memory under churn at constant cluster size (issue 14, item 7): one process runs what a node's
agent runs — `IncrementalCompiler(state, nodes={its node})`, then `render_update` of its node
after every event — through a long stream of changes that keeps the cluster's size constant,
and samples the process's RSS along the way.

    python benchmarks/soak.py [--pods 1000] [--changes 250000] [--samples 50000] [--json FILE]
                              [--check] [--count-objects] [--tracemalloc]

The cluster is kube-burner-shaped (`kube_burner.py`, cached in benchmarks/.cache/ like
compile_scale.py's). A change is one watch event, drawn from:
  replace-pod     a workload pod deleted, and a new one added: a new name, a free address of a
                  random node other than the old one, a new `pod-template-hash` label (2 events)
  relabel-pod     a pod's `version`, `num` or `tier` label changed
  replace-policy  a workload policy deleted, and a new one added under a new name: the same
                  spec half of the time, else another replica of kube-burner's policies (2 events)
RSS (VmRSS, after a full collection) is sampled every --samples changes; the target is a flat
line: within ±10 % between the first sample and the last. `--check` ends by comparing the
node's program with a compile from scratch (tests/bench runs a few thousand changes with it).
`--count-objects` reports the types whose live objects grew most between the first and the last
sample (cheap), `--tracemalloc` the allocation sites (slow: for finding a leak, not for the
numbers). One JSON document on stdout, progress
on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kube_burner

from netpol.backends.nftables import render, render_update
from netpol.compile.compiler import compile_node
from netpol.compile.incremental import IncrementalCompiler, KubeObject
from netpol.compile.resolver import EventType, Resolver
from netpol.gc import settle_long_lived, without_cyclic_gc
from netpol.labels import Labels
from netpol.load.decode import decode_document
from netpol.load.manifests import load_state
from netpol.model import ClusterState, IPAddress, NetworkPolicy, Pod

CACHE = Path(__file__).resolve().parent / ".cache"
KINDS = ("replace-pod", "relabel-pod", "replace-policy")
WEIGHTS = (5, 3, 2)


def cluster_file(pods: int) -> Path:
    shape = kube_burner.Shape.of(pods)
    path = CACHE / f"{shape.name}.json"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        kube_burner.write_json(kube_burner.generate(shape), path, None)  # the file compile_scale.py caches
    return path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclasses.dataclass
class Churn:
    """Changes that keep the cluster's size: every pod or policy that goes is replaced."""

    resolver: Resolver
    rng: random.Random
    workload: list[str]  # kube-burner's namespaces
    counter: int = 0

    def next(self) -> list[tuple[EventType, KubeObject]]:
        self.counter += 1
        kind = self.rng.choices(KINDS, WEIGHTS)[0]
        return getattr(self, kind.replace("-", "_"))()

    def _workload(self, objects: dict[str, Any]) -> Any:
        return objects[self.rng.choice([k for k in objects if k.startswith(kube_burner.NS_PREFIX)])]

    def replace_pod(self) -> list[tuple[EventType, KubeObject]]:
        old: Pod = self._workload(self.resolver.pods)
        labels = dict(old.labels, **{"pod-template-hash": f"{self.counter:x}"})
        node, ip = self._free_address(old)
        new = dataclasses.replace(old, name=f"{old.name.split('-churn-')[0]}-churn-{self.counter}",
                                  labels=Labels(labels), ips=(ip,), node_name=node)
        return [("DELETED", old), ("ADDED", new)]

    def _free_address(self, leaving: Pod) -> tuple[str, IPAddress]:
        """A random node with room, and a random free address of it other than the leaving pod's."""
        nodes = sorted(self.resolver.nodes)
        self.rng.shuffle(nodes)
        for node in nodes:
            used = {ip for p in self.resolver.pods.values() if p.node_name == node for ip in p.ips}
            cidr = self.resolver.nodes[node].pod_cidrs[0]
            free = [a for a in cidr.hosts() if a not in used and a != cidr.network_address + 1]
            if node == leaving.node_name or free:
                return node, self.rng.choice(free or list(leaving.ips))
        raise AssertionError("no node")

    def relabel_pod(self) -> list[tuple[EventType, KubeObject]]:
        pod: Pod = self._workload(self.resolver.pods)
        labels = dict(pod.labels)
        which = self.rng.choice(("version", "num", "tier"))
        labels[which] = {"version": lambda: "v2" if labels.get("version") == "v1" else "v1",
                         "num": lambda: str(self.rng.randint(1, 50)),
                         "tier": lambda: self.rng.choice(kube_burner.TIERS)}[which]()
        return [("MODIFIED", dataclasses.replace(pod, labels=Labels(labels)))]

    def replace_policy(self) -> list[tuple[EventType, KubeObject]]:
        old: NetworkPolicy = self._workload(self.resolver.policies)
        name = f"{old.name.split('-churn-')[0]}-churn-{self.counter}"
        if self.rng.random() < 0.5:
            new = dataclasses.replace(old, name=name)
        else:
            index = int(old.namespace.rsplit("-", 1)[1])
            plan = kube_burner.NamespacePlan(old.namespace, index, "", "", 0)
            doc = kube_burner.kube_burner_policy(self.rng.choice(("ingress", "egress")), plan,
                                                 self.rng.randint(0, 40), len(self.workload), name)
            objects, problems = decode_document(doc, "soak")
            assert not problems and isinstance(objects[0], NetworkPolicy), problems
            new = objects[0]
        return [("DELETED", old), ("ADDED", new)]


def full_state(resolver: Resolver) -> ClusterState:
    return ClusterState.build(resolver.namespaces.values(), resolver.pods.values(),
                              resolver.nodes.values(), resolver.policies.values())


def soak(args: argparse.Namespace) -> dict[str, Any]:
    with without_cyclic_gc():
        state = load_state([str(cluster_file(args.pods))])
    node = sorted(n.name for n in state.nodes)[0]
    compiler = IncrementalCompiler(state, nodes={node})
    program = compiler.program(node)
    render(program)
    del state
    settle_long_lived()  # what the agent does once the initial state is built
    churn = Churn(compiler.resolver, random.Random(args.seed),
                  sorted(n for n in compiler.resolver.namespaces if n.startswith(kube_burner.NS_PREFIX)))
    samples: list[dict[str, Any]] = [{"changes": 0, "rss_mb": round(rss_mb(), 1)}]
    if args.tracemalloc:
        tracemalloc.start(8)
    first_snapshot = None
    counts: list[Counter[str]] = []
    changes, started = 0, time.perf_counter()
    busiest_update = 0
    while changes < args.changes:
        for event, obj in churn.next():
            update = compiler.apply(event, obj)
            if node in update.programs:
                new = update.programs[node]
                busiest_update = max(busiest_update, len(render_update(program, new)))
                program = new
            changes += 1
            if changes % args.samples == 0:
                gc.collect()
                samples.append({"changes": changes, "rss_mb": round(rss_mb(), 1),
                                "seconds": round(time.perf_counter() - started, 1)})
                print(f"soak: {changes} changes, RSS {samples[-1]['rss_mb']} MB", file=sys.stderr, flush=True)
                if args.tracemalloc and first_snapshot is None:
                    first_snapshot = tracemalloc.take_snapshot()
                if args.count_objects:
                    counts.append(Counter(type(o).__qualname__ for o in gc.get_objects()))
    result: dict[str, Any] = {"pods": len(compiler.resolver.pods), "policies": len(compiler.resolver.policies),
                              "node": node, "changes": changes, "seconds": round(time.perf_counter() - started, 1),
                              "largest_update_bytes": busiest_update, "samples": samples}
    measured = [s["rss_mb"] for s in samples if s["changes"] > 0]
    if measured:
        result["growth_first_to_last"] = round(measured[-1] / measured[0] - 1, 3)
        result["flat_within_10_percent"] = max(measured) <= 1.1 * measured[0] and min(measured) >= 0.9 * measured[0]
    if args.tracemalloc and first_snapshot is not None:
        grown = tracemalloc.take_snapshot().compare_to(first_snapshot, "traceback")
        result["grew_most"] = [{"kib": round(s.size_diff / 1024), "count": s.count_diff,
                                "where": [str(f) for f in s.traceback.format()[-6:]]} for s in grown[:15]]
    if len(counts) > 1:
        result["objects_grew_most"] = dict((counts[-1] - counts[0]).most_common(15))
    if args.check:
        fresh = compile_node(full_state(compiler.resolver), node)
        result["equals_a_compile_from_scratch"] = render(fresh) == render(compiler.program(node))
        result["kernel_path_equals"] = render(program) == render(compiler.program(node))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=1000, help="cluster size (kube-burner shape, 250 pods a node)")
    parser.add_argument("--changes", type=int, default=250_000)
    parser.add_argument("--samples", type=int, default=50_000, help="sample RSS every this many changes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="end with a compile from scratch to compare")
    parser.add_argument("--count-objects", action="store_true", help="report the types whose objects grew")
    parser.add_argument("--tracemalloc", action="store_true", help="report where memory grew (slow)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    result = soak(args)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result.get("equals_a_compile_from_scratch", True) else 1


if __name__ == "__main__":
    sys.exit(main())
