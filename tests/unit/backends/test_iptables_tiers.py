"""ClusterNetworkPolicy tiers in the iptables backend, without a kernel: the shape of a tiered side's
chains (Admin rules, `-g` to the after-Admin chain on Pass, the NetworkPolicy tier or Baseline,
default allow), the own-node chains and the INPUT/OUTPUT hooks, shared addresses, chain and set
names that uninstall recognises, and a program without tier rules printed exactly as before.
Then the payloads themselves, run by a small interpreter of the iptables and ipset syntax we
emit, against `netpol.semantics.reference` on generated clusters mixing both kinds of policies
(and against the IR's trace where pods share an address). Real packets:
tests/kernel/test_iptables_tiers.py."""

from __future__ import annotations

import dataclasses
import ipaddress
import shlex
from collections.abc import Callable, Mapping

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netpol.backends.iptables import (
    HOOKS,
    OUR_CHAIN,
    OUR_SET,
    chain_name,
    declared_sets,
    dispatch_chains,
    ensure_hook_commands,
    hooks,
    pod_chains,
    removal_payload,
    render,
    stale_chain_payload,
)
from netpol.compile.compiler import compile_cluster
from netpol.compile.ir import (
    Allow,
    DirectionProgram,
    NodeProgram,
    PeerSet,
    PodProgram,
    PortMatch,
    TierRule,
)
from netpol.load.manifests import load_text
from netpol.model import Action, ClusterState, IPAddress, Tier
from netpol.testing import mixed_clusters
from netpol.testing.strategies import NAMESPACE_NAMES, container_ports, labels
from netpol.testing.trace import Packet, trace
from tests.unit.testing.test_trace import PROBES, addresses, check

ip = ipaddress.ip_address


def _host(address: str) -> tuple[tuple[int, int], ...]:
    value = int(ip(address))
    return ((value, value),)


DB = PeerSet("pods-0123456789", _host("10.244.0.11"), _host("fd00::11"), False, "pods app=db in namespace shop")
NODES = PeerSet("nodes-0123456789", _host("192.168.0.1"), (), False, "addresses of nodes <all>")
WEB_IN = DirectionProgram(("shop/web-in",), (Allow("NetworkPolicy shop/web-in spec.ingress[0]", (DB.ref,),
                                                   (PortMatch("TCP", 8080),)),))
WEB_OUT = DirectionProgram(("shop/web-out",), (Allow("NetworkPolicy shop/web-out spec.egress[0]", None,
                                                     (PortMatch("UDP", 53),)),))
WEB = ip("10.244.0.10")


def _program(*pods: PodProgram) -> NodeProgram:
    return NodeProgram("node-a", (ip("192.168.0.1"),), pods, (DB, NODES),
                       pod_cidrs=(ipaddress.ip_network("10.244.0.0/24"),))


def _web(ingress: DirectionProgram = WEB_IN, egress: DirectionProgram = WEB_OUT,
         ips: tuple[IPAddress, ...] = (WEB, ip("fd00::10")), name: str = "shop/web") -> PodProgram:
    return PodProgram(name, ips, ingress, egress)


def _rule(tier: Tier, action: Action, peers: PeerSet | None, index: int = 0, direction: str = "egress",
          ports: tuple[PortMatch, ...] | None = None) -> TierRule:
    origin = f"{tier} tier: ClusterNetworkPolicy guard (priority 10) spec.{direction}[{index}]: {action}"
    return TierRule(tier, "guard", action, Allow(origin, None if peers is None else (peers.ref,), ports))


def _chain(payload: str, name: str) -> list[str]:
    """The rules of one chain, without `-A NAME`."""
    return [line.removeprefix(f"-A {name} ") for line in payload.splitlines() if line.startswith(f"-A {name} ")]


