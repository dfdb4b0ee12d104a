"""An in-process Kubernetes API server for pods, namespaces, nodes, networkpolicies and the
cluster policies' custom resources.

No real kube-apiserver can be installed where netpol is tested, so its agent is tested against
this: real HTTP or HTTPS on 127.0.0.1 (or any address, inside a network namespace too), reached
through a generated kubeconfig or service-account directory by the unmodified `kubernetes`
client, speaking the list/watch protocol as the real API server does:

* **Lists** `GET /api/v1/{pods,namespaces,nodes}`, `GET /apis/networking.k8s.io/v1/networkpolicies`
  (and the namespaced `/namespaces/{ns}/pods|networkpolicies`), the cluster-scoped custom
  resources `GET /apis/policy.networking.k8s.io/{v1beta1,v1alpha2}/clusternetworkpolicies` and
  `…/v1alpha1/{adminnetworkpolicies,baselineadminnetworkpolicies}`: `{kind: PodList, apiVersion,
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
* **Named objects** `GET /api/v1/nodes/NAME` (and the namespaced forms): the object with its
  kind and apiVersion, or `404 NotFound` (`nodes "NAME" not found`).
* **Custom resources** as their CRDs serve them: which versions are served is the test's choice
  (`crd_versions=`, `serve_versions()`; by default every version of each CRD). A version not
  served — or every version, when the CRD is not installed — is `404 NotFound` ("the server
  could not find the requested resource") for lists, watches and gets alike, as an unknown
  group/version is; RBAC is still checked first. Every served version serves the same stored
  objects, differing only in `apiVersion` (no conversion: v1alpha2 and v1beta1 of
  ClusterNetworkPolicy have one schema), and one resourceVersion counter covers them all, so a
  watch may resume at another version. Changing the served versions ends that resource's open
  watches, cleanly (the real server replaces an updated CRD's storage, ending its watches);
  serving none (deleting the CRD) first deletes every object of it, one DELETED event each
  that open watches still send, as the CRD's finalizer does; `apply` of a kind whose CRD is
  not installed raises, as the create would be refused. `stray_not_found(kind, n)` answers
  the next n requests 404 while the resource is served, as a real server may around its
  restarts.
* **Expired continue tokens on demand**: `expire_continue_tokens(n)` answers the next n list
  requests that carry a `continue` token `410 Expired`, as the real server answers when the
  history moved past the list's snapshot between two pages (`compact()` between pages does the
  same, but a test cannot reach between a client's pages).
* **TLS** (`tls=`, a `netpol.testing.pki.ServingCertificate`): HTTPS with a certificate signed
  by a CA made in the test, its SANs naming every address clients dial (127.0.0.1, ::1, an
  address inside a network namespace). Without it, plain HTTP (what older tests use).
* **Authentication**: bearer tokens (scheme case-insensitive, as the real server reads it);
  anything else is `401`, recorded in `unauthorized_requests()`. `rotate_token()` issues a new
  token, writes it wherever `service_account(dir)` projected the old one (the kubelet's atomic
  `..data` swap) and rejects the old one from then on, as an expired bound service-account
  token is (`keep_old=True` leaves it valid until `expire_tokens()`: the kubelet rotates at 80%
  of a token's lifetime). As on the real server, a token is checked when a request starts: a
  watch opened with it keeps streaming after it expires.
* **Authorization** (`rbac=`, ClusterRole rules bound to `user`, e.g.
  `netpol.deploy.rbac.cluster_role_rules()` or `authz.bound_cluster_role_rules(bundle, user)`):
  every request is read as the real server reads it (GET of a collection → `list`, with
  watch=true → `watch`, of a named object → `get`; API group, resource, namespace) and
  anything no rule grants is `403` with the real `Status` (`pods is forbidden: User
  "system:serviceaccount:NS:NAME" cannot list resource "pods" in API group "" at the cluster
  scope`), before routing (a forbidden unknown resource is 403, not 404), and recorded in
  `forbidden_requests()` so that a test fails on any. Without `rbac`, everything authenticated
  is allowed. What RBAC parts are modelled: `netpol.testing.authz`.

What it does not model: writes over HTTP (tests change objects through this class's methods;
an authorised write is `405`), other kinds and discovery (`/api`, `/apis`: 404; so the
CustomResourceDefinition objects themselves are not served either), CRD schemas, defaulting
and conversion webhooks, the 503 a real server answers for custom resources until its CRD
informer has synced at start (its stray 404s are `stray_not_found`), label/field selectors,
`resourceVersionMatch`, `sendInitialEvents` / watch-list, server-side apply, admission and
validation (objects are stored as given — which is what lets tests feed the agent invalid
objects), watch cache semantics (a list is always a consistent read at the newest revision),
protobuf, HTTP/2, client certificates and anonymous requests (a request without a token is
401, as with `--anonymous-auth=false`; the real default makes it `system:anonymous`, then
403), token contents (opaque strings, not JWTs: no audience or expiry inside; expiry is
`rotate_token`), Roles/RoleBindings, and API priority and fairness (no 429s).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
import socket
import ssl
import sys
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from netpol.testing.authz import (
    DEFAULT_RULES,
    TRUE,
    RequestAttributes,
    forbidden_status,
    request_attributes,
    rule_allows,
)
from netpol.testing.pki import ServingCertificate
from netpol.testing.projected import project_files

DEFAULT_USER = "system:serviceaccount:netpol:netpol"  # whom `rbac` is bound to
HANDSHAKE_TIMEOUT = 30.0  # s a client may take for its TLS handshake before its thread gives up


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str
    api_version: str  # what it is stored at (a custom resource: its CRD's storage version)
    namespaced: bool
    versions: tuple[str, ...] = ()  # a custom resource: every group/version its CRD defines

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    @property
    def custom(self) -> bool:
        return bool(self.versions)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


POLICY_GROUP = "policy.networking.k8s.io"  # kubernetes-sigs/network-policy-api's CRDs
RESOURCES = {r.plural: r for r in (
    Resource("namespaces", "Namespace", "v1", False),
    Resource("nodes", "Node", "v1", False),
    Resource("pods", "Pod", "v1", True),
    Resource("networkpolicies", "NetworkPolicy", "networking.k8s.io/v1", True),
    Resource("clusternetworkpolicies", "ClusterNetworkPolicy", f"{POLICY_GROUP}/v1beta1", False,
             (f"{POLICY_GROUP}/v1beta1", f"{POLICY_GROUP}/v1alpha2")),
    Resource("adminnetworkpolicies", "AdminNetworkPolicy", f"{POLICY_GROUP}/v1alpha1", False,
             (f"{POLICY_GROUP}/v1alpha1",)),
    Resource("baselineadminnetworkpolicies", "BaselineAdminNetworkPolicy", f"{POLICY_GROUP}/v1alpha1", False,
             (f"{POLICY_GROUP}/v1alpha1",)),
)}
BY_KIND = {r.kind: r for r in RESOURCES.values()}


@dataclass(frozen=True)
class Change:
    revision: int
    resource: str
    type: str  # ADDED, MODIFIED, DELETED
    object: Any  # the stored object: a dict, unless stored with `store_as_given`
    namespace: str = ""  # where it is stored (what namespaced watches filter on)


@dataclass(frozen=True)
class ForbiddenRequest:
    """A request RBAC refused: what was asked (`GET /api/v1/nodes?…`), how the authorizer read
    it, and the 403's message."""

    request: str
    attributes: RequestAttributes
    message: str

    def __str__(self) -> str:
        return f"{self.request}: {self.message}"


