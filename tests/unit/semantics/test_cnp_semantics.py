"""One test per clause of DESIGN §2b (ClusterNetworkPolicy tiers around NetworkPolicy), and the
pitfalls other implementations fell into (PITFALLS 26-29), plus the three mistakes the upstream
conformance suite does not catch: an isolated-but-not-admitted pod falling through to Baseline, a
port match ignoring the protocol, a `pods` subject ignoring its namespaceSelector."""

from __future__ import annotations

import ipaddress
import json

from netpol.labels import LabelSelector
from netpol.model import ClusterNetworkPolicy, ClusterPeer, ClusterRule, ClusterState, ClusterSubject
from netpol.semantics.explain import explain, render_json, render_text
from netpol.semantics.probes import Probe
from netpol.semantics.reference import Endpoint, allowed, endpoint
from tests.conftest import DENY_EGRESS, DENY_INGRESS, connects, pod_yaml, policy_yaml
from tests.conftest import world as clause_world

EXTRA_PODS = (  # beside the clause world's four pods, all on node-a: one on node-b, one hostNetwork
    pod_yaml("b", "far", "10.0.1.3", "{app: far}", node="node-b")
    + pod_yaml("b", "agent", "192.168.0.2", "{app: web}", extra=", hostNetwork: true", node="node-b")
)
NODE_A, NODE_B = ipaddress.ip_address("192.168.0.1"), ipaddress.ip_address("192.168.0.2")
EVERYONE = "[{namespaces: {}}]"


def cnp(name: str, tier: str, priority: int, subject: str, ingress: str | None = None,
        egress: str | None = None) -> str:
    """One ClusterNetworkPolicy document; `subject`, `ingress` and `egress` in flow style."""
    rules = "".join(f"  {d}: {r}\n" for d, r in (("ingress", ingress), ("egress", egress)) if r is not None)
    return (f"---\napiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n"
            f"metadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n"
            f"  subject: {subject}\n{rules}")


def world(*documents: str) -> ClusterState:
    return clause_world(*documents, extra_pods=EXTRA_PODS)


def rule(action: str, peers: str = EVERYONE, protocols: str = "", direction: str = "ingress", name: str = "") -> str:
    field = "from" if direction == "ingress" else "to"
    extra = f", protocols: {protocols}" if protocols else ""
    named = f"name: {name}, " if name else ""
    return f"{{{named}action: {action}, {field}: {peers}{extra}}}"


IN_A = "{namespaces: {matchLabels: {team: x}}}"
IN_B = "{namespaces: {matchLabels: {team: y}}}"
FROM_B = "[{namespaces: {matchLabels: {team: y}}}]"


def test_clause_an_admin_accept_is_final_over_a_network_policy_that_isolates():
    state = world(policy_yaml("a", "deny", DENY_INGRESS), cnp("open", "Admin", 1, IN_A, f"[{rule('Accept', FROM_B)}]"))
    assert connects(state, "b/client", "a/web")
    assert not connects(state, "a/db", "a/web")  # not matched by the Accept: the NetworkPolicy decides


def test_clause_an_admin_deny_is_final_over_a_network_policy_that_admits():
    state = world(policy_yaml("a", "open", "{podSelector: {}, ingress: [{}]}"),
                  cnp("guard", "Admin", 1, IN_A, f"[{rule('Deny', FROM_B)}]"))
    assert not connects(state, "b/client", "a/web")
    assert connects(state, "a/db", "a/web")


def test_clause_pass_hands_the_connection_to_the_next_tier():
    passing = cnp("pass", "Admin", 1, IN_A, f"[{rule('Pass', FROM_B)}, {rule('Accept')}]")
    assert connects(world(passing), "b/client", "a/web")  # no NetworkPolicy, no Baseline: allow
    assert not connects(world(passing, policy_yaml("a", "deny", DENY_INGRESS)), "b/client", "a/web")
    baseline = cnp("base", "Baseline", 1, IN_A, f"[{rule('Deny', FROM_B)}]")
    assert not connects(world(passing, baseline), "b/client", "a/web")  # on to Baseline, which denies
    assert connects(world(passing, policy_yaml("a", "deny", DENY_INGRESS)), "a/db", "a/web")  # Accept


