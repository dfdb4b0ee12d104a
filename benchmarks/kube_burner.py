"""Deterministic synthetic clusters shaped like kube-burner's "network-policy" scale workload.

Namespaces of 25–50 pods in deployments (kube-burner's `num` label per pod, a named `metrics` port
whose number differs per deployment), pods round-robin over nodes with one podCIDR each,
kube-system/kube-dns and monitoring/prometheus, and per namespace: default-deny, DNS egress, then
a rotation of same-namespace, monitoring-on-named-port, ipBlock-with-except, matchExpressions,
kube-burner's cross-namespace ingress/egress (`kubernetes.io/metadata.name In`, `num In`, port
ranges, ipBlock rules) and cross-namespace team allows, until the requested policy count. With
`--cluster-policies N`, also N ClusterNetworkPolicies: an operator's Admin and Baseline guardrails
over tenant groups of namespaces (the mix: "cluster network policies" below).

    python benchmarks/kube_burner.py --pods 10000 [--policies 1000] [--nodes 40] [--cluster-policies 100] -o cluster.json [--yaml cluster.yaml]

Writes one `kubectl get -o json`-style `v1/List`; `--yaml` also writes multi-document YAML.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

TIERS = ("web", "api", "db", "cache", "worker")
TEAMS = ("payments", "search", "identity", "catalog", "ads", "infra")
ENVS = ("prod", "prod", "staging", "dev")
NS_PREFIX = "network-policy-perf"
JOB_LABELS = {"kube-burner-job": NS_PREFIX, "kube-burner-index": "1"}  # on every workload pod
POD_NETWORK = ipaddress.IPv4Network("10.128.0.0/9")  # node podCIDRs are carved from here
NODE_NETWORK_BASE = int(ipaddress.IPv4Address("172.20.0.10"))  # nodes' InternalIPs
POD_PREFIX_MAX = 24  # a node gets at least a /24 (254 addresses), as kube-controller-manager's default
DNS_RULE: Manifest = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
PROMETHEUS = {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
LOCAL_PODS, PEER_PODS, PEER_NAMESPACES = 5, 5, 3  # kube-burner's LOCAL_PODS, REMOTE_PODS, REMOTE_NAMESPACES


@dataclass(frozen=True)
class Shape:
    """How big: pods in total (system pods included), policies in total, nodes."""

    pods: int
    policies: int
    nodes: int
    seed: int = 1
    cluster_policies: int = 0  # ClusterNetworkPolicies (`cluster_policies`), none by default

    @classmethod
    def of(cls, pods: int, policies: int | None = None, nodes: int | None = None, seed: int = 1,
           cluster_policies: int = 0) -> Shape:
        """Defaults: a tenth as many policies as pods, 250 pods per node (the issue's targets)."""
        return cls(pods, pods // 10 if policies is None else policies,
                   max(1, math.ceil(pods / 250)) if nodes is None else nodes, seed, cluster_policies)

    @property
    def name(self) -> str:
        extra = f"-{self.cluster_policies}c" if self.cluster_policies else ""
        return f"kube-burner-{self.pods}p-{self.policies}q-{self.nodes}n{extra}-s{self.seed}"


@dataclass
class Deployment:
    app: str
    tier: str
    metrics_port: int
    canary: bool
    replicas: int


@dataclass
class NamespacePlan:
    name: str
    index: int
    team: str
    env: str
    size: int
    deployments: list[Deployment] = field(default_factory=list)


# -- nodes and addresses ---------------------------------------------------------------------


class Addresses:
    """Per-node podCIDRs from POD_NETWORK, and the next free pod address of each node."""

    def __init__(self, nodes: int, pods_per_node: int) -> None:
        host_bits = max(32 - POD_PREFIX_MAX, math.ceil(math.log2(pods_per_node + 3)))
        if nodes << host_bits > POD_NETWORK.num_addresses:
            raise ValueError(f"{nodes} nodes of /{32 - host_bits} do not fit in {POD_NETWORK}")
        self.prefix, self.size = 32 - host_bits, 1 << host_bits
        self.names = [f"worker-{n:0{len(str(nodes - 1))}d}" for n in range(nodes)]
        self.next_host = [2] * nodes  # .0 is the network, .1 the bridge gateway

    def cidr(self, node: int) -> ipaddress.IPv4Network:
        base = int(POD_NETWORK.network_address) + node * self.size
        return ipaddress.IPv4Network((base, self.prefix))

    def node_ip(self, node: int) -> str:
        return str(ipaddress.IPv4Address(NODE_NETWORK_BASE + node))

    def allocate(self, node: int) -> str:
        host = self.next_host[node]
        if host >= self.size - 1:
            raise ValueError(f"node {self.names[node]} is full ({self.size - 3} pods)")
        self.next_host[node] += 1
        return str(ipaddress.IPv4Address(int(self.cidr(node).network_address) + host))


def node_manifest(addresses: Addresses, node: int) -> Manifest:
    name, cidr = addresses.names[node], str(addresses.cidr(node))
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                  "node-role.kubernetes.io/worker": ""}},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": addresses.node_ip(node)},
                {"type": "Hostname", "address": name}]}}


