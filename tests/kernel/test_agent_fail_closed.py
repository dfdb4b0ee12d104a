"""Invalid and conflicting objects fail closed in the kernel: the agent (following a folder, or
the API server) loads into a namespace the test created, and our table there equals a fresh
load of the fail-closed program written out by hand — the stand-in deny-alls as manifests, the
objects they replace left out. Each case used to leave pods open:

* a deny-all whose name is invalid was dropped;
* a namespace with one invalid label was dropped, so `tier NotIn [data]` admitted its pods (and
  its own allow-all egress let them out) — its stand-ins, the deny-all and the Admin-tier pass
  that keeps cluster policies from misreading it, are built in code (no manifest spells them);
* one policy defined in two files: the later file won (an allow-all beat a deny-all)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from netpol.agent.coalesce import SyncTiming
from netpol.agent.loop import Agent
from netpol.agent.stand_ins import closed_namespace_policies
from netpol.backends.nftables import render
from netpol.compile.ir import NodeProgram
from netpol.dataplane.nft import Applier
from netpol.sources.directory import DirectorySource
from netpol.sources.kube import KubeSource, new_api_client
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import HANG, agent_program, namespace_object, pod_object, policy_object, wait_until
from tests.kernel.conftest import fresh_netns, nft_load, nft_table

NODE = "node-a"
FAST = SyncTiming(min_interval=0.01, max_interval=0.2, retry_initial=0.05, retry_cap=0.2)


def world() -> list[dict[str, Any]]:
    """Namespaces app and data (tier=data) on node-a (podCIDR 10.244.0.0/24); app/api admits
    every namespace but tier=data; data/loader may send anywhere."""
    return [
        {"kind": "Node", "apiVersion": "v1", "metadata": {"name": NODE},
         "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
         "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.10"}]}},
        namespace_object("app", tier="web"), namespace_object("data", tier="data"),
        pod_object("api", "10.244.0.10", "app", ports=(8080,), app="api"),
        pod_object("db", "10.244.0.20", "data", ports=(5432,), app="db"),
        pod_object("loader", "10.244.0.21", "data", app="loader"),
        policy_object("api-in", "app", podSelector={"matchLabels": {"app": "api"}},
                      ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
                          {"key": "tier", "operator": "NotIn", "values": ["data"]}]}}]}]),
        policy_object("loader-out", "data", podSelector={"matchLabels": {"app": "loader"}},
                      policyTypes=["Egress"], egress=[{}]),
    ]


def deny_all(name: str, namespace: str, **selector: str) -> dict[str, Any]:
    """A stand-in as a manifest: both directions, nothing admitted."""
    return policy_object(name, namespace, podSelector={"matchLabels": selector} if selector else {},
                         policyTypes=["Ingress", "Egress"])


@pytest.fixture
def netns() -> Iterator[str]:
    yield from fresh_netns("netpol-test-failclosed")


@contextlib.contextmanager
def folder_agent(folder: Path, netns: str) -> Iterator[Agent]:
    applier = Applier(netns)
    agent = Agent(NODE, applier, FAST)
    source = DirectorySource(str(folder), agent.submit, interval=0.05).start()
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    loop.start()
    try:
        yield agent
    finally:
        stop.set()
        source.stop()
        loop.join(HANG)
        assert not loop.is_alive()
        applier.close()


@contextlib.contextmanager
def api_agent(objects: list[dict[str, Any]], netns: str, tmp_path: Path) -> Iterator[Agent]:
    with FakeApiServer(bookmark_interval=0.2) as api:
        api.apply_all(objects)
        applier = Applier(netns)
        agent = Agent(NODE, applier, FAST)
        source = KubeSource(new_api_client(str(api.kubeconfig(tmp_path / "kubeconfig"))), agent.submit,
                            backoff_initial=0.02, backoff_cap=0.2).start()
        stop = threading.Event()
        loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        loop.start()
        try:
            yield agent
        finally:
            stop.set()
            source.stop()
            loop.join(HANG)
            assert not loop.is_alive()
            applier.close()


def write(folder: Path, name: str, *objects: dict[str, Any]) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(yaml.safe_dump_all(objects))


def settled(agent: Agent) -> NodeProgram:
    wait_until(lambda: agent.applied is not None and not agent.pending, "the agent's first sync")
    assert agent.applied is not None
    return agent.applied


def assert_kernel_holds(netns: str, program: NodeProgram, expected: NodeProgram) -> None:
    """The agent's program is the hand-written fail-closed one, and the kernel holds exactly a
    fresh load of it."""
    assert program == expected
    with contextlib.contextmanager(fresh_netns)("netpol-test-failref") as reference:
        nft_load(reference, render(expected))
        assert nft_table(netns) == nft_table(reference)


def stand_in_names(program: NodeProgram, pod: str, pattern: str) -> list[str]:
    found = next(p for p in program.pods if p.pod == pod)
    names = sorted({key.split("/", 1)[1] for key in (*found.ingress.isolated_by, *found.egress.isolated_by)
                    if re.fullmatch(pattern, key.split("/", 1)[1])})
    assert names, (pod, found.ingress.isolated_by)
    return names


def test_a_deny_all_with_an_invalid_name_isolates_its_pods(netns, tmp_path):
    folder = tmp_path / "manifests"
    write(folder, "world.yaml", *world())
    write(folder, "deny.yaml", deny_all("Deny_All", "data"))
    with folder_agent(folder, netns) as agent:
        program = settled(agent)
    [name] = stand_in_names(program, "data/db", r"deny-all\.invalid-name-[0-9a-f]{6}")
    assert_kernel_holds(netns, program, agent_program([*world(), deny_all(name, "data")]))


def test_a_namespace_with_an_invalid_label_isolates_its_pods_and_sets_its_policies_aside(netns, tmp_path):
    broken = namespace_object("data", tier="data")
    broken["metadata"]["labels"]["bad key!"] = "x"
    folder = tmp_path / "manifests"
    write(folder, "world.yaml", *[o if o["metadata"]["name"] != "data" or o["kind"] != "Namespace" else broken
                                  for o in world()])
    expected = [o for o in world() if o["metadata"].get("namespace") != "data" or o["kind"] == "Pod"]
    expected = [o for o in expected if not (o["kind"] == "Namespace" and o["metadata"]["name"] == "data")]
    with folder_agent(folder, netns) as agent:
        program = settled(agent)
    assert_kernel_holds(netns, program, agent_program([*expected, *closed_namespace_policies("data")]))


def test_one_policy_defined_differently_in_two_files_fails_closed_for_both_copies(netns, tmp_path):
    folder = tmp_path / "manifests"
    write(folder, "a-world.yaml", *world())
    write(folder, "b-deny.yaml", deny_all("web", "data", app="db"))
    write(folder, "c-allow.yaml", policy_object("web", "data", podSelector={}, ingress=[{}]))
    with folder_agent(folder, netns) as agent:
        program = settled(agent)
    names = stand_in_names(program, "data/db", r"web\.conflict-[0-9a-f]{6}")
    [loader_name] = stand_in_names(program, "data/loader", r"web\.conflict-[0-9a-f]{6}")
    [db_only] = [n for n in names if n != loader_name]
    assert_kernel_holds(netns, program, agent_program([*world(), deny_all(db_only, "data", app="db"),
                                                       deny_all(loader_name, "data")]))


def test_from_the_api_server_too_invalid_names_and_namespaces_fail_closed(netns, tmp_path):
    """The API server cannot hold duplicates, but it can hold objects written before validation
    tightened: the same stand-ins."""
    broken = namespace_object("app", tier="web")
    broken["metadata"]["labels"]["tier"] = "not valid!"
    objects = [broken if o["kind"] == "Namespace" and o["metadata"]["name"] == "app" else o for o in world()]
    with api_agent([*objects, deny_all("Deny_All", "data")], netns, tmp_path) as agent:
        program = settled(agent)
    [name] = stand_in_names(program, "data/db", r"deny-all\.invalid-name-[0-9a-f]{6}")
    expected = [o for o in world() if o["metadata"].get("namespace") != "app" or o["kind"] == "Pod"]
    expected = [o for o in expected if not (o["kind"] == "Namespace" and o["metadata"]["name"] == "app")]
    assert_kernel_holds(netns, program, agent_program([*expected, deny_all(name, "data"),
                                                       *closed_namespace_policies("app")]))
