"""What changed between two clusters, object by object: added, removed, or edited — with the
field paths that differ, spelled as in a manifest (`spec.ingress[0].from[1].podSelector`), and
the values on both sides. `netpol.audit.diff` attributes each changed cell to the changes that
concern its pods.

Objects are compared as `netpol.load.encode` writes them, so what is compared is what netpol
understood, not the spelling: `policyTypes` with its default applied, `protocol: TCP` written
out, a v1alpha1 AdminNetworkPolicy in its v1beta1 shape. Lists are compared index by index, as
Kubernetes names their entries (a rule inserted first shifts every later index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from netpol.load.encode import (
    encode_cluster_network_policy,
    encode_namespace,
    encode_network_policy,
    encode_node,
    encode_pod,
)
from netpol.model import ClusterState, Direction

ChangeKind = Literal["added", "removed", "edited"]
# Listed in this order: what decides verdicts first, then what they are decided about.
KINDS = ("ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "NetworkPolicy",
         "Namespace", "Pod", "Node")
POLICY_KINDS = frozenset(KINDS[:4])
_ABSENT = object()  # a field one side does not have (distinct from any JSON value)


@dataclass(frozen=True)
class FieldEdit:
    """One field that differs: its path and its values before and after (None: absent). Hashed
    by its path (the values may be lists and maps)."""

    path: str
    before: Any = field(hash=False)
    after: Any = field(hash=False)


@dataclass(frozen=True)
class ObjectChange:
    """An object added, removed or edited (then with the fields that differ). `name` is
    `namespace/name` for namespaced kinds, the name otherwise."""

    kind: str
    name: str
    change: ChangeKind
    edits: tuple[FieldEdit, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(edit.path for edit in self.edits)

    @property
    def is_policy(self) -> bool:
        return self.kind in POLICY_KINDS

    @property
    def directions(self) -> frozenset[Direction]:
        """The directions of traffic a policy change can concern: an edit confined to
        `spec.ingress` concerns ingress only (and `spec.egress` egress); anything else both."""
        if self.change != "edited" or not self.is_policy:
            return frozenset(("ingress", "egress"))
        found: set[Direction] = set()
        for path in self.fields:
            if path.startswith("spec.ingress"):
                found.add("ingress")
            elif path.startswith("spec.egress"):
                found.add("egress")
            else:
                return frozenset(("ingress", "egress"))
        return frozenset(found)


def field_edits(before: Any, after: Any, path: str = "") -> list[FieldEdit]:
    """The leaves where two encoded objects differ: maps key by key, lists index by index (an
    entry only one side has is one edit, whole); anything else, or a map on one side only, whole."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*before, *(k for k in after if k not in before)]
        return [edit for key in keys
                for edit in field_edits(before.get(key, _ABSENT), after.get(key, _ABSENT), _join(path, key))]
    if isinstance(before, list) and isinstance(after, list):
        return [edit for i in range(max(len(before), len(after)))
                for edit in field_edits(before[i] if i < len(before) else _ABSENT,
                                        after[i] if i < len(after) else _ABSENT, f"{path}[{i}]")]
    return [FieldEdit(path, None if before is _ABSENT else before, None if after is _ABSENT else after)]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compare(kind_of: Callable[[Any], str], name_of: Callable[[Any], str],
             encode: Callable[[Any], dict[str, Any]], old: Iterable[Any],
             new: Iterable[Any]) -> list[ObjectChange]:
    """The changes between two collections of one sort of object, matched by kind and name."""
    before = {(kind_of(o), name_of(o)): o for o in old}
    after = {(kind_of(o), name_of(o)): o for o in new}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key), after.get(key)
        if was is None:
            changes.append(ObjectChange(*key, "added"))
        elif now is None:
            changes.append(ObjectChange(*key, "removed"))
        elif was != now:
            edits = tuple(field_edits(_spec(encode(was)), _spec(encode(now))))
            changes.append(ObjectChange(*key, "edited", edits))
    return changes


def _spec(encoded: Mapping[str, Any]) -> dict[str, Any]:
    """What can differ between two versions of one object: all but its kind and apiVersion."""
    return {k: v for k, v in encoded.items() if k not in ("kind", "apiVersion")}


def object_changes(old: ClusterState, new: ClusterState) -> tuple[ObjectChange, ...]:
    """Every object added, removed or edited from `old` to `new`, policies first (`KINDS`)."""
    changes = [
        *_compare(lambda p: p.kind, lambda p: p.name, encode_cluster_network_policy,
                  old.cluster_policies, new.cluster_policies),
        *_compare(lambda _: "NetworkPolicy", lambda p: p.key, encode_network_policy,
                  old.policies, new.policies),
        *_compare(lambda _: "Namespace", lambda n: n.name, encode_namespace, old.namespaces, new.namespaces),
        *_compare(lambda _: "Pod", lambda p: p.key, encode_pod, old.pods, new.pods),
        *_compare(lambda _: "Node", lambda n: n.name, encode_node, old.nodes, new.nodes),
    ]
    return tuple(sorted(changes, key=lambda c: (KINDS.index(c.kind), c.name)))
