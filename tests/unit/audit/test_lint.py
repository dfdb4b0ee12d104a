"""`netpol.audit.lint`: every check fires on a manifest written to trigger it and stays quiet on
its corrected twin; redundancy is computed (removing every reported policy and rule together
changes no verdict, between pods or with addresses outside them, on random clusters)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings

from netpol.audit import redundancy
from netpol.audit.lint import CHECKS, SEVERITIES, Finding, at_least, lint, render_json, render_text, summary
from netpol.audit.redundancy import SearchCounts
from netpol.model import ClusterState
from netpol.semantics.probes import default_probes
from netpol.semantics.reach import participants
from netpol.semantics.reference import Endpoint, allowed, pods_connect
from netpol.testing import clusters, mixed_clusters
from tests.conftest import cluster, connects, pod_yaml, policy_yaml

NAMESPACES = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
"""
PODS = "".join([
    pod_yaml("shop", "web-0", "10.0.0.10", "{app: web}", "[{name: http, containerPort: 8080}]"),
    pod_yaml("shop", "db-0", "10.0.0.11", "{app: db}", "[{name: pg, containerPort: 5432}]"),
    pod_yaml("ops", "client", "10.0.1.5", "{app: client}"),
    pod_yaml("kube-system", "coredns", "10.0.2.53", "{k8s-app: kube-dns}",
             "[{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53}]"),
])
DEFAULT_DENY = "{podSelector: {}}"  # ingress, no rules
TO_DNS = ("{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}, "
          "podSelector: {matchLabels: {k8s-app: kube-dns}}}], ports: [{port: 53, protocol: UDP}, {port: 53}]}")


def state_of(*documents: str, pods: str = PODS) -> ClusterState:
    return cluster(NAMESPACES + pods + "".join(documents))


def found(state: ClusterState, check: str) -> list[Finding]:
    return [f for f in lint(state).findings if f.id == check]


def cluster_policy_yaml(name: str, spec: str, tier: str = "Admin", priority: int = 10) -> str:
    return (f"---\napiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n"
            f"metadata: {{name: {name}}}\nspec: {{tier: {tier}, priority: {priority}, {spec}}}\n")


# -- one test per check: the manifest that triggers it, the one that does not ---------------------


def test_policy_selects_nothing():
    typo = found(state_of(policy_yaml("shop", "web", "{podSelector: {matchLabels: {app: wbe}}}")),
                 "policy-selects-nothing")
    assert [(f.object, f.path, f.severity) for f in typo] == [("NetworkPolicy shop/web", "spec.podSelector", "warning")]
    assert "app=wbe" in typo[0].message
    assert not found(state_of(policy_yaml("shop", "web", "{podSelector: {matchLabels: {app: web}}}")),
                     "policy-selects-nothing")


def test_policy_selects_nothing_in_an_empty_namespace_says_so():
    [finding] = found(state_of(policy_yaml("empty", "deny", DEFAULT_DENY)), "policy-selects-nothing")
    assert "namespace empty has no pods" in finding.message


def test_cluster_policy_whose_subject_selects_nothing():
    nothing = cluster_policy_yaml("guard", "subject: {pods: {namespaceSelector: {}, podSelector: "
                                           "{matchLabels: {app: nope}}}}, ingress: []")
    everyone = cluster_policy_yaml("guard", "subject: {namespaces: {}}, ingress: []")
    assert [f.object for f in found(state_of(nothing), "policy-selects-nothing")] == ["ClusterNetworkPolicy guard"]
    assert not found(state_of(everyone), "policy-selects-nothing")


@pytest.mark.parametrize("peer, why", [
    ("{podSelector: {matchLabels: {app: nope}}}", "no pod of namespace shop matches podSelector app=nope"),
    ("{namespaceSelector: {matchLabels: {team: nobody}}}", "no namespace matches namespaceSelector team=nobody"),
    ("{namespaceSelector: {matchLabels: {team: ops}}, podSelector: {matchLabels: {app: web}}}",
     "no pod of the namespaces namespaceSelector matches (ops) matches podSelector app=web"),
])
def test_peer_selects_nothing(peer, why):
    spec = f"{{podSelector: {{matchLabels: {{app: web}}}}, ingress: [{{from: [{{ipBlock: {{cidr: 192.168.9.0/24}}}}, {peer}]}}]}}"
    [finding] = found(state_of(policy_yaml("shop", "web", spec)), "peer-selects-nothing")
    assert finding.path == "spec.ingress[0].from[1]" and why in finding.message