# Printed by the backend before cluster policies existed; a program without tier rules still is.
WITHOUT_TIERS_V4 = """\
# netpol iptables rules for node node-a: `iptables-restore --noflush` (after ipset restore)
*filter
:NETPOL-FORWARD - [0:0]
:NP-E-5396FA92B8F0 - [0:0]
:NP-I-B8D817A0A02F - [0:0]
-A NETPOL-FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment "replies of allowed connections" -j ACCEPT
-A NETPOL-FORWARD -m set --match-set node-pod-cidrs-v4 src -m set ! --match-set node-pods-v4 src -m comment --comment "from an address of this node's podCIDRs that is no pod netpol has programmed" -j DROP
-A NETPOL-FORWARD -m set --match-set node-pod-cidrs-v4 dst -m set ! --match-set node-pods-v4 dst -m comment --comment "to an address of this node's podCIDRs that is no pod netpol has programmed" -j DROP
-A NETPOL-FORWARD -s 10.244.0.10/32 -j NP-E-5396FA92B8F0
-A NETPOL-FORWARD -d 10.244.0.10/32 -j NP-I-B8D817A0A02F
-A NP-E-5396FA92B8F0 -p udp -m multiport --dports 53 -m comment --comment "NetworkPolicy shop/web-out spec.egress[0]" -j RETURN
-A NP-E-5396FA92B8F0 -m comment --comment "no rule of shop/web-out admits it" -j DROP
-A NP-I-B8D817A0A02F -m set --match-set pods-0123456789-v4 src -p tcp -m multiport --dports 8080 -m comment --comment "NetworkPolicy shop/web-in spec.ingress[0]" -j ACCEPT
-A NP-I-B8D817A0A02F -m comment --comment "no rule of shop/web-in admits it" -j DROP
COMMIT
"""


# ── the payloads ────────────────────────────────────────────────────────────────────────────


def test_a_program_without_tier_rules_is_printed_exactly_as_before_cluster_policies():
    program = _program(_web())
    assert render(program).iptables == WITHOUT_TIERS_V4
    assert hooks(program) == ("FORWARD",)
    assert "NETPOL-INPUT" not in render(program).ip6tables and "NETPOL-OUTPUT" not in render(program).ip6tables


def test_admin_rules_come_first_and_a_pass_goes_to_the_after_admin_chain():
    egress = dataclasses.replace(WEB_OUT, admin=(_rule("Admin", "Pass", NODES), _rule("Admin", "Deny", None, 1)),
                                 baseline=(_rule("Baseline", "Accept", DB),))
    program = _program(_web(egress=egress))
    text = render(program).iptables
    head, tail = chain_name("egress", egress), chain_name("egress", egress, after_admin=True)
    assert tail == head.replace("NP-E-", "NP-EA-")
    assert dispatch_chains(program, WEB, "egress") == [head]
    assert _chain(text, head) == [
        '-m set --match-set nodes-0123456789-v4 dst -m comment --comment '
        f'"Admin tier: ClusterNetworkPolicy guard (priority 10) spec.egress[0]: Pass" -g {tail}',
        '-m comment --comment "Admin tier: ClusterNetworkPolicy guard (priority 10) spec.egress[1]: Deny" -j DROP',
        f'-m comment --comment "no Admin tier rule decided" -g {tail}']
    # isolated: the NetworkPolicy tier is final, Baseline never consulted
    assert _chain(text, tail) == [
        '-p udp -m multiport --dports 53 -m comment --comment "NetworkPolicy shop/web-out spec.egress[0]" -j RETURN',
        '-m comment --comment "no rule of shop/web-out admits it" -j DROP']
    # with its own node, the NetworkPolicy tier is the exemption; the Admin tier still decides
    own, own_tail = chain_name("own-egress", egress), chain_name("own-egress", egress, after_admin=True)
    assert dispatch_chains(program, WEB, "egress", hook="INPUT") == [own]
    assert _chain(text, own)[1] == _chain(text, head)[1]
    assert _chain(text, own)[0].endswith(f"-g {own_tail}")
    assert _chain(text, own_tail) == [
        '-m comment --comment "its own node: exempt in the NetworkPolicy tier" -j RETURN']


