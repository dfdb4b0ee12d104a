"""The Kubernetes source: list + watch of namespaces, nodes, pods, networkpolicies and the
cluster policies (policy.networking.k8s.io custom resources) through the official `kubernetes`
client, as raw API objects.

Per kind, one thread does what client-go's reflector does:

1. **List** (paginated, `limit` + `continue`), emit a `Snapshot` of every object and remember
   the list's resourceVersion. A continue token that expired (410) restarts the list.
2. **Watch** from that resourceVersion with `allowWatchBookmarks`, emitting a `Delta` per
   ADDED/MODIFIED/DELETED and advancing the resourceVersion with every event and BOOKMARK.
   A watch that ends (its `timeoutSeconds`) is reopened from where it stopped.
3. **410 Gone** ("too old resource version", an ERROR event or an HTTP 410): list again — the
   next Snapshot replaces everything of that kind, and `Mirror` turns it into the deletions,
   additions and changes that were missed.
4. **Anything else** (connection refused or dropped mid-stream, timeouts, 401/5xx, garbage:
   an answer or event not shaped as the protocol says): wait with capped exponential backoff
   and jitter (`netpol.sources.backoff`), then watch again from the last resourceVersion
   (which may in turn be 410 → relist) — or, after a watch event that is not an event, list
   again (resuming would replay it). In a pod, every request reads the service-account token
   file first (`netpol.sources.in_cluster`), so the retry after a 401 from a rotated token
   carries the new one. Each kind's latest error is logged and kept in `stats.last_errors`
   (a 403 quotes the API server: which permission is missing; a TLS failure names the server
   and the CA). Malformed *objects* are handed on as they are: reporting them is the agent's.
   A thread that still dies (a bug) is reported to `on_death`.

**Custom resources** (ClusterNetworkPolicy; the v1alpha1 AdminNetworkPolicy and
BaselineAdminNetworkPolicy, which `netpol.load.decode` converts) may not be served at all:

5. **Versions**: each list tries the kind's versions in order, the preferred first
   (ClusterNetworkPolicy: v1beta1, then v1alpha2), and follows the first the server does not
   answer 404; its watches use the version their list used. The preferred version is tried
   again at every list (the start, after 410, after a stream error) and whenever the version
   followed stops being served (a 404, list or watch, means list again) — never while it
   works: versions of one CRD are views of the same stored objects (v1alpha2 and v1beta1 have
   one schema), so following the older one misses nothing until it is removed.
6. **Not installed** (every version answers 404): the kind counts as listed with no objects —
   an empty Snapshot, so the agent starts and compiles the other kinds — once
   `ABSENT_CONFIRMATIONS` rounds in a row found nothing (a lone 404 for a custom resource
   happens around API server restarts: kubernetes#115241, and taking it as "no policies" would
   open what they deny). It is logged once as a warning, kept in `stats.not_served`, and looked
   for again with backoff (`absent_recheck_initial`..`absent_recheck_cap`), so a CRD installed
   later is listed within a minute. A CRD uninstalled while followed is the same empty list.

Objects stay dicts, in the shape the API serves (items of a list get their kind and apiVersion
back); the caller decodes them, so that an invalid object is reported by the same code that
reports it in a manifest. The client's model classes are bypassed (`_preload_content=False`):
deserialising 100k pods into them costs more than the whole compile.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from netpol.errors import ResourceExpired, SourceError, WatchStreamError
from netpol.load.decode import SUPPORTED_KINDS
from netpol.sources.backoff import Backoff
from netpol.sources.events import (
    KIND_NAMES,
    Delta,
    Snapshot,
    SourceEvent,
    ThreadDeath,
    resource_version,
    run_reporting_death,
)
from netpol.sources.in_cluster import in_cluster_configuration

log = logging.getLogger("netpol.sources.kube")
# Rounds in a row (each trying every version) that must answer 404 before a custom resource is
# taken as not installed: one 404 can be a restarting API server's (see the module).
ABSENT_CONFIRMATIONS = 2
ListCall = tuple[str, Callable[..., Any]]  # (the apiVersion it lists at, the client call)


@dataclass(frozen=True)
class Watched:
    """One kind the source follows: a built-in one through its typed API class, or (`plural`
    set) a custom resource through CustomObjectsApi at the first of `versions` served."""

    kind: str
    api_version: str  # what items get when the API leaves it out (a custom resource: per version)
    api: str  # the client class: CoreV1Api, NetworkingV1Api, CustomObjectsApi
    method: str  # its list-all method
    plural: str = ""  # a custom resource's name in URLs
    versions: tuple[str, ...] = ()  # a custom resource's group/versions, the preferred first

    @property
    def custom(self) -> bool:
        return bool(self.plural)

    def list_calls(self, api_client: client.ApiClient) -> tuple[ListCall, ...]:
        """(apiVersion, list call) for each version to try, the preferred first."""
        method = getattr(getattr(client, self.api)(api_client), self.method)
        if not self.custom:
            return ((self.api_version, method),)
        return tuple((version, functools.partial(method, *version.split("/"), self.plural))
                     for version in self.versions)


def _custom(kind: str, plural: str) -> Watched:
    """A cluster-scoped custom resource, at the versions `netpol.load.decode` reads."""
    versions = SUPPORTED_KINDS[kind]
    return Watched(kind, versions[0], "CustomObjectsApi", "list_cluster_custom_object", plural, versions)


KINDS = (
    Watched("Namespace", "v1", "CoreV1Api", "list_namespace"),
    Watched("Node", "v1", "CoreV1Api", "list_node"),
    Watched("Pod", "v1", "CoreV1Api", "list_pod_for_all_namespaces"),
    Watched("NetworkPolicy", "networking.k8s.io/v1", "NetworkingV1Api",
            "list_network_policy_for_all_namespaces"),
    _custom("ClusterNetworkPolicy", "clusternetworkpolicies"),
    _custom("AdminNetworkPolicy", "adminnetworkpolicies"),
    _custom("BaselineAdminNetworkPolicy", "baselineadminnetworkpolicies"),
)
assert tuple(k.kind for k in KINDS) == KIND_NAMES  # the vocabulary's kinds, each with its API call


def new_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """A client from `kubeconfig` (at `context`, else its current context), else in-cluster
    config when KUBERNETES_SERVICE_HOST is set (a pod's service account over TLS, its token
    re-read before every request: see `netpol.sources.in_cluster`; SourceError naming the file
    when unusable), else the default kubeconfig (~/.kube/config)."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return client.ApiClient(in_cluster_configuration())
    return config.new_client_from_config()


