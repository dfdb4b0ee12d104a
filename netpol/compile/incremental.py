"""The compiler kept current by watch events: every node's program, updated from what each event
changed instead of recompiled.

An event changes the *structure* of a node's program (its pods' chains, its dispatch maps, the
sets it declares) only when it changes what selects a local pod, a local pod's own addresses or
ports, a policy selecting local pods, or a node's own addresses. Pods joining or leaving peer
groups elsewhere only change set *elements*; `Update.elements_only` names the nodes whose new
program differs from the old in set elements alone, so the backend can emit element updates
(`netpol.backends.nftables.render_update`) rather than a new table.

A node's agent needs one program: `IncrementalCompiler(state, nodes={"node-a"})` compiles and
tracks the programs of those nodes only. The resolver still follows every object (peer sets
hold remote pods), but pods on other nodes get no program of their own, so neither the start
nor an event pays for them: a policy update recompiles the pods it selects *here*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netpol.compile.compiler import ProgramCompiler, assemble, program_sets, sorted_addresses
from netpol.compile.ir import NodeProgram, PeerSet, PodProgram, PortSet
from netpol.compile.resolver import EventType, Resolver
from netpol.errors import OutOfScope
from netpol.model import ClusterNetworkPolicy, ClusterState, IPAddress, Namespace, NetworkPolicy, Node, Pod

KubeObject = Namespace | Pod | Node | NetworkPolicy | ClusterNetworkPolicy


@dataclass(frozen=True)
class Update:
    """The new programs of the nodes an event changed; `elements_only`: those of them whose
    program differs from the previous one in set elements alone."""

    programs: Mapping[str, NodeProgram]
    elements_only: frozenset[str]
    previous: Mapping[str, NodeProgram | None]  # the programs these replace (None: a new node)


def _order(pod: Pod) -> tuple[str, str]:
    return pod.namespace, pod.name  # ClusterState's order, so both compilers print the same


class IncrementalCompiler:
    """Programs of every node (or of the nodes in `nodes`), kept equal to `compile_cluster` of
    the current objects."""

    def __init__(self, state: ClusterState | None = None, nodes: Iterable[str] | None = None) -> None:
        self.scope = None if nodes is None else frozenset(nodes)  # None: every node
        self.resolver = Resolver.from_state(state) if state is not None else Resolver()
        self._compiler = ProgramCompiler(self.resolver)
        self._pods: dict[str, PodProgram] = {}  # active pods with a node: their programs
        self._pod_node: dict[str, str] = {}  # … and the node it was compiled for
        self._on_node: dict[str, dict[str, Pod]] = {}  # node → every pod on it, active or not
        self._programs: dict[str, NodeProgram] = {}
        self._set_users: dict[str, set[str]] = {}  # set name → nodes declaring it
        self._set_counts: dict[str, dict[str, int]] = {}  # node → set name → pod programs using it
        self._declared: dict[str, frozenset[str]] = {}  # node → the sets its program declares
        for pod in self.resolver.pods.values():
            if pod.node_name:
                self._on_node.setdefault(pod.node_name, {})[pod.key] = pod
        for node in self.node_names():
            self._rebuild(node)

    def node_names(self) -> list[str]:
        """The nodes in scope that exist: named by a Node object or by a pod's spec.nodeName."""
        names = set(self.resolver.nodes) | {node for node, members in self._on_node.items() if members}
        return sorted(names if self.scope is None else names & self.scope)

    def in_scope(self, node: str | None) -> bool:
        return node is not None and (self.scope is None or node in self.scope)

    def program(self, node: str) -> NodeProgram:
        if not self.in_scope(node):
            scope = ", ".join(sorted(self.scope or ()))
            raise OutOfScope(f"node {node!r} is outside this compiler's scope ({scope})")
        if node not in self._programs:
            self._rebuild(node)
        return self._programs[node]

    def programs(self) -> dict[str, NodeProgram]:
        return {node: self.program(node) for node in self.node_names()}

    # -- events ----------------------------------------------------------------------------

    def apply(self, event: EventType, obj: KubeObject) -> Update:
        """Apply one watch event; the nodes whose programs changed, with their new programs."""
        before_peers, before_ports = dict(self._compiler.peer_sets), dict(self._compiler.port_sets)
        old_pod = self.resolver.pods.get(obj.key) if isinstance(obj, Pod) else None
        if isinstance(obj, NetworkPolicy | ClusterNetworkPolicy):
            self._compiler.forget_policy(obj.key)
        change = self.resolver.apply(event, obj)
        moved = (old_pod, None if event == "DELETED" else obj) if isinstance(obj, Pod) else None
        stale_policies = self._compiler.refresh_members(change.rules, moved)
        pods = set(change.pods)
        for key in stale_policies:
            pods |= self.resolver.policy_targets(key)
        structural = {node for node in change.nodes if self.in_scope(node)}
        if moved is not None:
            self._move(*moved)
        for key in self._compiled_or_here(pods):
            structural |= self._recompile_pod(key)
        changed_sets = _replaced(before_peers, self._compiler.peer_sets)
        changed_sets |= _replaced(before_ports, self._compiler.port_sets)
        by_elements = {node for name in changed_sets for node in self._set_users.get(name, ())}
        programs: dict[str, NodeProgram] = {}
        previous = {node: self._programs.get(node) for node in structural | by_elements}
        present = set(self.node_names())
        for node in sorted(structural):
            old = self._programs.get(node)
            if node not in present:  # no Node object and no pod: the node is gone
                self._forget_node(node)
                continue
            self._rebuild(node)
            if old is not None and self._programs[node] == old:
                self._programs[node] = old  # the same: keep the one the backend has worked on (pods_memo)
            if old is None or self._programs[node] != old or node in by_elements:
                programs[node] = self._programs[node]
        for node in sorted(by_elements - structural):
            programs[node] = self._refresh_elements(node, changed_sets)
        return Update(programs, frozenset(by_elements - structural),
                      {node: previous[node] for node in programs})

    def _move(self, old: Pod | None, new: Pod | None) -> None:
        if old is not None and old.node_name:
            members = self._on_node.get(old.node_name, {})
            members.pop(old.key, None)
            if not members:
                self._on_node.pop(old.node_name, None)
        if new is not None and new.node_name:
            self._on_node.setdefault(new.node_name, {})[new.key] = new

    def _compiled_or_here(self, pods: set[str]) -> list[str]:
        """The pods (keys) that have a program of this compiler, or get one as they are now. For
        one node's agent, a cluster policy's event names thousands of pods of other nodes:
        only those known here are looked up."""
        if self.scope is not None:
            local = self._pods.keys() | {key for node in self.scope for key in self._on_node.get(node, ())}
            pods = {key for key in pods if key in local}
        return [key for key in pods if key in self._pods or self._compiled_here(self.resolver.pods.get(key))]

    def _compiled_here(self, pod: Pod | None) -> bool:
        """Whether the pod, as it is now, gets a program from this compiler."""
        return pod is not None and pod.takes_part and self.in_scope(pod.node_name)

    def _recompile_pod(self, key: str) -> set[str]:
        """Recompile one pod's program; the nodes whose structure it changed."""
        old, old_node = self._pods.pop(key, None), self._pod_node.pop(key, None)
        if old is not None and old_node is not None:
            self._count(old_node, old, -1)
        pod = self.resolver.pods.get(key)
        new = None
        if pod is not None and pod.node_name and self._compiled_here(pod):
            self._compile_pod(pod, pod.node_name)
            new = self._pods[key]
        if new == old and old_node == self._pod_node.get(key):
            return set()
        return {n for n in (old_node, self._pod_node.get(key)) if n}

    def _compile_pod(self, pod: Pod, node: str) -> None:
        program = self._pods[pod.key] = self._compiler.pod_program(pod)
        self._pod_node[pod.key] = node
        self._count(node, program, +1)

    def _count(self, node: str, program: PodProgram, step: int) -> None:
        """How many of the node's pod programs reference each set: it declares those above 0."""
        counts = self._set_counts.setdefault(node, {})
        for name in program_sets(program):
            counts[name] = counts.get(name, 0) + step
            if not counts[name]:
                del counts[name]

    # -- node programs ---------------------------------------------------------------------

    def _rebuild(self, node: str) -> None:
        members = sorted(self._on_node.get(node, {}).values(), key=_order)
        for pod in members:
            if pod.takes_part and pod.key not in self._pods:
                self._compile_pod(pod, node)
        programs = tuple(self._pods[p.key] for p in members if p.key in self._pods)
        declared = frozenset(self._set_counts.get(node, {}))
        before = self._declared.get(node, frozenset())
        for name in before - declared:
            self._forget_user(name, node)
        for name in declared - before:
            self._set_users.setdefault(name, set()).add(node)
        self._declared[node] = declared
        self._programs[node] = assemble(
            node, self._addresses(node, members), programs, self._compiler,
            self.resolver.nodes[node].pod_cidrs if node in self.resolver.nodes else (), declared=declared)

    def _forget_node(self, node: str) -> None:
        for name in self._declared.pop(node, frozenset()):
            self._forget_user(name, node)
        self._programs.pop(node, None)
        self._set_counts.pop(node, None)
        self._on_node.pop(node, None)

    def _forget_user(self, name: str, node: str) -> None:
        """The node no longer declares the set (a set nobody declares is forgotten: set
        names come and go with the policies that spell them)."""
        users = self._set_users.get(name)
        if users is not None:
            users.discard(node)
            if not users:
                del self._set_users[name]

    def _refresh_elements(self, node: str, changed: set[str]) -> NodeProgram:
        """The node's program, same structure, with the current version of the `changed` sets."""
        current = self._compiler.peer_sets, self._compiler.port_sets
        newer = [found for name in changed for sets in current if (found := sets.get(name)) is not None]
        self._programs[node] = self._programs[node].with_sets(newer)
        return self._programs[node]

    def _addresses(self, node: str, members: Iterable[Pod]) -> tuple[IPAddress, ...]:
        found = set(self.resolver.nodes[node].addresses) if node in self.resolver.nodes else set()
        for pod in members:
            if pod.host_network:
                found.update(pod.ips)
        return sorted_addresses(found)


def _replaced(before: Mapping[str, PeerSet | PortSet], after: Mapping[str, PeerSet | PortSet]) -> set[str]:
    """Names whose set is new or holds other elements now."""
    return {name for name, value in after.items()
            if (old := before.get(name)) is not value and old != value}
