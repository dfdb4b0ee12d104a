"""ClusterNetworkPolicy input is read as its CRD validates it (schema and CEL rules, experimental
channel), every problem named with the object and the field path and never half-loaded; the
v1alpha1 AdminNetworkPolicy / BaselineAdminNetworkPolicy are converted into it as documented in
`netpol.load.decode.ClusterSchema`; `netpol validate` counts them and warns about equal priorities."""

from __future__ import annotations

import copy
import ipaddress
import json
import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import given

from netpol.errors import InputError
from netpol.labels import Requirement
from netpol.load.decode import BANP_PRIORITY, decode_document
from netpol.load.encode import encode_cluster_network_policy, encode_state
from netpol.load.manifests import load_text
from netpol.model import ClusterPeer, ClusterRule, DestinationNamedPort, DestinationPorts, NamespacedPods
from netpol.testing import (
    cluster_policy_manifests,
    decode_cluster_policy_manifest,
    invalid_cluster_policy_manifests,
    mixed_clusters,
)
from tests.conftest import WORLD_OBJECTS, WORLD_PODS, run_cli

CNP = """
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {podSelector: {matchLabels: {app: web}}}}
  ingress:
  - name: deny-from-b
    action: Deny
    from: [{namespaces: {matchExpressions: [{key: team, operator: In, values: [y, z]}]}}]
    protocols:
    - tcp: {destinationPort: {number: 80}}
    - udp: {destinationPort: {range: {start: 5000, end: 6000}}}
    - destinationNamedPort: http
  egress:
  - action: Pass
    to: [{networks: [10.0.0.0/8, "fd00::/64"]}, {nodes: {matchLabels: {kubernetes.io/hostname: node-a}}}]
  - action: Accept
    to: [{pods: {namespaceSelector: {matchLabels: {team: x}}, podSelector: {}}}]
"""


def one(text: str, version: str = "v1beta1") -> Any:
    state = load_text(textwrap.dedent(text).replace("policy.networking.k8s.io/v1beta1",
                                                    f"policy.networking.k8s.io/{version}"))
    (policy,) = state.cluster_policies
    return policy


def problems_of(manifest: dict[str, Any]) -> list[str]:
    objects, problems = decode_document(manifest, "in.yaml")
    assert not objects, "an invalid cluster policy must not be loaded (fail closed)"
    return [str(p) for p in problems]


def test_every_field_lands_in_the_model():
    policy = one(CNP)
    assert (policy.name, policy.tier, policy.priority, policy.kind) == ("guard", "Admin", 10, "ClusterNetworkPolicy")
    assert policy.subject.pods == NamespacedPods(pod_selector=policy.subject.pods.pod_selector)
    deny, = policy.ingress
    assert (deny.name, deny.action) == ("deny-from-b", "Deny")
    assert deny.protocols == (DestinationPorts("TCP", 80, 80), DestinationPorts("UDP", 5000, 6000),
                              DestinationNamedPort("http"))
    pass_, accept = policy.egress
    assert pass_.peers[0].networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/64"))
    assert pass_.peers[1].nodes is not None and accept.action == "Accept" and accept.protocols == ()


def test_pitfall_match_expressions_values_are_kept():
    (peer,) = one(CNP).ingress[0].peers
    assert peer.namespaces.match_expressions == (Requirement("team", "In", ("y", "z")),)


def test_v1alpha2_is_read_with_the_same_schema():
    assert one(CNP, "v1alpha2") == one(CNP)
    problems = problems_of({**one_manifest(), "apiVersion": "policy.networking.k8s.io/v1alpha1"})
    assert problems == ["in.yaml: ClusterNetworkPolicy guard: apiVersion: 'policy.networking.k8s.io/v1alpha1': "
                        "ClusterNetworkPolicy must be policy.networking.k8s.io/v1beta1 or "
                        "policy.networking.k8s.io/v1alpha2"]