@pytest.mark.parametrize("peer", ["{podSelector: {matchLabels: {app: db}}}", "{namespaceSelector: {}}",
                                  "{namespaceSelector: {matchLabels: {team: ops}}}",
                                  "{ipBlock: {cidr: 192.168.9.0/24}}"])
def test_peers_that_select_something_or_are_ip_blocks_are_not_reported(peer):
    spec = f"{{podSelector: {{matchLabels: {{app: web}}}}, ingress: [{{from: [{peer}]}}]}}"
    assert not found(state_of(policy_yaml("shop", "web", spec)), "peer-selects-nothing")


def test_cluster_peer_selects_nothing():
    spec = ("subject: {namespaces: {}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {team: x}}}, "
            "{namespaces: {matchLabels: {team: ops}}}]}]")
    [finding] = found(state_of(cluster_policy_yaml("deny", spec)), "peer-selects-nothing")
    assert (finding.object, finding.path) == ("ClusterNetworkPolicy deny", "spec.ingress[0].from[0]")


@pytest.mark.parametrize("direction, port, reported", [
    ("ingress", "metrics", True), ("ingress", "http", False),
    ("egress", "nope", True), ("egress", "dns, protocol: UDP", False), ("egress", "dns", True),  # dns is UDP
])
def test_named_port_unresolved(direction, port, reported):
    peers = "from" if direction == "ingress" else "to"
    spec = (f"{{podSelector: {{matchLabels: {{app: web}}}}, policyTypes: [{direction.capitalize()}], "
            f"{direction}: [{{{peers}: [{{namespaceSelector: {{}}}}], ports: [{{port: {port}}}]}}]}}")
    findings = found(state_of(policy_yaml("shop", "web", spec)), "named-port-unresolved")
    assert [f.path for f in findings] == ([f"spec.{direction}[0].ports[0]"] if reported else [])


def test_policy_type_missing():
    ignored = "{podSelector: {}, policyTypes: [Ingress], egress: [{to: [{podSelector: {}}]}]}"
    [finding] = found(state_of(policy_yaml("shop", "p", ignored)), "policy-type-missing")
    assert finding.path == "spec.policyTypes" and "leaves out Egress" in finding.message
    listed = "{podSelector: {}, policyTypes: [Ingress, Egress], egress: [{to: [{podSelector: {}}]}]}"
    assert not found(state_of(policy_yaml("shop", "p", listed)), "policy-type-missing")


def test_egress_isolation_without_dns():
    deny = "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}"
    [finding] = found(state_of(policy_yaml("shop", "out", deny)), "egress-blocks-dns")
    assert finding.severity == "error" and finding.path == "spec.policyTypes"
    assert "shop/web-0" in finding.message and "53/UDP and 53/TCP" in finding.message
    assert "Pod shop/web-0" in finding.related


@pytest.mark.parametrize("rule", [TO_DNS, "{ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]}",
                                  "{to: [{ipBlock: {cidr: 169.254.20.10/32}}]}",
                                  "{to: [{namespaceSelector: {}}], ports: [{port: dns, protocol: UDP}, {port: 53}]}"])
def test_egress_isolation_with_dns_is_not_reported(rule):
    spec = f"{{podSelector: {{matchLabels: {{app: web}}}}, egress: [{rule}]}}"
    state = state_of(policy_yaml("shop", "out", spec))
    assert not found(state, "egress-blocks-dns") and not found(state, "egress-blocks-dns-tcp")


def test_dns_over_udp_only_is_a_warning_about_tcp():
    spec = "{podSelector: {}, egress: [{ports: [{port: 53, protocol: UDP}]}]}"
    state = state_of(policy_yaml("shop", "out", spec))
    [finding] = found(state, "egress-blocks-dns-tcp")
    assert finding.severity == "warning" and finding.path == "spec.egress"
    assert not found(state, "egress-blocks-dns")


def test_dns_rule_whose_peer_matches_nothing_does_not_count():
    spec = ("{podSelector: {}, egress: [{to: [{podSelector: {matchLabels: {app: dns}}}], "
            "ports: [{port: 53, protocol: UDP}, {port: 53}]}]}")
    assert found(state_of(policy_yaml("shop", "out", spec)), "egress-blocks-dns")