@dataclass
class SourceStats:
    lists: int = 0
    relists: int = 0  # lists after a 410
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    errors: int = 0
    last_errors: dict[str, str] = field(default_factory=dict)  # kind → its latest error, as logged
    not_served: dict[str, str] = field(default_factory=dict)  # custom kinds taken as not installed → why


@dataclass
class KubeSource:
    """List + watch every kind on its own thread, handing events to `sink` (called from those
    threads: it must be thread-safe, e.g. `queue.Queue.put`)."""

    api_client: client.ApiClient
    sink: Callable[[SourceEvent], None]
    page_size: int = 500
    watch_timeout: int = 300
    connect_timeout: float = 10.0
    backoff_initial: float = 0.2
    backoff_cap: float = 30.0
    # A custom resource not installed is looked for again after 0.5-1 s (the confirming round),
    # then less and less often, at least once a minute: a CRD installed later is picked up
    # within that, at ~1 request a minute per kind and node while there is none.
    absent_recheck_initial: float = 1.0
    absent_recheck_cap: float = 60.0
    kinds: tuple[Watched, ...] = KINDS
    sleep: Callable[[float], bool] | None = None  # tests inject; default waits on the stop event
    on_death: ThreadDeath | None = None  # told when a thread dies of an unexpected error
    stats: SourceStats = field(default_factory=SourceStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _responses: dict[str, Any] = field(default_factory=dict)
    _versions: dict[str, str | None] = field(default_factory=dict)  # where each kind resumes
    _serving: dict[str, str] = field(default_factory=dict)  # the apiVersion each kind is followed at
    _absent_rounds: dict[str, int] = field(default_factory=dict)  # custom kinds: 404 rounds in a row
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> KubeSource:
        for kind in self.kinds:
            name = f"watch-{kind.kind}"
            thread = threading.Thread(target=run_reporting_death, name=name, daemon=True,
                                      args=(name, lambda kind=kind: self.run(kind), self.on_death,
                                            self._stop.is_set))
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            responses = list(self._responses.values())
        for resp in responses:  # wake threads blocked reading a watch stream
            _shutdown(resp)
        for thread in self._threads:
            thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def resume_version(self, kind: str) -> str | None:
        """The resourceVersion `kind`'s next watch starts from (moved by every event and
        bookmark); None before its first list, and while it must list again. Tests wait on it
        to know a bookmark has been taken."""
        return self._versions.get(kind)

    def serving(self, kind: str) -> str | None:
        """The apiVersion `kind` was last listed at (None before, or while not served)."""
        return self._serving.get(kind)

    # ── one kind ──────────────────────────────────────────────────────────────────────────

    def run(self, kind: Watched) -> None:
        calls = kind.list_calls(self.api_client)
        call = calls[0]
        backoff = Backoff(initial=self.backoff_initial, cap=self.backoff_cap)
        recheck = Backoff(initial=self.absent_recheck_initial, cap=self.absent_recheck_cap)
        self._versions[kind.kind] = None
        while not self._stop.is_set():
            try:
                version = self._versions[kind.kind]
                if version is None:
                    listed = self._list_served(kind, calls)
                    if listed is None:  # no version served
                        if not self._wait(self._absent(kind, recheck)):
                            return
                        continue
                    recheck.reset()
                    call, version = listed
                    self._versions[kind.kind] = version
                self._watch(kind, call, version)
                backoff.reset()
            except ResourceExpired:
                log.info("%s: resourceVersion %s expired (410 Gone); listing again", kind.kind,
                         self._versions[kind.kind])
                self.stats.relists += 1
                self._versions[kind.kind] = None
            except (ApiException, HTTPError, OSError, ValueError, SourceError) as exc:
                if self._stop.is_set():
                    return
                if isinstance(exc, WatchStreamError):  # resuming would replay the same garbage: list
                    self._versions[kind.kind] = None
                if kind.custom and isinstance(exc, ApiException) and exc.status == 404:
                    self._versions[kind.kind] = None  # the version followed is gone: list (choose) again
                self.stats.errors += 1
                problem = describe_error(exc, self.api_client.configuration)
                self.stats.last_errors[kind.kind] = problem
                delay = backoff.next_delay()
                log.warning("%s: %s; retrying in %.2f s", kind.kind, problem, delay)
                if not self._wait(delay):
                    return

    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopped; False when stopped."""
        if self.sleep is not None:
            return self.sleep(seconds) and not self._stop.is_set()
        return not self._stop.wait(seconds)

    def _list_served(self, kind: Watched, calls: tuple[ListCall, ...]) -> tuple[ListCall, str] | None:
        """List at the first version served: (its call, the list's resourceVersion); None when a
        custom resource answers 404 at every version. (A 404 for a built-in kind is an error.)"""
        for call in calls:
            try:
                version = self._list(kind, call)
            except ApiException as exc:
                if not (kind.custom and exc.status == 404):
                    raise
                log.debug("%s: %s is not served (404)", kind.kind, call[0])
                continue
            self._found(kind, call[0])
            return call, version
        self._serving.pop(kind.kind, None)
        return None

    def _found(self, kind: Watched, api_version: str) -> None:
        """A list succeeded at `api_version`: say so when that changes what is followed."""
        before = self._serving.get(kind.kind)
        self._serving[kind.kind] = api_version
        self._absent_rounds.pop(kind.kind, None)
        if self.stats.not_served.pop(kind.kind, None) is not None:
            log.info("%s: now served, at %s: following it", kind.kind, api_version)
        elif kind.custom and api_version != (before or kind.versions[0]):
            log.info("%s: following %s (%s)", kind.kind, api_version,
                        f"instead of {before}" if before else f"{kind.versions[0]} is not served")

    def _absent(self, kind: Watched, recheck: Backoff) -> float:
        """Every version answered 404: count the round, and once `ABSENT_CONFIRMATIONS` rounds in
        a row have, take the kind as having no objects (an empty Snapshot, once). The delay
        before the next look."""
        rounds = self._absent_rounds[kind.kind] = self._absent_rounds.get(kind.kind, 0) + 1
        delay = recheck.next_delay()
        if rounds >= ABSENT_CONFIRMATIONS and kind.kind not in self.stats.not_served:
            why = (f"not served ({' and '.join(kind.versions)}: 404 Not Found): its CRD is not installed; "
                   f"taken as having no objects, and looked for again at least every "
                   f"{self.absent_recheck_cap:g} s")
            self.stats.not_served[kind.kind] = why
            log.warning("%s: %s", kind.kind, why)
            self.sink(Snapshot(kind.kind, (), ""))
        return delay

    def _list(self, kind: Watched, list_call: ListCall) -> str:
        objects, version = list_objects(kind, list_call, self.page_size, (self.connect_timeout, 120))
        self.stats.lists += 1
        self.sink(Snapshot(kind.kind, tuple(objects), version))
        return version

    def _watch(self, kind: Watched, list_call: ListCall, version: str) -> None:
        """Follow one watch stream to its end, moving `_versions[kind]` with every event and
        bookmark (so that a stream cut mid-way resumes after the last event it delivered)."""
        api_version, call = list_call
        resp = call(watch=True, resource_version=version, allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout, _preload_content=False,
                    _request_timeout=(self.connect_timeout, self.watch_timeout + 30))
        self.stats.watches += 1
        with self._lock:
            self._responses[kind.kind] = resp
        try:
            for event in _events(resp):
                kind_of_event = event.get("type")
                obj = event.get("object")
                if not isinstance(obj, dict):
                    raise WatchStreamError(f"a {kind.kind} watch event's object is not an object: "
                                           f"{type(obj).__name__}")
                if kind_of_event == "ERROR":
                    if obj.get("code") == 410:
                        raise ResourceExpired(str(obj.get("message", "")))
                    raise ApiException(status=obj.get("code"),
                                       reason=f"{obj.get('reason')}: {obj.get('message')}")
                if kind_of_event == "BOOKMARK":
                    self.stats.bookmarks += 1
                elif kind_of_event in ("ADDED", "MODIFIED", "DELETED"):
                    obj.setdefault("kind", kind.kind)
                    obj.setdefault("apiVersion", api_version)
                    self.stats.events += 1
                    self.sink(Delta(kind.kind, kind_of_event, obj))
                else:
                    raise WatchStreamError(f"unexpected watch event type {kind_of_event!r}")
                self._versions[kind.kind] = resource_version(obj) or version
                if self._stop.is_set():
                    break
        finally:
            with self._lock:
                self._responses.pop(kind.kind, None)
            with contextlib.suppress(Exception):
                resp.release_conn()


def list_objects(kind: Watched, list_call: ListCall, page_size: int, request_timeout: tuple[float, float],
                 restarts: int | None = None) -> tuple[list[dict[str, Any]], str]:
    """Every object of `kind` at one version (each item given back its kind and apiVersion), and
    the list's resourceVersion: pages of `page_size` (`limit` + `continue`). A continue token
    that expired (410: the history moved past the list's snapshot while it was read) lists from
    the start again — at most `restarts` times (None: as often as it happens), then
    ResourceExpired. ApiException for any other refusal; SourceError for an answer that is not a
    list."""
    api_version, call = list_call
    objects: list[dict[str, Any]] = []
    token = ""
    expired = 0
    while True:
        kwargs: dict[str, Any] = {"_preload_content": False, "limit": page_size,
                                  "_request_timeout": request_timeout}
        if token:
            kwargs["_continue"] = token
        try:
            resp = call(**kwargs)
        except ApiException as exc:
            if exc.status != 410:
                raise
            expired += 1
            if restarts is not None and expired > restarts:
                raise ResourceExpired(f"{kind.kind}: the list's continue token expired {expired} times in a "
                                      "row (objects change faster than the list is read)") from None
            log.info("%s: list continue token expired; listing from the start", kind.kind)
            objects, token = [], ""
            continue
        page = orjson.loads(resp.data)
        items = page.get("items") if isinstance(page, dict) else None
        if not isinstance(items, list | None):
            raise SourceError(f"{kind.kind}: the list answer is not a list of objects")
        for item in items or ():
            if not isinstance(item, dict):  # nothing the agent could key or decode
                log.warning("%s: a list item is not an object (%s); skipped", kind.kind,
                            type(item).__name__)
                continue
            item.setdefault("kind", kind.kind)
            item.setdefault("apiVersion", api_version)
            objects.append(item)
        meta = page.get("metadata") if isinstance(page, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        token = meta.get("continue") or ""
        if not isinstance(token, str):
            raise SourceError(f"{kind.kind}: the list answer's continue token is not a string")
        if not token:
            return objects, resource_version(page)


def _events(resp: Any) -> Iterator[dict[str, Any]]:
    for line in iter_resp_lines(resp):
        if line:
            event = orjson.loads(line)
            if not isinstance(event, dict):
                raise WatchStreamError(f"a watch event must be an object, got {line[:80]!r}")
            yield event


def _shutdown(resp: Any) -> None:
    connection = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def describe_error(exc: BaseException, configuration: client.Configuration) -> str:
    """One line for the log: an API error with its Status message (a 403 says who may not do
    what), a TLS failure with the server and the CA trusted, else the exception."""
    if isinstance(exc, ApiException) and exc.status:
        message = _status_message(exc.body)
        return f"API error {exc.status} {exc.reason or ''}".strip() + (f": {message}" if message else "")
    if isinstance(exc, ApiException):  # status 0: the client's own words (its TLS errors, some paths)
        return f"{configuration.host}: {' '.join(str(exc.reason).split())}"
    tls = _tls_failure(exc)
    if tls:
        return f"TLS to {configuration.host}: {tls} (trusting the CA in {configuration.ssl_ca_cert})"
    return f"{type(exc).__name__}: {exc}"


def _status_message(body: Any) -> str:
    try:
        status = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) else ""


def _tls_failure(exc: BaseException | None) -> str:
    """Why the TLS handshake failed, when that is what `exc` (a urllib3 error, wrapping an
    ssl error, wrapped in turn by retries) comes down to; else ''."""
    for error in wrapped_errors(exc, 5):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {error.verify_message or error.reason}"
        if isinstance(error, ssl.SSLError):
            return str(error.reason or error)
    return ""


def wrapped_errors(exc: BaseException | None, limit: int) -> Iterator[BaseException]:
    """`exc`, then the errors it wraps, outermost first, at most `limit`: urllib3's wrappers hold
    the next in `reason` or `args`, Python's chaining in `__cause__`."""
    for _ in range(limit):
        if exc is None:
            return
        yield exc
        inner = getattr(exc, "reason", None)
        exc = inner if isinstance(inner, BaseException) else \
            next((a for a in exc.args if isinstance(a, BaseException)), exc.__cause__)