# -- namespaces and pods ---------------------------------------------------------------------


def namespace_manifest(name: str, labels: dict[str, str]) -> Manifest:
    # kubectl shows the label the API server sets (KEP-2161); netpol adds it when it is absent.
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def pod_manifest(namespace: str, name: str, labels: dict[str, str], node: str, host_ip: str, ip: str,
                 ports: list[Manifest]) -> Manifest:
    """A pod as `kubectl get -o json` prints it, less managedFields and most of status."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "restartPolicy": "Always", "containers": [
                {"name": "webserver", "image": "quay.io/cloud-bulldozer/sampleapp:latest",
                 "imagePullPolicy": "IfNotPresent", "ports": ports,
                 "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}},
                {"name": "curlapp", "image": "quay.io/cloud-bulldozer/netpolvalidator:latest",
                 "imagePullPolicy": "IfNotPresent", "ports": [{"containerPort": 9001, "protocol": "TCP"}],
                 "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]},
            "status": {"phase": "Running", "hostIP": host_ip, "podIP": ip, "podIPs": [{"ip": ip}],
                       "qosClass": "Burstable"}}


def workload_ports(deployment: Deployment) -> list[Manifest]:
    return [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "metrics", "containerPort": deployment.metrics_port, "protocol": "TCP"}]


def workload_labels(deployment: Deployment, num: int) -> dict[str, str]:
    labels = {"app": deployment.app, "tier": deployment.tier, "num": str(num), **JOB_LABELS,
              "version": "v2" if deployment.canary else "v1"}
    if deployment.canary:
        labels["track"] = "canary"
    return labels


def plan_namespaces(rng: random.Random, workload_pods: int) -> list[NamespacePlan]:
    """Namespaces of 25–50 pods (the last takes the rest), each split into deployments."""
    plans: list[NamespacePlan] = []
    left, deployments = workload_pods, 0
    while left > 0:
        i = len(plans)
        size = min(left, rng.randint(25, 50))
        plan = NamespacePlan(f"{NS_PREFIX}-{i}", i, TEAMS[i % len(TEAMS)], ENVS[i % len(ENVS)], size)
        placed = 0
        while placed < size:
            replicas = min(size - placed, rng.randint(2, 8))
            tier = TIERS[deployments % len(TIERS)]
            plan.deployments.append(Deployment(f"{tier}-{len(plan.deployments)}", tier,
                                               9100 + deployments % 400, deployments % 7 == 0, replicas))
            placed += replicas
            deployments += 1
        plans.append(plan)
        left -= size
    return plans


def system_pods(shape: Shape) -> list[tuple[str, str, dict[str, str], list[Manifest]]]:
    """(namespace, name, labels, ports): CoreDNS (more replicas in bigger clusters), Prometheus."""
    dns_ports = [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                 {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                 {"name": "metrics", "containerPort": 9153, "protocol": "TCP"}]
    found = [("kube-system", f"coredns-{i}", {"k8s-app": "kube-dns"}, dns_ports)
             for i in range(max(2, shape.pods // 5000))]
    found += [("monitoring", f"prometheus-k8s-{i}",
               {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/component": "server"},
               [{"name": "web", "containerPort": 9090, "protocol": "TCP"}]) for i in range(2)]
    return found[:shape.pods]


def all_pods(shape: Shape, plans: list[NamespacePlan], addresses: Addresses) -> list[Manifest]:
    """System pods first, then every namespace's deployments; pod i runs on node i mod N."""
    out: list[Manifest] = []

    def place(namespace: str, name: str, labels: dict[str, str], ports: list[Manifest]) -> None:
        node = len(out) % shape.nodes
        out.append(pod_manifest(namespace, name, labels, addresses.names[node], addresses.node_ip(node),
                                addresses.allocate(node), ports))

    for namespace, name, labels, ports in system_pods(shape):
        place(namespace, name, labels, ports)
    for plan in plans:
        num = 0
        for deployment in plan.deployments:
            for r in range(deployment.replicas):
                num += 1
                place(plan.name, f"{deployment.app}-{r}", workload_labels(deployment, num),
                      workload_ports(deployment))
    return out


