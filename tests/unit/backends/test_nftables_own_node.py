"""Own-node dispatch in the nftables backend: a side gets an element in the own-node maps (and
the table the input/output hooks) only when one of its cluster tier rules could match a node's
address (`DirectionProgram.node_tiered`); a side whose tier rules all name pod sets lets its own
node through without a chain, as the exemption and the default would. The packets themselves:
tests/unit/testing/test_nft_trace.py and tests/kernel/test_cluster_policy_packets.py."""

from __future__ import annotations

import dataclasses

from netpol.backends.nftables import render, tiered
from netpol.compile.ir import DirectionProgram, NodeProgram
from tests.unit.backends.test_iptables_tiers import DB, NODES, WEB_IN, WEB_OUT, _program, _rule, _web


def _maps(program: NodeProgram) -> dict[str, str]:
    """Each dispatch map's declaration in the script, by name."""
    text = render(program)
    found = {}
    for block in text.split("\tmap ")[1:]:
        name, _, body = block.partition(" {")
        found[name] = body.split("\t}", 1)[0]
    return found


def test_tier_rules_on_pod_sets_only_need_no_own_node_chain():
    ingress = dataclasses.replace(WEB_IN, admin=(_rule("Admin", "Deny", DB, direction="ingress"),))
    egress = dataclasses.replace(WEB_OUT, baseline=(_rule("Baseline", "Deny", DB),))
    program = _program(_web(ingress=ingress, egress=egress))
    assert ingress.tiered and not ingress.node_tiered and not egress.node_tiered
    assert not tiered(program)
    text = render(program)
    assert "hook input" not in text and "hook output" not in text and "own-" not in text
    assert "10.244.0.10 : jump ingress-" in _maps(program)["ingress-v4"]


def test_a_nodes_or_networks_peer_or_a_closed_rule_gets_the_own_node_chain():
    for peers in (NODES, None):  # `nodes` peer; a rule failing closed matches every address
        egress = dataclasses.replace(WEB_OUT, admin=(_rule("Admin", "Deny", peers),))
        ingress = dataclasses.replace(WEB_IN, admin=(_rule("Admin", "Deny", DB, direction="ingress"),))
        program = _program(_web(ingress=ingress, egress=egress))
        assert egress.node_tiered and tiered(program)
        maps, text = _maps(program), render(program)
        assert "hook input" in text and "hook output" in text
        assert "10.244.0.10 : jump egress-" in maps["own-egress-v4"]
        assert "/own-node" in maps["own-egress-v4"]
        assert "elements" not in maps["own-ingress-v4"]  # its rules name pods only: no element


def test_a_side_without_tier_rules_is_never_node_tiered():
    assert not DirectionProgram().node_tiered and not WEB_IN.node_tiered
