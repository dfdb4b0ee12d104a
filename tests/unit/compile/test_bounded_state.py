"""The agent's compiler keeps what its objects need, not their history: after pods replaced under
new names, addresses and `pod-template-hash` labels, and policies replaced under new names and
selectors, none of its indexes, caches and bookkeeping holds more entries than a compiler built
from scratch on the objects that are left. The same at 250,000 changes, in RSS:
benchmarks/soak.py (tests/bench runs it at CI size)."""

from __future__ import annotations

import gc
import ipaddress
from typing import Any

from netpol.backends.nftables import render, render_update
from netpol.compile.incremental import IncrementalCompiler
from netpol.compile.ir import NodeProgram
from netpol.labels import Labels, LabelSelector
from netpol.model import (
    ClusterState,
    ContainerPort,
    Namespace,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    PolicyPort,
    Rule,
)

NODE = "node-a"


def _pod(i: int, generation: int) -> Pod:
    address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.10")) + (i * 7 + generation) % 200)
    labels = Labels({"app": f"app-{i % 4}", "pod-template-hash": f"h{generation}"})
    return Pod(f"ns-{i % 3}", f"pod-{i}-{generation}", labels, (address,), ("node-a", "node-b")[i % 2],
               ports=(ContainerPort(8080 + i % 2, "TCP", "http"),))


def _policy(i: int, generation: int) -> NetworkPolicy:
    peer = Peer(LabelSelector(Labels({"app": f"app-{generation % 4}", "rev": f"r{generation}"})), LabelSelector())
    return NetworkPolicy(f"ns-{i % 3}", f"policy-{i}-{generation}", LabelSelector(Labels({"app": f"app-{i % 4}"})),
                         ingress=(Rule((peer,), (PolicyPort("TCP", 80 + generation),)),),
                         egress=(Rule((peer,), (PolicyPort("TCP", "http"),)),), policy_types=("Ingress", "Egress"))


def footprint(compiler: IncrementalCompiler) -> dict[str, int]:
    """Entries in every container the compiler, its program compiler and its resolver keep."""
    found: dict[str, int] = {}
    for owner, name in (("incremental", compiler), ("program", compiler._compiler),
                        ("resolver", compiler.resolver)):
        for attribute, value in vars(name).items():
            if isinstance(value, dict | set | list):
                found[f"{owner}.{attribute}"] = _entries(value)
    resolver = compiler.resolver
    found["resolver.graph"] = resolver.graph.number_of_nodes() + resolver.graph.number_of_edges()
    found["resolver.label_index"] = sum(len(i.by_pair) + len(i.by_key) for i in resolver._pod_index.values())
    found["resolver.namespace_index"] = len(resolver._namespace_index.by_pair)
    return found


def _entries(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(len(v) for v in value.values() if isinstance(v, dict | set))
    return len(value)


def _replace_policy(compiler: IncrementalCompiler, policies: dict[int, NetworkPolicy], generation: int,
                    program: NodeProgram) -> NodeProgram:
    """One policy deleted and replaced by the generation's; the node's update printed."""
    i = generation % len(policies)
    compiler.apply("DELETED", policies[i])
    policies[i] = _policy(i, generation)
    compiler.apply("ADDED", policies[i])
    render_update(program, new := compiler.program(NODE))
    return new


def test_churn_leaves_no_more_state_than_a_compiler_built_from_what_is_left():
    pods = {i: _pod(i, 0) for i in range(12)}
    policies = {i: _policy(i, 0) for i in range(6)}
    nodes = [Node("node-a"), Node("node-b")]
    namespaces = [Namespace(f"ns-{i}") for i in range(3)]
    compiler = IncrementalCompiler(ClusterState.build(namespaces, pods.values(), nodes, policies.values()),
                                   nodes={NODE})
    program = compiler.program(NODE)
    for generation in range(1, 60):
        for i in (generation % 12, (generation * 5) % 12):
            compiler.apply("DELETED", pods[i])
            pods[i] = _pod(i, generation)
            compiler.apply("ADDED", pods[i])
        program = _replace_policy(compiler, policies, generation, program)
    fresh = IncrementalCompiler(ClusterState.build(namespaces, pods.values(), nodes, policies.values()),
                                nodes={NODE})
    assert render(fresh.program(NODE)) == render(program)
    churned, rebuilt = footprint(compiler), footprint(fresh)
    grown = {k: (v, rebuilt.get(k)) for k, v in churned.items() if v > rebuilt.get(k, 0)}
    assert not grown, f"holds more than a fresh compiler (churned, fresh): {grown}"


def test_the_renderers_caches_follow_the_objects_they_describe():
    """The nftables backend's per-allow and per-side caches shrink with the programs (once its
    size-bounded caches, which hold what they last printed, are emptied)."""
    from netpol.backends import nftables

    policies = {i: _policy(i, 0) for i in range(6)}
    compiler = IncrementalCompiler(ClusterState.build(pods=[_pod(i, 0) for i in range(12)],
                                                      policies=policies.values()), nodes={NODE})
    _clear_bounded_caches(nftables)
    program = compiler.program(NODE)
    render(program)
    gc.collect()
    sizes = nftables._rules_of.cache_len(), nftables._side_group.cache_len()  # type: ignore[attr-defined]
    for generation in range(1, 40):
        program = _replace_policy(compiler, policies, generation, program)
    _clear_bounded_caches(nftables)
    assert sizes[0] and sizes[1]
    assert nftables._rules_of.cache_len() <= sizes[0]  # type: ignore[attr-defined]
    assert nftables._side_group.cache_len() <= sizes[1]  # type: ignore[attr-defined]


def _clear_bounded_caches(module: object) -> None:
    """Empty the module's `lru_cache`s, then collect: bounded by size, not by what lives, they
    hold the IR objects of whichever tests ran before in this process (and so, through the
    weak caches, entries this test would count)."""
    for value in vars(module).values():
        if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
            value.cache_clear()
    gc.collect()