# -- policies --------------------------------------------------------------------------------


def policy_manifest(namespace: str, name: str, spec: Manifest) -> Manifest:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def peer_namespaces(index: int, replica: int, namespaces: int) -> list[str]:
    start = index + 1 + replica * PEER_NAMESPACES
    return sorted({f"{NS_PREFIX}-{(start + j) % namespaces}" for j in range(PEER_NAMESPACES)})


def nums(start: int, count: int) -> list[str]:
    """kube-burner's `num` values: 1..25 (every namespace has at least 25 pods but the last)."""
    return [str((start + j) % 25 + 1) for j in range(count)]


def kube_burner_subnet(index: int) -> tuple[str, list[str]]:
    """A /16 outside the cluster and two /24 excepts (kube-burner's GetSubnet16 / GetSubnet24)."""
    a, b = 11 + (index // 256) % 100, index % 256
    return f"{a}.{b}.0.0/16", [f"{a}.{b}.{j}.0/24" for j in range(2)]


def kube_burner_rule(peer_field: str, plan: NamespacePlan, replica: int, namespaces: int) -> list[Manifest]:
    """kube-burner's ingress-np/egress-np rules: pods by `num` in named namespaces, then an ipBlock."""
    ports = [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 5000, "endPort": 5005}]
    cidr, excepts = kube_burner_subnet(plan.index * 16 + replica)
    return [
        {peer_field: [{"namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In",
             "values": peer_namespaces(plan.index, replica, namespaces)}]},
            "podSelector": {"matchExpressions": [
                {"key": "num", "operator": "In", "values": nums(replica * PEER_PODS, PEER_PODS)}]}}],
         "ports": ports},
        {peer_field: [{"ipBlock": {"cidr": cidr, "except": excepts}}],
         "ports": [{"protocol": "TCP", "port": 1001}, {"protocol": "TCP", "port": 5000, "endPort": 5005}]},
    ]


def kube_burner_policy(direction: str, plan: NamespacePlan, replica: int, namespaces: int,
                       name: str | None = None) -> Manifest:
    """One replica of kube-burner's ingress-np.yml / egress-np.yml for this namespace."""
    peer_field, rules_field = ("from", "ingress") if direction == "ingress" else ("to", "egress")
    spec = {"podSelector": {"matchExpressions": [
                {"key": "num", "operator": "In", "values": nums(replica * LOCAL_PODS, LOCAL_PODS)}]},
            rules_field: kube_burner_rule(peer_field, plan, replica, namespaces),
            "policyTypes": [rules_field.capitalize()]}
    return policy_manifest(plan.name, name or f"{direction}-{replica}", spec)


PolicyMaker = Callable[[NamespacePlan, int, Addresses, int], Manifest]


def same_namespace(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    return policy_manifest(plan.name, "allow-same-namespace", {
        "podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}],
        "egress": [{"to": [{"podSelector": {}}]}], "policyTypes": ["Ingress", "Egress"]})


def monitoring(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    """Prometheus scrapes every pod on its own `metrics` port (a different number per deployment)."""
    return policy_manifest(plan.name, "allow-monitoring", {
        "podSelector": {}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                               "podSelector": PROMETHEUS}],
                     "ports": [{"protocol": "TCP", "port": "metrics"}]}]})


def ipblock_egress(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    """The internal network but a service /16 and one node's podCIDR; the internet on 443."""
    node_cidr = addresses.cidr((plan.index + replica) % len(addresses.names))
    hole24 = ipaddress.IPv4Network((int(node_cidr.network_address), 24))
    tier = TIERS[(plan.index + replica) % len(TIERS)]
    return policy_manifest(plan.name, f"egress-ipblock-{replica}", {
        "podSelector": {"matchLabels": {"tier": tier}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [
                        f"10.{64 + (plan.index + replica) % 64}.0.0/16", str(hole24)]}}],
                    "ports": [{"protocol": "TCP", "port": 5432}, {"protocol": "TCP", "port": 6379}]},
                   {"to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                        "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}],
                    "ports": [{"protocol": "TCP", "port": 443}]}]})


