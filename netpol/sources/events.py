"""The event vocabulary every source emits, and the mirror that turns it into changes.

A source (`netpol.sources.kube`: list + watch; `netpol.sources.directory`: a folder of
manifests) hands the agent `Snapshot`s — every object of one kind, from a (re)list — and
`Delta`s — one watch event. Objects stay dicts in the shape the API serves, so that the agent
decodes them with the same code that reads manifests. `Mirror` keeps the last known objects and
turns any mix of snapshots and deltas into exactly the changes they imply. Nothing here imports
the kubernetes client: `netpol agent --dir` never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KIND_NAMES = ("Namespace", "Node", "Pod", "NetworkPolicy")  # what the agent lists and watches


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


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


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
            if event.type == "DELETED":
                return [event] if store.pop(key, None) is not None else []
            before = store.get(key)
            store[key] = event.object
            if before is not None and _version(before) == _version(event.object) and before == event.object:
                return []
            return [Delta(event.kind, "MODIFIED" if before is not None else "ADDED", event.object)]
        self.listed.add(event.kind)
        fresh = {object_key(o): o for o in event.objects}
        changes = [Delta(event.kind, "DELETED", old) for key, old in store.items() if key not in fresh]
        for key, obj in fresh.items():
            before = store.get(key)
            if before is None:
                changes.append(Delta(event.kind, "ADDED", obj))
            elif before != obj:
                changes.append(Delta(event.kind, "MODIFIED", obj))
        self.objects[event.kind] = fresh
        return changes


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
