"""Public test doubles and oracles (not a runtime stage): Hypothesis strategies for Kubernetes
network-policy objects and whole clusters, an oracle that checks any implementation against
`netpol.semantics`, tracers that compute a data plane's decision from what we emit, and an
in-process Kubernetes API server.

Modules:
    strategies  Hypothesis strategies: selectors, namespaces, pods, policies and
                ClusterNetworkPolicies (as manifests, every spelling), whole clusters (with
                `mixed_clusters`, both tiers among the NetworkPolicies), invalid manifests with the
                field their error names
    oracle      assert_agrees / find_disagreements / assert_matrix_agrees, cell by cell
    trace       a packet through compiled node programs (the IR)
    nft_trace   a packet through the emitted libnftables JSON, as the kernel walks the table
    apiserver   FakeApiServer: the real list/watch protocol over real HTTP or HTTPS, with
                rotating bearer tokens, RBAC enforced and the cluster policies' CRDs served at
                the versions a test chooses, or not installed (fidelity in its docstring), for
                the agent's and the kube source's tests and the demo
    authz       RBAC as the API server decides it: request attributes, rule matching, the 403
    pki         a throwaway CA and a serving certificate with the SANs a test needs (openssl)
    projected   a projected service-account volume, replaced atomically as the kubelet does

Control flow: a test draws a cluster from `strategies`, runs the implementation under test, and
asks `oracle` (or a tracer) whether every cell matches `netpol.semantics.reference`.

Example — check your own engine (here a toy that allows everything) on 200 random clusters::

    from hypothesis import given, settings
    from netpol.testing import assert_agrees, clusters

    def my_engine(state, src_pod, dst_pod, probe):   # -> bool: may src connect to dst?
        return True

    @settings(max_examples=200)
    @given(clusters())
    def test_my_engine_agrees(state):
        assert_agrees(state, my_engine)   # AssertionError explains the first disagreements

A tool that prints a matrix can be checked with `assert_matrix_agrees(state, reach_json)`,
where `reach_json` has the `netpol reach -o json` shape.
"""

from netpol.testing.oracle import (
    Disagreement,
    Implementation,
    assert_agrees,
    assert_matrix_agrees,
    find_disagreements,
)
from netpol.testing.strategies import (
    cluster_policies,
    cluster_policy_manifests,
    clusters,
    container_ports,
    decode_cluster_policy_manifest,
    decode_policy_manifest,
    invalid_cluster_policy_manifests,
    invalid_manifests,
    invalid_policy_manifests,
    ip_block_manifests,
    label_selector_manifests,
    labels,
    mixed_clusters,
    namespaces,
    nodes,
    peer_manifests,
    pods,
    policies,
    policy_manifests,
    port_manifests,
    rule_manifests,
)

__all__ = [
    "Disagreement",
    "Implementation",
    "assert_agrees",
    "assert_matrix_agrees",
    "cluster_policies",
    "cluster_policy_manifests",
    "clusters",
    "container_ports",
    "decode_cluster_policy_manifest",
    "decode_policy_manifest",
    "find_disagreements",
    "invalid_cluster_policy_manifests",
    "invalid_manifests",
    "invalid_policy_manifests",
    "ip_block_manifests",
    "label_selector_manifests",
    "labels",
    "mixed_clusters",
    "namespaces",
    "nodes",
    "peer_manifests",
    "pods",
    "policies",
    "policy_manifests",
    "port_manifests",
    "rule_manifests",
]
