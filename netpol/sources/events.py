"""The event vocabulary every source emits, and the mirror that turns it into changes.

A source (`netpol.sources.kube`: list + watch; `netpol.sources.directory`: a folder of
manifests) hands the agent `Snapshot`s — every object of one kind, from a (re)list — and
`Delta`s — one watch event. Objects stay dicts in the shape the API serves, so that the agent
decodes them with the same code that reads manifests. `Mirror` keeps the last known objects and
turns any mix of snapshots and deltas into exactly the changes they imply. Objects may be
malformed (`metadata: oops` in a folder, an object stored before validation tightened):
`object_key` keys anything without raising; decoding, where they are reported, is the agent's.
A folder that defines one object differently in two files hands over a stand-in carrying both
copies (`conflict_stand_in`). A source's threads run under `run_reporting_death`, so a thread
that dies is reported, never silent. Nothing here imports the kubernetes client: `netpol agent
--dir` never loads it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netpol.model import CLUSTER_POLICY_KINDS

log = logging.getLogger("netpol.sources")
# What the agent lists and watches: the cluster policies' kinds come from optional CRDs (a
# cluster without one has none of its objects: `netpol.sources.kube`).
KIND_NAMES = ("Namespace", "Node", "Pod", "NetworkPolicy", *CLUSTER_POLICY_KINDS)
NAMESPACED = frozenset({"Pod", "NetworkPolicy"})  # with no namespace: in "default", as kubectl applies them
CONFLICT = "netpol/conflict"  # the field of a stand-in for an object defined differently in several files


@dataclass(frozen=True)
class Snapshot:
    """Every object of one kind, as of `resource_version` (the initial list, or a relist)."""

    kind: str
    objects: tuple[dict[str, Any], ...]
    resource_version: str


@dataclass(frozen=True)
class Delta:
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]


SourceEvent = Snapshot | Delta


def object_key(obj: Any) -> tuple[str, str]:
    """(namespace, name) of an object as a source hands it over, however malformed — never an
    exception: this keys every object of the agent's state. A namespaced kind without a
    namespace is in "default"; a namespace that is not a string is keyed by its repr behind a
    `?` (no valid name starts so); a name that is not a non-empty string is replaced by a digest
    of the whole object (its resourceVersion aside), so that two different unnamed objects stay
    two objects, each reported, and the same one stays one."""
    if not isinstance(obj, dict):
        return "", f"?{_digest(obj)}"
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    kind, namespace, name = obj.get("kind"), meta.get("namespace"), meta.get("name")
    if namespace is None or namespace == "":
        namespace = "default" if isinstance(kind, str) and kind in NAMESPACED else ""
    elif not isinstance(namespace, str):
        namespace = f"?{namespace!r}"
    if not isinstance(name, str) or not name:
        name = f"?{_digest({**obj, 'metadata': {k: v for k, v in meta.items() if k != 'resourceVersion'}})}"
    return namespace, name


def _digest(value: Any) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=6).hexdigest()


def conflict_stand_in(copies: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One object defined differently in several files (`--dir`): its kind and metadata (from the
    first copy: every copy has the same key) and, under `CONFLICT`, every copy with its file.
    The agent reports it and fails closed for what each copy would select."""
    first = copies[0][1]
    return {**{field: first.get(field) for field in ("kind", "apiVersion", "metadata")},
            CONFLICT: [{"file": file, "object": copy} for file, copy in copies]}


def conflicting_copies(obj: Any) -> list[tuple[str, dict[str, Any]]] | None:
    """The copies (file, object) a conflict stand-in carries; None for any other object."""
    copies = obj.get(CONFLICT) if isinstance(obj, dict) else None
    if not isinstance(copies, list):
        return None
    return [(str(c.get("file")), c["object"]) for c in copies
            if isinstance(c, dict) and isinstance(c.get("object"), dict)]


ThreadDeath = Callable[[str, BaseException], None]  # (thread, what ended it): how a thread's end is reported


def run_reporting_death(name: str, target: Callable[[], None], on_death: ThreadDeath | None,
                        stopping: Callable[[], bool]) -> None:
    """Run a thread's `target`; if it raises, or returns while nobody asked it to stop, report
    that to `on_death` (the agent turns /healthz red and exits) instead of letting the thread
    end silently. Without `on_death` the exception is raised (Python's thread hook prints it)."""
    try:
        target()
    except BaseException as exc:
        if on_death is None:
            raise
        log.critical("thread died", exc_info=True, extra={"thread_name": name})
        on_death(name, exc)
        return
    if not stopping() and on_death is not None:
        on_death(name, RuntimeError(f"{name} ended while nobody asked it to stop"))


class Mirror:
    """The last known objects of every kind, kept from Snapshots and Deltas; `apply` returns
    what actually changed as Deltas — a relist after 410 becomes the deletions, additions and
    modifications the watch missed, and a replayed event that changes nothing becomes nothing."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.listed: set[str] = set()

    def apply(self, event: SourceEvent) -> list[Delta]:
        store = self.objects.setdefault(event.kind, {})
        if isinstance(event, Delta):
            key = object_key(event.object)
            known = key in store
            if event.type == "DELETED":
                store.pop(key, None)
                return [event] if known else []
            before = store.get(key)
            store[key] = event.object
            unchanged = resource_version(before) == resource_version(event.object) and before == event.object
            if known and unchanged:
                return []
            return [Delta(event.kind, "MODIFIED" if known else "ADDED", event.object)]
        self.listed.add(event.kind)
        fresh = {object_key(o): o for o in event.objects}
        changes = [Delta(event.kind, "DELETED", old) for key, old in store.items() if key not in fresh]
        for key, obj in fresh.items():
            before = store.get(key)
            if key not in store:
                changes.append(Delta(event.kind, "ADDED", obj))
            elif before != obj:
                changes.append(Delta(event.kind, "MODIFIED", obj))
        self.objects[event.kind] = fresh
        return changes


def resource_version(obj: Any) -> str:
    """metadata.resourceVersion as a string; '' when the object has none (or is malformed)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else str(version) if isinstance(version, int) else ""