def match_expressions(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    """In / NotIn / Exists / DoesNotExist on pods and namespaces."""
    tiers = [TIERS[(replica + k) % len(TIERS)] for k in range(2)]
    return policy_manifest(plan.name, f"allow-expressions-{replica}", {
        "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": sorted(tiers)},
                                             {"key": "track", "operator": "DoesNotExist"}]},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                        {"key": "team", "operator": "NotIn", "values": [TEAMS[(plan.index + replica) % len(TEAMS)]]},
                        {"key": "env", "operator": "Exists"}]},
                     "podSelector": {"matchExpressions": [
                         {"key": "tier", "operator": "NotIn", "values": ["db"]},
                         {"key": "version", "operator": "In", "values": ["v1", "v2"]}]}}],
                     "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": 9001}]}]})


def ingress(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    return kube_burner_policy("ingress", plan, replica, namespaces)


def egress(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    return kube_burner_policy("egress", plan, replica, namespaces)


def team_allow(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    """One deployment admits another team's web tier on its named ports."""
    target = plan.deployments[replica % len(plan.deployments)]
    return policy_manifest(plan.name, f"allow-team-{replica}", {
        "podSelector": {"matchLabels": {"app": target.app}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": TEAMS[(plan.index + replica + 1) % len(TEAMS)]}},
                               "podSelector": {"matchLabels": {"tier": "web"}}}],
                     "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "metrics"}]}]})


def egress_named(plan: NamespacePlan, replica: int, addresses: Addresses, namespaces: int) -> Manifest:
    """Egress on a named port: one (address, proto, port) element per admitted destination pod."""
    peer = peer_namespaces(plan.index, replica, namespaces)[0]
    return policy_manifest(plan.name, f"egress-named-{replica}", {
        "podSelector": {"matchLabels": {"tier": TIERS[replica % len(TIERS)]}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "db"}}},
                           {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": peer}},
                            "podSelector": {"matchLabels": {"tier": "db"}}}],
                    "ports": [{"protocol": "TCP", "port": "metrics"}]}]})


ROTATION: tuple[PolicyMaker, ...] = (same_namespace, monitoring, ipblock_egress, match_expressions,
                                     ingress, egress, team_allow, egress_named)
REPEATABLE: tuple[PolicyMaker, ...] = (ingress, egress, team_allow, ipblock_egress, match_expressions,
                                       egress_named)


def namespace_policies(plan: NamespacePlan, count: int, addresses: Addresses, namespaces: int) -> list[Manifest]:
    """default-deny, allow-dns, one of each kind (rotated per namespace), then repeatable kinds."""
    out = [policy_manifest(plan.name, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
           policy_manifest(plan.name, "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"],
                                                    "egress": [DNS_RULE]})][:count]
    offset = plan.index % len(ROTATION)
    makers = [(m, 0) for m in ROTATION[offset:] + ROTATION[:offset]]
    replicas = dict.fromkeys(REPEATABLE, 1)
    while len(out) < count:
        if makers:
            maker, replica = makers.pop(0)
        else:
            maker = REPEATABLE[(len(out) - 2 - len(ROTATION)) % len(REPEATABLE)]
            replica, replicas[maker] = replicas[maker], replicas[maker] + 1
        out.append(maker(plan, replica, addresses, namespaces))
    return out


def prometheus_scrape() -> Manifest:
    """Prometheus may reach every pod's `metrics` port: the cluster-wide named-port egress."""
    return policy_manifest("monitoring", "prometheus-scrape", {
        "podSelector": PROMETHEUS, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": "metrics"}]},
                   DNS_RULE]})


def all_policies(shape: Shape, plans: list[NamespacePlan], addresses: Addresses) -> list[Manifest]:
    """`shape.policies` in total: Prometheus' scrape policy, the rest spread evenly over namespaces."""
    if shape.policies <= 0:
        return []
    out = [prometheus_scrape()]
    rest = shape.policies - 1
    for plan in plans:
        count = rest // len(plans) + (1 if plan.index < rest % len(plans) else 0)
        out += namespace_policies(plan, count, addresses, len(plans))
    return out