def _status(code: int, reason: str, message: str, **details: str) -> dict[str, Any]:
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}
    if details:
        status["details"] = details
    return status


class FakeApiServer:
    """The API server: start() it, hand `kubeconfig()` or `service_account()` to a client,
    change objects with `apply`/`delete`, inject faults, stop() it (also a context manager).

    `tls`: serve HTTPS with this certificate (else plain HTTP). `rbac`: ClusterRole rules bound
    to `user`; every request they do not grant is a 403 (None: no authorization at all).
    `crd_versions`: custom resource kind → the versions served (`["v1alpha2"]`; `[]`: its CRD
    is not installed); a kind not named serves every version of its CRD."""

    def __init__(self, *, bookmark_interval: float = 1.0, history_limit: int = 100_000,
                 tls: ServingCertificate | None = None, rbac: Sequence[Mapping[str, Any]] | None = None,
                 user: str = DEFAULT_USER, crd_versions: Mapping[str, Sequence[str]] | None = None) -> None:
        self.bookmark_interval = bookmark_interval
        self.history_limit = history_limit
        self.tls = tls
        self.rules = None if rbac is None else (*DEFAULT_RULES, *copy.deepcopy(list(rbac)))
        self.user = user
        self._tokens = [secrets.token_hex(16)]  # accepted now; the last is the current one
        self._projections: list[Path] = []  # service-account dirs rotate_token() rewrites
        self._forbidden: list[ForbiddenRequest] = []
        self._unauthorized: list[str] = []
        self._cond = threading.Condition()
        self._revision = 0
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in RESOURCES}
        self._history: list[Change] = []
        self._oldest = 0  # watches must start at or after this revision
        self._generation = 0  # bumped by drop_watches(): open streams end abruptly
        self._cuts = dict.fromkeys(RESOURCES, 0)  # per resource, bumped when its served versions change
        self._served = {r.plural: r.versions or (r.api_version,) for r in RESOURCES.values()}
        self._stray_not_found = dict.fromkeys(RESOURCES, 0)  # per resource, requests to answer 404
        self._expire_continues = 0  # list requests with a continue token still to answer 410
        for kind, versions in (crd_versions or {}).items():
            resource = _custom_resource(kind)
            self._served[resource.plural] = _group_versions(resource, versions)
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

        class Server(_Server):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            tls = _server_context(self.tls) if self.tls is not None else None

        if netns is None:
            self._httpd = Server((host, port), Handler)
        else:
            from netpol.dataplane.netns import enter_netns  # noqa: PLC0415

            def listen_inside() -> ThreadingHTTPServer:
                enter_netns(netns)  # this short-lived thread only
                return Server((host, port), Handler)

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
    def host(self) -> str:
        """The address listened on (what KUBERNETES_SERVICE_HOST would say: no brackets)."""
        assert self._httpd is not None, "start() the server first"
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() the server first"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (JSON, which is YAML) pointing at this server with its token (and,
        over TLS, its CA)."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.tls.ca.read_bytes()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "agent", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
        }
        target = Path(path)
        target.write_text(json.dumps(config, indent=1))
        return target

    def service_account(self, directory: str | Path) -> Path:
        """Project `token`, `ca.crt` (over TLS) and `namespace` into `directory` as the kubelet
        does for a pod (see `netpol.testing.projected`); `rotate_token()` rewrites them."""
        target = Path(directory)
        namespace = self.user.split(":")[2] if self.user.startswith("system:serviceaccount:") else "default"
        files = {"token": self.token.encode(), "namespace": namespace.encode()}
        if self.tls is not None:
            files["ca.crt"] = self.tls.ca.read_bytes()
        project_files(target, files)
        with self._cond:
            if target not in self._projections:
                self._projections.append(target)
        return target

    # ── tokens and the requests they were refused for ────────────────────────────────────

    @property
    def token(self) -> str:
        """The current token (setting it makes it the only one accepted)."""
        with self._cond:
            return self._tokens[-1]

    @token.setter
    def token(self, value: str) -> None:
        with self._cond:
            self._tokens = [value]

    def rotate_token(self, *, keep_old: bool = False, project: bool = True) -> str:
        """Issue a new token and return it. With `project`, write it first into every directory
        `service_account()` made (so a client that reads its file before each request is refused
        only for a token it read before this call). Then, unless `keep_old`, every earlier token
        is rejected with 401 from now on (an expired bound token); a watch already open keeps
        streaming."""
        new = secrets.token_hex(16)
        with self._cond:
            self._tokens.append(new)
            projections = list(self._projections)
        for directory in projections if project else ():
            self.service_account(directory)
        if not keep_old:
            self.expire_tokens()
        return new

    def expire_tokens(self) -> None:
        """Reject every token but the current one from now on."""
        with self._cond:
            del self._tokens[:-1]

    def authenticate(self, request: str, header: str | None) -> bool:
        """Whether the Authorization header carries an accepted token (if not, it is recorded)."""
        scheme, _, token = (header or "").partition(" ")
        with self._cond:
            if scheme.lower() == "bearer" and token.strip() in self._tokens:
                return True
            self._unauthorized.append(request)
            return False

    def authorize(self, request: str, attributes: RequestAttributes) -> dict[str, Any] | None:
        """None when allowed, else the 403 Status (and the refusal is recorded)."""
        if self.rules is None or any(rule_allows(rule, attributes) for rule in self.rules):
            return None
        status = forbidden_status(self.user, attributes)
        with self._cond:
            self._forbidden.append(ForbiddenRequest(request, attributes, status["message"]))
        return status

    def forbidden_requests(self) -> list[ForbiddenRequest]:
        """Every request RBAC refused so far (403), oldest first."""
        with self._cond:
            return list(self._forbidden)

    def unauthorized_requests(self) -> list[str]:
        """Every request refused for its token so far (401), oldest first."""
        with self._cond:
            return list(self._unauthorized)

    # ── objects ───────────────────────────────────────────────────────────────────────────

    @property
    def revision(self) -> int:
        with self._cond:
            return self._revision

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (by kind, namespace, name); returns it as stored.
        LookupError for a kind whose CRD is not installed (`serve_versions`)."""
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
            found = self._delete(resource, namespace if resource.namespaced else "", name)
            self._cond.notify_all()
            return found

    def _delete(self, resource: Resource, namespace: str, name: str) -> bool:
        current = self._objects[resource.plural].pop((namespace, name), None)
        if current is None:
            return False
        self._revision += 1
        final = copy.deepcopy(current)
        if isinstance(final, dict) and isinstance(final.get("metadata"), dict):  # not one stored as given
            final["metadata"]["resourceVersion"] = str(self._revision)
        self._record(Change(self._revision, resource.plural, "DELETED", final, namespace))
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

    # ── custom resources: which versions their CRDs serve ─────────────────────────────────

    def serve_versions(self, kind: str, versions: Iterable[str]) -> None:
        """Serve these versions of a custom resource from now on (`"v1beta1"`): its CRD
        installed, updated, or — no version — deleted, which deletes every object of it first
        (a DELETED event each). Either way, the resource's open watches end, cleanly, once they
        have sent what was pending (those DELETED events)."""
        resource = _custom_resource(kind)
        served = _group_versions(resource, versions)
        with self._cond:
            if not served:
                for namespace, name in list(self._objects[resource.plural]):
                    self._delete(resource, namespace, name)
            self._served[resource.plural] = served
            self._cuts[resource.plural] += 1
            self._cond.notify_all()

    def served(self) -> dict[str, tuple[str, ...]]:
        """Resource (plural) → the group/versions served now."""
        with self._cond:
            return dict(self._served)

    def stray_not_found(self, kind: str, count: int = 1) -> None:
        """Answer the next `count` requests for `kind` (any version, after authorization) 404, as
        if it were not served, while it is: the stray 404s a real server is known to answer for
        custom resources around its restarts (kubernetes#115241). Its objects stay."""
        with self._cond:
            self._stray_not_found[BY_KIND[kind].plural] += count

    def take_stray_not_found(self, resource: str) -> bool:
        """Whether this request for `resource` (a plural) is one to answer 404 (see above)."""
        with self._cond:
            if self._stray_not_found.get(resource, 0) <= 0:
                return False
            self._stray_not_found[resource] -= 1
            return True

    def expire_continue_tokens(self, count: int = 1) -> None:
        """Answer the next `count` list requests that carry a continue token 410 Expired (the
        token is good otherwise): a list that must start again from its first page."""
        with self._cond:
            self._expire_continues += count

    def get_object(self, resource: Resource, namespace: str | None, name: str,
                   api_version: str | None = None) -> tuple[int, Any]:
        """(200, the object as a GET of it at `api_version` serves it) or (404, the NotFound
        Status)."""
        with self._cond:
            found = copy.deepcopy(self._objects[resource.plural].get((namespace or "", name)))
        if found is None:
            group = resource.group
            qualified = f"{resource.plural}.{group}" if group else resource.plural
            return 404, _status(404, "NotFound", f'{qualified} "{name}" not found', name=name,
                                **({"group": group} if group else {}), kind=resource.plural)
        if isinstance(found, dict):
            found.setdefault("kind", resource.kind)
            found.setdefault("apiVersion", resource.api_version)
        return 200, _at_version(found, resource, api_version)

    def _apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        resource = BY_KIND[obj["kind"]]
        if not self._served[resource.plural]:
            raise LookupError(f"{resource.kind}: its CRD is not installed (no version served), so the API "
                              f"server would refuse to create one: serve_versions() first")
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
                  token: str, *, api_version: str | None = None) -> tuple[int, dict[str, Any]]:
        with self._cond:
            if token:
                snapshot = self._snapshots.get(token)
                expire = self._expire_continues > 0
                self._expire_continues -= expire
                if snapshot is None or snapshot[0] < self._oldest or expire:
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
        return 200, {"kind": f"{resource.kind}List", "apiVersion": api_version or resource.api_version,
                     "metadata": meta, "items": page}

    def watch(self, resource: Resource, namespace: str | None, since: str, bookmarks: bool,
              timeout: float, *,
              api_version: str | None = None) -> Generator[dict[str, Any] | None, None, None]:
        """Events for one watch (objects at `api_version`); None means "cut the connection now"
        (a dropped stream). The lock is never held while the consumer writes to its socket."""
        deadline = time.monotonic() + timeout
        with self._cond:
            generation, cut = self._generation, self._cuts[resource.plural]
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
                    yield {"type": change.type, "object": _at_version(change.object, resource, api_version)}
            last_bookmark = time.monotonic()
            while True:
                with self._cond:
                    while True:
                        dropped = self._generation != generation
                        ended = self._cuts[resource.plural] != cut  # its CRD changed
                        expired = position < self._oldest
                        pending = [] if self._paused else [c for c in self._history if c.revision > position]
                        now = time.monotonic()
                        bookmark_due = bookmarks and now - last_bookmark >= self.bookmark_interval
                        if dropped or ended or expired or pending or now >= deadline or bookmark_due:
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
                        yield {"type": change.type,
                               "object": _at_version(copy.deepcopy(change.object), resource, api_version)}
                if ended:  # after what was pending (a deleted CRD's DELETED events), a clean end
                    return
                if bookmark_due:
                    last_bookmark = time.monotonic()
                    yield {"type": "BOOKMARK", "object": {
                        "kind": resource.kind, "apiVersion": api_version or resource.api_version,
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


def _custom_resource(kind: str) -> Resource:
    resource = BY_KIND.get(kind)
    if resource is None or not resource.custom:
        custom = ", ".join(r.kind for r in RESOURCES.values() if r.custom)
        raise ValueError(f"{kind}: not a custom resource (those are {custom})")
    return resource


def _group_versions(resource: Resource, versions: Iterable[str]) -> tuple[str, ...]:
    """`["v1alpha2"]` → `("policy.networking.k8s.io/v1alpha2",)`, each a version of the CRD."""
    chosen = tuple(f"{resource.group}/{v.rpartition('/')[2]}" for v in versions)
    unknown = [v for v in chosen if v not in resource.versions]
    if unknown:
        raise ValueError(f"{resource.kind}: its CRD has no version {', '.join(unknown)} "
                         f"(it has {', '.join(resource.versions)})")
    return chosen


def _at_version(obj: Any, resource: Resource, api_version: str | None) -> Any:
    """A stored object as served at another version of its CRD: the same, but its apiVersion."""
    if api_version and api_version != resource.api_version and isinstance(obj, dict) and "apiVersion" in obj:
        return {**obj, "apiVersion": api_version}
    return obj


def _matches(change: Change, resource: Resource, namespace: str | None) -> bool:
    return change.resource == resource.plural and (namespace is None or change.namespace == namespace)


def _uid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


class _Server(ThreadingHTTPServer):
    """Threads per connection; over TLS, the handshake runs in the connection's thread (a slow
    or refusing client never holds up the accept loop)."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # quiet for a client that hung up or refused us
            super().handle_error(request, client_address)


def _server_context(tls: ServingCertificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # the API server's floor
    context.load_cert_chain(tls.cert, tls.key)
    return context


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # quiet; tests read api.requests
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        """Authenticate, authorize, route — in the real server's order."""
        request = f"{method} {self.path}"
        self.api.requests.append(request)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))  # (a body is never used)
        if not self.api.authenticate(request, self.headers.get("Authorization")):
            self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        parts = urlsplit(self.path)
        attributes = request_attributes(method, parts.path, parts.query)
        refusal = self.api.authorize(request, attributes)
        if refusal is not None:
            self._json(403, refusal)
            return
        route = _route(attributes, self.api.served())
        if route is None or self.api.take_stray_not_found(attributes.resource):
            self._json(404, _status(404, "NotFound", f"the server could not find the requested resource "
                                                     f"({parts.path})"))
            return
        resource, namespace, api_version = route
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if attributes.verb == "watch":
            self._watch(resource, namespace, query, api_version)
        elif attributes.verb == "get":
            self._json(*self.api.get_object(resource, namespace, attributes.name, api_version))
        elif attributes.verb == "list":
            self._list(resource, namespace, query, api_version)
        else:
            self._json(405, _status(405, "MethodNotAllowed", f"{attributes.verb} is not served here: "
                                                             "tests write through FakeApiServer's methods"))

    def _list(self, resource: Resource, namespace: str | None, query: dict[str, str],
              api_version: str) -> None:
        try:
            limit = int(query.get("limit", "0"))
        except ValueError:
            self._json(400, _status(400, "BadRequest", f"limit: invalid value {query.get('limit')!r}"))
            return
        code, body = self.api.list_page(resource, namespace, limit, query.get("continue", ""),
                                        api_version=api_version)
        self._json(code, body)

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, resource: Resource, namespace: str | None, query: dict[str, str],
               api_version: str) -> None:
        timeout = float(query.get("timeoutSeconds", "1800"))
        bookmarks = query.get("allowWatchBookmarks") in TRUE
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        events = self.api.watch(resource, namespace, query.get("resourceVersion", ""), bookmarks, timeout,
                                api_version=api_version)
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


def _route(attributes: RequestAttributes,
           served: Mapping[str, tuple[str, ...]]) -> tuple[Resource, str | None, str] | None:
    """What a request's attributes ask of the served kinds: (resource, namespace or None for
    all, the group/version asked for, one `served` serves it); None when it is something else
    (404)."""
    resource = RESOURCES.get(attributes.resource)
    if resource is None or attributes.subresource:
        return None
    group_version = f"{attributes.api_group}/{attributes.api_version}".lstrip("/")
    if group_version not in served.get(resource.plural, ()):
        return None
    if resource.namespaced:
        return resource, attributes.namespace or None, group_version
    own_name = resource.plural == "namespaces" and attributes.namespace == attributes.name  # /namespaces/NAME
    return (resource, None, group_version) if not attributes.namespace or own_name else None