def test_pitfall_a_pod_isolated_but_not_admitted_does_not_fall_through_to_baseline():
    only_db = policy_yaml("a", "only-db", "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]}")
    accept_all = cnp("base", "Baseline", 1, IN_A, f"[{rule('Accept')}]", f"[{rule('Accept', direction='egress')}]")
    state = world(only_db, accept_all)
    assert not connects(state, "b/client", "a/web")  # the NetworkPolicy tier is final: denied
    assert connects(state, "a/db", "a/web")
    out_only = world(policy_yaml("b", "quiet", DENY_EGRESS),
                     cnp("base", "Baseline", 1, IN_B, egress=f"[{rule('Accept', direction='egress')}]"))
    assert not connects(out_only, "b/client", "a/web")  # egress likewise


def test_pitfall_isolation_is_per_direction_for_the_baseline_tier():
    """An Ingress-only NetworkPolicy leaves the pod's egress to the Baseline tier."""
    state = world(policy_yaml("b", "in-only", DENY_INGRESS),
                  cnp("base", "Baseline", 1, IN_B, egress=f"[{rule('Deny', '[' + IN_A + ']', direction='egress')}]"))
    assert not connects(state, "b/client", "a/web")


def test_clause_a_baseline_pass_leads_to_the_default_allow():
    state = world(cnp("p1", "Baseline", 1, IN_A, f"[{rule('Pass', FROM_B)}]"),
                  cnp("p2", "Baseline", 2, IN_A, f"[{rule('Deny')}]"))
    assert connects(state, "b/client", "a/web")  # the Pass skips the rest of the tier
    assert not connects(state, "a/db", "a/web")


def test_clause_first_matching_rule_wins_by_priority_then_name_then_written_order():
    deny, accept = f"[{rule('Deny', FROM_B)}]", f"[{rule('Accept', FROM_B)}]"
    assert not connects(world(cnp("zz", "Admin", 1, IN_A, deny), cnp("aa", "Admin", 2, IN_A, accept)),
                        "b/client", "a/web")  # priority first
    assert connects(world(cnp("zz", "Admin", 5, IN_A, deny), cnp("aa", "Admin", 5, IN_A, accept)), "b/client", "a/web")
    assert not connects(world(cnp("aa", "Admin", 5, IN_A, deny), cnp("zz", "Admin", 5, IN_A, accept)),
                        "b/client", "a/web")
    written = cnp("one", "Admin", 5, IN_A, f"[{rule('Accept', FROM_B)}, {rule('Deny')}]")
    assert connects(world(written), "b/client", "a/web") and not connects(world(written), "a/db", "a/web")


def test_clause_a_connection_needs_the_sources_egress_and_the_destinations_ingress():
    accept_out = cnp("out", "Admin", 1, IN_B, egress=f"[{rule('Accept', direction='egress')}]")
    deny_in = cnp("in", "Admin", 2, IN_A, f"[{rule('Deny', FROM_B)}]")
    assert not connects(world(accept_out, deny_in), "b/client", "a/web")  # egress Accept does not bypass ingress
    assert not connects(world(accept_out, policy_yaml("a", "deny", DENY_INGRESS)), "b/client", "a/web")


def test_clause_a_policy_without_rules_in_a_direction_does_not_touch_it():
    egress_only = cnp("out", "Admin", 1, IN_A, "[]", f"[{rule('Deny', direction='egress')}]")
    base = cnp("base", "Baseline", 1, IN_A, f"[{rule('Deny', FROM_B)}]")
    state = world(egress_only, base)
    assert not connects(state, "a/web", "b/web")
    assert not connects(state, "b/client", "a/web")  # the Admin policy had no say: Baseline decides
    assert connects(world(egress_only), "b/client", "a/web")