def test_without_a_pass_a_tiered_side_is_one_chain_and_baseline_follows_when_not_isolated():
    ingress = DirectionProgram(admin=(_rule("Admin", "Accept", DB, direction="ingress", ports=(PortMatch("TCP"),)),),
                               baseline=(_rule("Baseline", "Deny", None, direction="ingress"),))
    program = _program(_web(ingress=ingress, egress=DirectionProgram()))
    text = render(program).iptables
    name = chain_name("ingress", ingress)
    assert [c for c in pod_chains(program) if "A-" in c] == []  # no after-Admin chains
    assert _chain(text, name) == [
        '-m set --match-set pods-0123456789-v4 src -p tcp -m comment --comment '
        '"Admin tier: ClusterNetworkPolicy guard (priority 10) spec.ingress[0]: Accept" -j ACCEPT',
        '-m comment --comment "Baseline tier: ClusterNetworkPolicy guard (priority 10) spec.ingress[0]: Deny" -j DROP',
        '-m comment --comment "no tier decided: default allow" -j ACCEPT']
    own = chain_name("own-ingress", ingress)
    assert [r.rsplit(" -j ", 1)[1] for r in _chain(text, own)] == ["RETURN", "DROP", "RETURN"]
    assert dispatch_chains(program, WEB, "ingress", hook="OUTPUT") == [own]
    assert dispatch_chains(program, WEB, "egress") == [] and dispatch_chains(program, WEB, "egress", "INPUT") == []


def test_own_node_hooks_exist_only_with_tier_rules_and_return_what_they_allow():
    egress = dataclasses.replace(WEB_OUT, admin=(_rule("Admin", "Deny", NODES),))
    plain = _web(name="shop/plain", ips=(ip("10.244.0.12"),))
    program = _program(_web(egress=egress), plain)
    assert hooks(program) == ("FORWARD", "INPUT", "OUTPUT")
    v4, v6 = render(program).iptables, render(program).ip6tables
    for payload in (v4, v6):
        assert ":NETPOL-INPUT - [0:0]" in payload and ":NETPOL-OUTPUT - [0:0]" in payload
        for chain in ("NETPOL-INPUT", "NETPOL-OUTPUT"):
            rules = _chain(payload, chain)
            assert rules[0] == ('-m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment '
                                '"replies of allowed connections" -j RETURN')
            assert not any(r.endswith("-j ACCEPT") for r in rules)  # the node's own rules still apply
    assert _chain(v4, "NETPOL-INPUT")[1:] == [f"-s 10.244.0.10/32 -j {chain_name('own-egress', egress)}"]
    assert _chain(v4, "NETPOL-OUTPUT")[1:] == []  # web's ingress and plain's sides have no tier rules
    nd = [r for r in _chain(v6, "NETPOL-OUTPUT") if "neighbour discovery" in r]
    assert len(nd) == 4 and all(r.endswith("-j RETURN") for r in nd)
    assert _chain(v6, "NETPOL-INPUT")[-1] == f"-s fd00::10/128 -j {chain_name('own-egress', egress)}"
    assert [ensure_hook_commands("iptables", hook)[1] for hook in hooks(program)] == [
        ["iptables", "-w", "-I", hook, "1", "-j", HOOKS[hook]] for hook in ("FORWARD", "INPUT", "OUTPUT")]


def test_a_tiered_side_never_shares_a_chain_with_an_untiered_one_and_names_stay_ours():
    untiered = WEB_IN
    tiered = dataclasses.replace(WEB_IN, baseline=(_rule("Baseline", "Deny", None, direction="ingress"),))
    passing = dataclasses.replace(tiered, admin=(_rule("Admin", "Pass", DB, direction="ingress"),))
    names = {chain_name(kind, side, after) for side in (untiered, tiered, passing)
             for kind in ("ingress", "egress", "claimant", "own-ingress", "own-egress") for after in (False, True)}
    assert len(names) == 30 and all(len(n) <= 28 and OUR_CHAIN.match(n) for n in names)
    assert chain_name("ingress", untiered) != chain_name("ingress", tiered) != chain_name("ingress", passing)
    for name in ("NETPOL-FORWARD", "NETPOL-INPUT", "NETPOL-OUTPUT"):
        assert OUR_CHAIN.match(name)
    for foreign in ("NP-FOREIGN", "NETPOL-PREROUTING", "NP-X-0123456789AB", "NP-NEAA-0123456789AB",
                    "NP-I-0123456789ab", "NP-I-0123456789ABC", "KUBE-FORWARD"):
        assert not OUR_CHAIN.match(foreign), foreign
    assert OUR_SET.match("nodes-0123456789-v4") and OUR_SET.match("nodes-0123456789-v6.new")
    assert not OUR_SET.match("nodes-of-someone-v4")
    kinds = {name: kind for name, kind, *_ in declared_sets(_program(_web()))}
    assert kinds["nodes-0123456789-v4"] == "hash:ip"


