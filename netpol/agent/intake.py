"""From source events to this node's program: the objects as last listed or watched (`Mirror`),
decoded — an invalid object is logged with object and field and counted; an invalid
NetworkPolicy becomes a deny-all for the pods it would select (fail closed) — and fed to the
node's `IncrementalCompiler`, which starts once every kind has been listed (nothing is compiled,
so nothing is written, from a partial view of the cluster).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from netpol.agent.metrics import AgentMetrics
from netpol.compile.incremental import IncrementalCompiler, KubeObject
from netpol.load.decode import decode_document, describe_object
from netpol.load.manifests import build_state
from netpol.model import NetworkPolicy
from netpol.sources.events import KIND_NAMES, Delta, Mirror, Snapshot, SourceEvent, object_key

log = logging.getLogger("netpol.agent")
ALL_KINDS = frozenset(KIND_NAMES)


@dataclass(frozen=True)
class Taken:
    """What one source event did: whether this node's program changed (and its structure), and
    whether a Node object changed (the routes to other nodes' podCIDRs follow those)."""

    changed: bool = False
    structural: bool = False
    nodes_changed: bool = False


def fail_closed_policy(doc: dict[str, Any]) -> NetworkPolicy | None:
    """For an invalid NetworkPolicy: a policy isolating, in both directions and admitting
    nothing, the pods it would select (its own podSelector if that is valid, else every pod of
    its namespace). None when not even its namespace and name can be read."""
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) \
            or not isinstance(meta.get("namespace"), str):
        return None
    spec = doc.get("spec")
    selectors: tuple[Any, ...] = ((spec.get("podSelector"),) if isinstance(spec, dict) else ()) + ({},)
    for selector in selectors:
        candidate = {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
                     "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                     "spec": {"podSelector": selector, "policyTypes": ["Ingress", "Egress"]}}
        objects, problems = decode_document(candidate, "fail-closed")
        if objects and not problems and isinstance(objects[0], NetworkPolicy):
            return objects[0]
    return None


class Intake:
    """The cluster as this node's agent knows it, and the node's compiler (None until every kind
    has been listed)."""

    def __init__(self, node: str, metrics: AgentMetrics) -> None:
        self.node, self.metrics = node, metrics
        self.mirror = Mirror()
        self.compiler: IncrementalCompiler | None = None
        self.known: dict[tuple[str, str, str], KubeObject] = {}
        self.versions: dict[str, str] = {}  # per kind, the resourceVersion of the last event taken

    def take(self, event: SourceEvent) -> Taken:
        """Fold one source event into the state (no I/O)."""
        self._note_version(event)
        deltas = self.mirror.apply(event)
        nodes_changed = False
        for delta in deltas:
            self.metrics.events.labels(delta.kind, delta.type).inc()
            nodes_changed = nodes_changed or delta.kind == "Node"
        if self.compiler is None:
            if self.mirror.listed >= ALL_KINDS:
                self._start_compiler()
                return Taken(True, True, True)
            return Taken(nodes_changed=nodes_changed)
        changed = structural = False
        for delta in deltas:
            here, elements_only = self._apply_delta(delta)
            changed = changed or here
            structural = structural or (here and not elements_only)
        return Taken(changed, structural, nodes_changed)

    def _note_version(self, event: SourceEvent) -> None:
        """How far each kind's stream has been taken: a list's resourceVersion, then each watch
        event's. A stream is ordered, so every change of that kind up to it is in the state;
        the agent reports these with each sync, for whoever waits for a change to be enforced."""
        if isinstance(event, Snapshot):
            version = event.resource_version
        else:
            version = str((event.object.get("metadata") or {}).get("resourceVersion") or "")
        if version:
            self.versions[event.kind] = version

    def _start_compiler(self) -> None:
        objects: list[KubeObject] = []
        for kind in sorted(ALL_KINDS):
            for raw in self.mirror.objects.get(kind, {}).values():
                obj = self._decode(kind, raw)
                if obj is not None:
                    self.known[(kind, *object_key(raw))] = obj
                    objects.append(obj)
        self.compiler = IncrementalCompiler(build_state(objects), nodes={self.node})
        log.info("initial list complete", extra={"objects": len(objects), "node": self.node})

    def _decode(self, kind: str, raw: dict[str, Any]) -> KubeObject | None:
        objects, problems = decode_document(raw, "api")
        if not problems:
            return objects[0] if objects else None
        self.metrics.invalid_objects.labels(kind).inc()
        for problem in problems:
            log.warning("invalid object", extra={"object": problem.obj or describe_object(raw),
                                                 "field": problem.path, "problem": problem.message})
        if kind == "NetworkPolicy":
            closed = fail_closed_policy(raw)
            if closed is not None:
                log.warning("policy fails closed", extra={"object": f"NetworkPolicy {closed.key}"})
            return closed
        return None

    def _apply_delta(self, delta: Delta) -> tuple[bool, bool]:
        """(this node's program changed, only in set elements)."""
        assert self.compiler is not None
        key = (delta.kind, *object_key(delta.object))
        old = self.known.get(key)
        obj = None if delta.type == "DELETED" else self._decode(delta.kind, delta.object)
        if obj is None:
            if old is None:
                return False, False
            del self.known[key]
            update = self.compiler.apply("DELETED", old)
        else:
            self.known[key] = obj
            update = self.compiler.apply("MODIFIED" if old is not None else "ADDED", obj)
        return self.node in update.programs, self.node in update.elements_only
