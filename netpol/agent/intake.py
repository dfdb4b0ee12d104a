"""From source events to this node's program: the objects as last listed or watched (`Mirror`),
decoded, and fed to the node's `IncrementalCompiler`, which starts once every kind has been
listed (nothing is compiled, so nothing is written, from a partial view of the cluster).

Nothing an object holds can stop the agent, and nothing invalid opens a path. An invalid
object is logged with object and field and counted (`netpol_invalid_objects_total{kind}`), then
stands in the compiler as what `netpol.agent.stand_ins` makes of it:

* a **NetworkPolicy** becomes a deny-all, both directions, for the pods it would select (its
  podSelector if valid, else its whole namespace; a policy without a namespace is in
  "default"). When its name is unusable (not a string, or not a DNS subdomain) the deny-all
  gets a made-up valid one that says where it came from: `deny_All` → `deny-all.invalid-name-
  <6 hex>`. Only a policy whose namespace is unusable selects nothing anyone could name, and
  is only reported;
* a **ClusterNetworkPolicy** (AdminNetworkPolicy, BaselineAdminNetworkPolicy) becomes a policy
  of its tier, at its priority, denying everything both ways for its subject (else for every
  pod), named as a NetworkPolicy's stand-in is — a policy that uses `domainNames`, which netpol
  cannot enforce, is one;
* a **Namespace** (an invalid label, say) fails closed for what it touches: selectors can no
  longer be evaluated against it (`tier NotIn [data]` would admit it for lacking the label),
  so every pod in it is isolated both ways by a deny-all (`<ns>/invalid-namespace.netpol`),
  the namespace's own policies are set aside until it is valid again, and the cluster
  policies' Admin tier is passed over for its pods (by an Admin policy before every other) —
  its pods can then neither send nor receive, whatever selectors elsewhere match;
* a **Pod** or **Node** is skipped (on its own node, the podCIDR guard drops an unprogrammed
  pod's traffic).

An object that a folder defines differently in two files (a conflict stand-in,
`netpol.sources.events.conflict_stand_in`) is invalid in the same way, and each copy fails
closed: a policy's copies (cluster policies' too) each become a deny-all for what that copy
selects (`<name>.conflict-<6 hex>`), a namespace is closed as above.
`netpol_invalid_objects_current{kind}` says how many objects are invalid now. Every such
stand-in is keyed by the object it stands for, so it goes when the object is fixed or deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from netpol.agent.metrics import AgentMetrics
from netpol.agent.stand_ins import (
    CLOSED_NAMESPACE_POLICY,
    closed_namespace_policies,
    fail_closed_cluster_policy,
    fail_closed_policy,
)
from netpol.compile.incremental import IncrementalCompiler, KubeObject
from netpol.load.decode import decode_document, describe_object
from netpol.load.manifests import build_state
from netpol.load.validation import check_dns1123_label
from netpol.model import CLUSTER_POLICY_KINDS, ClusterNetworkPolicy, NetworkPolicy
from netpol.sources.events import (
    KIND_NAMES,
    Delta,
    Mirror,
    Snapshot,
    SourceEvent,
    conflicting_copies,
    object_key,
    resource_version,
)

log = logging.getLogger("netpol.agent")
ALL_KINDS = frozenset(KIND_NAMES)
MirrorKey = tuple[str, str, str]  # (kind, namespace, name) as the source keys it
ObjectId = tuple[str, str]  # (type, key) of a decoded object: what the compiler knows it by


@dataclass(frozen=True)
class Taken:
    """What one source event did: whether this node's program changed (and its structure), and
    whether a Node object changed (the routes to other nodes' podCIDRs follow those)."""

    changed: bool = False
    structural: bool = False
    nodes_changed: bool = False


@dataclass(frozen=True)
class Produced:
    """What one raw object stands for: the decoded objects (stand-ins included), and the
    namespace it closes (an invalid Namespace), if any."""

    objects: tuple[KubeObject, ...] = ()
    closes: str | None = None
    fails_closed: bool = False


def object_id(obj: KubeObject) -> ObjectId:
    return type(obj).__name__, getattr(obj, "key", None) or obj.name


class Intake:
    """The cluster as this node's agent knows it, and the node's compiler (None until every kind
    has been listed)."""

    def __init__(self, node: str, metrics: AgentMetrics) -> None:
        self.node, self.metrics = node, metrics
        self.mirror = Mirror()
        self.compiler: IncrementalCompiler | None = None
        self.versions: dict[str, str] = {}  # per kind, the resourceVersion of the last event taken
        self.produced: dict[MirrorKey, Produced] = {}  # every raw object's decoded objects
        self.producers: dict[ObjectId, dict[MirrorKey, KubeObject]] = {}  # … indexed the other way
        self.policies_in: dict[str, set[ObjectId]] = {}  # namespace → produced policies in it
        self.closed: dict[str, set[MirrorKey]] = {}  # namespaces failing closed → what closes them
        self.fed: dict[ObjectId, KubeObject] = {}  # what the compiler holds

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
        version = event.resource_version if isinstance(event, Snapshot) else resource_version(event.object)
        if version:
            self.versions[event.kind] = version

    def _start_compiler(self) -> None:
        for kind in sorted(ALL_KINDS):
            for key, raw in self.mirror.objects.get(kind, {}).items():
                self._record((kind, *key), self._produce(kind, raw))
        for oid in self.producers:
            wanted = self._wanted(oid)
            if wanted is not None:
                self.fed[oid] = wanted
        self.compiler = IncrementalCompiler(build_state(self.fed.values()), nodes={self.node})
        self._count_failing()
        log.info("initial list complete", extra={"objects": len(self.fed), "node": self.node})

    def _apply_delta(self, delta: Delta) -> tuple[bool, bool]:
        """(this node's program changed, only in set elements)."""
        key = (delta.kind, *object_key(delta.object))
        before = self.produced.get(key, Produced())
        after = Produced() if delta.type == "DELETED" else self._produce(delta.kind, delta.object)
        self._record(key, after)
        affected = {object_id(o) for o in (*before.objects, *after.objects)}
        for namespace in {before.closes, after.closes} - {None}:
            assert namespace is not None
            affected |= self.policies_in.get(namespace, set())
        changed, elements_only = False, True
        for oid in sorted(affected):
            here, elements = self._feed(oid)
            changed = changed or here
            elements_only = elements_only and (elements or not here)
        if before.fails_closed != after.fails_closed:
            self._count_failing()
        return changed, changed and elements_only

    # ── objects and their stand-ins ──────────────────────────────────────────────────────────

    def _record(self, key: MirrorKey, produced: Produced) -> None:
        """Make `produced` what `key` stands for, in every index."""
        before = self.produced.pop(key, Produced())
        for obj in before.objects:
            oid = object_id(obj)
            self.producers.get(oid, {}).pop(key, None)
            if not self.producers.get(oid):
                self.producers.pop(oid, None)
                if isinstance(obj, NetworkPolicy) and obj.namespace in self.policies_in:
                    self.policies_in[obj.namespace].discard(oid)
                    if not self.policies_in[obj.namespace]:
                        del self.policies_in[obj.namespace]
        if before.closes is not None:
            self.closed.get(before.closes, set()).discard(key)
            if not self.closed.get(before.closes):
                self.closed.pop(before.closes, None)
        if not produced.objects and produced.closes is None and not produced.fails_closed:
            return
        self.produced[key] = produced
        for obj in produced.objects:
            oid = object_id(obj)
            self.producers.setdefault(oid, {})[key] = obj
            if isinstance(obj, NetworkPolicy):
                self.policies_in.setdefault(obj.namespace, set()).add(oid)
        if produced.closes is not None:
            self.closed.setdefault(produced.closes, set()).add(key)

    def _wanted(self, oid: ObjectId) -> KubeObject | None:
        """What the compiler should hold under `oid`: the object its (first) producer made,
        unless it is a policy of a namespace that fails closed (set aside; the namespace's own
        deny-all aside)."""
        producers = self.producers.get(oid)
        if not producers:
            return None
        obj = producers[min(producers)]
        if isinstance(obj, NetworkPolicy) and obj.namespace in self.closed:
            return obj if obj.name == CLOSED_NAMESPACE_POLICY else None
        return obj

    def _feed(self, oid: ObjectId) -> tuple[bool, bool]:
        """Bring the compiler's object `oid` to what it should be; (this node's program
        changed, only in set elements)."""
        assert self.compiler is not None
        wanted, held = self._wanted(oid), self.fed.get(oid)
        if wanted == held:
            return False, True
        if wanted is None:
            assert held is not None
            del self.fed[oid]
            update = self.compiler.apply("DELETED", held)
        else:
            self.fed[oid] = wanted
            update = self.compiler.apply("MODIFIED" if held is not None else "ADDED", wanted)
        return self.node in update.programs, self.node in update.elements_only

    def _count_failing(self) -> None:
        counts = dict.fromkeys(KIND_NAMES, 0)
        for (kind, *_), produced in self.produced.items():
            if produced.fails_closed:
                counts[kind] += 1
        for kind, count in counts.items():
            self.metrics.invalid_now.labels(kind).set(count)

    def _produce(self, kind: str, raw: Any) -> Produced:
        """Decode one raw object: what it stands for (see the module)."""
        copies = conflicting_copies(raw)
        if copies is not None:
            return self._conflict(kind, raw, copies)
        try:
            objects, problems = decode_document(raw, "api")
            problem_lines = [(p.obj or _describe(raw), p.path, p.message) for p in problems]
        except Exception as exc:  # a decoder bug must not stop the node: the object is invalid
            objects = []
            problem_lines = [(_describe(raw), "", f"cannot be decoded ({type(exc).__name__}: {exc})")]
        if not problem_lines:
            return Produced(tuple(objects))
        self.metrics.invalid_objects.labels(kind).inc()
        for obj, path, message in problem_lines:
            log.warning("invalid object", extra={"object": obj, "field": path, "problem": message})
        return self._fail_closed(kind, raw, "")

    def _conflict(self, kind: str, raw: Any, copies: list[tuple[str, dict[str, Any]]]) -> Produced:
        self.metrics.invalid_objects.labels(kind).inc()
        log.warning("invalid object", extra={"object": _describe(raw), "field": "metadata.name",
                                             "problem": "defined differently in " +
                                                        ", ".join(file for file, _ in copies)})
        if kind in CLUSTER_POLICY_KINDS:
            stand_ins: list[NetworkPolicy | ClusterNetworkPolicy] = [
                fail_closed_cluster_policy(copy, f"{file}\n{copy!r}") for file, copy in copies]
        elif kind == "NetworkPolicy":
            stand_ins = [p for file, copy in copies if (p := fail_closed_policy(copy, f"{file}\n{copy!r}"))]
        else:
            return self._fail_closed(kind, raw, "conflict")
        for policy in stand_ins:
            _log_stand_in(raw, policy)
        return Produced(tuple(stand_ins), fails_closed=True)

    def _fail_closed(self, kind: str, raw: Any, conflict: str) -> Produced:
        """What an invalid object of `kind` leaves in force: see the module."""
        if kind in CLUSTER_POLICY_KINDS:
            stand_in = fail_closed_cluster_policy(raw, conflict)
            _log_stand_in(raw, stand_in)
            return Produced((stand_in,), fails_closed=True)
        if kind == "NetworkPolicy":
            policy = fail_closed_policy(raw, conflict)
            if policy is None:
                log.warning("invalid policy isolates nothing: its namespace cannot be read",
                            extra={"object": _describe(raw)})
                return Produced(fails_closed=True)
            _log_stand_in(raw, policy)
            return Produced((policy,), fails_closed=True)
        if kind == "Namespace":
            name = object_key(raw)[1]
            if check_dns1123_label(name):
                return Produced(fails_closed=True)  # no pod can be in a namespace so named
            stand_ins = closed_namespace_policies(name)
            log.warning("namespace fails closed: its pods are isolated both ways, its policies set aside",
                        extra={"object": f"Namespace {name}", "as": [p.ref for p in stand_ins]})
            return Produced(stand_ins, closes=name, fails_closed=True)
        return Produced(fails_closed=True)


def _log_stand_in(raw: Any, policy: NetworkPolicy | ClusterNetworkPolicy) -> None:
    log.warning("policy fails closed", extra={"object": _describe(raw), "as": policy.ref})


def _describe(raw: Any) -> str:
    return describe_object(raw) if isinstance(raw, dict) else f"object of type {type(raw).__name__}"