def test_an_admin_accept_for_dns_comes_before_the_isolation():
    deny = policy_yaml("shop", "out", "{podSelector: {}, policyTypes: [Egress]}")
    accept = cluster_policy_yaml("dns", "subject: {namespaces: {}}, egress: [{action: Accept, to: [{namespaces: {}}], "
                                        "protocols: [{udp: {destinationPort: {number: 53}}}, "
                                        "{tcp: {destinationPort: {number: 53}}}]}]")
    assert found(state_of(deny), "egress-blocks-dns")
    assert not found(state_of(deny, accept), "egress-blocks-dns")


@pytest.mark.parametrize("block, covered", [
    ("{cidr: 10.0.0.0/24}", ["shop/db-0", "shop/web-0"]),
    ("{cidr: 10.0.0.0/8, except: [10.0.1.0/24, 10.0.2.0/24]}", ["shop/db-0", "shop/web-0"]),
    ("{cidr: 0.0.0.0/0}", None), ("{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}", None),
    ("{cidr: 10.0.0.0/8, except: [10.0.0.0/16]}", None), ("{cidr: 192.168.0.0/16}", None),
])
def test_ip_block_covering_pods(block, covered):
    spec = f"{{podSelector: {{matchLabels: {{app: client}}}}, ingress: [{{from: [{{ipBlock: {block}}}]}}]}}"
    findings = found(state_of(policy_yaml("ops", "in", spec)), "ipblock-covers-cluster")
    if covered is None:
        assert not findings
    else:
        [finding] = findings
        assert finding.path == "spec.ingress[0].from[0].ipBlock"
        assert f"2 pods ({', '.join(covered)})" in finding.message
        assert finding.related == tuple(f"Pod {k}" for k in covered)


def test_ip_block_covering_nodes_and_their_pod_ranges():
    node = ("---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: 10.244.0.0/24}\n"
            "status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n")
    spec = "{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 172.16.0.0/12}}, {ipBlock: {cidr: 10.244.0.0/16}}]}]}"
    findings = found(state_of(node, policy_yaml("ops", "out", spec)), "ipblock-covers-cluster")
    assert [f.path for f in findings] == ["spec.egress[0].to[0].ipBlock", "spec.egress[0].to[1].ipBlock"]
    assert "the addresses of 1 node (node-a)" in findings[0].message
    assert "the pod ranges (podCIDR) of 1 node (node-a)" in findings[1].message


def test_cluster_policy_networks_covering_pods():
    spec = ("subject: {namespaces: {}}, egress: [{action: Deny, to: [{networks: [10.0.0.0/24, 203.0.113.0/24]}]}]")
    [finding] = found(state_of(cluster_policy_yaml("deny", spec)), "ipblock-covers-cluster")
    assert finding.path == "spec.egress[0].to[0].networks[0]"


def test_cluster_priority_tie():
    a = cluster_policy_yaml("a", "subject: {namespaces: {}}, ingress: []", priority=10)
    b = cluster_policy_yaml("b", "subject: {namespaces: {}}, ingress: []", priority=10)
    c = cluster_policy_yaml("c", "subject: {namespaces: {}}, ingress: []", priority=11)
    findings = found(state_of(a, b, c), "cluster-priority-tie")
    assert [(f.object, f.related) for f in findings] == [
        ("ClusterNetworkPolicy a", ("ClusterNetworkPolicy b",)), ("ClusterNetworkPolicy b", ("ClusterNetworkPolicy a",))]
    assert findings[0].path == "spec.priority" and "share a priority" in findings[0].message
    assert not found(state_of(a, c), "cluster-priority-tie")


def test_namespace_without_default_deny():
    findings = found(state_of(policy_yaml("shop", "deny", DEFAULT_DENY)), "namespace-without-default-deny")
    assert [(f.object, f.severity) for f in findings] == [("Namespace kube-system", "info"), ("Namespace ops", "info")]
    assert "(now 1 of its 1 pod)" in findings[1].message
    for not_a_default_deny in ("{podSelector: {matchLabels: {app: web}}}",
                               "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}",
                               "{podSelector: {}, policyTypes: [Egress]}"):
        state = state_of(policy_yaml("shop", "p", not_a_default_deny))
        assert "Namespace shop" in {f.object for f in found(state, "namespace-without-default-deny")}


