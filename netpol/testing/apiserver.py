"""An in-process Kubernetes API server for pods, namespaces, nodes and networkpolicies.

No real kube-apiserver can be installed where netpol is tested, so its agent is tested against
this: real HTTP on 127.0.0.1, reached through a generated kubeconfig by the unmodified
`kubernetes` client, speaking the list/watch protocol as the real API server does:

* **Lists** `GET /api/v1/{pods,namespaces,nodes}`, `GET /apis/networking.k8s.io/v1/networkpolicies`
  (and the namespaced `/namespaces/{ns}/pods|networkpolicies`): `{kind: PodList, apiVersion,
  metadata: {resourceVersion}, items}`, items *without* kind/apiVersion as the real API serves
  them. `limit` + `continue` paginate a consistent snapshot; a continue token older than the
  history window is `410 Gone` (reason `Expired`), as the real API answers.
* **Watches** `?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`: one
  HTTP/1.1 response, `Transfer-Encoding: chunked`, one JSON event per line (`ADDED`, `MODIFIED`,
  `DELETED` with the object's kind/apiVersion, `BOOKMARK` with only `metadata.resourceVersion`).
  Every change after N is replayed, then new ones stream as they happen. Without a
  resourceVersion (or "0") the watch starts with a synthetic `ADDED` per existing object. A
  resourceVersion older than the retained history gets an `ERROR` event whose object is a
  `Status` with code 410 (`too old resource version: N (M)`) — not an HTTP error, exactly like
  the real server. The stream ends cleanly after timeoutSeconds.
* **resourceVersion** is one cluster-wide, increasing counter (etcd's revision); every object
  carries its own in `metadata.resourceVersion`, plus `uid` and `creationTimestamp`.
* **Malformed objects on demand**: `store_as_given` stores anything under a key (metadata not a
  mapping, a name that is not a string, not even an object), served untouched.
* **Faults on demand**: `drop_watches()` cuts every open watch mid-stream (socket closed without
  the terminating chunk); `compact()` forgets the history, so watchers resuming from before it
  get 410; `restart(objects)` replaces everything with a new history (a restored etcd: new
  resourceVersions, old ones expired); `pause_watches()` holds events back (a slow server) and
  `burst()` applies many changes under one lock. `wait_watching(n)` waits until n watch
  streams are open, so a test knows a fault will hit streams, not the gap before them.
* **Authentication**: a bearer token (in the kubeconfig); anything else is `401`.

What it does not model: writes over HTTP (tests change objects through this class's methods),
other kinds and discovery (`/api`, `/apis`), label/field selectors, `resourceVersionMatch`,
`sendInitialEvents` / watch-list, server-side apply, admission and validation (objects are
stored as given — which is what lets tests feed the agent invalid objects), watch cache
semantics (a list is always a consistent read at the newest revision), protobuf, HTTP/2,
TLS, and API priority and fairness (no 429s).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
import socket
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str
    api_version: str
    namespaced: bool

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"


RESOURCES = {r.plural: r for r in (
    Resource("namespaces", "Namespace", "v1", False),
    Resource("nodes", "Node", "v1", False),
    Resource("pods", "Pod", "v1", True),
    Resource("networkpolicies", "NetworkPolicy", "networking.k8s.io/v1", True),
)}
BY_KIND = {r.kind: r for r in RESOURCES.values()}


@dataclass(frozen=True)
class Change:
    revision: int
    resource: str
    type: str  # ADDED, MODIFIED, DELETED
    object: Any  # the stored object: a dict, unless stored with `store_as_given`
    namespace: str = ""  # where it is stored (what namespaced watches filter on)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApiServer:
    """The API server: start() it, hand `kubeconfig()` to a client, change objects with
    `apply`/`delete`, inject faults, stop() it (also a context manager)."""

    def __init__(self, *, bookmark_interval: float = 1.0, history_limit: int = 100_000) -> None:
        self.bookmark_interval = bookmark_interval
        self.history_limit = history_limit
        self.token = secrets.token_hex(16)
        self._cond = threading.Condition()
        self._revision = 0
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in RESOURCES}
        self._history: list[Change] = []
        self._oldest = 0  # watches must start at or after this revision
        self._generation = 0  # bumped by drop_watches(): open streams end abruptly
        self._open_watches = 0  # watch streams being served now (see wait_watching)
        self._paused = False
        self._snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self.requests: list[str] = []  # "GET /api/v1/pods?watch=true&…", for tests to read
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ── life cycle ────────────────────────────────────────────────────────────────────────

    def start(self, host: str = "127.0.0.1", port: int = 0, netns: str | None = None) -> FakeApiServer:
        """Listen on host:port (0: any free port). With `netns` (a named network namespace),
        the listening socket is made inside it, so clients in that network reach the server
        while this process stays where it is."""
        server = self

        class Handler(_Handler):
            api = server

        if netns is None:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        else:
            from netpol.dataplane.netns import enter_netns  # noqa: PLC0415

            def listen_inside() -> ThreadingHTTPServer:
                enter_netns(netns)  # this short-lived thread only
                return ThreadingHTTPServer((host, port), Handler)

            with ThreadPoolExecutor(max_workers=1) as pool:
                self._httpd = pool.submit(listen_inside).result()
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self.drop_watches()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (JSON, which is YAML) pointing at this server with its token."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "agent", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=1))
        return target

    # ── objects ───────────────────────────────────────────────────────────────────────────

    @property
    def revision(self) -> int:
        with self._cond:
            return self._revision

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (by kind, namespace, name); returns it as stored."""
        with self._cond:
            stored = self._apply(obj)
            self._cond.notify_all()
            return copy.deepcopy(stored)

    def apply_all(self, objects: Iterable[dict[str, Any]]) -> None:
        """Many changes at once, each its own revision and event (a burst)."""
        with self._cond:
            for obj in objects:
                self._apply(obj)
            self._cond.notify_all()

    burst = apply_all

    def delete(self, kind: str, name: str, namespace: str = "") -> bool:
        resource = BY_KIND[kind]
        with self._cond:
            key = (namespace if resource.namespaced else "", name)
            current = self._objects[resource.plural].pop(key, None)
            if current is None:
                return False
            self._revision += 1
            final = copy.deepcopy(current)
            if isinstance(final, dict) and isinstance(final.get("metadata"), dict):  # not one stored as given
                final["metadata"]["resourceVersion"] = str(self._revision)
            self._record(Change(self._revision, resource.plural, "DELETED", final, key[0]))
            self._cond.notify_all()
            return True

    def store_as_given(self, kind: str, name: str, obj: Any, namespace: str = "") -> None:
        """Store `obj` under (namespace, name) exactly as given — metadata not a mapping, a name
        that is not a string, not even an object: what an API server can still hold from before
        its validation tightened, or hand out through a conversion bug. Lists serve it as an
        item and watches announce it (ADDED or MODIFIED), untouched; `delete(kind, name,
        namespace)` removes it."""
        resource = BY_KIND[kind]
        with self._cond:
            key = (namespace if resource.namespaced else "", name)
            current = self._objects[resource.plural].get(key)
            self._revision += 1
            stored = copy.deepcopy(obj)
            self._objects[resource.plural][key] = stored
            change = "MODIFIED" if current is not None else "ADDED"
            self._record(Change(self._revision, resource.plural, change, stored, key[0]))
            self._cond.notify_all()

    def objects(self, kind: str) -> list[dict[str, Any]]:
        with self._cond:
            return [copy.deepcopy(o) for o in self._objects[BY_KIND[kind].plural].values()]

    def _apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        resource = BY_KIND[obj["kind"]]
        meta = obj.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if resource.namespaced else ""
        key = (namespace, meta["name"])
        current = self._objects[resource.plural].get(key)
        self._revision += 1
        stored = copy.deepcopy(obj)
        stored["apiVersion"] = resource.api_version
        stored_meta = stored.setdefault("metadata", {})
        if resource.namespaced:
            stored_meta["namespace"] = namespace
        stored_meta["resourceVersion"] = str(self._revision)
        before = current.get("metadata") if isinstance(current, dict) else None  # (one stored as given: none)
        before = before if isinstance(before, dict) else {}
        stored_meta["uid"] = before.get("uid") or _uid()
        stored_meta["creationTimestamp"] = (before.get("creationTimestamp")
                                            or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self._objects[resource.plural][key] = stored
        change = "MODIFIED" if current is not None else "ADDED"
        self._record(Change(self._revision, resource.plural, change, stored, namespace))
        return stored

    def _record(self, change: Change) -> None:
        self._history.append(change)
        if len(self._history) > self.history_limit:
            dropped = len(self._history) - self.history_limit
            self._oldest = self._history[dropped - 1].revision
            del self._history[:dropped]

    # ── faults ────────────────────────────────────────────────────────────────────────────

    def compact(self) -> None:
        """Forget the history up to now: a watch resuming from before this gets 410 Gone."""
        with self._cond:
            self._history.clear()
            self._oldest = self._revision
            self._snapshots.clear()

    def wait_watching(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until at least `count` watch streams are open — each one a drop_watches() will
        cut. Tests inject faults after this, so that a fault meant to hit a stream mid-flight
        cannot land in the gap between a client's list and its watch. False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._open_watches >= count, timeout)

    def drop_watches(self) -> None:
        """Cut every open watch stream mid-flight (no terminating chunk)."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def restart(self, objects: Iterable[dict[str, Any]] = ()) -> None:
        """A new history (an etcd restored elsewhere): all watches cut, every object replaced by
        `objects` with new uids and resourceVersions, every earlier resourceVersion expired."""
        with self._cond:
            self._generation += 1
            self._revision += 1000
            for store in self._objects.values():
                store.clear()
            self._history.clear()
            self._oldest = self._revision
            self._snapshots.clear()
            for obj in objects:
                self._apply(obj)
            self._oldest = self._revision
            self._history.clear()
            self._cond.notify_all()

    @contextlib.contextmanager
    def paused_watches(self) -> Iterator[None]:
        """Watches send nothing inside the block; everything queued goes out after it."""
        with self._cond:
            self._paused = True
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    # ── serving (called by the handler threads) ───────────────────────────────────────────

    def list_page(self, resource: Resource, namespace: str | None, limit: int,
                  token: str) -> tuple[int, dict[str, Any]]:
        with self._cond:
            if token:
                snapshot = self._snapshots.get(token)
                if snapshot is None or snapshot[0] < self._oldest:
                    return 410, _status(410, "Expired", "The provided continue parameter is too old "
                                        "to display a consistent list result.")
                revision, items = snapshot
                offset = int(base64.b64decode(token).decode().split(":")[1])
            else:
                revision = self._revision
                items = [copy.deepcopy(o) for (ns, _), o in sorted(self._objects[resource.plural].items())
                         if namespace is None or ns == namespace]
                for item in items:  # as the real API serves a typed list's items
                    if isinstance(item, dict):
                        item.pop("kind", None)
                        item.pop("apiVersion", None)
                offset = 0
            page = items[offset:offset + limit] if limit else items[offset:]
            meta: dict[str, Any] = {"resourceVersion": str(revision)}
            if limit and offset + limit < len(items):
                raw_token = f"{revision}:{offset + limit}:{secrets.token_hex(4)}"
                next_token = base64.b64encode(raw_token.encode()).decode()
                self._snapshots[next_token] = (revision, items)
                meta["continue"] = next_token
                meta["remainingItemCount"] = len(items) - offset - limit
        return 200, {"kind": f"{resource.kind}List", "apiVersion": resource.api_version, "metadata": meta,
                     "items": page}

    def watch(self, resource: Resource, namespace: str | None, since: str, bookmarks: bool,
              timeout: float) -> Generator[dict[str, Any] | None, None, None]:
        """Events for one watch; None means "cut the connection now" (a dropped stream). The
        lock is never held while the consumer writes to its socket."""
        deadline = time.monotonic() + timeout
        with self._cond:
            generation = self._generation
            if since in ("", "0"):
                position = self._revision
                initial = [Change(position, resource.plural, "ADDED", copy.deepcopy(o), ns)
                           for (ns, _), o in self._objects[resource.plural].items()]
            else:
                position, initial = int(since), []
            expired = position < self._oldest
            self._open_watches += 1  # from here on, drop_watches() cuts this stream
            self._cond.notify_all()
        try:
            if expired:
                yield self._expired(position)
                return
            for change in initial:
                if _matches(change, resource, namespace):
                    yield {"type": change.type, "object": change.object}
            last_bookmark = time.monotonic()
            while True:
                with self._cond:
                    while True:
                        dropped = self._generation != generation
                        expired = position < self._oldest
                        pending = [] if self._paused else [c for c in self._history if c.revision > position]
                        now = time.monotonic()
                        bookmark_due = bookmarks and now - last_bookmark >= self.bookmark_interval
                        if dropped or expired or pending or now >= deadline or bookmark_due:
                            break
                        self._cond.wait(timeout=min(0.05, max(0.0, deadline - now)))
                    if not (self._paused or dropped or expired):  # every change up to now has been looked at
                        position = pending[-1].revision if pending else max(position, self._revision)
                if dropped:
                    yield None
                    return
                if expired:
                    yield self._expired(position)
                    return
                for change in pending:
                    if _matches(change, resource, namespace):
                        yield {"type": change.type, "object": copy.deepcopy(change.object)}
                if bookmark_due:
                    last_bookmark = time.monotonic()
                    yield {"type": "BOOKMARK", "object": {
                        "kind": resource.kind, "apiVersion": resource.api_version,
                        "metadata": {"resourceVersion": str(position)}}}
                if time.monotonic() >= deadline:
                    return
        finally:
            with self._cond:
                self._open_watches -= 1
                self._cond.notify_all()

    def _expired(self, position: int) -> dict[str, Any]:
        with self._cond:
            oldest = self._oldest
        return {"type": "ERROR", "object": _status(410, "Expired",
                                                   f"too old resource version: {position} ({oldest})")}


def _matches(change: Change, resource: Resource, namespace: str | None) -> bool:
    return change.resource == resource.plural and (namespace is None or change.namespace == namespace)


def _uid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet; tests read api.requests
        pass

    def do_GET(self) -> None:
        self.api.requests.append(f"GET {self.path}")
        if self.headers.get("Authorization") != f"Bearer {self.api.token}":
            self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        route = _route(parts.path)
        if route is None:
            self._json(404, _status(404, "NotFound", f"the server could not find the requested resource "
                                                     f"({parts.path})"))
            return
        resource, namespace = route
        if query.get("watch") in ("true", "1"):
            self._watch(resource, namespace, query)
            return
        try:
            limit = int(query.get("limit", "0"))
        except ValueError:
            self._json(400, _status(400, "BadRequest", f"limit: invalid value {query.get('limit')!r}"))
            return
        code, body = self.api.list_page(resource, namespace, limit, query.get("continue", ""))
        self._json(code, body)

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> None:
        timeout = float(query.get("timeoutSeconds", "1800"))
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        events = self.api.watch(resource, namespace, query.get("resourceVersion", ""), bookmarks, timeout)
        try:
            for event in events:
                if event is None:  # dropped: no terminating chunk, the socket just closes
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            events.close()  # the stream counts as closed at once (see FakeApiServer.wait_watching)


def _route(path: str) -> tuple[Resource, str | None] | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
        group = "v1"
    elif parts[:3] == ["apis", "networking.k8s.io", "v1"]:
        rest = parts[3:]
        group = "networking.k8s.io/v1"
    else:
        return None
    namespace = None
    if len(rest) == 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if len(rest) != 1 or rest[0] not in RESOURCES:
        return None
    resource = RESOURCES[rest[0]]
    if resource.api_version != group or (namespace is not None and not resource.namespaced):
        return None
    return resource, namespace
