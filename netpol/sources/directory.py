"""The directory source, for offline / GitOps use: a folder of manifests (YAML or JSON, walked
recursively like `-f`), read again whenever it changes, emitted as one Snapshot per kind the
agent follows (`KIND_NAMES`: the cluster policies too, ClusterNetworkPolicy and the v1alpha1
AdminNetworkPolicy and BaselineAdminNetworkPolicy, each a kind of its own) — the same event
stream the Kubernetes source feeds the agent. Changes are noticed by polling each
file's (path, size, mtime_ns, inode) every `interval` seconds, so editors that replace files
and `git checkout` are both seen.

What the folder cannot say is never guessed, and never opens anything:

* a file that does not parse (or is not UTF-8), and a document that is not an object or has
  no `kind` in a file that holds objects (a typo, most likely), make the whole read fail: it is
  reported and the last good version of the folder stays in force (as `-f` refuses the input);
* a file none of whose documents is a Kubernetes object (a tool's `expected.json`) is skipped;
* an object defined in two files identically is taken once; defined *differently*, it is
  handed over as a conflict stand-in (`netpol.sources.events.conflict_stand_in`) carrying every
  copy with its file, so the agent reports it and fails closed for what each copy would select
  — no copy silently wins;
* objects that are malformed in themselves (`metadata: oops`, an invalid name or label) are
  handed over as they are: the agent decodes, reports and fails closed for them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netpol.errors import InputError, Problem, SourceError
from netpol.load.decode import MAX_LIST_NESTING, describe_object, type_name, typed_item
from netpol.load.manifests import expand_paths, foreign_file, parse_documents, read_text
from netpol.sources.events import (
    KIND_NAMES,
    Snapshot,
    SourceEvent,
    ThreadDeath,
    conflict_stand_in,
    object_key,
    run_reporting_death,
)

log = logging.getLogger("netpol.sources.directory")
Found = tuple[str, dict[str, Any]]  # (file, raw object)


def _signature(paths: list[str]) -> tuple[tuple[str, int, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((path, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def read_objects(directory: str) -> dict[str, list[dict[str, Any]]] | None:
    """Raw objects per kind (List items flattened, each object once: conflicting definitions
    become stand-ins), or None when the folder cannot be read as a whole (see the module)."""
    try:
        found, problems = _read_folder(directory)
        by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KIND_NAMES}
        if not problems:
            for kind, copies in _grouped(found).items():
                by_kind[kind] += [_one_of(copies) for copies in copies.values()]
    except RecursionError:  # YAML aliases can make a document contain itself
        problems = [Problem(directory, "", "", "a document nests too deeply (or contains itself)")]
    for problem in problems:
        log.warning("cannot read manifests", extra={"problem": str(problem)})
    return None if problems else by_kind


def _read_folder(directory: str) -> tuple[list[Found], list[Problem]]:
    paths, problems = expand_paths([directory])
    found: list[Found] = []
    for path in paths:
        try:
            documents, problem = parse_documents(read_text(path), path)
        except InputError as exc:  # unreadable, not UTF-8
            problems += exc.problems
            continue
        if problem is not None:
            problems.append(problem)
            continue
        if foreign_file(documents, path) is not None:
            log.info("skipped a file that holds no Kubernetes object", extra={"file": path})
            continue
        for index, doc in enumerate(documents):
            where = f"{path} (document {index + 1})" if len(documents) > 1 else path
            problems += _take_document(doc, where, path, found, 0)
    return found, problems


def _take_document(doc: Any, where: str, path: str, found: list[Found], depth: int) -> list[Problem]:
    """Add the objects of our kinds in one document to `found`; the problems that make the read
    fail (a document that is not an object, or names no kind)."""
    if doc is None:
        return []
    if not isinstance(doc, dict):
        return [Problem(where, "", "", f"expected a Kubernetes object (a mapping), got {type_name(doc)}")]
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        return [Problem(where, describe_object(doc), "kind", "Required value: every object needs a kind")]
    if kind.endswith("List") and "items" in doc:
        items = doc["items"]
        if depth >= MAX_LIST_NESTING or not isinstance(items, list | None):
            return [Problem(where, kind, "items", f"must be a list, nested at most {MAX_LIST_NESTING} deep")]
        return [problem for i, item in enumerate(items or ()) for problem in
                _take_document(typed_item(kind, item), f"{where} items[{i}]", path, found, depth + 1)]
    if kind in KIND_NAMES:
        found.append((path, doc))
    return []


def _grouped(found: list[Found]) -> dict[str, dict[tuple[str, str], list[Found]]]:
    """kind → object key → every copy of that object, in file order."""
    groups: dict[str, dict[tuple[str, str], list[Found]]] = {}
    for path, obj in found:
        groups.setdefault(obj["kind"], {}).setdefault(object_key(obj), []).append((path, obj))
    return groups


def _one_of(copies: list[Found]) -> dict[str, Any]:
    """The object of one key: itself if defined once (or identically everywhere), else the
    conflict stand-in with every distinct copy."""
    distinct: list[Found] = []
    for path, obj in copies:
        if not any(_same(obj, other) for _, other in distinct):
            distinct.append((path, obj))
    if len(distinct) == 1:
        return distinct[0][1]
    log.warning("object defined differently in several files: every copy fails closed", extra={
        "object": f"{distinct[0][1].get('kind')} {'/'.join(p for p in object_key(distinct[0][1]) if p)}",
        "files": [path for path, _ in distinct]})
    return conflict_stand_in(distinct)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal once an omitted namespace reads as the one it defaults to."""
    return _with_namespace(a) == _with_namespace(b)


def _with_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    namespace = object_key(obj)[0]
    if not isinstance(meta, dict) or not namespace or meta.get("namespace") == namespace:
        return obj
    return {**obj, "metadata": {**meta, "namespace": namespace}}


@dataclass
class DirectorySource:
    directory: str
    sink: Callable[[SourceEvent], None]
    interval: float = 1.0
    on_death: ThreadDeath | None = None  # told when the thread dies of an unexpected error
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    reads: int = 0  # folder reads handed to the sink
    failed_reads: int = 0  # reads refused (see the module): the last good folder stays

    def start(self) -> DirectorySource:
        if not Path(self.directory).exists():
            raise SourceError(f"{self.directory}: no such directory")
        self._thread = threading.Thread(target=run_reporting_death, name="dir-source", daemon=True,
                                        args=("dir-source", self.run, self.on_death, self._stop.is_set))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def run(self) -> None:
        seen: tuple[tuple[str, int, int, int], ...] | None = None
        while not self._stop.is_set():
            paths, _ = expand_paths([self.directory])
            signature = _signature(paths)
            if signature != seen:
                objects = read_objects(self.directory)
                if objects is None:
                    self.failed_reads += 1
                else:
                    self.reads += 1
                    for kind in KIND_NAMES:
                        self.sink(Snapshot(kind, tuple(objects[kind]), f"dir-{self.reads}"))
                seen = signature
            self._stop.wait(self.interval)