def one_manifest() -> dict[str, Any]:
    return yaml.safe_load(CNP)


@given(invalid_cluster_policy_manifests())
def test_each_planted_defect_is_reported_at_its_field_and_nothing_is_loaded(case):
    manifest, path = case
    objects, problems = decode_document(manifest, "gen.yaml")
    assert not objects
    assert any(p.path == path for p in problems), [str(p) for p in problems]
    assert all(p.obj == f"ClusterNetworkPolicy {manifest['metadata']['name']}" for p in problems
               if p.path != "metadata.name")


@given(cluster_policy_manifests())
def test_generated_policies_round_trip_through_the_model(manifest):
    policy = decode_cluster_policy_manifest(manifest)
    assert decode_cluster_policy_manifest(encode_cluster_network_policy(policy)) == policy


def test_domain_names_are_refused_naming_the_field():
    manifest = one_manifest()
    manifest["spec"]["egress"] = [{"action": "Accept", "to": [{"domainNames": ["*.example.com"]}]}]
    (problem,) = problems_of(manifest)
    assert problem.startswith("in.yaml: ClusterNetworkPolicy guard: spec.egress[0].to[0].domainNames: "
                              "not supported: netpol has no DNS-aware enforcement")


@pytest.mark.parametrize("peer", [{}, None, {"namespaces": None}, {"fqdn": "example.com"}])
def test_pitfall_a_peer_with_no_field_we_recognise_is_refused_at_load(peer):
    """Upstream: "if an implementation sees no fields are set … it should fail closed". We decide
    at load: the input is refused (the agent, later, fails closed for the policy's subjects), so
    no evaluator ever guesses what such a peer means."""
    manifest = one_manifest()
    manifest["spec"]["ingress"][0]["from"] = [peer]
    problems = problems_of(manifest)
    assert any("spec.ingress[0].from[0]" in p for p in problems), problems


def test_every_problem_of_the_object_is_reported_at_once():
    manifest = one_manifest()
    manifest["spec"]["priority"] = 2000
    manifest["spec"]["ingress"][0]["protocols"][1] = {"udp": {"destinationPort": {"range": {"start": 7, "end": 7}}}}
    manifest["spec"]["egress"][0]["to"][0]["networks"][0] = "10.1.0.0/8"
    assert problems_of(manifest) == [
        "in.yaml: ClusterNetworkPolicy guard: spec.priority: 2000: must be between 0 and 1000, inclusive",
        "in.yaml: ClusterNetworkPolicy guard: spec.ingress[0].protocols[1].udp.destinationPort.range: 7-7: "
        "Start port must be less than End port",
        "in.yaml: ClusterNetworkPolicy guard: spec.egress[0].to[0].networks[0]: '10.1.0.0/8': host bits set: "
        "the network is 10.0.0.0/8 (Invalid CIDR format provided)",
    ]


# -- v1alpha1, converted ----------------------------------------------------------------------------

ANP = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard}
spec:
  priority: 7
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}
  ingress:
  - {name: allow-b, action: Allow, from: [{namespaces: {matchLabels: {team: y}}}],
     ports: [{portNumber: {port: 80}}, {portRange: {protocol: UDP, start: 53, end: 53}},
             {portRange: {protocol: SCTP, start: 9000, end: 9100}}, {namedPort: http}]}
  - {action: Pass, from: [{pods: {namespaceSelector: {}, podSelector: {}}}]}
  egress:
  - {action: Deny, to: [{networks: [10.0.0.1/8]}]}
