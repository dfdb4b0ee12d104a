"""The upstream ClusterNetworkPolicy conformance suite (kubernetes-sigs/network-policy-api), converted
to offline tests: every probe of it that netpol can express gives the verdict upstream expects
from `netpol.semantics.reference`, on IPv4, IPv6 and dual-stack clusters, with the client and the
hostNetwork target on the same node and on different ones.

The suite runs against a live cluster: StatefulSets make the pods, the test applies its policies,
patches them between probes (the changes persist for the rest of the test) and pokes servers with
agnhost. Here the base manifests' StatefulSets become Pods with synthetic addresses, the patches
are applied to the manifests before decoding, and each poke is one `allowed` question. Data and
provenance: tests/data/cnp_conformance/README.md (what is not expressible, and why, is listed there).

The same probes also go through what the compiler makes of each state: traced through every
node's IR (`netpol.testing.trace`) and through the libnftables JSON the backend emits
(`netpol.testing.nft_trace`), so the suite checks the data plane's decisions, not only ours.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from netpol.backends.nftables import render_json
from netpol.compile.compiler import compile_cluster
from netpol.load.decode import decode_document
from netpol.load.manifests import build_state, check_consistency
from netpol.model import ClusterState, IPAddress
from netpol.semantics.reference import allowed, endpoint
from netpol.testing.nft_trace import NodeRuleset, trace_json
from netpol.testing.trace import Packet, trace

DATA = Path(__file__).resolve().parents[2] / "data" / "cnp_conformance"
HOST_NETWORK_PORTS = [34345 + i for i in range(8)]  # the suite's default HostNetworkPortRangeStart
NODE_ADDRESSES = {"node-a": ("172.18.0.2", "fc00:f853:ccd:e793::2"),
                  "node-b": ("172.18.0.3", "fc00:f853:ccd:e793::3")}
SUITES = {  # probe file → the folder its manifests' `base/...` paths are in
    "main-0eec1b0e.json": "cnp",
    "post-snapshot.json": "cnp",
    "v1alpha1-release-0.1-e80807c4.json": "v1alpha1",
}
V1ALPHA1_KINDS = ("AdminNetworkPolicy", "BaselineAdminNetworkPolicy")


@dataclass(frozen=True)
class Layout:
    """How the synthetic cluster looks: the address families of its pods (the primary first: the
    suite probes `status.podIP`), and whether a hostNetwork pod shares its node with the client
    pod of the same ordinal (kind schedules freely; upstream's verdicts must hold either way)."""

    families: tuple[int, ...]
    colocated: bool

    def __str__(self) -> str:
        stack = {(4,): "ipv4", (6,): "ipv6", (4, 6): "dual-v4-primary", (6, 4): "dual-v6-primary"}
        return f"{stack[self.families]}-{'colocated' if self.colocated else 'apart'}"


LAYOUTS = [Layout(f, c) for f in ((4,), (6,), (4, 6), (6, 4)) for c in (True, False)]


def render(text: str) -> str:
    """The suite's manifests are Go templates over the host-network ports."""
    return re.sub(r"\{\{\s*index \.HostNetworkPorts (\d+)\s*\}\}",
                  lambda m: str(HOST_NETWORK_PORTS[int(m.group(1))]), text)


def documents(folder: str, path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render((DATA / folder / path).read_text())) if d]


def pod_address(namespace_index: int, ordinal: int, family: int) -> str:
    return f"10.244.{namespace_index}.{10 + ordinal}" if family == 4 else f"fd00:10:244:{namespace_index}::{10 + ordinal}"


def base_objects(layout: Layout) -> list[dict[str, Any]]:
    """Namespaces, two Nodes, and the Pods the StatefulSets of base/manifests.yaml make."""
    docs = documents("cnp", "base/manifests.yaml")
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    index = {d["metadata"]["name"]: i for i, d in enumerate(namespaces)}
    objects: list[dict[str, Any]] = [*namespaces]
    for node, addresses in NODE_ADDRESSES.items():
        objects.append({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": node, "labels": {"kubernetes.io/os": "linux",
                                                              "kubernetes.io/hostname": node}},
                        "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]}})
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        objects += statefulset_pods(sts, index[sts["metadata"]["namespace"]], layout)
    return objects


