"""What the agent reads, and so all its ClusterRole grants: get, list and watch on the kinds it
enforces from — namespaces, nodes, pods, networkpolicies, and the cluster policies of
kubernetes-sigs/network-policy-api (ClusterNetworkPolicy; the v1alpha1 AdminNetworkPolicy and
BaselineAdminNetworkPolicy) — and `get` of its own Node for the CNI install. Nothing else — no
writes, no secrets, no events, not even the CustomResourceDefinitions (a CRD not installed is
a 404 for its resource, which is all the agent needs to know). One place: the manifests render
it, and the test API server enforces the rendered ClusterRole against the agent's real requests.

The batch commands reading a live cluster (`netpol reach --kubeconfig …`) list the same kinds once
and need only `list` (`audit_role_rules`, the ClusterRole README "Reading a live cluster" shows;
the snapshot tests read through exactly it)."""

from __future__ import annotations

READ = ("get", "list", "watch")
AUDIT_READ = ("list",)

# (API group, resources) — "" is the core group.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("namespaces", "nodes", "pods")),
    ("networking.k8s.io", ("networkpolicies",)),
    ("policy.networking.k8s.io",
     ("clusternetworkpolicies", "adminnetworkpolicies", "baselineadminnetworkpolicies")),
)


def cluster_role_rules() -> list[dict[str, list[str]]]:
    """The ClusterRole's `rules`, as the API takes them."""
    return [{"apiGroups": [group], "resources": list(resources), "verbs": list(READ)}
            for group, resources in RULES]


def audit_role_rules() -> list[dict[str, list[str]]]:
    """The rules an auditor's ClusterRole needs for `--kubeconfig`/`--in-cluster`: list, nothing else."""
    return [{"apiGroups": [group], "resources": list(resources), "verbs": list(AUDIT_READ)}
            for group, resources in RULES]
