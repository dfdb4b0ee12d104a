"""The semantic pitfalls of ../shared/PITFALLS.md (1–12, 21), each a test named after it (13–20:
test_pitfalls_dataplane.py; 22–24: test_cni_plugin.py)."""

from __future__ import annotations

import ipaddress

import pytest

from netpol.errors import InputError
from netpol.semantics.reference import Endpoint, allowed
from tests.conftest import DENY_EGRESS, connects, pod_yaml, policy_yaml, world


def test_pitfall_01_ip_block_except_is_per_peer_not_chain_level():
    # AWS VPC CNI #3096: a `0.0.0.0/0 except 10/8` rule must not break a separate DNS rule.
    spec = """{podSelector: {}, policyTypes: [Egress], egress: [
        {to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]},
        {to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}], ports: [{port: 53, protocol: UDP}]}]}"""
    state = world(policy_yaml("b", "egress", spec))
    assert connects(state, "b/client", "a/web", 53, "UDP")
    assert not connects(state, "b/client", "a/web", 80)
    client = state.pod("b/client")
    assert allowed(state, Endpoint(client.ips[0], client), Endpoint(ipaddress.ip_address("8.8.8.8")), 443, "TCP").allowed


def test_pitfall_02_named_ports_resolve_per_destination_even_without_to():
    spec = "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: http}]}]}"
    state = world(policy_yaml("b", "p", spec))
    assert connects(state, "b/client", "a/web", 80) and not connects(state, "b/client", "a/web", 8080)
    assert connects(state, "b/client", "b/web", 8080) and not connects(state, "b/client", "b/web", 80)


def test_pitfall_03_end_port_and_sctp_are_enforced_not_ignored():
    spec = "{podSelector: {}, ingress: [{ports: [{port: 9000, endPort: 9002, protocol: SCTP}]}]}"
    state = world(policy_yaml("a", "p", spec))
    assert connects(state, "b/client", "a/web", 9001, "SCTP")
    assert not connects(state, "b/client", "a/web", 9003, "SCTP")
    assert not connects(state, "b/client", "a/web", 9001, "TCP")


def test_pitfall_04_default_protocol_is_tcp_and_protocol_only_means_all_its_ports():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{ports: [{port: 80}, {protocol: UDP}]}]}"))
    assert connects(state, "b/client", "a/web", 80, "TCP") and not connects(state, "b/client", "a/web", 80, "SCTP")
    assert connects(state, "b/client", "a/web", 31337, "UDP")


def test_pitfall_05_empty_namespace_selector_means_all_pods_not_external_addresses():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"))
    assert connects(state, "b/client", "a/web")
    web = state.pod("a/web")
    outside = Endpoint(ipaddress.ip_address("203.0.113.1"))
    assert not allowed(state, outside, Endpoint(web.ips[0], web), 80, "TCP").allowed


def test_pitfall_06_empty_pod_selector_selects_every_pod_of_the_namespace():
    state = world(policy_yaml("a", "deny", "{podSelector: {}}"))
    assert not connects(state, "b/client", "a/web") and not connects(state, "b/client", "a/db")


def test_pitfall_07_deny_all_egress_with_no_rules_is_enforced():
    state = world(policy_yaml("b", "deny-egress", DENY_EGRESS))
    assert not connects(state, "b/client", "a/web")


def test_pitfall_08_egress_rules_do_nothing_when_policy_types_is_ingress_only():
    spec = "{podSelector: {}, policyTypes: [Ingress], ingress: [{}], egress: [{ports: [{port: 1}]}]}"
    state = world(policy_yaml("b", "p", spec))
    assert connects(state, "b/client", "a/web", 80)


@pytest.mark.parametrize(("ingress", "opens"), [("[]", False), (None, False), ("[{}]", True)])
def test_pitfall_09_empty_absent_and_allow_all_ingress(ingress, opens):
    spec = "{podSelector: {}, policyTypes: [Ingress]" + (f", ingress: {ingress}}}" if ingress else "}")
    assert connects(world(policy_yaml("a", "p", spec)), "b/client", "a/web") is opens


def test_pitfall_10_ingress_and_egress_compose_as_and():
    state = world(policy_yaml("b", "out", "{podSelector: {}, egress: [{}]}"), policy_yaml("a", "deny", "{podSelector: {}}"))
    assert not connects(state, "b/client", "a/web")


def test_pitfall_11_node_to_pod_is_allowed_but_only_from_the_pods_own_node():
    state = world(policy_yaml("a", "deny", "{podSelector: {}, policyTypes: [Ingress, Egress]}"),
                  extra_pods=pod_yaml("b", "remote", "10.0.1.77", node="node-b"))
    web = state.pod("a/web")
    assert allowed(state, Endpoint(ipaddress.ip_address("192.168.0.1")), Endpoint(web.ips[0], web), 80, "TCP").allowed
    assert not allowed(state, Endpoint(ipaddress.ip_address("192.168.0.2")), Endpoint(web.ips[0], web), 80,
                       "TCP").allowed
    assert not connects(state, "b/remote", "a/web")  # crossing a node is not coming from it


def test_pitfall_12_ip_block_matches_pod_ips():
    state = world(policy_yaml("a", "p", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.1.0/24}}]}]}"))
    assert connects(state, "b/client", "a/web")
    assert not connects(state, "a/db", "a/web")


def test_pitfall_21_an_unparsable_selector_fails_closed_at_load():
    bad = "{podSelector: {matchExpressions: [{key: app, operator: In}]}, ingress: [{}]}"
    with pytest.raises(InputError, match="spec.podSelector.matchExpressions\\[0\\].values"):
        world(policy_yaml("a", "open", bad))
