"""One test per clause of DESIGN §2 ("Semantics we implement"), named after the clause."""

from __future__ import annotations

import ipaddress

from netpol.semantics.reference import Endpoint, allowed
from tests.conftest import DENY_EGRESS, DENY_INGRESS, connects, pod_yaml, policy_yaml, world


def test_clause_connection_needs_source_egress_and_destination_ingress():
    open_ingress = policy_yaml("a", "in", "{podSelector: {}, ingress: [{}]}")
    deny_egress_b = policy_yaml("b", "out", DENY_EGRESS)
    state = world(open_ingress, deny_egress_b)
    assert not connects(state, "b/client", "a/web")  # ingress allows, egress does not
    state = world(policy_yaml("a", "deny", DENY_INGRESS), policy_yaml("b", "out", "{podSelector: {}, egress: [{}]}"))
    assert not connects(state, "b/client", "a/web")  # egress allows, ingress does not
    assert connects(world(), "b/client", "a/web")


def test_clause_replies_of_an_allowed_connection_need_no_rule():
    # The semantics judge who may *open* a connection; replies ride on conntrack.
    state = world(policy_yaml("a", "deny-out", DENY_EGRESS))
    assert connects(state, "b/client", "a/web")
    assert not connects(state, "a/web", "b/client")


def test_clause_a_pod_can_always_reach_itself():
    state = world(policy_yaml("a", "deny", "{podSelector: {}, policyTypes: [Ingress, Egress]}"))
    assert connects(state, "a/web", "a/web")
    assert not connects(state, "a/web", "a/db")


def test_clause_traffic_between_a_pod_and_its_own_node_is_always_allowed():
    state = world(policy_yaml("a", "deny", "{podSelector: {}, policyTypes: [Ingress, Egress]}"))
    web = state.pod("a/web")
    own_node, other_node = ipaddress.ip_address("192.168.0.1"), ipaddress.ip_address("192.168.0.2")
    pod_end = Endpoint(web.ips[0], web)
    assert allowed(state, Endpoint(own_node), pod_end, 80, "TCP").allowed
    assert allowed(state, pod_end, Endpoint(own_node), 22, "TCP").allowed
    assert not allowed(state, Endpoint(other_node), pod_end, 80, "TCP").allowed
    assert not allowed(state, pod_end, Endpoint(other_node), 22, "TCP").allowed


def test_clause_isolated_only_by_a_policy_in_its_own_namespace():
    state = world(policy_yaml("b", "deny", DENY_INGRESS))  # selects every pod of b, none of a
    assert connects(state, "b/client", "a/web")
    assert not connects(state, "a/web", "b/web")


def test_clause_policy_types_default_ingress_plus_egress_iff_egress_rules():
    only_ingress = policy_yaml("a", "p", "{podSelector: {}, ingress: [{}]}")
    assert connects(world(only_ingress), "a/web", "b/web")  # no Egress type: egress open
    with_egress = policy_yaml("a", "p", "{podSelector: {}, egress: [{ports: [{port: 53, protocol: UDP}]}]}")
    state = world(with_egress)
    assert not connects(state, "a/web", "b/web", 8080)
    assert connects(state, "a/web", "b/web", 53, "UDP")
    assert not connects(state, "b/client", "a/web")  # Ingress type with no rules: isolated


def test_clause_isolated_allowed_iff_one_rule_matches_both_peer_and_port():
    spec = """{podSelector: {}, ingress: [
        {from: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 80}]},
        {from: [{namespaceSelector: {matchLabels: {team: y}}}], ports: [{port: 443}]}]}"""
    state = world(policy_yaml("a", "p", spec))
    assert connects(state, "a/db", "a/web", 80)
    assert connects(state, "b/client", "a/web", 443)
    assert not connects(state, "b/client", "a/web", 80)  # peer of rule 1, port of rule 0


def test_clause_policies_are_additive():
    only_db = policy_yaml("a", "p1", "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]}")
    only_b = policy_yaml("a", "p2", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: y}}}]}]}")
    state = world(only_db, only_b, policy_yaml("a", "deny", DENY_INGRESS))
    assert connects(state, "a/db", "a/web")
    assert connects(state, "b/client", "a/web")


def test_clause_absent_or_empty_from_means_everything():
    for spec in ("{podSelector: {}, ingress: [{ports: [{port: 80}]}]}",
                 "{podSelector: {}, ingress: [{from: [], ports: [{port: 80}]}]}"):
        state = world(policy_yaml("a", "p", spec))
        assert connects(state, "b/client", "a/web")
        outside = Endpoint(ipaddress.ip_address("203.0.113.7"))
        web = state.pod("a/web")
        assert allowed(state, outside, Endpoint(web.ips[0], web), 80, "TCP").allowed


def test_clause_pod_selector_only_means_pods_of_the_policy_namespace():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]}"))
    assert not connects(state, "b/web", "a/db")  # app=web, but in b
    assert connects(state, "a/web", "a/db")


def test_clause_namespace_selector_only_means_all_pods_of_matching_namespaces():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: y}}}]}]}"))
    assert connects(state, "b/client", "a/web") and connects(state, "b/web", "a/web")
    assert not connects(state, "a/db", "a/web")


def test_clause_both_selectors_mean_their_intersection():
    spec = "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: y}}, podSelector: {matchLabels: {app: web}}}]}]}"
    state = world(policy_yaml("a", "p", spec))
    assert connects(state, "b/web", "a/db")
    assert not connects(state, "b/client", "a/db")
    assert not connects(state, "a/web", "a/db")


