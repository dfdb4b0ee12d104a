"""A live cluster, read once, as the batch commands' input: `netpol reach|explain|compile|… --kubeconfig
FILE [--context NAME]` (or `--context NAME` alone, or `--in-cluster`) instead of `-f`.

The kinds and versions are the agent's (`netpol.sources.kube.KINDS`: namespaces, nodes, pods,
networkpolicies, ClusterNetworkPolicy at v1beta1 else v1alpha2, the v1alpha1 AdminNetworkPolicy
and BaselineAdminNetworkPolicy), listed the agent's way (`kube.list_objects`: pages of
`PAGE_SIZE`, `limit` + `continue`; a continue token that expired lists that kind from the start
again, at most `EXPIRED_RESTARTS` times). A custom resource no version of which is served (its
CRD is not installed) is read as none, with a note, as the agent takes it — after
`kube.ABSENT_CONFIRMATIONS` rounds of 404s, so that one stray 404 does not lose the policies
that deny. Each kind is one consistent list; two kinds are two lists, as with `kubectl get -A`.

The objects become documents labelled `cluster NAME: pods` (NAME: the context, or `(in-cluster)`)
and take the manifests' route from there (`netpol.load.manifests.decode_parsed`): an invalid
object is reported as it would be in a file, `cluster prod: pods: Pod shop/web: status.podIPs: …`.
Whatever stops the read — a kubeconfig or context that is not there, a server that does not
answer, credentials refused (401), a permission missing (403: the verb and resource the role
lacks) — is a `SourceError` in one line.

The kubeconfig is `--kubeconfig`, else `$KUBECONFIG`, else ~/.kube/config (as kubectl picks it;
a `:`-separated list is merged as kubectl merges it); `--in-cluster` is a pod's service account
(`netpol.sources.in_cluster`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from netpol.errors import ResourceExpired, SourceError
from netpol.load.manifests import Labelled, LoadReport, decode_parsed, state_or_problems
from netpol.model import ClusterState
from netpol.sources.in_cluster import in_cluster_configuration
from netpol.sources.kube import (
    ABSENT_CONFIRMATIONS,
    KINDS,
    ListCall,
    Watched,
    describe_error,
    list_objects,
    new_api_client,
    wrapped_errors,
)

PAGE_SIZE = 500  # objects per list request: kubectl's --chunk-size default
EXPIRED_RESTARTS = 3  # lists of one kind started again after an expired continue token, then give up
REQUEST_TIMEOUT = (10.0, 120.0)  # s to connect, s to read one page
DEFAULT_KUBECONFIG = "~/.kube/config"
BUILT_IN_RESOURCES = {"Namespace": "namespaces", "Node": "nodes", "Pod": "pods",
                      "NetworkPolicy": "networkpolicies"}


@dataclass(frozen=True)
class ClusterOrigin:
    """Where to read a live cluster: a kubeconfig (None: `$KUBECONFIG`, else ~/.kube/config) at
    `context` (None: its current context), or the pod's service account (`in_cluster`)."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False


@dataclass(frozen=True)
class ClusterSnapshot:
    """Every object read, as (label, document) in the agent's kind order, and the custom kinds
    that are not served (kind → the versions tried)."""

    name: str  # `cluster prod`, what every label starts with
    documents: tuple[Labelled, ...]
    not_served: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def notes(self) -> list[str]:
        """What the commands say on stderr: the kinds read as none, and why."""
        if not self.not_served:
            return []
        listed = ", ".join(f"{kind} ({_group_versions(versions)})" for kind, versions in self.not_served)
        return [f"{self.name}: read as none, not served (their CRDs are not installed): {listed}"]

    def state(self) -> tuple[ClusterState, LoadReport]:
        """The state of every object, as `load_state_with_report` gives it for files; raises
        InputError naming every invalid object by its label."""
        report = LoadReport()
        return state_or_problems([decode_parsed(self.documents, skipped=report.skipped_kinds)]), report


def read_snapshot(origin: ClusterOrigin, environ: Mapping[str, str] = os.environ,
                  page_size: int = PAGE_SIZE) -> ClusterSnapshot:
    """Connect as `origin` says and read every kind; SourceError when that cannot be done."""
    api_client, name = connect(origin, environ)
    return read_cluster(api_client, name, page_size)


def connect(origin: ClusterOrigin, environ: Mapping[str, str] = os.environ) -> tuple[client.ApiClient, str]:
    """A client for `origin`, and the cluster's name for messages (`cluster CONTEXT`)."""
    if origin.in_cluster:
        try:
            return client.ApiClient(in_cluster_configuration(environ)), "cluster (in-cluster)"
        except SourceError as exc:
            raise SourceError(f"--in-cluster: {exc}") from None
    paths = origin.kubeconfig or environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    how = "" if origin.kubeconfig else (" (from $KUBECONFIG)" if environ.get("KUBECONFIG")
                                         else " (the default: no --kubeconfig, no $KUBECONFIG)")
    named = f"kubeconfig {paths}{how}"
    context = _context(paths, origin.context, named)
    try:
        return new_api_client(paths, context), f"cluster {context}"
    except Exception as exc:  # the client's ConfigException, YAML and file errors: all "unusable"
        raise SourceError(f"{named}: context {context}: {_config_message(exc)}") from None


