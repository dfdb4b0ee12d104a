"""The agent end to end on one node: the in-process API server (real HTTP, the unmodified
kubernetes client), the sync loop, and libnftables loading into a network namespace the test
created. After every scenario — changes, an invalid policy, a failed apply, dropped watches,
410 Gone, a restarted API server, a burst of 1,000 pods, a restarted agent — the agent's
program equals a compile from scratch of the API server's final objects, and the kernel holds
exactly the table that program renders."""

from __future__ import annotations

import copy
import ipaddress
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from netpol.agent.coalesce import SyncTiming
from netpol.agent.http import serve
from netpol.agent.loop import Agent
from netpol.backends.nftables import render
from netpol.dataplane.nft import Applier
from netpol.dataplane.routes import RouteKeeper, desired_routes
from netpol.errors import ApplyError, NftMessage
from netpol.model import Node
from netpol.sources.directory import DirectorySource, read_objects
from netpol.sources.kube import KINDS, KubeSource, new_api_client
from netpol.testing.apiserver import FakeApiServer
from tests.conftest import HANG, agent_program, example_objects, pod_object, policy_yaml, wait_until
from tests.kernel.conftest import fresh_netns, nft_load, nft_table

NODE = "node-a"


def frontend_pod(name: str, ip: str, namespace: str = "frontend", node: str = NODE, **labels: str) -> dict:
    return pod_object(name, ip, namespace, node, ports=(8080,), **labels)


FAST = SyncTiming(min_interval=0.01, max_interval=0.2, retry_initial=0.05, retry_cap=0.2)


def server_objects(api: FakeApiServer) -> list[dict]:
    return [dict(o, kind=k.kind) for k in KINDS for o in api.objects(k.kind)]