# -- redundancy ------------------------------------------------------------------------------------

WEB_FROM_CLIENT = ("{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: "
                   "{matchLabels: {team: ops}}}], ports: [{port: 8080}]}]}")


@pytest.fixture(params=["witnesses", "maps alone"])
def witnesses(request):
    """Each item judged as lint judges it, and by its maps alone (no witness cells first)."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "maps alone":
            patch.setattr(redundancy, "WITNESS_TRIES", 0)
        yield


def test_a_duplicate_policy_is_redundant_once(witnesses):
    state = state_of(policy_yaml("shop", "a", WEB_FROM_CLIENT), policy_yaml("shop", "b", WEB_FROM_CLIENT))
    [finding] = found(state, "policy-redundant")
    assert (finding.object, finding.path) == ("NetworkPolicy shop/a", "")
    assert finding.related == ("NetworkPolicy shop/b",)
    assert not found(state, "rule-redundant")  # shop/b's rule is needed once shop/a is gone


def test_a_policy_admitting_more_than_the_other_is_not_redundant(witnesses):
    wider = WEB_FROM_CLIENT.replace("{matchLabels: {team: ops}}", "{}")
    state = state_of(policy_yaml("shop", "a", WEB_FROM_CLIENT), policy_yaml("shop", "b", wider))
    assert [f.object for f in found(state, "policy-redundant")] == ["NetworkPolicy shop/a"]
    assert not found(state_of(policy_yaml("shop", "b", wider)), "policy-redundant")


def test_a_rule_inside_another_rule_is_redundant(witnesses):
    spec = ("{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 8080}]}, "
            "{from: [{namespaceSelector: {}}]}]}")
    [finding] = found(state_of(policy_yaml("shop", "web", spec)), "rule-redundant")
    assert (finding.path, finding.related) == ("spec.ingress[0]", ("NetworkPolicy shop/web",))
    distinct = spec.replace("{from: [{namespaceSelector: {}}]}", "{from: [{namespaceSelector: {}}], ports: [{port: 9090}]}")
    assert not found(state_of(policy_yaml("shop", "web", distinct)), "rule-redundant")


def test_a_rule_the_other_side_denies_is_redundant(witnesses):
    """db-0 may not send at all (egress isolated, no rules): admitting it into web-0 changes nothing."""
    state = state_of(policy_yaml("shop", "db-out", "{podSelector: {matchLabels: {app: db}}, policyTypes: [Egress]}"),
                     policy_yaml("shop", "web", "{podSelector: {matchLabels: {app: web}}, ingress: "
                                                "[{from: [{podSelector: {matchLabels: {app: db}}}]}]}"))
    assert [f.path for f in found(state, "rule-redundant")] == ["spec.ingress[0]"]


@pytest.mark.parametrize("twin", [
    "{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{ipBlock: {cidr: 10.0.1.0/24}}]}]}",  # outside too
    "{podSelector: {matchLabels: {app: web}}, ingress: [{ports: [{port: 8080}]}]}",  # every source: outside too
    DEFAULT_DENY,  # guards the pods of tomorrow
])
def test_what_admits_addresses_outside_the_pods_or_guards_is_never_redundant(twin):
    state = state_of(policy_yaml("shop", "a", twin), policy_yaml("shop", "b", twin))
    assert not found(state, "policy-redundant") and not found(state, "rule-redundant")


def test_the_only_policy_isolating_a_pod_is_not_redundant_even_when_it_admits_what_the_pods_send():
    spec = ("{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: {}}]}]}")
    assert not found(state_of(policy_yaml("shop", "web", spec)), "policy-redundant")


def test_what_other_findings_say_does_nothing_is_not_called_redundant_too():
    spec = "{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: {app: nope}}}]}]}"
    state = state_of(policy_yaml("shop", "web", spec), policy_yaml("shop", "typo", "{podSelector: {matchLabels: {app: wbe}}}"))
    ids = {f.id for f in lint(state).findings}
    assert {"peer-selects-nothing", "policy-selects-nothing"} <= ids
    assert not ids & {"policy-redundant", "rule-redundant"}


def test_redundancy_proves_most_items_needed_with_a_witness_and_maps_the_rest():
    state = state_of(policy_yaml("shop", "a", WEB_FROM_CLIENT), policy_yaml("shop", "b", WEB_FROM_CLIENT),
                     policy_yaml("shop", "c", WEB_FROM_CLIENT.replace("8080", "9090")))
    counts = SearchCounts()
    lint(state, counts=counts)
    # a is redundant: only the map says so; b and c, as policies and their rules, are needed:
    # a picked cell (client -> web-0 on 8080, on 9090) shows it without a map
    assert (counts.judged, counts.witnessed, counts.maps) == (5, 4, 2)


def cells(state: ClusterState, like: ClusterState) -> dict[tuple[object, ...], bool]:
    """Every verdict the redundancy check promises to keep: pod to pod on the default probes (of
    `like`, the state as written), and between each pod and addresses outside the pods (every
    CIDR's first address, the node addresses, one address in no CIDR)."""
    probes = default_probes(like)
    pods = participants(state)
    outside = {ipaddress.ip_address("203.0.113.7"), ipaddress.ip_address("2001:db8::7")}
    for policy in like.policies:
        for rule in (*policy.ingress, *policy.egress):
            for peer in rule.peers:
                if peer.ip_block is not None:
                    outside |= {n.network_address for n in (peer.ip_block.cidr, *peer.ip_block.except_)}
    outside |= {a for node in state.nodes for a in node.addresses}
    found_: dict[tuple[object, ...], bool] = {}
    for probe in probes:
        for s in pods:
            for d in pods:
                found_[(probe, s.key, d.key)] = pods_connect(state, s, d, probe.port, probe.protocol)
            for ip in outside:
                if any(own.version == ip.version for own in s.ips):
                    own = next(a for a in s.ips if a.version == ip.version)
                    found_[(probe, s.key, str(ip), "out")] = allowed(
                        state, Endpoint(own, s), Endpoint(ip), probe.port, probe.protocol).allowed
                    found_[(probe, str(ip), s.key, "in")] = allowed(
                        state, Endpoint(ip), Endpoint(own, s), probe.port, probe.protocol).allowed
    return found_


def without_redundant(state: ClusterState, findings: tuple[Finding, ...]) -> ClusterState:
    policies = {f.object.removeprefix("NetworkPolicy ") for f in findings if f.id == "policy-redundant"}
    rules: dict[str, set[tuple[str, int]]] = {}
    for f in findings:
        if f.id == "rule-redundant":
            direction, index = re.fullmatch(r"spec\.(ingress|egress)\[(\d+)\]", f.path).groups()
            rules.setdefault(f.object.removeprefix("NetworkPolicy "), set()).add((direction, int(index)))
    kept = [replace(p, **{d: tuple(r for i, r in enumerate(p.rules(d)) if (d, i) not in rules.get(p.key, set()))
                          for d in ("ingress", "egress")})
            for p in state.policies if p.key not in policies]
    return ClusterState(state.namespaces, state.pods, state.nodes, tuple(kept), state.cluster_policies)


@settings(max_examples=150)
@given(clusters(max_pods=6, max_policies=5))
def test_removing_everything_reported_redundant_together_changes_no_verdict(state):
    findings = lint(state).findings
    assert cells(without_redundant(state, findings), state) == cells(state, state)


@settings(max_examples=150)
@given(clusters(max_pods=6, max_policies=5))
def test_the_maps_alone_decide_as_well(state):
    """Without witnesses every item is judged by its maps: the path a witness usually spares."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redundancy, "WITNESS_TRIES", 0)
        findings = lint(state).findings
    assert cells(without_redundant(state, findings), state) == cells(state, state)


def test_a_change_between_two_pods_of_one_class_is_a_change():
    """web-0 and web-1 fall into one class of the map: the cell between them is its diagonal."""
    pods = PODS + pod_yaml("shop", "web-1", "10.0.0.12", "{app: web}", "[{name: http, containerPort: 8080}]")
    spec = "{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]}"
    state = state_of(policy_yaml("shop", "web", spec), pods=pods)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redundancy, "WITNESS_TRIES", 0)
        assert not found(state, "rule-redundant")


def test_a_rule_is_judged_on_every_port_it_names(witnesses):
    """client may send on 8080 only: of the rule's two ports, only 8080 has an allowed cell."""
    client_out = ("{podSelector: {}, egress: [{ports: [{port: 8080}]}, " + TO_DNS + "]}")
    web_in = ("{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: "
              "{matchLabels: {team: ops}}}], ports: [{port: 80}, {port: 8080}]}]}")
    state = state_of(policy_yaml("ops", "out", client_out), policy_yaml("shop", "web", web_in))
    assert not found(state, "rule-redundant")


def test_the_source_side_is_kept_when_a_baseline_policy_would_decide_without_it(witnesses):
    """client's egress is decided by its NetworkPolicy (allow 8080); without that policy in the
    map, the Baseline deny would decide and hide what removing web's rule changes."""
    client_out = ("{podSelector: {}, egress: [{ports: [{port: 8080}]}, " + TO_DNS + "]}")
    web_in = ("{podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: "
              "{matchLabels: {team: ops}}}], ports: [{port: 8080}]}]}")
    baseline = cluster_policy_yaml("ops-out", "subject: {namespaces: {matchLabels: {team: ops}}}, egress: "
                                              "[{action: Deny, to: [{namespaces: {}}]}]", tier="Baseline")
    state = state_of(policy_yaml("ops", "out", client_out), policy_yaml("shop", "web", web_in), baseline)
    assert connects(state, "ops/client", "shop/web-0", 8080)
    assert not found(state, "rule-redundant")


@pytest.mark.parametrize("witnesses", [redundancy.WITNESS_TRIES, 0])
def test_a_port_range_is_judged_on_every_piece_of_it(witnesses):
    spec = ("{podSelector: {matchLabels: {app: web}}, ingress: ["
            "{from: [{namespaceSelector: {}}], ports: [{port: 8000, endPort: 8100}]}, "
            "{from: [{namespaceSelector: {}}], ports: [{port: 8000, endPort: 8079}]}]}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redundancy, "WITNESS_TRIES", witnesses)
        assert [f.path for f in found(state_of(policy_yaml("shop", "web", spec)), "rule-redundant")] == [
            "spec.ingress[1]"]


@settings(max_examples=60)
@given(mixed_clusters(max_pods=6, max_policies=4, max_cluster_policies=3))
def test_removing_everything_reported_redundant_changes_no_verdict_with_cluster_policies(state):
    findings = lint(state).findings
    assert cells(without_redundant(state, findings), state) == cells(state, state)


@settings(max_examples=60)
@given(mixed_clusters(max_pods=6, max_policies=4, max_cluster_policies=3))
def test_the_maps_alone_decide_as_well_with_cluster_policies(state):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redundancy, "WITNESS_TRIES", 0)
        findings = lint(state).findings
    assert cells(without_redundant(state, findings), state) == cells(state, state)


# -- the report --------------------------------------------------------------------------------


def test_without_pods_the_pod_checks_are_skipped_and_a_note_says_so():
    report = lint(state_of(policy_yaml("shop", "web", "{podSelector: {matchLabels: {app: wbe}}}"), pods=""))
    assert not {f.id for f in report.findings} & {"policy-selects-nothing", "policy-redundant"}
    assert report.notes and "the input has no pods" in report.notes[0]


def test_every_check_has_a_severity_summary_and_why():
    assert all(c.severity in SEVERITIES and c.summary and c.why and re.fullmatch(r"[a-z0-9-]+", c.id)
               for c in CHECKS.values())


def test_fail_on_counts_findings_at_or_above_the_severity():
    findings = [Finding("egress-blocks-dns", "error", "o", "", "m"), Finding("policy-redundant", "warning", "o", "", "m"),
                Finding("namespace-without-default-deny", "info", "o", "", "m")]
    assert [len(at_least(findings, s)) for s in ("error", "warning", "info")] == [1, 2, 3]
    assert summary(findings) == "3 findings (1 error, 1 warning, 1 info)"


def test_text_and_json_forms():
    located = Finding("policy-selects-nothing", "warning", "NetworkPolicy shop/web", "spec.podSelector", "selects no pod",
                      (), "p.yaml", 7)
    loose = Finding("namespace-without-default-deny", "info", "Namespace ops", "", "no default deny")
    assert render_text([located, loose]) == (
        "p.yaml:7: warning policy-selects-nothing NetworkPolicy shop/web spec.podSelector: selects no pod\n"
        "info namespace-without-default-deny Namespace ops: no default deny\n")
    assert '"file": "p.yaml"' in render_json([located]) and '"file"' not in render_json([loose])