def test_clause_ip_block_is_cidr_minus_every_except_matched_against_pod_ips_too():
    spec = "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/30]}}]}]}"
    state = world(policy_yaml("a", "p", spec), extra_pods=pod_yaml("b", "far", "10.0.1.9"))
    assert connects(state, "b/far", "a/web")       # a pod IP inside cidr, outside except
    assert not connects(state, "b/client", "a/web")  # 10.0.1.1 is in the except
    web = state.pod("a/web")
    assert not allowed(state, Endpoint(ipaddress.ip_address("10.1.0.1")), Endpoint(web.ips[0], web), 80, "TCP").allowed


def test_clause_namespaces_carry_the_metadata_name_label():
    spec = "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]}]}"
    state = world(policy_yaml("a", "p", spec))
    assert connects(state, "b/client", "a/web")
    assert state.namespace("a").labels["kubernetes.io/metadata.name"] == "a"


def test_clause_absent_or_empty_ports_mean_all_ports_and_protocols():
    for rule in ("{}", "{ports: []}"):
        state = world(policy_yaml("a", "p", f"{{podSelector: {{}}, ingress: [{rule}]}}"))
        assert connects(state, "b/client", "a/web", 12345, "SCTP")
        assert connects(state, "b/client", "a/web", None, "ICMP")


def test_clause_protocol_defaults_to_tcp():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{ports: [{port: 80}]}]}"))
    assert connects(state, "b/client", "a/web", 80, "TCP")
    assert not connects(state, "b/client", "a/web", 80, "UDP")


def test_clause_named_port_resolves_against_destination_pod_with_same_protocol():
    spec = "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: http}, {port: dns, protocol: TCP}]}]}"
    state = world(policy_yaml("b", "p", spec))
    assert connects(state, "b/client", "a/web", 80)     # http is 80 on a/web
    assert not connects(state, "b/client", "a/web", 8080)
    assert connects(state, "b/client", "b/web", 8080)   # ...and 8080 on b/web
    assert not connects(state, "b/client", "b/web", 53, "UDP")  # dns is UDP on b/web, rule asks TCP
    assert not connects(state, "b/client", "a/db", 5432)  # no "http" on a/db: matches nothing


def test_clause_end_port_makes_an_inclusive_range():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8010}]}]}"))
    assert connects(state, "b/client", "a/web", 8000)
    assert connects(state, "b/client", "a/web", 8010)
    assert not connects(state, "b/client", "a/web", 8011)
    assert not connects(state, "b/client", "a/web", 7999)


def test_clause_a_rule_with_ports_never_admits_a_protocol_it_does_not_name():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{ports: [{protocol: UDP}]}]}"))
    assert connects(state, "b/client", "a/web", 9999, "UDP")
    assert not connects(state, "b/client", "a/web", None, "ICMP")
    assert not connects(state, "b/client", "a/web", 9999, "TCP")


def test_clause_label_selector_operators():
    def selects(expr: str) -> bool:
        spec = f"{{podSelector: {{}}, ingress: [{{from: [{{podSelector: {expr}}}]}}]}}"
        return connects(world(policy_yaml("a", "p", spec)), "a/db", "a/web")

    assert selects("{}")
    assert selects("{matchLabels: {app: db}, matchExpressions: [{key: app, operator: In, values: [db, x]}]}")
    assert not selects("{matchLabels: {app: db}, matchExpressions: [{key: app, operator: NotIn, values: [db]}]}")
    assert selects("{matchExpressions: [{key: tier, operator: NotIn, values: [x]}]}")  # key absent
    assert selects("{matchExpressions: [{key: app, operator: Exists}]}")
    assert not selects("{matchExpressions: [{key: app, operator: DoesNotExist}]}")
    assert selects("{matchExpressions: [{key: tier, operator: DoesNotExist}]}")


def test_clause_host_network_pods_are_not_selected_nor_matched():
    host = pod_yaml("a", "agent", "192.168.0.2", "{app: web}", extra=", hostNetwork: true", node="node-b")
    state = world(policy_yaml("a", "deny", "{podSelector: {}, policyTypes: [Ingress, Egress]}"),
                  policy_yaml("b", "p", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"),
                  extra_pods=host)
    agent = state.pod("a/agent")
    assert not agent.takes_part
    web = state.pod("b/web")
    # not isolated by a/deny although it matches {}; not matched by namespaceSelector {}
    assert not allowed(state, Endpoint(agent.ips[0], agent), Endpoint(web.ips[0], web), 80, "TCP").allowed


def test_clause_pods_without_ip_or_finished_take_no_part():
    extra = pod_yaml("a", "pending", "") + pod_yaml("a", "done", "10.0.0.9").replace("Running", "Succeeded")
    state = world(extra_pods=extra)
    assert not state.pod("a/pending").takes_part
    assert not state.pod("a/done").takes_part
    assert state.pod("a/web").takes_part


def test_clause_dual_stack_every_pod_ip_counts():
    extra = pod_yaml("b", "dual", "10.0.1.50,fd00::50")
    spec = "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 'fd00::/64'}}]}]}"
    state = world(policy_yaml("a", "p", spec), extra_pods=extra + pod_yaml("a", "v6", "fd00::1"))
    dual, v6 = state.pod("b/dual"), state.pod("a/v6")
    assert connects(state, "b/dual", "a/v6")
    assert allowed(state, Endpoint(dual.ips[1], dual), Endpoint(v6.ips[0], v6), 80, "TCP").allowed
    assert not connects(state, "b/client", "a/web")  # v4 only: the v6 block does not admit it
