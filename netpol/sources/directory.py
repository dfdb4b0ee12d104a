"""The directory source, for offline / GitOps use: a folder of manifests (YAML or JSON, walked
recursively like `-f`), read again whenever it changes, emitted as one Snapshot per kind — the
same event stream the Kubernetes source feeds the agent. Changes are noticed by polling each
file's (path, size, mtime_ns, inode) every `interval` seconds, so editors that replace files
and `git checkout` are both seen. A file that does not parse is reported and the last good
version of the folder stays in force."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netpol.errors import SourceError
from netpol.load.decode import typed_item
from netpol.load.manifests import expand_paths, parse_documents, read_text
from netpol.sources.events import KIND_NAMES, Snapshot, SourceEvent

log = logging.getLogger("netpol.sources.directory")


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
    """Raw objects per kind (List items flattened), or None when a file does not parse."""
    paths, problems = expand_paths([directory])
    by_kind: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KIND_NAMES}
    for path in paths:
        documents, problem = parse_documents(read_text(path), path)
        if problem is not None:
            problems.append(problem)
        for doc in documents:
            for item in _flatten(doc):
                if item.get("kind") in by_kind:
                    by_kind[item["kind"]].append(item)
    for problem in problems:
        log.warning("cannot read manifests", extra={"problem": str(problem)})
    return None if problems else by_kind


def _flatten(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        return []
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        return [typed_item(kind, i) for i in doc["items"] if isinstance(i, dict)]
    return [doc]


@dataclass
class DirectorySource:
    directory: str
    sink: Callable[[SourceEvent], None]
    interval: float = 1.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    reads: int = 0  # folder reads handed to the sink
    failed_reads: int = 0  # reads refused because a file did not parse (the last good folder stays)

    def start(self) -> DirectorySource:
        if not Path(self.directory).exists():
            raise SourceError(f"{self.directory}: no such directory")
        self._thread = threading.Thread(target=self.run, name="dir-source", daemon=True)
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