# -- cluster network policies (policy.networking.k8s.io/v1beta1) ----------------------------
#
# A cluster operator's guardrails for a cluster of tenants. Subjects are groups of namespaces
# by their labels — an env, a team, a tenant group (a team in an env: 12 at 10k pods) — and,
# once a kind has one policy per group, single namespaces (exceptions and sensitive ones), so
# that no two policies of a kind say the same thing to the same pods. Per 100 policies
# (`CLUSTER_MIX`, interleaved by smooth weighted round-robin, so any count keeps the mix):
#
#   Admin (76)
#     tenant-guard     14  a tenant group, then single namespaces; ingress: Pass from the group
#                          (the namespace) and from monitoring — their NetworkPolicies decide —
#                          Deny from every other workload namespace
#     allow-monitoring 12  a team, then single namespaces; ingress: Accept from Prometheus on
#                          the `metrics` destinationNamedPort (a namespace's: from the blackbox
#                          prober on `http`); a team's priority ties with a namespace's
#     deny-sensitive   10  a team's dev or staging namespaces, then single namespaces; egress:
#                          Deny to another team's sensitive pods (tier=db in prod)
#     namespace-pass   10  one namespace; ingress and egress: Pass within it (to its
#                          NetworkPolicies)
#     deny-networks     8  an env, then a tenant group; egress: Deny the metadata services
#                          (`networks` /32s) and, on ssh/rdp, a corporate /24 and a /28
#                          (a group: only its own ranges on ssh/rdp)
#     protect-db        8  `pods`: a team's tier=db pods, then one namespace's; ingress: Pass from
#                          the team's api/worker pods and monitoring, Deny from every namespace;
#                          egress: Pass to pods, Deny 0.0.0.0/0
#     env-separation    8  an env, then a tenant group; ingress and egress: Deny the other envs'
#                          workload namespaces (a group: its env's other teams)
#     deny-nodes        6  every workload namespace: Deny the control-plane `nodes`; then a
#                          team: Deny the worker `nodes`' kubelet ports
#   Baseline (24)
#     baseline-isolation 12  a tenant group; ingress: Accept the team and monitoring, Deny
#                            every namespace
#     baseline-egress    12  a tenant group; egress: Accept DNS to kube-dns, Accept the same env,
#                            Deny 0.0.0.0/0; priorities tie in threes
#
# At 100, a workload pod is subject to 7–11 of them (median 9; a tier=db pod up to 17), with
# some six ingress and seven egress tier rules in its chains (10k/10k/40, seed 1):
# every workload namespace is isolated both ways by its default-deny NetworkPolicy, so the
# Baseline tier has a say only on the system namespaces' pods (kube-system, monitoring).
# Deterministic: which env, team, group or namespace each one takes follows `seed`.

CLUSTER_GROUP = "policy.networking.k8s.io/v1beta1"
SENSITIVE = {"matchLabels": {"tier": "db"}}
WORKLOAD_NAMESPACES = {"matchExpressions": [{"key": "kube-burner-job", "operator": "Exists"}]}
MONITORING = {"matchLabels": {"purpose": "monitoring"}}
BLACKBOX = {"matchLabels": {"app.kubernetes.io/name": "blackbox-exporter"}}
KUBE_DNS: Manifest = {"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                               "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}}
NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class ClusterContext:
    """What cluster policies are written against: the workload namespaces' labels, shuffled by
    `seed` so that which env, team, group or namespace the k-th policy of a kind takes is too."""

    envs: tuple[str, ...]
    teams: tuple[str, ...]
    groups: tuple[tuple[str, str], ...]  # (team, env)
    namespaces: tuple[tuple[str, str, str], ...]  # (name, team, env)

    @classmethod
    def of(cls, namespaces: list[tuple[str, dict[str, str]]], seed: int) -> ClusterContext:
        """From (name, labels) of the cluster's namespaces (those without team/env are not
        workload namespaces)."""
        rng = random.Random(f"cluster-policies-{seed}")
        workload = sorted((n, labels["team"], labels["env"]) for n, labels in namespaces
                          if "team" in labels and "env" in labels) or [("default", "payments", "prod")]
        groups = sorted({(team, env) for _, team, env in workload})
        teams = sorted({team for team, _ in groups})
        envs = sorted({env for _, env in groups})
        for found in (envs, teams, groups, workload):
            rng.shuffle(found)
        return cls(tuple(envs), tuple(teams), tuple(groups), tuple(workload))

    def pick(self, k: int, *pools: str) -> tuple[str, Manifest]:
        """The k-th of the listed pools' members, in turn: (the pool, its namespace selector)."""
        for pool in pools:
            members: tuple[Any, ...] = getattr(self, pool)
            if k < len(members) or pool == pools[-1]:
                return pool, self.selector(pool, members[k % len(members)])
            k -= len(members)
        raise ValueError("no pool")

    @staticmethod
    def selector(pool: str, member: Any) -> Manifest:
        if pool == "envs":
            return _labels(env=member)
        if pool == "teams":
            return _labels(team=member)
        if pool == "groups":
            return _labels(team=member[0], env=member[1])
        return _labels(**{NAME_LABEL: member[0]})


