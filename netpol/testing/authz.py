"""RBAC as the API server decides it, for `FakeApiServer`: a request's attributes (verb, API
group, resource, namespace, name) read off its method, path and query as apiserver's
`RequestInfoFactory` does, matched against ClusterRole rules as `rbac.RuleAllows` does, and the
403 `Status` the real server answers when nothing matches.

Modelled: ClusterRoles bound cluster-wide (a ClusterRoleBinding), resource and non-resource
rules, `*` wildcards, `resourceNames`, subresources (`pods/log`, `*/status`), a list narrowed to
one object by `fieldSelector=metadata.name=…`, and the roles every authenticated user is bound
to by default (system:discovery, system:public-info-viewer, system:basic-user). Not modelled:
Roles and RoleBindings (namespaced grants), aggregated ClusterRoles, groups, impersonation,
and the other authorizers (Node, webhook, ABAC).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

Rule = Mapping[str, Sequence[str]]

# Bound to system:authenticated in every cluster (the bootstrap policy's defaults).
DEFAULT_RULES: tuple[Rule, ...] = (
    {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                           "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]},
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
     "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
)
METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete"}
PATH_VERBS = ("proxy", "watch")  # the deprecated /api/v1/watch/pods form
NAMESPACE_SUBRESOURCES = ("status", "finalize")
TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool


@dataclass(frozen=True)
class RequestAttributes:
    """What the authorizer sees; `resource` is "" for a non-resource request (`/version`)."""

    verb: str
    path: str
    resource: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


def request_attributes(method: str, path: str, query: str = "") -> RequestAttributes:
    """The attributes of `method path?query`, as apiserver's RequestInfoFactory reads them: GET
    of a collection is `list` (or `watch` with watch=true), GET of a named object is `get`."""
    parts = [p for p in path.split("/") if p]
    verb = METHOD_VERBS.get(method.upper(), method.lower())
    non_resource = RequestAttributes(method.lower(), path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    group = ""
    rest = parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    by_path = rest[0] in PATH_VERBS
    if by_path:
        if len(rest) < 2:
            return non_resource
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 and not by_path else ""
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    if not name and verb == "get":
        verb = "watch" if options.get("watch") in TRUE else "list"
        selected = options.get("fieldSelector", "").split(",")
        name = next((s.split("=", 1)[1].lstrip("=") for s in selected
                     if s.startswith("metadata.name=") and "/" not in s), "")
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestAttributes(verb, path, resource, group, version, namespace, name, subresource)


def rule_allows(rule: Rule, attributes: RequestAttributes) -> bool:
    """Whether one PolicyRule grants the request (rbac/validation RuleAllows)."""
    if not _has(rule.get("verbs"), attributes.verb):
        return False
    if not attributes.is_resource_request:
        path = attributes.path
        return any(url in ("*", path) or (url.endswith("*") and path.startswith(url[:-1]))
                   for url in rule.get("nonResourceURLs") or ())
    combined = attributes.resource + (f"/{attributes.subresource}" if attributes.subresource else "")
    resources = rule.get("resources") or ()
    return (_has(rule.get("apiGroups"), attributes.api_group)
            and (_has(resources, combined)
                 or (bool(attributes.subresource) and f"*/{attributes.subresource}" in resources))
            and (not rule.get("resourceNames") or attributes.name in (rule.get("resourceNames") or ())))


def _has(values: Sequence[str] | None, value: str) -> bool:
    return bool(values) and ("*" in values or value in values)  # type: ignore[operator]


def forbidden_status(user: str, attributes: RequestAttributes) -> dict[str, Any]:
    """The 403 body, word for word as apiserver writes it (responsewriters.Forbidden)."""
    what = attributes.resource + (f"/{attributes.subresource}" if attributes.subresource else "")
    if not attributes.is_resource_request:
        reason = f"User {_quote(user)} cannot {attributes.verb} path {_quote(attributes.path)}"
    elif attributes.namespace:
        reason = (f"User {_quote(user)} cannot {attributes.verb} resource {_quote(what)} in API group "
                  f"{_quote(attributes.api_group)} in the namespace {_quote(attributes.namespace)}")
    else:
        reason = (f"User {_quote(user)} cannot {attributes.verb} resource {_quote(what)} in API group "
                  f"{_quote(attributes.api_group)} at the cluster scope")
    resource = attributes.resource + (f".{attributes.api_group}" if attributes.api_group else "")
    if not resource:
        message = f"forbidden: {reason}"
    elif attributes.name:
        message = f"{resource} {_quote(attributes.name)} is forbidden: {reason}"
    else:
        message = f"{resource} is forbidden: {reason}"
    details = {k: v for k, v in (("name", attributes.name), ("group", attributes.api_group),
                                 ("kind", attributes.resource)) if v}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": details, "code": 403}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'  # Go's %q, for what URLs hold


def bound_cluster_role_rules(objects: Iterable[Mapping[str, Any]], user: str) -> list[dict[str, Any]]:
    """The rules of every ClusterRole that a ClusterRoleBinding among `objects` (a rendered
    install bundle) binds to `user` ("system:serviceaccount:NS:NAME")."""
    objects = list(objects)
    roles = {o["metadata"]["name"]: o.get("rules") or [] for o in objects if o.get("kind") == "ClusterRole"}
    rules: list[dict[str, Any]] = []
    for binding in (o for o in objects if o.get("kind") == "ClusterRoleBinding"):
        if binding["roleRef"].get("kind") == "ClusterRole" and any(
                _subject_user(s) == user for s in binding.get("subjects") or ()):
            rules += roles.get(binding["roleRef"]["name"], [])
    return rules


def _subject_user(subject: Mapping[str, Any]) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f"system:serviceaccount:{subject.get('namespace', '')}:{subject.get('name', '')}"
    return str(subject.get("name", "")) if subject.get("kind") == "User" else ""