def test_clause_host_network_pods_are_neither_subjects_nor_pod_peers():
    deny_all = cnp("deny", "Admin", 1, "{namespaces: {}}", f"[{rule('Deny')}]", f"[{rule('Deny', direction='egress')}]")
    state = world(deny_all)
    web = state.pod("a/web")
    agent = endpoint(state, NODE_B)  # b/agent, hostNetwork: its address is node-b's
    assert agent.pod is None and agent.node == "node-b"
    assert allowed(state, agent, Endpoint(web.ips[0], web), 80, "TCP").egress.allowed  # not a subject
    assert allowed(state, agent, Endpoint(web.ips[0], web), 80, "TCP").ingress.allowed  # not a pod peer
    assert allowed(state, Endpoint(web.ips[0], web), agent, 80, "TCP").allowed  # `namespaces: {}` is pods only
    by_node = world(cnp("deny", "Admin", 1, "{namespaces: {}}",
                        egress=f"[{rule('Deny', '[{nodes: {}}]', direction='egress')}]"))
    assert not allowed(by_node, Endpoint(web.ips[0], web), agent, 80, "TCP").allowed  # `nodes` matches it


def test_clause_a_pod_reaching_its_own_ip_is_exempt():
    state = world(cnp("deny", "Admin", 1, "{namespaces: {}}", f"[{rule('Deny')}]", f"[{rule('Deny', direction='egress')}]"))
    assert connects(state, "a/web", "a/web")
    assert not connects(state, "a/web", "a/db")


def test_clause_networks_match_pod_addresses_too():
    state = world(cnp("cidr", "Admin", 1, IN_B, egress=f"[{rule('Deny', '[{networks: [10.0.0.0/24]}]', direction='egress')}]"))
    assert not connects(state, "b/client", "a/web")
    assert connects(state, "b/client", "b/web")


def test_pitfall_nodes_peers_match_the_nodes_addresses_not_the_pods_node():
    deny_b = cnp("nodes", "Admin", 1, IN_B, egress=f"[{rule('Deny', '[{nodes: {matchLabels: {zone: two}}}]', direction='egress')}]")
    state = world(deny_b)
    client = state.pod("b/client")  # on node-a
    source = Endpoint(client.ips[0], client)
    assert not allowed(state, source, endpoint(state, NODE_B), 10250, "TCP").allowed  # node-b's address
    assert allowed(state, source, endpoint(state, NODE_A), 10250, "TCP").allowed  # its own node is not zone two
    assert connects(state, "b/client", "b/far")  # a pod *on* node-b is not node-b's address


def test_own_node_a_nodes_deny_drops_a_pods_traffic_to_its_own_node():
    """Upstream expects it; the 'pod <-> own node' exemption is the NetworkPolicy tier's only."""
    admin = world(cnp("nodes", "Admin", 1, IN_B, egress=f"[{rule('Deny', '[{nodes: {}}]', direction='egress')}]"))
    client = admin.pod("b/client")
    assert not allowed(admin, Endpoint(client.ips[0], client), Endpoint(NODE_A), 53, "UDP").allowed
    baseline = cnp("nodes", "Baseline", 1, IN_B, egress=f"[{rule('Deny', '[{nodes: {}}]', direction='egress')}]")
    state = world(baseline)
    assert not allowed(state, Endpoint(client.ips[0], client), Endpoint(NODE_A), 53, "UDP").allowed
    isolated = world(baseline, policy_yaml("b", "quiet", DENY_EGRESS))  # NetworkPolicy tier final: exempt
    verdict = allowed(isolated, Endpoint(client.ips[0], client), Endpoint(NODE_A), 53, "UDP")
    assert verdict.allowed and verdict.egress.tier == "NetworkPolicy"
    assert not allowed(isolated, Endpoint(client.ips[0], client), Endpoint(NODE_B), 53, "UDP").allowed