def test_a_shared_address_passes_only_what_every_tiered_claimant_allows():
    shared = (ip("10.244.0.20"),)
    deny_nodes = DirectionProgram(admin=(_rule("Admin", "Deny", NODES),))
    deny_db = DirectionProgram(admin=(_rule("Admin", "Deny", DB, direction="ingress"),))
    old = PodProgram("db/old", shared, WEB_IN, deny_nodes)
    new = PodProgram("db/new", shared, deny_db, WEB_OUT)
    program = _program(old, new)
    address = shared[0]
    text = render(program).iptables
    claimant_chains = [chain_name("claimant", WEB_IN), chain_name("claimant", deny_db)]
    assert dispatch_chains(program, address, "ingress") == claimant_chains
    assert _chain(text, "NETPOL-FORWARD")[-1] == \
        '-d 10.244.0.20/32 -m comment --comment "every claimant of 10.244.0.20 admits it" -j ACCEPT'
    assert _chain(text, claimant_chains[0])[-1].endswith("-j DROP")
    assert _chain(text, claimant_chains[1])[-1] == '-m comment --comment "no tier decided: default allow" -j RETURN'
    assert dispatch_chains(program, address, "egress") == [chain_name("egress", deny_nodes), chain_name("egress", WEB_OUT)]
    # own node: each tiered claimant's chain in turn (they return on allow), no claimant variant
    assert dispatch_chains(program, address, "egress", "INPUT") == [chain_name("own-egress", deny_nodes)]
    assert dispatch_chains(program, address, "ingress", "OUTPUT") == [chain_name("own-ingress", deny_db)]


LISTED = """\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N NETPOL-FORWARD
-N NETPOL-INPUT
-N NETPOL-OUTPUT
-N NP-FOREIGN
-N NP-NE-0123456789AB
-N NP-NEA-0123456789AB
-N SOMEONE-ELSE
-A INPUT -j NETPOL-INPUT
-A INPUT -j SOMEONE-ELSE
-A FORWARD -j NETPOL-FORWARD
-A OUTPUT -j NETPOL-OUTPUT
-A NETPOL-INPUT -s 10.244.0.10/32 -j NP-NE-0123456789AB
"""


def test_uninstall_removes_every_hook_jump_and_chain_of_ours_and_nothing_else():
    payload, chains = removal_payload(LISTED)
    assert chains == ["NETPOL-FORWARD", "NETPOL-INPUT", "NETPOL-OUTPUT", "NP-NE-0123456789AB", "NP-NEA-0123456789AB"]
    lines = payload.splitlines()
    assert [line for line in lines if line.startswith("-D ")] == [
        "-D INPUT -j NETPOL-INPUT", "-D FORWARD -j NETPOL-FORWARD", "-D OUTPUT -j NETPOL-OUTPUT"]
    assert lines.index(":NP-NE-0123456789AB - [0:0]") < lines.index("-D INPUT -j NETPOL-INPUT") \
        < lines.index("-X NETPOL-INPUT")  # flushed (no references left), unhooked, then deleted
    assert "SOMEONE-ELSE" not in payload and "NP-FOREIGN" not in payload


