"""A node's ruleset grows with the distinct (peer set, port set) pairs its pods' policies spell,
never with pods × rules: rules that spell the same named-port destinations share one set, and
pods whose program sides are equal share one chain. The kernel load times of the inputs that
amplified: benchmarks/amplification.py (tests/bench runs it at CI size)."""

from __future__ import annotations

import ipaddress
import re

from netpol.backends.iptables import render as render_iptables
from netpol.backends.nftables import render
from netpol.compile.compiler import compile_cluster, compile_node
from netpol.compile.incremental import IncrementalCompiler
from netpol.labels import Labels, LabelSelector
from netpol.model import ClusterState, ContainerPort, NetworkPolicy, Peer, Pod, PolicyPort, Rule

HTTP = (ContainerPort(8080, "TCP", "http"),)


def _pods(count: int, node: str = "node-a", namespace: str = "shop", first: int = 10) -> list[Pod]:
    return [Pod(namespace, f"pod-{i}", Labels({"app": f"a{i % 3}"}),
                (ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.0.0.0")) + first + i),), node, ports=HTTP)
            for i in range(count)]


def _named_egress(name: str) -> NetworkPolicy:
    rule = Rule((Peer(namespace_selector=LabelSelector()),), (PolicyPort("TCP", "http"),))
    return NetworkPolicy("shop", name, LabelSelector(), egress=(rule,), policy_types=("Egress",))


def _sets(text: str) -> list[str]:
    return re.findall(r"^\tset (named-\S+) ", text, re.MULTILINE)


def test_policies_spelling_one_named_port_rule_share_one_set():
    state = ClusterState.build(pods=_pods(20) + _pods(20, "node-b", "other", 100),
                               policies=[_named_egress(f"copy-{k}") for k in range(30)])
    text = render(compile_node(state, "node-a"))
    assert len(_sets(text)) == 1  # one set for 30 policies (each had its own: 30 × 40 elements)
    assert text.count(" . tcp . 8080") == 40  # every destination once
    assert "named ports http/TCP of all pods in namespaces <all>" in text


def test_pods_selected_alike_share_one_chain_whatever_the_number_of_rules():
    ingress = tuple(Rule((Peer(LabelSelector(Labels({"app": f"a{i % 3}"}))),), (PolicyPort("TCP", 1000 + i),))
                    for i in range(200))
    policy = NetworkPolicy("shop", "many-rules", LabelSelector(), ingress=ingress, policy_types=("Ingress",))
    text = render(compile_node(ClusterState.build(pods=_pods(50), policies=[policy]), "node-a"))
    assert len(re.findall(r"^\tchain ingress-", text, re.MULTILINE)) == 1  # not 50
    assert text.count("th dport { 1199 } accept") == 1  # each rule once, not once per pod
    assert text.count(": jump ingress-") == 50  # every pod dispatched to it


def test_the_iptables_backend_shares_chains_alike():
    ingress = tuple(Rule((Peer(LabelSelector(Labels({"app": f"a{i % 3}"}))),), (PolicyPort("TCP", 1000 + i),))
                    for i in range(200))
    policy = NetworkPolicy("shop", "many-rules", LabelSelector(), ingress=ingress, policy_types=("Ingress",))
    rules = render_iptables(compile_node(ClusterState.build(pods=_pods(50), policies=[policy]), "node-a")).iptables
    assert len(re.findall(r"^:NP-I-", rules, re.MULTILINE)) == 1  # not 50
    assert rules.count("--dports 1199 ") == 1  # each rule once, not once per pod
    assert len(re.findall(r"^-A NETPOL-FORWARD -d \S+ -j NP-I-", rules, re.MULTILINE)) == 50


def test_a_shared_set_outlives_one_of_its_policies_and_goes_with_the_last():
    pods = _pods(5) + _pods(5, "node-b", "other", 100)
    policies = [_named_egress("one"), _named_egress("two")]
    compiler = IncrementalCompiler(ClusterState.build(pods=pods, policies=policies))
    for gone, left in ((policies[0], policies[1:]), (policies[1], [])):
        compiler.apply("DELETED", gone)
        expected = compile_cluster(ClusterState.build(pods=pods, policies=left))
        assert {n: render(p) for n, p in compiler.programs().items()} == {n: render(p) for n, p in expected.items()}
        assert len(_sets(render(compiler.program("node-a")))) == len(left)