def test_own_node_kubelet_probes_are_never_matched_by_a_cluster_policy():
    deny_all = cnp("deny", "Admin", 1, "{namespaces: {}}", f"[{rule('Deny')}]")
    for state in (world(deny_all), world(deny_all, policy_yaml("a", "deny", DENY_INGRESS))):
        web = state.pod("a/web")
        assert allowed(state, Endpoint(NODE_A), Endpoint(web.ips[0], web), 8080, "TCP").allowed
    web = world().pod("a/web")
    assert not allowed(world(policy_yaml("a", "deny", DENY_INGRESS)), Endpoint(NODE_B), Endpoint(web.ips[0], web),
                       8080, "TCP").allowed  # another node's address is no exemption


def test_pitfall_a_named_port_matches_by_name_number_and_protocol():
    named = cnp("named", "Admin", 1, IN_B, f"[{rule('Accept', protocols='[{destinationNamedPort: http}]')}, {rule('Deny')}]")
    state = world(named)
    assert connects(state, "a/web", "b/web", 8080)  # http is 8080/TCP on b/web
    assert not connects(state, "a/web", "b/web", 80)  # 80 is http on a/web, not here
    assert not connects(state, "a/web", "b/web", 8080, "UDP")  # same number, other protocol
    egress = cnp("named", "Admin", 1, IN_A, egress=f"[{rule('Accept', protocols='[{destinationNamedPort: dns}]', direction='egress')}, "
                                                   f"{rule('Deny', direction='egress')}]")
    state = world(egress)
    assert connects(state, "a/web", "b/web", 53, "UDP")  # resolved on the destination
    assert not connects(state, "a/web", "b/web", 53, "TCP")
    assert not connects(state, "a/web", "a/db", 53, "UDP")  # a/db declares no dns port


def test_pitfall_a_port_match_honours_the_protocol():
    state = world(cnp("dns", "Admin", 1, IN_A, f"[{rule('Deny', protocols='[{tcp: {destinationPort: {number: 53}}}]')}]"))
    assert not connects(state, "b/client", "a/web", 53, "TCP")
    assert connects(state, "b/client", "a/web", 53, "UDP")
    assert connects(state, "b/client", "a/web", 53, "SCTP")
    ranged = world(cnp("r", "Admin", 1, IN_A, f"[{rule('Deny', protocols='[{udp: {destinationPort: {range: {start: 50, end: 60}}}}]')}]"))
    assert not connects(ranged, "b/client", "a/web", 50, "UDP") and not connects(ranged, "b/client", "a/web", 60, "UDP")
    assert connects(ranged, "b/client", "a/web", 55, "TCP") and connects(ranged, "b/client", "a/web", 61, "UDP")


def test_pitfall_a_pods_subject_honours_its_namespace_selector():
    subject = "{pods: {namespaceSelector: {matchLabels: {team: x}}, podSelector: {matchLabels: {app: web}}}}"
    state = world(cnp("web-in-a", "Admin", 1, subject, f"[{rule('Deny')}]"))
    assert not connects(state, "b/client", "a/web")
    assert connects(state, "b/client", "b/web")  # app=web, but in team y
    no_namespaces = "{pods: {podSelector: {matchLabels: {app: web}}}}"  # absent: every namespace
    assert not connects(world(cnp("web", "Admin", 1, no_namespaces, f"[{rule('Deny')}]")), "b/client", "b/web")


def test_pitfall_match_expressions_values_decide():
    peers = "[{namespaces: {matchExpressions: [{key: team, operator: In, values: [y]}]}}]"
    state = world(cnp("in", "Admin", 1, IN_A, f"[{rule('Deny', peers)}]"))
    assert not connects(state, "b/client", "a/web") and connects(state, "a/db", "a/web")
    peers = "[{pods: {podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [db, client]}]}}}]"
    state = world(cnp("notin", "Admin", 1, IN_A, f"[{rule('Deny', peers)}]"))
    assert connects(state, "a/db", "a/web") and connects(state, "b/client", "a/web")
    assert not connects(state, "b/web", "a/web")