def test_when_the_last_tier_rule_goes_the_own_node_hooks_and_chains_go_too():
    stale = stale_chain_payload(LISTED, _program(_web()))
    assert [line for line in stale.splitlines() if line.startswith(("-D ", "-X "))] == [
        "-D INPUT -j NETPOL-INPUT", "-D OUTPUT -j NETPOL-OUTPUT", "-X NETPOL-INPUT", "-X NETPOL-OUTPUT",
        "-X NP-NE-0123456789AB", "-X NP-NEA-0123456789AB"]
    tiered = _program(_web(egress=DirectionProgram(admin=(_rule("Admin", "Deny", NODES),))))
    kept = stale_chain_payload(LISTED, tiered)
    assert "NETPOL-INPUT" not in kept and "NETPOL-OUTPUT" not in kept and "-X NP-NE-0123456789AB" in kept
    assert "NP-FOREIGN" not in stale + kept and "NETPOL-FORWARD" not in stale + kept


# ── the payloads, run: an interpreter of the syntax the backend emits ───────────────────────


Element = IPAddress | ipaddress.IPv4Network | ipaddress.IPv6Network | tuple[IPAddress, str, int]


def _element(kind: str, text: str) -> Element:
    if kind == "hash:net":
        return ipaddress.ip_network(text)
    if kind == "hash:ip,port":
        address, _, service = text.partition(",")
        protocol, _, port = service.partition(":")
        return ip(address), protocol, int(port)
    return ip(text)


def ipset_contents(payload: str) -> dict[str, tuple[str, set[Element]]]:
    """Each set's type and elements once `ipset restore` has run the payload (fill, then swap)."""
    filling: dict[str, tuple[str, set[Element]]] = {}
    live: dict[str, tuple[str, set[Element]]] = {}
    for line in payload.splitlines():
        words = line.split()
        if not words or words[0] == "#":
            continue
        if words[0] == "create":
            filling.setdefault(words[1], (words[2], set()))
        elif words[0] == "flush":
            filling[words[1]][1].clear()
        elif words[0] == "add":
            kind, elements = filling[words[1]]
            elements.add(_element(kind, words[2]))
        elif words[0] == "swap":
            live[words[2]] = filling.pop(words[1])
            filling[words[1]] = (live[words[2]][0], set())
    return live


class Filter:
    """One family's `iptables-restore` payload, run on a connection's first packet: chains by
    name; `run` gives ACCEPT, DROP, or None (returned, or fell off the end)."""

    def __init__(self, payload: str, sets: Mapping[str, tuple[str, set[Element]]]) -> None:
        self.chains: dict[str, list[list[str]]] = {}
        for line in payload.splitlines():
            if line.startswith(":"):
                self.chains[line[1:].split()[0]] = []
            elif line.startswith("-A "):
                words = shlex.split(line)
                self.chains[words[1]].append(words[2:])
        self.sets = sets

    def _in_set(self, name: str, ways: str, packet: Packet) -> bool:
        kind, elements = self.sets[name]
        address = packet.src if ways == "src" else packet.dst
        if kind == "hash:ip,port":
            return packet.port is not None and (packet.dst, packet.protocol.lower(), packet.port) in elements
        if kind == "hash:net":
            return any(address.version == net.version and address in net for net in elements)  # type: ignore[union-attr,operator]
        return address in elements

    def _matches(self, words: list[str], packet: Packet) -> tuple[bool, str, str]:
        """Whether the rule matches, and its target (`-j`/`-g`, name)."""
        i, negate, ok = 0, False, True
        while i < len(words):
            word = words[i]
            if word in ("-j", "-g"):
                return ok, word, words[i + 1]
            if word == "!":
                negate, i = True, i + 1
                continue
            if word in ("-m", "--comment"):
                i += 2
                continue
            if word in ("-s", "-d"):
                net = ipaddress.ip_network(words[i + 1])
                address = packet.src if word == "-s" else packet.dst
                ok = ok and address.version == net.version and address in net
            elif word == "-p":
                ok = ok and words[i + 1] == packet.protocol.lower()
            elif word in ("--ctstate", "--icmpv6-type"):
                ok = False  # a connection's first packet; probes are no neighbour discovery
            elif word == "--dports":
                ports = [tuple(map(int, p.split(":"))) for p in words[i + 1].split(",")]
                ok = ok and packet.port is not None and any(p[0] <= packet.port <= p[-1] for p in ports)
            elif word == "--match-set":
                ok = ok and self._in_set(words[i + 1], words[i + 2], packet) != negate
                negate, i = False, i + 1
            else:
                raise AssertionError(f"the interpreter does not know {word!r}: {' '.join(words)}")
            i += 2
        raise AssertionError(f"a rule without a target: {' '.join(words)}")

    def run(self, chain: str, packet: Packet, steps: list[str]) -> str | None:
        for words in self.chains[chain]:
            hit, how, target = self._matches(words, packet)
            if not hit:
                continue
            steps.append(f"{chain}: {how} {target}")
            if target in ("ACCEPT", "DROP"):
                return target
            if target == "RETURN":
                return None
            if how == "-g":  # the target's return is this chain's
                return self.run(target, packet, steps)
            outcome = self.run(target, packet, steps)
            if outcome is not None:
                return outcome
        return None


