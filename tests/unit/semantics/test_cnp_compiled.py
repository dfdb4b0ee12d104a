"""Every clause and pitfall test of tests/unit/semantics/test_cnp_semantics.py again, with each
question it asks the reference evaluator also put to what the compiler makes of the same state:
the packet traced through every node's IR and through the libnftables JSON the backend emits must
get the reference's verdict. The clause tests thus check the data plane too (the named-port,
protocol, namespace-selector, `nodes`-peer and own-node pitfalls among them)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from netpol.backends.nftables import render_json
from netpol.compile.compiler import compile_cluster
from netpol.model import ClusterState
from netpol.semantics import reference
from netpol.semantics.reference import Endpoint, Verdict
from netpol.testing.nft_trace import NodeRuleset, trace_json
from netpol.testing.trace import Packet, trace
from tests.unit.semantics import test_cnp_semantics as clauses

CLAUSE_TESTS = [(name, fn) for name, fn in inspect.getmembers(clauses, inspect.isfunction)
                if name.startswith("test_") and "explain" not in name]


def compiled_verdicts(state: ClusterState, packet: Packet) -> tuple[bool, bool]:
    """(IR trace, JSON trace) verdicts of the packet in the state's compiled rulesets."""
    programs = compile_cluster(state)
    rulesets = {name: NodeRuleset.from_document(render_json(p), frozenset(p.node_addresses))
                for name, p in programs.items()}
    locations = {ip: p.node_name for p in state.active_pods for ip in p.ips if p.node_name}
    return trace(programs, packet).allowed, trace_json(rulesets, packet, locations)[0]


def checked_allowed(asked: list[int]) -> Callable[..., Verdict]:
    def allowed(state: ClusterState, src: Endpoint, dst: Endpoint, port: int | None, protocol: str) -> Verdict:
        verdict = reference.allowed(state, src, dst, port, protocol)
        if src.ip.version == dst.ip.version:
            asked.append(1)
            ir, nft = compiled_verdicts(state, Packet(src.ip, dst.ip, protocol, port))
            assert (ir, nft) == (verdict.allowed, verdict.allowed), (
                f"{src} -> {dst} {protocol}/{port}: reference {verdict.reason}; IR {ir}, nftables {nft}")
        return verdict
    return allowed


@pytest.mark.parametrize("test", [fn for _, fn in CLAUSE_TESTS], ids=[name for name, _ in CLAUSE_TESTS])
def test_the_compiled_rulesets_answer_every_clause_like_the_semantics(test: Callable[..., Any],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    checked = checked_allowed(asked)
    monkeypatch.setattr(clauses, "allowed", checked)

    def connects(state: ClusterState, src: str, dst: str, port: int | None = 80, protocol: str = "TCP") -> bool:
        a, b = state.pod(src), state.pod(dst)
        assert a is not None and b is not None
        if a == b:
            return reference.pods_connect(state, a, b, port, protocol)
        return any(checked(state, Endpoint(x, a), Endpoint(y, b), port, protocol).allowed
                   for x in a.ips for y in b.ips if x.version == y.version)

    monkeypatch.setattr(clauses, "connects", connects)
    test()
    assert asked, "the test asked no question the compiled rulesets could answer"
