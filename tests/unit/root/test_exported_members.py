"""The public API is exactly `__all__` (a guard against accidental removals)."""

import netpol
import netpol.testing


def test_netpol_exports():
    assert sorted(netpol.__all__) == sorted([
        "ClusterNetworkPolicy", "ClusterState", "ContainerPort", "Endpoint", "IPBlock", "InputError", "LabelSelector", "Labels",
        "Namespace", "NetpolError", "NetworkPolicy", "Node", "Peer", "Pod", "PolicyPort", "Probe", "Problem",
        "ReachMap", "Requirement", "Rule", "UsageError", "Verdict", "__version__", "allowed", "compute_reach",
        "default_probes", "load_state", "pods_connect",
    ])
    for name in netpol.__all__:
        assert hasattr(netpol, name), name


def test_testing_exports():
    for name in netpol.testing.__all__:
        assert hasattr(netpol.testing, name), name
    assert {"clusters", "policies", "pods", "namespaces", "assert_agrees", "assert_matrix_agrees",
            "invalid_policy_manifests", "mixed_clusters", "cluster_policies",
            "invalid_cluster_policy_manifests"} <= set(netpol.testing.__all__)