def cluster_policy_manifest(name: str, tier: str, priority: int, subject: Manifest,
                            ingress: list[Manifest] | None = None, egress: list[Manifest] | None = None) -> Manifest:
    spec: Manifest = {"tier": tier, "priority": priority, "subject": subject}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return {"apiVersion": CLUSTER_GROUP, "kind": "ClusterNetworkPolicy", "metadata": {"name": name}, "spec": spec}


def _labels(**labels: str) -> Manifest:
    return {"matchLabels": labels}


def _tcp(*numbers: int) -> list[Manifest]:
    return [{"tcp": {"destinationPort": {"number": n}}} for n in numbers]


def _others(key: str, value: str, **more: str) -> Manifest:
    """Workload namespaces whose `key` is not `value` (and that have the `more` labels)."""
    return {"matchLabels": more} | {"matchExpressions": [
        {"key": key, "operator": "NotIn", "values": [value]}, {"key": "kube-burner-job", "operator": "Exists"}]}


ClusterMaker = Callable[[ClusterContext, int, str], Manifest]


def tenant_guard(ctx: ClusterContext, k: int, name: str) -> Manifest:
    _, subject = ctx.pick(k, "groups", "namespaces")
    return cluster_policy_manifest(name, "Admin", 100 + k, {"namespaces": subject}, ingress=[
        {"name": "own-tenant-to-namespace-policies", "action": "Pass", "from": [{"namespaces": subject}]},
        {"name": "monitoring-to-namespace-policies", "action": "Pass", "from": [{"namespaces": MONITORING}]},
        {"name": "other-tenants", "action": "Deny", "from": [{"namespaces": WORKLOAD_NAMESPACES}]}])


def allow_monitoring(ctx: ClusterContext, k: int, name: str) -> Manifest:
    pool, subject = ctx.pick(k, "teams", "namespaces")
    source, port = (PROMETHEUS, "metrics") if pool == "teams" else (BLACKBOX, "http")
    return cluster_policy_manifest(name, "Admin", 20 + k % len(ctx.teams), {"namespaces": subject}, ingress=[
        {"name": "scrapes", "action": "Accept",
         "from": [{"pods": {"namespaceSelector": MONITORING, "podSelector": source}}],
         "protocols": [{"destinationNamedPort": port}]}])