"""
BANP = """
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
"""


def test_an_admin_network_policy_becomes_an_admin_tier_cluster_policy():
    policy = one(ANP)
    assert (policy.kind, policy.tier, policy.priority, policy.ref) == (
        "AdminNetworkPolicy", "Admin", 7, "AdminNetworkPolicy guard")
    allow, pass_ = policy.ingress
    assert (allow.action, pass_.action) == ("Accept", "Pass")
    assert allow.protocols == (DestinationPorts("TCP", 80, 80), DestinationPorts("UDP", 53, 53),
                               DestinationPorts("SCTP", 9000, 9100), DestinationNamedPort("http"))
    assert policy.egress[0].peers[0].networks == (ipaddress.ip_network("10.0.0.0/8"),)  # host bits allowed


def test_a_baseline_admin_network_policy_is_the_last_of_the_baseline_tier():
    policy = one(BANP)
    assert (policy.kind, policy.tier, policy.priority) == ("BaselineAdminNetworkPolicy", "Baseline", BANP_PRIORITY)
    assert BANP_PRIORITY == 1000


@pytest.mark.parametrize(("text", "edit", "expected"), [
    (BANP, lambda m: m["metadata"].update(name="other"),
     "metadata.name: 'other': Only one baseline admin network policy with metadata.name=\"default\""),
    (BANP, lambda m: m["spec"]["ingress"][0].update(action="Pass"), "spec.ingress[0].action: 'Pass'"),
    (BANP, lambda m: m["spec"].update(priority=3), "spec.priority: unknown field"),
    (ANP, lambda m: m["spec"]["ingress"][0].update(action="Accept"), "spec.ingress[0].action: 'Accept'"),
    (ANP, lambda m: m["spec"]["ingress"][0]["ports"][1]["portRange"].update(start=60),
     "spec.ingress[0].ports[1].portRange: 60-53: Start port must be less than End port"),
    (ANP, lambda m: m["spec"]["ingress"][1]["from"][0]["pods"].pop("namespaceSelector"),
     "spec.ingress[1].from[0].pods.namespaceSelector: Required value"),
    (ANP, lambda m: m["spec"]["ingress"][0]["ports"][0]["portNumber"].update(protocol="ICMP"),
     "spec.ingress[0].ports[0].portNumber.protocol: 'ICMP'"),
    (ANP, lambda m: m["spec"]["egress"][0].update(ports=[{"namedPort": "http"}]),
     "spec.egress[0].ports[0]: a named port cannot go with the networks/nodes peer"),
    (ANP, lambda m: m["spec"]["egress"][0].update(to=[{"domainNames": ["example.com"]}]),
     "spec.egress[0].to[0].domainNames: not supported"),
    (ANP, lambda m: m["spec"]["ingress"].extend([m["spec"]["ingress"][1]] * 99), "spec.ingress: Too many: 101"),
])
def test_v1alpha1_is_validated_as_its_own_crds_validate_it(text, edit, expected):
    manifest = yaml.safe_load(text)
    edit(manifest)
    problems = problems_of(manifest)
    kind = manifest["kind"]
    assert any(expected in p and f"{kind} {manifest['metadata']['name']}" in p for p in problems), problems


def test_the_v1alpha1_limits_are_their_own():
    manifest = yaml.safe_load(ANP)
    manifest["spec"]["ingress"] *= 20  # 40 rules: too many for v1beta1, fine for v1alpha1
    assert decode_document(manifest, "in.yaml")[1] == []


def test_a_cluster_policy_and_a_converted_one_of_the_same_name_are_two_objects():
    state = load_text(CNP + "---" + ANP)
    assert [p.ref for p in state.cluster_policies] == ["AdminNetworkPolicy guard", "ClusterNetworkPolicy guard"]


def test_the_same_cluster_policy_twice_is_a_duplicate():
    with pytest.raises(InputError, match="ClusterNetworkPolicy guard: metadata.name: Duplicate value"):
        load_text(CNP + "---" + CNP)


# -- the command line -------------------------------------------------------------------------------

def write(tmp_path, *documents: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text(WORLD_OBJECTS + WORLD_PODS + "".join(f"---\n{textwrap.dedent(d)}" for d in documents))
    return str(path)


def with_priority(text: str, name: str, priority: int, tier: str = "Admin") -> str:
    return (text.replace("name: guard", f"name: {name}").replace("priority: 10", f"priority: {priority}")
            .replace("tier: Admin", f"tier: {tier}"))


def test_validate_counts_cluster_policies_per_tier(tmp_path):
    code, out, err = run_cli("validate", "-f", write(tmp_path, CNP, ANP.replace("guard", "old"), BANP))
    assert code == 0, err
    assert out == ("ok: 2 namespaces, 4 pods, 2 nodes, 0 network policies, 3 cluster network policies "
                   "(2 Admin, 1 Baseline; 2 converted from v1alpha1)\n")
    assert "warning" not in err


def test_validate_warns_about_equal_priorities_within_a_tier_and_says_the_order(tmp_path):
    path = write(tmp_path, with_priority(CNP, "zeta", 5), with_priority(CNP, "alpha", 5),
                 with_priority(CNP, "base", 5, "Baseline"), with_priority(CNP, "other", 6))
    code, _, err = run_cli("validate", "-f", path)
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("netpol: warning:")]
    assert warnings == [
        "netpol: warning: Admin tier, priority 5: ClusterNetworkPolicy alpha, ClusterNetworkPolicy zeta share "
        "a priority; the API leaves their order undefined, netpol evaluates them by name in this order "
        "(2 pods of the input are subject to more than one of them)"]


def test_invalid_cluster_policies_are_reported_without_a_traceback(tmp_path):
    bad = CNP.replace("priority: 10", "priority: ten").replace("action: Pass", "action: Skip")
    code, out, err = run_cli("validate", "-f", write(tmp_path, bad))
    assert code == 1 and not out
    assert "netpol: invalid input (2 problems):" in err and "Traceback" not in err
    assert "(document 9): ClusterNetworkPolicy guard: spec.priority: must be an integer, got string" in err
    assert "ClusterNetworkPolicy guard: spec.egress[0].action: 'Skip': supported values: Accept, Deny, Pass" in err


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_compile_enforces_cluster_policies_in_every_way_it_runs(tmp_path, jobs):
    """Once silently skipped (then refused): now compiled into the tiered chains, the same
    whether one process or several print the nodes."""
    path = write(tmp_path, CNP)
    code, one_node, err = run_cli("compile", "--node", "node-a", "-f", path)
    assert code == 0 and not err
    assert "Admin tier: ClusterNetworkPolicy guard (priority 10) spec.egress[0]: Pass" in one_node
    assert "goto " in one_node and "hook input" in one_node and "hook output" in one_node
    out = tmp_path / "out"
    code, _, err = run_cli("compile", "--all-nodes", "--out-dir", str(out), "--jobs", jobs, "-f", path)
    assert code == 0, err
    assert (out / "node-a.nft").read_text() == one_node


def test_the_model_spells_a_peer_with_no_field_as_unrecognised():
    assert not ClusterPeer().recognised
    assert ClusterRule("Pass", (ClusterPeer(),)).fails_closed
    assert not ClusterRule("Accept", (ClusterPeer(),)).fails_closed
    assert copy.deepcopy(one(CNP)) == one(CNP)


def test_reach_and_explain_take_cluster_policies_into_account(tmp_path):
    path = write(tmp_path, CNP)
    code, out, err = run_cli("reach", "-f", path, "--port", "80/TCP", "-o", "json")
    assert code == 0, err
    matrix = json.loads(out)["probes"][0]["matrix"]
    assert matrix["b/client"]["a/web"] is False and matrix["a/db"]["a/web"] is True
    code, out, _ = run_cli("explain", "-f", path, "--from", "b/client", "--to", "a/web", "--port", "80/TCP")
    assert code == 0
    assert "decided by the Admin tier: ClusterNetworkPolicy guard (priority 10) spec.ingress[0] (deny-from-b): Deny" in out


@given(mixed_clusters())
def test_load_of_dump_is_identity_with_cluster_policies(state):
    assert load_text(yaml.safe_dump(encode_state(state))) == state