def _context(paths: str, wanted: str | None, named: str) -> str:
    """The context to use, checked against the kubeconfig's: `wanted`, else its current one.
    (`named`: the kubeconfig, as messages name it.)"""
    if not any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
        raise SourceError(f"{named}: no such file")
    try:  # the client's own merge of the files (the first definition of a name wins)
        merged = config.kube_config.KubeConfigMerger(paths).config.value
        names = [str(getattr(c, "value", c)["name"]) for c in merged.get("contexts") or ()]
        current = merged.get("current-context")
    except Exception as exc:  # the client's ConfigException, YAML errors, a file that is no mapping
        raise SourceError(f"{named}: {_config_message(exc)}") from None
    have = f"it has {', '.join(names)}" if names else "it has none"
    if wanted is not None and wanted not in names:
        raise SourceError(f"{named}: no context {wanted!r} ({have})")
    if wanted is None and not current:
        raise SourceError(f"{named}: no current-context: name one with --context ({have})")
    if wanted is None and current not in names:
        raise SourceError(f"{named}: its current-context {current!r} is not one of its contexts ({have})")
    return wanted or str(current)


def _config_message(exc: BaseException) -> str:
    """The client's complaint about a kubeconfig, in one line."""
    if isinstance(exc, yaml.YAMLError):
        return f"invalid YAML: {' '.join(str(exc).split())}"
    if isinstance(exc, TypeError | AttributeError | KeyError):  # it walked into a list, a string, …
        return "not a kubeconfig (a mapping of clusters, contexts and users, each a list of named entries)"
    if isinstance(exc, OSError):
        return f"cannot read it: {exc.strerror or exc}"
    message = " ".join(str(exc).split()).removeprefix("Invalid kube-config file. ")
    return message if type(exc).__name__ == "ConfigException" else f"{type(exc).__name__}: {message}"


def _group_versions(versions: tuple[str, ...]) -> str:
    """`policy.networking.k8s.io v1beta1, v1alpha2`."""
    group = versions[0].rpartition("/")[0]
    return f"{group} {', '.join(v.rpartition('/')[2] for v in versions)}"


def read_cluster(api_client: client.ApiClient, name: str, page_size: int = PAGE_SIZE,
                 kinds: tuple[Watched, ...] = KINDS) -> ClusterSnapshot:
    """Every object of every kind (see the module); SourceError naming the kind that failed."""
    documents: list[Labelled] = []
    not_served: list[tuple[str, tuple[str, ...]]] = []
    for kind in kinds:
        try:
            objects = _read_kind(api_client, kind, page_size)
        except (ApiException, HTTPError, OSError, ValueError, SourceError) as exc:
            raise SourceError(f"{name}: {_failure(exc, kind, api_client.configuration)}") from None
        if objects is None:
            not_served.append((kind.kind, kind.versions))
            continue
        label = f"{name}: {resource_name(kind)}"
        documents += [(label, obj) for obj in objects]
    return ClusterSnapshot(name, tuple(documents), tuple(not_served))


def _read_kind(api_client: client.ApiClient, kind: Watched, page_size: int) -> list[dict[str, Any]] | None:
    """The kind's objects at its first version served; None for a custom resource none of whose
    versions is served, `ABSENT_CONFIRMATIONS` rounds in a row (a 404 of a built-in kind is an
    error)."""
    calls: tuple[ListCall, ...] = kind.list_calls(api_client)
    for _ in range(ABSENT_CONFIRMATIONS if kind.custom else 1):
        for call in calls:
            try:
                objects, _version = list_objects(kind, call, page_size, REQUEST_TIMEOUT, EXPIRED_RESTARTS)
            except ApiException as exc:
                if not (kind.custom and exc.status == 404):
                    raise
                continue
            return objects
    return None


def resource_name(kind: Watched) -> str:
    """The resource in URLs and RBAC rules: `pods`, `clusternetworkpolicies`."""
    return kind.plural or BUILT_IN_RESOURCES[kind.kind]


def _group(kind: Watched) -> str:
    version = kind.versions[0] if kind.custom else kind.api_version
    return version.rpartition("/")[0]


def _failure(exc: BaseException, kind: Watched, configuration: client.Configuration) -> str:
    """One line: what could not be done, and the server's or the network's reason."""
    resource = resource_name(kind)
    if isinstance(exc, ApiException) and exc.status == 401:
        return (f"{configuration.host} refused the credentials (401 Unauthorized) listing {resource}: "
                "the token or certificate is expired, revoked or for another cluster")
    if isinstance(exc, ApiException) and exc.status == 403:
        grant = f'list on resource "{resource}" in API group "{_group(kind)}"'
        said = describe_error(exc, configuration).removeprefix("API error ")
        return f"cannot list {resource}: {said} (the role needs {grant})"
    if isinstance(exc, ApiException) and exc.status == 404:
        return (f"{configuration.host} does not serve {resource} at {kind.api_version} (404): "
                "not a Kubernetes API server?")
    if isinstance(exc, ResourceExpired):
        return f"cannot list {resource}: {exc}; try again"
    unreachable = _network_failure(exc)
    if unreachable:
        return f"cannot reach the API server at {configuration.host}: {unreachable}"
    return f"cannot list {resource}: {describe_error(exc, configuration)}"


def _network_failure(exc: BaseException) -> str:
    """Why a connection could not be made (refused, timed out, no such host), when that is what
    `exc` comes down to (urllib3 wraps the socket's error in retries); else ''. A TLS failure is
    `describe_error`'s to tell (it names the CA)."""
    for current in wrapped_errors(exc, 6):
        if isinstance(current, ConnectionError | TimeoutError) or type(current).__name__ in (
                "NewConnectionError", "ConnectTimeoutError", "NameResolutionError"):
            inner = current.__cause__ or current.__context__
            if isinstance(inner, OSError) and inner.strerror:
                return inner.strerror.lower()
            return " ".join(str(current).split()).rpartition(": ")[2] or type(current).__name__
        if isinstance(current, OSError) and current.strerror and not hasattr(current, "reason"):
            return current.strerror.lower()
    return ""
