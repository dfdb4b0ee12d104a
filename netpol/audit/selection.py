"""Which of the input's pods a policy, a peer or a cluster-policy subject selects, as bitsets
(Python ints, bit i = `pods[i]`), with label and namespace indexes: the lint checks ask these
questions thousands of times, and a 1,000-pod cluster answers them in milliseconds this way.

The pods are the ones a policy can select (DESIGN §2): not hostNetwork, not finished. A pod
without an IP still counts (the API selects it; it only has no cell in the reach map), so a
policy over pods that are not running yet is not said to select nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from netpol.labels import LabelSelector
from netpol.model import (
    INACTIVE_PHASES,
    ClusterNetworkPolicy,
    ClusterPeer,
    ClusterState,
    IPBlock,
    IPNetwork,
    NamespacedPods,
    NetworkPolicy,
    Peer,
    Pod,
    Rule,
)


def selectable(pod: Pod) -> bool:
    """A pod policies can select: not hostNetwork, not finished (an address is not needed)."""
    return not pod.host_network and pod.phase not in INACTIVE_PHASES


def iter_bits(bits: int) -> Iterator[int]:
    """Indexes of the set bits of `bits`, lowest first."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


class PodSelection:
    """The selectable pods of a state, indexed by label, label key and namespace."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.pods: tuple[Pod, ...] = tuple(p for p in state.pods if selectable(p))
        self.all = (1 << len(self.pods)) - 1
        self.by_label: dict[tuple[str, str], int] = {}
        self.by_key: dict[str, int] = {}
        self.by_namespace: dict[str, int] = {}
        for i, pod in enumerate(self.pods):
            bit = 1 << i
            self.by_namespace[pod.namespace] = self.by_namespace.get(pod.namespace, 0) | bit
            for key, value in pod.labels.items():
                self.by_label[(key, value)] = self.by_label.get((key, value), 0) | bit
                self.by_key[key] = self.by_key.get(key, 0) | bit
        self._selected: dict[LabelSelector, int] = {}
        self._namespaces: dict[LabelSelector, int] = {}
        # Per family, every address of a pod, sorted, and whose it is: a CIDR's pods by bisection.
        pairs = sorted((ip.version, int(ip), i) for i, pod in enumerate(self.pods) for ip in pod.ips)
        self._addresses = {version: ([a for f, a, _ in pairs if f == version],
                                     [i for f, _, i in pairs if f == version]) for version in (4, 6)}
        self._blocks: dict[tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]], int] = {}

    def pods_of(self, bits: int) -> list[Pod]:
        return [self.pods[i] for i in iter_bits(bits)]

    def select(self, selector: LabelSelector) -> int:
        """Pods (of any namespace) whose labels match `selector`."""
        found = self._selected.get(selector)
        if found is None:
            found = self.all
            for key, value in selector.match_labels.items():
                found &= self.by_label.get((key, value), 0)
            for r in selector.match_expressions:
                any_value = 0
                for value in r.values:
                    any_value |= self.by_label.get((r.key, value), 0)
                has_key = self.by_key.get(r.key, 0)
                found &= {"In": any_value, "NotIn": self.all & ~any_value,
                          "Exists": has_key, "DoesNotExist": self.all & ~has_key}[r.operator]
            self._selected[selector] = found
        return found

    def matching_namespaces(self, selector: LabelSelector) -> list[str]:
        """Names of the namespaces (of the input: objects, and the namespaces pods and policies
        live in) whose labels match `selector`."""
        names = {n.name for n in self.state.namespaces} | set(self.by_namespace)
        return sorted(n for n in names if selector.matches(self.state.namespace(n).labels))

    def in_namespaces(self, selector: LabelSelector) -> int:
        """Pods whose namespace's labels match `selector`."""
        found = self._namespaces.get(selector)
        if found is None:
            found = 0
            for name, bits in self.by_namespace.items():
                if selector.matches(self.state.namespace(name).labels):
                    found |= bits
            self._namespaces[selector] = found
        return found

    def in_namespace(self, name: str) -> int:
        return self.by_namespace.get(name, 0)

    def in_networks(self, networks: tuple[IPNetwork, ...], excepted: tuple[IPNetwork, ...] = ()) -> int:
        """Pods with an address in one of `networks` and in none of `excepted`."""
        key = (networks, excepted)
        found = self._blocks.get(key)
        if found is None:
            found = 0
            for network in networks:
                addresses, owners = self._addresses[network.version]
                first = bisect.bisect_left(addresses, int(network.network_address))
                last = bisect.bisect_right(addresses, int(network.broadcast_address))
                for address, i in zip(addresses[first:last], owners[first:last], strict=True):
                    if not any(e.version == network.version and int(e.network_address) <= address
                               <= int(e.broadcast_address) for e in excepted):
                        found |= 1 << i
            self._blocks[key] = found
        return found

    def in_block(self, block: IPBlock) -> int:
        """Pods an ipBlock peer matches: an address in `cidr` and in no `except`."""
        return self.in_networks((block.cidr,), block.except_)

    def policy_targets(self, policy: NetworkPolicy) -> int:
        """§2: the pods of the policy's namespace its podSelector matches."""
        return self.in_namespace(policy.namespace) & self.select(policy.pod_selector)

    def peer(self, policy: NetworkPolicy, peer: Peer) -> int:
        """§2 Peers: podSelector only = the policy's namespace; namespaceSelector only = all pods of
        matching namespaces; both = their intersection; ipBlock = pods with an address inside."""
        if peer.ip_block is not None:
            return self.in_block(peer.ip_block)
        if peer.namespace_selector is None:
            scope = self.in_namespace(policy.namespace)
        else:
            scope = self.in_namespaces(peer.namespace_selector)
        return scope & (self.all if peer.pod_selector is None else self.select(peer.pod_selector))

    def rule_peers(self, policy: NetworkPolicy, rule: Rule) -> int:
        """The pods a rule's `from`/`to` matches (absent or empty: every pod)."""
        if not rule.peers:
            return self.all
        bits = 0
        for peer in rule.peers:
            bits |= self.peer(policy, peer)
        return bits

    def namespaced_pods(self, pods: NamespacedPods) -> int:
        return self.in_namespaces(pods.namespace_selector) & self.select(pods.pod_selector)

    def cluster_subject(self, policy: ClusterNetworkPolicy) -> int:
        """§2b subject: every pod of the matching namespaces, or the matching pods."""
        subject = policy.subject
        if subject.namespaces is not None:
            return self.in_namespaces(subject.namespaces)
        return self.namespaced_pods(subject.pods) if subject.pods is not None else 0

    def cluster_peer(self, peer: ClusterPeer) -> int:
        """§2b peer, as pods: `namespaces`, `pods`, and `networks` (which match pod addresses
        too); a `nodes` peer matches no pod."""
        if peer.namespaces is not None:
            return self.in_namespaces(peer.namespaces)
        if peer.pods is not None:
            return self.namespaced_pods(peer.pods)
        if peer.networks:
            return self.in_networks(peer.networks)
        return 0