def statefulset_pods(sts: dict[str, Any], namespace_index: int, layout: Layout) -> Iterator[dict[str, Any]]:
    template = sts["spec"]["template"]
    host_network = template["spec"].get("hostNetwork", False)
    for ordinal in range(sts["spec"]["replicas"]):
        name = f"{sts['metadata']['name']}-{ordinal}"
        node = sorted(NODE_ADDRESSES)[(ordinal + (host_network and not layout.colocated)) % 2]
        if host_network:
            ips = [a for f in layout.families for a in NODE_ADDRESSES[node] if ipaddress.ip_address(a).version == f]
        else:
            ips = [pod_address(namespace_index, ordinal, f) for f in layout.families]
        labels = {**template["metadata"]["labels"], "statefulset.kubernetes.io/pod-name": name,
                  "apps.kubernetes.io/pod-index": str(ordinal)}
        yield {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": sts["metadata"]["namespace"], "labels": labels},
               "spec": {**template["spec"], "nodeName": node},
               "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips]}}


def decode_all(objects: list[dict[str, Any]]) -> ClusterState:
    located = []
    for doc in objects:
        found, problems = decode_document(doc, "conformance")
        assert not problems, problems
        located += [("conformance", obj) for obj in found]
    assert not check_consistency(located)
    return build_state(obj for _, obj in located)


class Run:
    """One test of the suite: its policies as manifests, patched step by step."""

    def __init__(self, test: dict[str, Any], folder: str, layout: Layout) -> None:
        self.layout = layout
        self.base = base_objects(layout)
        self.policies = [copy.deepcopy(d) for path in test["manifests"] for d in documents(folder, path)]

    def state(self) -> ClusterState:
        return decode_all(self.base + self.policies)

    def policy(self, name: str) -> dict[str, Any]:
        return next(d for d in self.policies if d["kind"] != "NetworkPolicy" and d["metadata"]["name"] == name)

    def mutate(self, op: str, *args: Any) -> None:
        """The suite's patches, in its JSON's vocabulary (written in v1beta1 terms; a v1alpha1
        policy gets the same change in its own spelling)."""
        if op in ("swap", "swap2"):
            name, *rest = args
            directions, (i, j) = ([rest[0]], rest[1:]) if op == "swap" else (["egress", "ingress"], rest)
            for direction in directions:
                rules = self.policy(name)["spec"][direction]
                rules[i], rules[j] = rules[j], rules[i]
        elif op == "named":
            name, direction, i, port = args
            rule = self.policy(name)["spec"][direction][i]
            if self.policy(name)["kind"] in V1ALPHA1_KINDS:
                rule["ports"] = [{"namedPort": port}]
            else:
                rule["protocols"] = [{"destinationNamedPort": port}]
        elif op == "action":
            name, direction, i, action = args
            self.policy(name)["spec"][direction][i]["action"] = action
        elif op == "prio":
            self.policy(args[0])["spec"]["priority"] = args[1]
        elif op == "delnp":
            self.policies = [d for d in self.policies if not (
                d["kind"] == "NetworkPolicy" and (d["metadata"]["namespace"], d["metadata"]["name"]) == tuple(args))]
        elif op == "nslabels":
            namespace = next(d for d in self.base if d["kind"] == "Namespace" and d["metadata"]["name"] == args[0])
            namespace["metadata"]["labels"] = {"conformance-house": args[1]}
        elif op == "prependcidr":
            self.prepend_cidr(self.policy(args[0]))
        else:
            raise AssertionError(f"unknown mutation {op}")

    def prepend_cidr(self, policy: dict[str, Any]) -> None:
        """An Accept rule for two pods' primary addresses, first of the egress rules."""
        state = self.state()
        ips = [state.pod(key).ips[0] for key in ("network-policy-conformance-ravenclaw/luna-lovegood-0",
                                                 "network-policy-conformance-hufflepuff/cedric-diggory-0")]
        action = "Allow" if policy["kind"] in V1ALPHA1_KINDS else "Accept"
        rule = {"name": "allow-egress-to-specific-podIPs", "action": action,
                "to": [{"networks": [f"{ip}/{ip.max_prefixlen}" for ip in ips]}]}
        policy["spec"]["egress"] = [rule, *policy["spec"]["egress"]]

    def connects(self, state: ClusterState, probe: dict[str, Any], judge: Judge) -> bool:
        """agnhost connect from the client pod to the target pod's `status.podIP`."""
        src, dst = state.pod(probe["from"]), state.pod(probe["to"])
        assert src is not None and dst is not None
        target = dst.ips[0]
        source = src.ip_of_family(target.version)
        assert source is not None
        port = probe["port"] if probe["port"] is not None else HOST_NETWORK_PORTS[probe["hostNetworkPortIndex"]]
        return judge(Packet(source, target, probe["protocol"].upper(), port))


Judge = Callable[[Packet], bool]  # a connection's first packet → does it get through?


def reference_judge(state: ClusterState) -> Judge:
    return lambda p: allowed(state, endpoint(state, p.src), endpoint(state, p.dst), p.port, p.protocol).allowed


def ir_judge(state: ClusterState) -> Judge:
    programs = compile_cluster(state)
    return lambda p: trace(programs, p).allowed


def json_judge(state: ClusterState) -> Judge:
    rulesets = {name: NodeRuleset.from_document(render_json(program), frozenset(program.node_addresses))
                for name, program in compile_cluster(state).items()}
    locations: dict[IPAddress, str] = {ip: p.node_name for p in state.active_pods for ip in p.ips if p.node_name}
    return lambda p: trace_json(rulesets, p, locations)[0]


JUDGES = {"reference": reference_judge, "ir": ir_judge, "nft-json": json_judge}


def replay(test: dict[str, Any], folder: str, layout: Layout,
           make_judge: Callable[[ClusterState], Judge] = reference_judge) -> tuple[int, list[str]]:
    """(probes run, the ones whose verdict differs from upstream's, described)."""
    run = Run(test, folder, layout)
    state = run.state()
    judge = make_judge(state)
    failures, count = [], 0
    for step in test["steps"]:
        if "mutate" in step:
            run.mutate(*step["mutate"])
            state = run.state()
            judge = make_judge(state)
        elif "probe" in step:
            probe, count = step["probe"], count + 1
            expected = probe["expect"] == "connect"
            if run.connects(state, probe, judge) != expected:
                failures.append(f"{test['shortName']} [{layout}]: {probe['from']} -> {probe['to']} "
                                f"{probe['protocol']}/{probe['port'] or probe['hostNetworkPortIndex']}: "
                                f"expected {probe['expect']}")
    return count, failures


def suite_tests() -> Iterator[Any]:
    for name, folder in SUITES.items():
        for test in json.loads((DATA / "probes" / name).read_text())["tests"]:
            yield pytest.param(test, folder, id=f"{name.split('-')[0]}-{test['shortName']}")


@pytest.mark.parametrize("judge", list(JUDGES))
@pytest.mark.parametrize(("test", "folder"), list(suite_tests()))
def test_every_probe_of_the_upstream_suite_gets_the_expected_verdict(test, folder, judge):
    for layout in LAYOUTS:
        count, failures = replay(test, folder, layout, JUDGES[judge])
        assert count == test["probes"]
        assert not failures, "\n".join(failures)


def test_the_suites_hold_the_probes_the_readme_counts():
    counts = {name: sum(t["probes"] for t in json.loads((DATA / "probes" / name).read_text())["tests"])
              for name in SUITES}
    assert counts == {"main-0eec1b0e.json": 301, "post-snapshot.json": 90,
                      "v1alpha1-release-0.1-e80807c4.json": 289}
    readme = (DATA / "README.md").read_text()
    assert "680 probes" in readme and "680 pass" in readme
