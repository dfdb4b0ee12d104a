"""An address several active pods claim (a terminating pod and its replacement) fails closed, and
every implementation agrees on it: generated clusters with a twin of one pod — same node, same
address, its own namespace, labels and ports — traced through the IR and through the emitted
libnftables JSON give the same verdict, and never allow a connection that the reference
semantics refuses for some choice of claimant as the address's owner."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from netpol.backends.iptables import render as render_iptables
from netpol.backends.nftables import render_json
from netpol.compile.compiler import compile_cluster
from netpol.compile.incremental import IncrementalCompiler
from netpol.labels import Labels, LabelSelector
from netpol.model import ClusterState, NetworkPolicy, Peer, Pod, PolicyPort, Rule
from netpol.semantics.reference import Endpoint, allowed, endpoint
from netpol.testing import clusters
from netpol.testing.nft_trace import NodeRuleset, trace_json
from netpol.testing.strategies import NAMESPACE_NAMES, container_ports, labels
from netpol.testing.trace import Packet, trace
from tests.unit.testing.test_trace import PROBES, addresses


@st.composite
def clusters_with_a_twin(draw: st.DrawFn) -> tuple[ClusterState, Pod]:
    """A generated cluster plus a twin of one of its active pods; and that pod."""
    state = draw(clusters(max_pods=6, max_policies=5))
    active = [p for p in state.active_pods if p.node_name]
    assume(active)
    original = draw(st.sampled_from(active))
    twin = dataclasses.replace(original, namespace=draw(st.sampled_from(NAMESPACE_NAMES)), name="twin",
                               labels=draw(labels()), ports=draw(container_ports()))
    return ClusterState.build(state.namespaces, (*state.pods, twin), state.nodes, state.policies), original


def claimants(state: ClusterState, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[Endpoint]:
    """The address's owner as the reference sees it, once per active pod claiming it."""
    pods = [p for p in state.pods if p.takes_part and ip in p.ips]
    return [Endpoint(ip, pod) for pod in pods] or [endpoint(state, ip)]


@settings(max_examples=300, deadline=None)
@given(case=clusters_with_a_twin(), data=st.data())
def test_a_shared_address_traces_alike_in_the_ir_and_the_json_and_never_opens_more(case, data):
    state, original = case
    programs = compile_cluster(state)
    rulesets = {name: NodeRuleset.from_document(render_json(program), frozenset(program.node_addresses))
                for name, program in programs.items()}
    locations = {ip: p.node_name for p in state.active_pods for ip in p.ips if p.node_name}
    render_iptables(programs[original.node_name])  # the other backend prints it too
    pool = addresses(state)
    shared = list(original.ips)
    for _ in range(12):
        src = data.draw(st.sampled_from(shared + pool))
        dst = data.draw(st.sampled_from([ip for ip in shared + pool if ip.version == src.version and ip != src]
                                        or [src]))
        protocol, port = data.draw(st.sampled_from(PROBES))
        ir = trace(programs, Packet(src, dst, protocol, port))
        kernel, steps = trace_json(rulesets, Packet(src, dst, protocol, port), locations)
        assert ir.allowed == kernel, (src, dst, protocol, port, ir.steps, steps)
        if ir.allowed and src != dst:
            for s, d in itertools.product(claimants(state, src), claimants(state, dst)):
                verdict = allowed(state, s, d, port, protocol)
                assert verdict.allowed, (src, dst, protocol, port, ir.steps, str(s.pod), str(d.pod), verdict.reason)


SHARED = ipaddress.ip_address("10.0.0.7")
CLIENT = Pod("shop", "client", Labels({"app": "client"}), (ipaddress.ip_address("10.0.0.2"),), "node-a")
OLD = Pod("db", "old", Labels({"app": "db"}), (SHARED,), "node-a")
NEW = Pod("db", "new", Labels({"app": "db", "new": "yes"}), (SHARED,), "node-a")


def _only(ports: tuple[int, ...], labels_: dict[str, str]) -> NetworkPolicy:
    return NetworkPolicy("db", f"only-{'-'.join(map(str, ports))}", LabelSelector(Labels(labels_)),
                         ingress=(Rule((Peer(LabelSelector(), LabelSelector()),),
                                       tuple(PolicyPort("TCP", p) for p in ports)),),
                         policy_types=("Ingress",))


def _allowed(state: ClusterState, port: int) -> bool:
    return trace(compile_cluster(state), Packet(CLIENT.ips[0], SHARED, "TCP", port)).allowed


def test_every_claimant_must_allow_and_one_not_isolated_allows_all():
    old_policy, new_policy = _only((80,), {"app": "db"}), _only((80, 443), {"new": "yes"})
    both = ClusterState.build(pods=(CLIENT, OLD, NEW), policies=(old_policy, new_policy))
    assert _allowed(both, 80) and not _allowed(both, 443)  # old admits 80 only
    only_new = ClusterState.build(pods=(CLIENT, OLD, NEW), policies=(new_policy,))
    assert _allowed(only_new, 443) and not _allowed(only_new, 8080)  # old isolates nothing: new decides


def test_a_peer_set_holds_a_shared_address_only_if_every_claimant_is_admitted():
    """The client admits egress to app=db pods with new=yes: db/new is one, db/old is not."""
    egress = NetworkPolicy("shop", "to-new-db", LabelSelector(Labels({"app": "client"})),
                           egress=(Rule((Peer(LabelSelector(Labels({"new": "yes"})), LabelSelector()),)),),
                           policy_types=("Egress",))
    state = ClusterState.build(pods=(CLIENT, OLD, NEW), policies=(egress,))
    assert not _allowed(state, 80)
    alone = ClusterState.build(pods=(CLIENT, NEW), policies=(egress,))
    assert _allowed(alone, 80)
    compiler = IncrementalCompiler(alone)  # and the incremental compiler follows, both ways
    compiler.apply("ADDED", OLD)
    assert not trace(compiler.programs(), Packet(CLIENT.ips[0], SHARED, "TCP", 80)).allowed
    compiler.apply("DELETED", OLD)
    assert trace(compiler.programs(), Packet(CLIENT.ips[0], SHARED, "TCP", 80)).allowed


def test_iptables_sends_a_shared_ingress_address_through_every_claimant():
    state = ClusterState.build(pods=(CLIENT, OLD, NEW),
                               policies=(_only((80,), {"app": "db"}), _only((80, 443), {"new": "yes"})))
    text = render_iptables(compile_cluster(state)["node-a"]).iptables
    jumps = [line for line in text.splitlines() if line.startswith("-A NETPOL-FORWARD -d 10.0.0.7/32")]
    assert [line.rsplit(" -j ", 1)[1] for line in jumps][-1] == "ACCEPT"
    assert len(jumps) == 3 and all(" -j NP-C-" in line for line in jumps[:2])
    assert text.count("-j RETURN") >= 3  # both claimant chains return on allow