class FlakyLoader:
    """The real Applier, except that the next `fail` applies are refused as nft would refuse
    them (fault injection: the kernel is not mocked, an apply is just not attempted). The last
    refusal waits, before it is raised, until the test has looked (`holding`, then `release`):
    so what the agent reports after a refusal holds for as long as the test needs to see it."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier
        self.fail = 0
        self.holding = threading.Event()  # set: the last refusal is waiting for `release`
        self.release = threading.Event()

    def apply(self, ruleset: str, force: bool = False):
        if self.fail:
            self.fail -= 1
            if not self.fail:
                self.holding.set()
                self.release.wait(HANG)
            raise ApplyError("commit", [NftMessage("Could not process rule: injected failure")])
        return self.applier.apply(ruleset, force)


class RunningAgent:
    def __init__(self, api: FakeApiServer, netns: str, tmp_path: Path, kinds=KINDS, flaky: bool = False):
        self.api, self.netns = api, netns
        self.applier = Applier(netns)
        self.loader = FlakyLoader(self.applier) if flaky else self.applier
        self.agent = Agent(NODE, self.loader, FAST)
        kubeconfig = api.kubeconfig(tmp_path / f"kubeconfig-{id(self)}")
        self.source = KubeSource(new_api_client(str(kubeconfig)), self.agent.submit, kinds=kinds,
                                 backoff_initial=0.02, backoff_cap=0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.source.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if isinstance(self.loader, FlakyLoader):
            self.loader.release.set()  # a refusal still held must not keep the loop waiting
        self.source.stop()
        close_after(self.thread, self.applier)

    def converge(self, timeout: float = HANG) -> None:
        """Wait until the agent applied what a compile from scratch of the server's objects
        gives (the objects do not change meanwhile: compiled once); then the kernel must hold
        exactly that table."""
        expected = agent_program(server_objects(self.api))
        deadline = time.monotonic() + timeout
        while self.agent.applied != expected or self.agent.pending:
            assert time.monotonic() < deadline, "the agent did not converge"
            time.sleep(0.02)
        with fresh_netns_context() as reference:
            nft_load(reference, render(expected))
            assert nft_table(self.netns) == nft_table(reference)


def close_after(loop: threading.Thread, applier: Applier) -> None:
    """Free the libnftables context only once the loop that applies with it has ended: closing
    it under a running apply would be a use after free."""
    loop.join(HANG)
    assert not loop.is_alive(), "the sync loop did not stop"
    applier.close()



def fresh_netns_context():
    import contextlib

    return contextlib.contextmanager(fresh_netns)("netpol-test-agentref")


@pytest.fixture
def api():
    with FakeApiServer(bookmark_interval=0.2) as server:
        server.apply_all(example_objects())
        yield server


@pytest.fixture
def netns():
    yield from fresh_netns("netpol-test-agent")


def test_the_agent_programs_its_node_and_follows_every_kind_of_change(api, netns, tmp_path):
    with RunningAgent(api, netns, tmp_path) as run:
        run.converge()
        assert run.agent.metrics.syncs.labels("full")._value.get() == 1
        web = next(o for o in api.objects("Pod") if o["metadata"]["name"] == "web-1")
        # a pod on the other node joins web's peer group: set elements only
        api.apply(frontend_pod("web-9", "10.244.1.99", node="node-b", **web["metadata"]["labels"]))
        run.converge()
        assert run.agent.metrics.syncs.labels("elements")._value.get() >= 1
        # relabel a local pod, delete a policy, add one back
        relabelled = copy.deepcopy(web)
        relabelled["metadata"]["labels"] = {"app": "other"}
        api.apply(relabelled)
        run.converge()
        assert run.agent.metrics.syncs.labels("chains")._value.get() >= 1  # structure, not a full table
        policy = api.objects("NetworkPolicy")[0]
        api.delete("NetworkPolicy", policy["metadata"]["name"], policy["metadata"]["namespace"])
        run.converge()
        api.apply(dict(policy, kind="NetworkPolicy"))
        run.converge()
        api.delete("Namespace", "monitoring")
        run.converge()


def test_nothing_is_written_before_every_kind_is_listed(api, netns, tmp_path):
    nft_load(netns, "table inet netpol {\n chain old {\n }\n}\ntable ip foreign {\n chain keep {\n }\n}\n")
    before = nft_table(netns)
    without_policies = tuple(k for k in KINDS if k.kind != "NetworkPolicy")
    with RunningAgent(api, netns, tmp_path, kinds=without_policies) as run:
        # Every kind it watches is listed; the one missing decides (Intake.take starts the
        # compiler in the call that records a list, and nothing syncs without a compiler).
        wait_until(lambda: run.agent.intake.mirror.listed == {k.kind for k in without_policies},
                   "every other kind listed")
        assert run.agent.syncs == 0 and run.agent.compiler is None
        assert nft_table(netns) == before


def test_an_invalid_policy_fails_closed_for_the_pods_it_selects(api, netns, tmp_path):
    bad = {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
           "metadata": {"name": "broken", "namespace": "frontend"},
           "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["192.168.0.0/24"]}}]}]}}
    with RunningAgent(api, netns, tmp_path) as run:
        run.converge()
        api.apply(bad)
        run.converge()  # expected_program turns it into a deny-all for app=web, both ways
        assert run.agent.metrics.invalid_objects.labels("NetworkPolicy")._value.get() >= 1
        program = run.agent.applied
        web = next(p for p in program.pods if p.pod == "frontend/web-1")
        assert "frontend/broken" in web.ingress.isolated_by and "frontend/broken" in web.egress.isolated_by


def test_a_failed_apply_keeps_the_last_good_ruleset_and_turns_readyz_false(api, netns, tmp_path):
    with RunningAgent(api, netns, tmp_path, flaky=True) as run:
        http = serve(run.agent, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{http.server_address[1]}"
        try:
            run.converge()
            assert _get(url + "/readyz")[0] == 200
            good = nft_table(netns)
            run.loader.fail = 3
            api.apply(frontend_pod("web-7", "10.244.0.77", app="web"))
            assert run.loader.holding.wait(HANG)  # two refusals reported, the third held
            assert run.agent.metrics.apply_errors._value.get() == 2
            code, body = _get(url + "/readyz")
            assert code == 503 and "injected failure" in body
            assert nft_table(netns) == good  # the last good ruleset stays
            run.loader.release.set()
            run.converge()  # the retry (with backoff) gets through
            assert _get(url + "/readyz")[0] == 200
            metrics = _get(url + "/metrics")[1]
            for name in ("netpol_sync_duration_seconds_bucket", "netpol_apply_errors_total 3.0",
                         "netpol_ruleset_rules", "netpol_ruleset_set_elements", "netpol_events_total",
                         "netpol_last_successful_sync_timestamp_seconds", "netpol_invalid_objects_total"):
                assert name in metrics, name
            assert _get(url + "/healthz")[0] == 200
        finally:
            http.shutdown()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HANG) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("fault", ["drop", "gone", "restart", "burst"])
def test_after_api_faults_the_kernel_ends_where_the_final_objects_say(api, netns, tmp_path, fault):
    with RunningAgent(api, netns, tmp_path) as run:
        run.converge()
        assert api.wait_watching(len(KINDS), HANG)  # the faults hit open streams, not the gap before them
        if fault == "drop":
            for i in range(5):
                api.apply(frontend_pod(f"extra-{i}", f"10.244.0.{100 + i}", app="web"))
                api.drop_watches()
        elif fault == "gone":
            with api.paused_watches():
                api.delete("Pod", "web-1", "frontend")
                api.apply(frontend_pod("late", "10.244.0.120", app="web"))
                api.compact()
                api.drop_watches()
        elif fault == "restart":
            survivors = [o for o in server_objects(api) if o["kind"] != "NetworkPolicy"
                         or o["metadata"]["name"] == "default-deny"]
            api.restart(survivors)
        else:
            api.burst([frontend_pod(f"b{i}", f"10.250.{i // 200}.{i % 200 + 1}", node="node-b", app="web")
                       for i in range(1000)])
        run.converge()


def test_a_restarted_agent_converges_without_opening_anything_first(api, netns, tmp_path):
    with RunningAgent(api, netns, tmp_path) as first:
        first.converge()
    api.apply(frontend_pod("web-8", "10.244.0.88", app="web"))
    present: list[bool] = []
    watching = threading.Event()

    def watch_table():
        applier = Applier(netns)
        try:
            while not watching.is_set():
                present.append(bool(applier.list_table()))
        finally:
            applier.close()

    watcher = threading.Thread(target=watch_table)
    watcher.start()
    try:
        with RunningAgent(api, netns, tmp_path) as second:
            second.converge()
            assert second.agent.metrics.syncs.labels("full")._value.get() == 1
    finally:
        watching.set()
        watcher.join(HANG)
    assert not watcher.is_alive() and present and all(present)  # our table was there at every look, old until replaced


def write_atomically(path: Path, text: str, staging: Path) -> None:
    """A file appears whole (as `git checkout` or an editor's rename would write it): a source
    polling every 50 ms must not read it half written."""
    staging.write_text(text)
    os.replace(staging, path)


def test_the_directory_source_follows_a_folder_of_manifests(netns, tmp_path):
    folder = tmp_path / "manifests"
    folder.mkdir()
    staging = tmp_path / "staging.yaml"  # outside the folder, on the same file system
    import netpol

    for path in (Path(netpol.__file__).parent / "examples" / "shop").iterdir():
        write_atomically(folder / path.name, path.read_text(), staging)
    applier = Applier(netns)
    agent = Agent(NODE, applier, FAST)
    source = DirectorySource(str(folder), agent.submit, interval=0.05).start()
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    loop.start()
    try:
        def converge():
            objects = read_objects(str(folder))
            assert objects is not None
            expected = agent_program([o for kind in objects.values() for o in kind])
            wait_until(lambda: agent.applied == expected and not agent.pending, "the folder applied")
            return expected

        converge()
        write_atomically(folder / "zz-extra.yaml", policy_yaml("frontend", "lock-frontend", "{podSelector: {}}"),
                         staging)
        good = converge()
        reads, failed = source.reads, source.failed_reads
        write_atomically(folder / "zz-extra.yaml", "{not: [valid", staging)  # a broken file
        wait_until(lambda: source.failed_reads > failed, "the source read the broken file")
        # The source reported the broken read and handed the agent nothing: the last good folder stays.
        assert source.reads == reads and agent.applied == good and not agent.pending
        (folder / "zz-extra.yaml").unlink()
        converge()
    finally:
        stop.set()
        source.stop()
        close_after(loop, applier)


def _node(name: str, address: str, *cidrs: str) -> Node:
    return Node(name, addresses=(ipaddress.ip_address(address),),
                pod_cidrs=tuple(ipaddress.ip_network(c) for c in cidrs))


def test_routes_follow_the_other_nodes_pod_cidrs_and_leave_foreign_routes_alone(netns):
    for args in (["link", "add", "fabric", "type", "veth", "peer", "name", "fabric-peer"],
                 ["addr", "add", "192.168.7.1/24", "dev", "fabric"],
                 ["addr", "add", "fd07::1/64", "dev", "fabric", "nodad"],
                 ["link", "set", "fabric-peer", "up"], ["link", "set", "fabric", "up"],
                 ["route", "add", "10.99.0.0/16", "via", "192.168.7.254"]):  # someone else's route
        subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True)
    keeper = RouteKeeper(netns)
    nodes = [_node("node-a", "192.168.7.1", "10.244.0.0/24"), _node("node-b", "192.168.7.2", "10.244.1.0/24"),
             _node("node-c", "fd07::3", "fd00:244:2::/64"), _node("node-d", "192.168.7.4")]
    assert desired_routes(nodes, "node-a") == {
        ipaddress.ip_network("10.244.1.0/24"): ipaddress.ip_address("192.168.7.2"),
        ipaddress.ip_network("fd00:244:2::/64"): ipaddress.ip_address("fd07::3")}
    keeper.sync(desired_routes(nodes, "node-a"))
    assert keeper.current() == {"10.244.1.0/24": "192.168.7.2", "fd00:244:2::/64": "fd07::3"}
    assert keeper.sync(desired_routes(nodes, "node-a")) == []  # nothing to do the second time
    nodes[1] = _node("node-b", "192.168.7.22", "10.244.1.0/24")  # moved
    del nodes[2]  # gone
    keeper.sync(desired_routes(nodes, "node-a"))
    assert keeper.current() == {"10.244.1.0/24": "192.168.7.22"}
    routes = subprocess.run(["ip", "-n", netns, "route"], capture_output=True, text=True, check=True).stdout
    assert "10.99.0.0/16 via 192.168.7.254" in routes  # not ours: untouched