def test_pitfall_a_peer_with_no_field_we_recognise_fails_closed():
    """Decoding refuses such a peer (tests/unit/load/test_cluster_policies.py); a model built by
    hand follows upstream's rule: an Accept rule treats it as matching nothing, a Deny or Pass
    rule denies all."""
    base = world()
    subject = ClusterSubject(namespaces=LabelSelector())
    everyone = ClusterPeer(namespaces=LabelSelector())

    def with_rules(*rules: ClusterRule) -> ClusterState:
        policy = ClusterNetworkPolicy("odd", "Admin", 1, subject, ingress=rules)
        return ClusterState.build(base.namespaces, base.pods, base.nodes, (), (policy,))

    for action in ("Deny", "Pass"):
        state = with_rules(ClusterRule(action, (ClusterPeer(), everyone)))
        assert not connects(state, "b/client", "a/web")
        assert allowed(state, Endpoint(NODE_A), endpoint(state, ipaddress.ip_address("10.0.0.1")), 80,
                       "TCP").ingress.decided_by.fails_closed
    accept_nothing = with_rules(ClusterRule("Accept", (ClusterPeer(),)), ClusterRule("Deny", (everyone,)))
    assert not connects(accept_nothing, "b/client", "a/web")  # the Accept matched nothing; the Deny did


def test_clause_absent_protocols_match_all_traffic_present_ones_never_icmp():
    state = world(cnp("deny", "Admin", 1, IN_A, f"[{rule('Deny', FROM_B)}]"))
    assert not connects(state, "b/client", "a/web", None, "ICMP")
    state = world(cnp("deny", "Admin", 1, IN_A, f"[{rule('Deny', FROM_B, '[{tcp: {destinationPort: {range: {start: 1, end: 65535}}}}]')}]"))
    assert connects(state, "b/client", "a/web", None, "ICMP")
    assert not connects(state, "b/client", "a/web", 65535)


def test_explain_names_the_tier_policy_priority_and_rule_that_decided():
    state = world(cnp("guard", "Admin", 3, IN_A, f"[{rule('Pass', FROM_B, name='to-baseline')}]"),
                  cnp("base", "Baseline", 9, IN_A, f"[{rule('Deny', FROM_B, name='no-b')}]"))
    text = render_text(explain(state, state.pod("b/client"), state.pod("a/web"), Probe("TCP", 80)))
    assert "b/client (10.0.1.1) -> a/web (10.0.0.1) on 80/TCP: DENIED" in text
    assert "    passed on by Admin tier: ClusterNetworkPolicy guard (priority 3) spec.ingress[0] (to-baseline): Pass" in text
    assert "    decided by the Baseline tier: ClusterNetworkPolicy base (priority 9) spec.ingress[0] (no-b): Deny" in text
    assert "no tier decided: default allow (no NetworkPolicy isolates b/client for egress)" in text
    (doc,) = json.loads(render_json(explain(state, state.pod("b/client"), state.pod("a/web"), Probe("TCP", 80))))
    assert doc["ingress"]["tier"] == "Baseline" and doc["egress"]["tier"] == "default"
    assert doc["ingress"]["decided_by"] == {"policy": "ClusterNetworkPolicy base", "tier": "Baseline", "priority": 9,
                                            "rule": "spec.ingress[0]", "name": "no-b", "action": "Deny",
                                            "fails_closed": False}
    assert [r["name"] for r in doc["ingress"]["passed_by"]] == ["to-baseline"]


def test_explain_names_the_network_policy_tier_when_it_decides_among_cluster_policies():
    state = world(cnp("guard", "Admin", 3, IN_A, f"[{rule('Pass', FROM_B)}]"), policy_yaml("a", "deny", DENY_INGRESS))
    text = render_text(explain(state, state.pod("b/client"), state.pod("a/web"), Probe("TCP", 80)))
    assert "    decided by the NetworkPolicy tier:\n    isolated by: NetworkPolicy a/deny" in text
