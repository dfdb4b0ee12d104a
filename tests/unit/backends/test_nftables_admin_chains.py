"""The Admin tier in the nftables backend is a chain of its own per distinct set of Admin rules,
entered by `jump` from each side's chain: sides that NetworkPolicies split but cluster policies
select alike print those rules once. An Admin Pass, or no Admin rule matching, returns to the
side's chain (on to the NetworkPolicy tier); an egress Accept cannot return, so it goes to
`egress-accepted` (the destination's ingress decides). The own-node variant of a side that
NetworkPolicies isolate depends on its cluster policies alone, and is shared the same way.
Verdicts traced through the libnftables JSON, as every clause test does
(tests/unit/semantics/test_cnp_compiled.py); real packets: tests/kernel/test_cluster_policy_packets.py."""

from __future__ import annotations

import re

from netpol.backends.nftables import EGRESS_ACCEPTED, render
from netpol.compile.compiler import compile_cluster
from netpol.model import ClusterState
from netpol.semantics import reference
from netpol.testing.trace import Packet
from tests.conftest import DENY_EGRESS, DENY_INGRESS, policy_yaml
from tests.unit.semantics.test_cnp_compiled import compiled_verdicts
from tests.unit.semantics.test_cnp_semantics import FROM_B, IN_A, IN_B, cnp, rule, world

# a/web and a/db isolated by different NetworkPolicies, both subject to one Admin policy
ONLY_WEB = policy_yaml("a", "web-only", "{podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress, Egress]}")
ONLY_DB = policy_yaml("a", "db-only", "{podSelector: {matchLabels: {app: db}}, ingress: [{}], policyTypes: [Ingress]}")


def _chains(text: str) -> dict[str, str]:
    """Each chain's body in the script, by name."""
    return dict(re.findall(r"\tchain (\S+) \{\n(.*?)\n\t\}", text, re.S))


def _node_a(state: ClusterState) -> str:
    return render(compile_cluster(state)["node-a"])


def _verdicts(state: ClusterState, src: str, dst: str, port: int = 80) -> tuple[bool, bool, bool]:
    """(reference, IR trace, JSON trace) for a TCP connection between two pods."""
    a, b = state.pod(src), state.pod(dst)
    assert a is not None and b is not None
    expected = reference.pods_connect(state, a, b, port, "TCP")
    return (expected, *compiled_verdicts(state, Packet(a.ips[0], b.ips[0], "TCP", port)))


def test_sides_alike_in_cluster_policies_share_one_admin_chain():
    guard = cnp("guard", "Admin", 1, IN_A, f"[{rule('Deny', FROM_B)}]")
    chains = _chains(_node_a(world(guard, ONLY_WEB, ONLY_DB)))
    admin = [name for name in chains if name.startswith("ingress-") and name.endswith("cnp/guard/admin")]
    assert len(admin) == 1, sorted(chains)
    assert "drop comment \"Admin tier: ClusterNetworkPolicy guard (priority 1) spec.ingress[0]: Deny\"" \
        in chains[admin[0]]
    heads = [name for name, body in chains.items() if f"jump {admin[0]} " in body]
    assert len(heads) == 2  # web's side and db's: each then goes to its own NetworkPolicy chain
    assert all("goto ingress-" in chains[head] and "spec.ingress" not in chains[head] for head in heads)
    assert sum(body.count("spec.ingress[0]: Deny") for body in chains.values()) == 1


def test_an_admin_pass_returns_to_the_network_policy_tier():
    passing = cnp("pass", "Admin", 1, IN_A, f"[{rule('Pass', FROM_B)}, {rule('Accept')}]")
    state = world(passing, policy_yaml("a", "deny", DENY_INGRESS))
    chains = _chains(_node_a(state))
    (admin,) = [body for name, body in chains.items() if name.endswith("cnp/pass/admin")]
    assert "return comment \"Admin tier: ClusterNetworkPolicy pass (priority 1) spec.ingress[0]: Pass\"" in admin
    assert _verdicts(state, "b/client", "a/web") == (False, False, False)  # passed on: the deny decides
    assert _verdicts(state, "a/db", "a/web") == (True, True, True)  # the Accept, final


def test_an_admin_egress_accept_skips_the_sources_policies_but_not_the_destinations():
    accept_out = cnp("out", "Admin", 1, IN_B, egress=f"[{rule('Accept', direction='egress')}]")
    quiet = policy_yaml("b", "quiet", DENY_EGRESS)  # would deny b/client's egress
    state = world(accept_out, quiet)
    text = _node_a(state)
    chains = _chains(text)
    (admin,) = [body for name, body in chains.items() if name.endswith("cnp/out/admin")]
    assert f"goto {EGRESS_ACCEPTED} comment" in admin
    assert "ip daddr vmap @ingress-v4" in chains[EGRESS_ACCEPTED]
    assert _verdicts(state, "b/client", "a/web") == (True, True, True)
    guarded = world(accept_out, quiet, policy_yaml("a", "deny", DENY_INGRESS))
    assert _verdicts(guarded, "b/client", "a/web") == (False, False, False)  # the destination's ingress
    assert EGRESS_ACCEPTED not in _chains(_node_a(world(cnp("d", "Admin", 1, IN_B, egress="[{action: Deny, to: [{namespaces: {}}]}]"))))


def test_own_node_variants_of_isolated_sides_depend_on_cluster_policies_alone():
    nodes = cnp("nodes", "Admin", 1, IN_A, egress=f"[{rule('Deny', '[{nodes: {matchLabels: {zone: two}}}]', direction='egress')}]")
    web_out = policy_yaml("a", "web-out", "{podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}")
    db_out = policy_yaml("a", "db-out", "{podSelector: {matchLabels: {app: db}}, egress: [{}], policyTypes: [Egress]}")
    text = _node_a(world(nodes, web_out, db_out))
    own = re.search(r"map own-egress-v4 \{[^}]*elements = \{ ([^}]*) \}", text)
    assert own is not None
    targets = {element.split(" : jump ")[1] for element in own.group(1).split(", ")}
    assert len(targets) == 1 and next(iter(targets)).endswith("/isolated/own-node"), targets  # web's and db's
    forward = re.search(r"map egress-v4 \{[^}]*elements = \{ ([^}]*) \}", text)
    assert forward is not None and len({e.split(" : jump ")[1] for e in forward.group(1).split(", ")}) == 2
