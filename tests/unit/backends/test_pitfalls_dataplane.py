"""The data-plane pitfalls of ../shared/PITFALLS.md (13–20), each a test named after it. (14's
ipset half is in test_iptables.py, 19 on real packets in test_nftables_packets.py; these check
the rulesets and updates the compiler emits, and what the agent asks of the kernel.)"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from netpol.agent.coalesce import SyncTiming
from netpol.agent.loop import Agent
from netpol.backends.nftables import render, render_update
from netpol.compile.compiler import compile_node
from netpol.compile.incremental import IncrementalCompiler
from netpol.labels import Labels
from netpol.load.encode import encode_namespace, encode_network_policy, encode_node, encode_pod
from netpol.load.manifests import load_state
from netpol.model import ClusterState
from netpol.sources.events import KIND_NAMES, Delta, Snapshot
from tests.conftest import cluster, pod_yaml

DUAL_STACK = "".join([
    pod_yaml("a", "web", "10.244.0.5,fd00::5", "{app: web}"),
    pod_yaml("a", "db", "10.244.0.6,fd00::6", "{app: db}"),
    pod_yaml("b", "client", "10.244.1.7,fd00:1::7", "{app: client}", node="node-b"),
    """\
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: a}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]}]
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}, {to: [{ipBlock: {cidr: 0.0.0.0/0}}, {ipBlock: {cidr: "::/0"}}]}]
""",
])


def _state(example_path: str) -> ClusterState:
    return load_state([example_path])


def _structure(ruleset: str) -> str:
    """The ruleset without set and map elements: its chains, rules and declarations."""
    return re.sub(r"elements = \{[^}]*\}", "elements = {…}", ruleset)


def test_pitfall_13_one_transaction_per_table_and_no_hooked_chain_flushed(example_path):
    state = _state(example_path)
    text = render(compile_node(state, "node-a"))
    # the whole table goes in one file, one transaction: create-if-absent, delete, new table
    assert re.findall(r"^(table|delete table) inet netpol", text, re.MULTILINE) == ["table", "delete table", "table"]
    compiler = IncrementalCompiler(state, nodes={"node-a"})
    old = compiler.program("node-a")
    policy = next(p for p in state.policies if compiler.resolver.policy_targets(p.key))
    update = compiler.apply("DELETED", policy)
    delta = render_update(old, update.programs["node-a"])
    assert delta and "chain inet netpol forward" not in delta  # the hooked chain is never flushed
    assert "delete table" not in delta


def test_pitfall_15_the_agent_never_lists_the_kernel_it_diffs_against_what_it_applied(example_path):
    state = _state(example_path)
    calls: list[tuple[str, str]] = []

    class Kernel:  # the only operation the agent has: apply a ruleset; there is no `list`
        def apply(self, ruleset: str, force: bool = False) -> None:
            calls.append(("apply", ruleset))

        def __getattr__(self, name: str) -> object:
            calls.append((name, ""))
            raise AttributeError(name)

    agent = Agent("node-a", Kernel(), SyncTiming(min_interval=0, max_interval=0))
    encoders = {"Namespace": (encode_namespace, state.namespaces), "Pod": (encode_pod, state.pods),
                "Node": (encode_node, state.nodes), "NetworkPolicy": (encode_network_policy, state.policies)}
    for kind in KIND_NAMES:
        encode, objects = encoders.get(kind, (encode_namespace, ()))  # (no cluster policies here)
        agent.take(Snapshot(kind, tuple(encode(o) for o in objects), "1"))
    assert agent.sync()
    moved = dataclasses.replace(next(p for p in state.pods if p.node_name == "node-a"),
                                labels=Labels({"app": "other"}))
    agent.take(Delta("Pod", "MODIFIED", encode_pod(moved)))
    assert agent.sync()
    assert [name for name, _ in calls] == ["apply", "apply"]
    assert calls[1][1].startswith("# netpol update")  # computed from the program it holds


def test_pitfall_16_addresses_are_matched_with_named_sets_not_anonymous_ones(example_path):
    for source in (render(compile_node(_state(example_path), "node-a")),
                   render(compile_node(cluster(DUAL_STACK), "node-a"))):
        assert not re.search(r"(saddr|daddr) \{", source)  # no anonymous address sets in rules
        assert re.search(r"(saddr|daddr) @", source)


def test_pitfall_17_remote_pods_change_elements_only_and_never_the_structure(example_path):
    state = _state(example_path)
    before = render(compile_node(state, "node-a"))
    # a pod on node-b that node-a's sets hold (a peer of a local pod): copies of it join them
    template = next(p for p in state.pods if p.node_name == "node-b" and p.ips and f" {p.ips[0]}" in before)
    crowd = [dataclasses.replace(template, name=f"{template.name}-copy-{i}",
                                 ips=(ipaddress.ip_address(f"10.244.1.{100 + i}"),)) for i in range(120)]
    bigger = ClusterState.build(state.namespaces, [*state.pods, *crowd], state.nodes, state.policies)
    after = render(compile_node(bigger, "node-a"))
    assert after != before and "10.244.1.219" in after  # the copies are in node-a's sets …
    assert _structure(after) == _structure(before)  # … and chains, rules and maps did not grow
    compiler = IncrementalCompiler(state, nodes={"node-a"})
    for pod in crowd[:5]:
        old = compiler.program("node-a")
        update = compiler.apply("ADDED", pod)
        assert "node-a" in update.elements_only  # a membership change is an element update
        delta = render_update(old, update.programs["node-a"])
        assert "chain" not in delta and re.fullmatch(r"(#.*|add element .*)(\n.*)*", delta.strip()), delta


def test_pitfall_18_every_set_holds_one_address_family():
    text = render(compile_node(cluster(DUAL_STACK), "node-a"))
    declared = re.findall(r"(?:set|map) (\S+) \{ type ([^;:]+)", text)
    assert declared
    for name, key_type in declared:
        families = {"ipv4_addr" in key_type, "ipv6_addr" in key_type}
        assert families == {True, False}, (name, key_type)  # one family, never both
        assert name.endswith("-v4") == ("ipv4_addr" in key_type), name


def test_pitfall_20_ipv6_neighbour_discovery_passes_before_any_pod_chain():
    text = render(compile_node(cluster(DUAL_STACK), "node-a"))
    forward = text[text.index("chain forward {"):]
    forward = forward[:forward.index("\n\t}")]
    nd = forward.index("nd-neighbor-solicit")
    assert "nd-neighbor-advert" in forward[nd - 200:nd + 200] and "accept" in forward[nd:nd + 200]
    assert nd < forward.index("vmap @ingress-v6") and nd < forward.index("vmap @egress-v6")