def iptables_tracer(state: ClusterState) -> Callable[[Packet], tuple[bool, object]]:
    """The payloads of every node, run as the kernel would on a connection's first packet: on
    the source pod's and the destination pod's node, FORWARD, or where one end is the node
    itself, INPUT or OUTPUT (with a hook only where the payload has it: `hooks`)."""
    programs = compile_cluster(state)
    filters: dict[str, dict[int, Filter]] = {}
    for name, program in programs.items():
        bundle = render(program)
        sets = ipset_contents(bundle.ipset)
        filters[name] = {v: Filter(bundle.by_family(v), sets) for v in (4, 6)}
    locations = {a: p.node_name for p in state.active_pods for a in p.ips if p.node_name}

    def run(packet: Packet) -> tuple[bool, object]:
        steps: list[str] = []
        for node in dict.fromkeys(n for n in (locations.get(packet.src), locations.get(packet.dst)) if n):
            table = filters[node][packet.src.version]
            local = programs[node].node_addresses
            chain = HOOKS["INPUT" if packet.dst in local else "OUTPUT" if packet.src in local else "FORWARD"]
            if chain in table.chains and table.run(chain, packet, steps) == "DROP":
                return False, steps
        return True, steps
    return run


def _packets(state: ClusterState, data: st.DataObject, count: int = 16) -> list[Packet]:
    """First packets between the cluster's pod and node addresses and a few outside ones."""
    pool = addresses(state)
    packets = []
    for _ in range(count):
        src = data.draw(st.sampled_from(pool))
        dst = data.draw(st.sampled_from([a for a in pool if a.version == src.version and a != src] or [src]))
        packets.append(Packet(src, dst, *data.draw(st.sampled_from(PROBES))))
    return packets


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=mixed_clusters(), data=st.data())
def test_the_payloads_run_like_the_semantics_on_clusters_mixing_both_kinds_of_policies(state, data):
    tracer = iptables_tracer(state)
    for packet in _packets(state, data):
        check(state, tracer, packet.src, packet.dst, packet.protocol, packet.port)