def deny_sensitive(ctx: ClusterContext, k: int, name: str) -> Manifest:
    non_prod = [(team, env) for team, env in ctx.groups if env != "prod"]
    if k < len(non_prod):
        team, env = non_prod[k]
        subject = _labels(team=team, env=env)
    else:
        _, team, _ = ctx.namespaces[(k - len(non_prod)) % len(ctx.namespaces)]
        subject = ctx.pick(k - len(non_prod), "namespaces")[1]
    other = ctx.teams[(ctx.teams.index(team) + 1 + k // len(ctx.teams)) % len(ctx.teams)]
    return cluster_policy_manifest(name, "Admin", 30 + k, {"namespaces": subject}, egress=[
        {"name": f"no-{other}-prod-databases", "action": "Deny",
         "to": [{"pods": {"namespaceSelector": _labels(team=other, env="prod"), "podSelector": SENSITIVE}}]}])


def namespace_pass(ctx: ClusterContext, k: int, name: str) -> Manifest:
    _, namespace = ctx.pick(k, "namespaces")
    return cluster_policy_manifest(name, "Admin", 200 + k, {"namespaces": namespace},
                                   ingress=[{"name": "own-namespace", "action": "Pass", "from": [{"namespaces": namespace}]}],
                                   egress=[{"name": "own-namespace", "action": "Pass", "to": [{"namespaces": namespace}]}])


def deny_networks(ctx: ClusterContext, k: int, name: str) -> Manifest:
    pool, subject = ctx.pick(k, "envs", "groups", "namespaces")
    remote_admin = {"name": "no-remote-admin", "action": "Deny",
                    "to": [{"networks": [f"192.168.{k % 256}.0/24", f"198.51.100.{(k * 16) % 256}/28"]}],
                    "protocols": _tcp(22, 3389)}
    metadata = {"name": "no-metadata-service", "action": "Deny",
                "to": [{"networks": ["169.254.169.254/32", "100.100.100.200/32", "169.254.170.2/32"]}]}
    return cluster_policy_manifest(name, "Admin", 10 + k, {"namespaces": subject},
                                   egress=[metadata, remote_admin] if pool == "envs" else [remote_admin])


def protect_db(ctx: ClusterContext, k: int, name: str) -> Manifest:
    pool, namespaces = ctx.pick(k, "teams", "namespaces")
    team = namespaces["matchLabels"]["team"] if pool == "teams" else ctx.namespaces[(k - len(ctx.teams)) % len(ctx.namespaces)][1]
    clients = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api", "worker"]}]}
    return cluster_policy_manifest(name, "Admin", 50 + k, {"pods": {"namespaceSelector": namespaces, "podSelector": SENSITIVE}}, ingress=[
        {"name": "team-clients", "action": "Pass",
         "from": [{"pods": {"namespaceSelector": _labels(team=team), "podSelector": clients}}]},
        {"name": "monitoring", "action": "Pass", "from": [{"namespaces": MONITORING}]},
        {"name": "everyone-else", "action": "Deny", "from": [{"namespaces": {}}]}], egress=[
        {"name": "pods-to-namespace-policies", "action": "Pass", "to": [{"namespaces": {}}]},
        {"name": "no-internet", "action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}])


def env_separation(ctx: ClusterContext, k: int, name: str) -> Manifest:
    pool, subject = ctx.pick(k, "envs", "groups", "namespaces")
    labels = subject["matchLabels"]
    if pool == "envs":
        others = _others("env", labels["env"])
    elif pool == "groups":
        others = _others("team", labels["team"], env=labels["env"])
    else:
        others = _others(NAME_LABEL, labels[NAME_LABEL])
    return cluster_policy_manifest(name, "Admin", 60 + k, {"namespaces": subject},
                                   ingress=[{"name": "others", "action": "Deny", "from": [{"namespaces": others}]}],
                                   egress=[{"name": "others", "action": "Deny", "to": [{"namespaces": others}]}])


def deny_nodes(ctx: ClusterContext, k: int, name: str) -> Manifest:
    role = "node-role.kubernetes.io/"
    if k == 0:
        return cluster_policy_manifest(name, "Admin", 40, {"namespaces": WORKLOAD_NAMESPACES}, egress=[
            {"name": "no-control-plane", "action": "Deny",
             "to": [{"nodes": {"matchExpressions": [{"key": f"{role}control-plane", "operator": "Exists"}]}}]}])
    _, subject = ctx.pick(k - 1, "teams", "namespaces")
    return cluster_policy_manifest(name, "Admin", 40 + k, {"namespaces": subject}, egress=[
        {"name": "no-kubelet", "action": "Deny",
         "to": [{"nodes": {"matchExpressions": [{"key": f"{role}worker", "operator": "Exists"}]}}],
         "protocols": _tcp(10250, 10255)}])


def baseline_isolation(ctx: ClusterContext, k: int, name: str) -> Manifest:
    pool, subject = ctx.pick(k, "groups", "namespaces")
    team = subject["matchLabels"]["team"] if pool == "groups" else ctx.namespaces[(k - len(ctx.groups)) % len(ctx.namespaces)][1]
    return cluster_policy_manifest(name, "Baseline", 100 + k, {"namespaces": subject}, ingress=[
        {"name": "same-team", "action": "Accept", "from": [{"namespaces": _labels(team=team)}]},
        {"name": "monitoring", "action": "Accept", "from": [{"namespaces": MONITORING}]},
        {"name": "other-namespaces", "action": "Deny", "from": [{"namespaces": {}}]}])


def baseline_egress(ctx: ClusterContext, k: int, name: str) -> Manifest:
    pool, subject = ctx.pick(k, "groups", "namespaces")
    env = subject["matchLabels"]["env"] if pool == "groups" else ctx.namespaces[(k - len(ctx.groups)) % len(ctx.namespaces)][2]
    dns = [{"udp": {"destinationPort": {"number": 53}}}, {"tcp": {"destinationPort": {"number": 53}}}]
    return cluster_policy_manifest(name, "Baseline", 500 + k // 3, {"namespaces": subject}, egress=[
        {"name": "dns", "action": "Accept", "to": [KUBE_DNS], "protocols": dns},
        {"name": "same-env", "action": "Accept", "to": [{"namespaces": _labels(env=env)}]},
        {"name": "nothing-else", "action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]}])


CLUSTER_MIX: tuple[tuple[str, ClusterMaker, int], ...] = (  # kind, maker, policies per 100
    ("tenant-guard", tenant_guard, 14), ("allow-monitoring", allow_monitoring, 12),
    ("deny-sensitive", deny_sensitive, 10), ("namespace-pass", namespace_pass, 10),
    ("deny-networks", deny_networks, 8), ("protect-db", protect_db, 8),
    ("env-separation", env_separation, 8), ("deny-nodes", deny_nodes, 6),
    ("baseline-isolation", baseline_isolation, 12), ("baseline-egress", baseline_egress, 12))
CLUSTER_MAKERS: dict[str, ClusterMaker] = {kind: maker for kind, maker, _ in CLUSTER_MIX}


def cluster_policy_kinds(count: int) -> list[str]:
    """`count` kinds in `CLUSTER_MIX`'s proportions, interleaved (smooth weighted round-robin)."""
    credit = dict.fromkeys(CLUSTER_MAKERS, 0)
    total = sum(weight for _, _, weight in CLUSTER_MIX)
    out = []
    for _ in range(count):
        for kind, _, weight in CLUSTER_MIX:
            credit[kind] += weight
        chosen = max(CLUSTER_MAKERS, key=lambda kind: credit[kind])
        credit[chosen] -= total
        out.append(chosen)
    return out


def cluster_policy(ctx: ClusterContext, kind: str, k: int, name: str | None = None) -> Manifest:
    """The `k`-th cluster policy of `kind` (its name: `KIND-K`, unless given)."""
    return CLUSTER_MAKERS[kind](ctx, k, name or f"{kind}-{k}")


def cluster_policies(ctx: ClusterContext, count: int) -> list[Manifest]:
    """`count` cluster policies in `CLUSTER_MIX`'s proportions."""
    seen: dict[str, int] = {}
    out = []
    for kind in cluster_policy_kinds(count):
        k = seen[kind] = seen.get(kind, -1) + 1
        out.append(cluster_policy(ctx, kind, k))
    return out


# -- the cluster -----------------------------------------------------------------------------


def generate(shape: Shape) -> list[Manifest]:
    """Every object of the cluster: Namespaces, Nodes, Pods, NetworkPolicies, and
    `shape.cluster_policies` ClusterNetworkPolicies (the same cluster without them otherwise)."""
    rng = random.Random(shape.seed)
    workload = shape.pods - len(system_pods(shape))
    plans = plan_namespaces(rng, workload)
    addresses = Addresses(shape.nodes, math.ceil(shape.pods / shape.nodes))
    namespaces = [namespace_manifest("kube-system", {}),
                  namespace_manifest("monitoring", {"purpose": "monitoring"})]
    namespaces += [namespace_manifest(p.name, {"team": p.team, "env": p.env, **JOB_LABELS}) for p in plans]
    nodes = [node_manifest(addresses, n) for n in range(shape.nodes)]
    pods = all_pods(shape, plans, addresses)
    cluster: list[Manifest] = []
    if shape.cluster_policies:
        ctx = ClusterContext.of([(n["metadata"]["name"], n["metadata"]["labels"]) for n in namespaces], shape.seed)
        cluster = cluster_policies(ctx, shape.cluster_policies)
    return namespaces + nodes + pods + all_policies(shape, plans, addresses) + cluster


def as_list(items: list[Manifest]) -> Manifest:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def write_json(items: list[Manifest], path: Path, indent: int | None = 4) -> None:
    """One `v1/List`, indented like `kubectl get -o json` (4 spaces) unless `indent` is None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(as_list(items), indent=indent))
    tmp.replace(path)  # a cache file is complete or absent


def write_yaml(items: list[Manifest], path: Path) -> None:
    """Multi-document YAML, one object per document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as out:
        yaml.dump_all(items, out, Dumper=dumper, sort_keys=False, default_flow_style=False)
    tmp.replace(path)


def summary(items: list[Manifest]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, required=True, help="pods in total, system pods included")
    parser.add_argument("--policies", type=int, help="NetworkPolicies in total (default pods/10)")
    parser.add_argument("--nodes", type=int, help="nodes (default pods/250, rounded up)")
    parser.add_argument("--cluster-policies", type=int, default=0,
                        help="ClusterNetworkPolicies (Admin and Baseline guardrails; default none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--out", type=Path, required=True, help="the JSON v1/List to write")
    parser.add_argument("--yaml", type=Path, help="also write multi-document YAML here")
    parser.add_argument("--compact", action="store_true", help="JSON without indentation")
    args = parser.parse_args()
    shape = Shape.of(args.pods, args.policies, args.nodes, args.seed, args.cluster_policies)
    items = generate(shape)
    write_json(items, args.out, None if args.compact else 4)
    if args.yaml:
        write_yaml(items, args.yaml)
    print(json.dumps({"shape": shape.name, **summary(items)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