def test_own_node_traffic_runs_like_the_semantics():
    """A pod and its own node: an Admin Deny of its `nodes` or `networks` stops it, whatever the
    NetworkPolicy tier's exemption; a pod the NetworkPolicies isolate still reaches it, with no
    cluster rule or after a Pass, but not another node; the node reaches its pods."""
    state = load_text(OWN_NODE)
    tracer = iptables_tracer(state)
    nodes = [a for addresses in state.node_addresses.values() for a in addresses]
    for pod in state.active_pods:
        for address in pod.ips:
            for node in (n for n in nodes if n.version == address.version):
                for protocol, port in (("TCP", KUBELET), ("TCP", 80), ("UDP", 53), ("ICMP", None)):
                    check(state, tracer, address, node, protocol, port)
                    check(state, tracer, node, address, protocol, port)
    own, other = ip("192.168.0.1"), ip("fd01::2")

    def reaches(pod: str, node: IPAddress, port: int = KUBELET) -> bool:
        found = state.pod(f"shop/{pod}")
        assert found is not None
        address = next(a for a in found.ips if a.version == node.version)
        return bool(tracer(Packet(address, node, "TCP", port))[0])

    assert not reaches("no-nodes", own) and reaches("no-nodes", other)  # Admin Deny of its node
    assert not reaches("no-networks", own) and reaches("no-networks", own, 53)  # networks Deny, one port
    assert reaches("isolated", own) and not reaches("isolated", other)  # the NetworkPolicy tier's exemption
    assert reaches("passed", own) and not reaches("passed", other)  # Pass, then the exemption
    assert tracer(Packet(own, ip("10.0.0.12"), "TCP", 80))[0]  # the node reaches an isolated pod
    assert not tracer(Packet(other, ip("fd00::12"), "TCP", 80))[0]  # another node does not


KUBELET = 10250
# Used by tests/kernel/test_iptables_tiers.py too.
OWN_NODE = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {kubernetes.io/hostname: node-a}}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}, {type: InternalIP, address: "fd01::1"}]}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {kubernetes.io/hostname: node-b}}
status: {addresses: [{type: InternalIP, address: 192.168.0.2}, {type: InternalIP, address: "fd01::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: no-nodes, namespace: shop, labels: {app: no-nodes}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIPs: [{ip: 10.0.0.10}, {ip: "fd00::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: no-networks, namespace: shop, labels: {app: no-networks}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIPs: [{ip: 10.0.0.11}, {ip: "fd00::11"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: isolated, namespace: shop, labels: {app: isolated}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIPs: [{ip: 10.0.0.12}, {ip: "fd00::12"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: passed, namespace: shop, labels: {app: passed}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIPs: [{ip: 10.0.0.13}, {ip: "fd00::13"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: shop, labels: {app: elsewhere}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {podIPs: [{ip: 10.0.1.10}, {ip: "fd00::110"}]}
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: no-nodes}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {podSelector: {matchLabels: {app: no-nodes}}}}
  egress:
  - {action: Deny, to: [{nodes: {matchLabels: {kubernetes.io/hostname: node-a}}}]}
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: no-networks}
spec:
  tier: Admin
  priority: 20
  subject: {pods: {podSelector: {matchLabels: {app: no-networks}}}}
  egress:
  - action: Deny
    to: [{networks: [192.168.0.0/24, "fd01::/64"]}]
    protocols: [{tcp: {destinationPort: {number: 10250}}}]
---
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: pass-nodes}
spec:
  tier: Admin
  priority: 30
  subject: {pods: {podSelector: {matchLabels: {app: passed}}}}
  egress:
  - {action: Pass, to: [{nodes: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate, namespace: shop}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [isolated, passed]}]}
  policyTypes: [Ingress, Egress]
"""


@st.composite
def mixed_clusters_with_a_twin(draw: st.DrawFn) -> ClusterState:
    """A generated cluster with cluster policies, plus a twin of one of its pods: same node and
    addresses, its own namespace, labels and ports (a shared address)."""
    state = draw(mixed_clusters(max_pods=6))
    active = [p for p in state.active_pods if p.node_name and not p.host_network]
    assume(active)
    original = draw(st.sampled_from(active))
    twin = dataclasses.replace(original, namespace=draw(st.sampled_from(NAMESPACE_NAMES)), name="twin",
                               labels=draw(labels()), ports=draw(container_ports()))
    return ClusterState.build(state.namespaces, (*state.pods, twin), state.nodes, state.policies,
                              state.cluster_policies)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=mixed_clusters_with_a_twin(), data=st.data())
def test_a_shared_address_runs_like_the_ir_trace(state, data):
    tracer = iptables_tracer(state)
    programs = compile_cluster(state)
    for packet in _packets(state, data):
        expected = trace(programs, packet)
        got, steps = tracer(packet)
        assert got == expected.allowed, (packet, steps, expected.steps)
