"""The real `netpol agent` process (`--dir`, loading into a namespace the test created, its
endpoints on loopback), where the failure is about the process: it never runs on with a dead
thread — a node it cannot run on makes it exit 1 at once; a thread that dies turns /healthz red
and makes it exit 70 — a malformed object does not stop it; and what others change in its
table is restored (the repair metric counts it) to exactly a fresh load of the program.

Faults a correct agent never meets (a thread dying of a bug) are injected by running the same
CLI entry point under `python -c` with one function replaced: the process, its threads, its
endpoints and its exit path are the real ones."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import netpol
from netpol.backends.nftables import render
from netpol.sources.directory import read_objects
from netpol.sources.events import KIND_NAMES
from netpol.sources.in_cluster import DIR_VARIABLE
from netpol.testing.apiserver import FakeApiServer
from netpol.testing.pki import make_serving_certificate
from tests.conftest import (
    HANG,
    REPO,
    agent_program,
    manifest_cluster_role,
    policy_object,
    policy_yaml,
    wait_until,
)
from tests.kernel.conftest import fresh_netns, ip_holding, kill_if_held, nft, nft_load, nft_table, wait_held

NODE = "node-a"
SHOP = Path(netpol.__file__).parent / "examples" / "shop"

USER, RULES = manifest_cluster_role()  # the rendered bundle's ClusterRole, enforced by the API server


class AgentProcess:
    """`netpol agent --node node-a --dir FOLDER --netns NETNS --listen 127.0.0.1:PORT` (no `--dir`
    when `folder` is None: in-cluster config from `env`), its JSON log lines collected as they
    come; `inject` is Python run before the CLI's entry point (a fault)."""

    def __init__(self, folder: Path | None, netns: str, env: dict[str, str] | None = None, inject: str = "") -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        argv = ["agent", "--node", NODE, *(["--dir", str(folder)] if folder else []), "--netns", netns,
                "--listen", self.url[7:], "--min-interval", "0.01"]
        program = f"{inject}\nimport sys\nfrom netpol.cli import console\nsys.argv = ['netpol', *{argv!r}]\nconsole()\n"
        self.proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.records: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"raw": line}
            self.records.append(record if isinstance(record, dict) else {"raw": line})

    def record(self, msg: str, **fields: Any) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("msg") == msg
                     and all(r.get(k) == v for k, v in fields.items())), None)

    def wait_record(self, msg: str, **fields: Any) -> dict[str, Any]:
        wait_until(lambda: self.record(msg, **fields) or self.proc.poll() is not None, f"log record {msg!r}")
        found = self.record(msg, **fields)
        assert found is not None, f"the agent exited ({self.proc.returncode}) first: {self.records[-5:]}"
        return found

    def exit_code(self) -> int:
        wait_until(lambda: self.proc.poll() is not None, "the agent's exit")
        self._reader.join(HANG)
        return self.proc.returncode

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=HANG) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, line_start: str) -> float:
        """The value of the first /metrics sample whose line starts so (0 if none)."""
        found = [line for line in self.get("/metrics")[1].splitlines() if line.startswith(line_start)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(HANG)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(HANG)


def free_port() -> int:
    """A loopback port nobody listens on now (the agent binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running(*args: Any, **kwargs: Any):
    agent = AgentProcess(*args, **kwargs)
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def netns():
    yield from fresh_netns("netpol-test-agentproc")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "manifests"
    target.mkdir()
    for path in SHOP.iterdir():
        (target / path.name).write_text(path.read_text())
    return target


def write_atomically(path: Path, text: str) -> None:
    staging = path.parent.parent / f".{path.name}.tmp"  # outside the folder: never read half written
    staging.write_text(text)
    os.replace(staging, path)


def expected_table(folder: Path) -> object:
    """Our table as a fresh load of the program a compile from scratch of the folder gives."""
    objects = read_objects(str(folder))
    assert objects is not None
    program = agent_program([o for kind in objects.values() for o in kind])
    with contextlib.contextmanager(fresh_netns)("netpol-test-agentref") as reference:
        nft_load(reference, render(program))
        return nft_table(reference)


# ── the process never runs on with a dead thread ────────────────────────────────────────────


def test_without_ip_on_path_the_agent_exits_1_at_once_saying_why(folder, netns, tmp_path):
    """It used to lose its loop before the first sync (RouteKeeper) and run on for ever, /healthz 200."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with running(folder, netns, env=dict(os.environ, PATH=str(empty))) as agent:
        assert agent.exit_code() == 1
        assert any("`ip` (iproute2) is not on PATH" in r.get("raw", "") for r in agent.records)
    assert nft(netns, "list", "table", "inet", "netpol").returncode != 0  # nothing was written


def test_a_sync_loop_that_dies_makes_the_process_exit_70(folder, netns):
    inject = ("import netpol.agent.loop as loop\nsync = loop.Agent.sync\n"
              "def failing(self):\n    if self.syncs:\n        raise RuntimeError('injected bug')\n    return sync(self)\n"
              "loop.Agent.sync = failing\n")
    with running(folder, netns, inject=inject) as agent:
        agent.wait_record("synced")
        write_atomically(folder / "zz.yaml", policy_yaml("frontend", "lock", "{podSelector: {}}"))
        assert agent.exit_code() == 70
        died = agent.wait_record("a thread of the agent died; the agent exits")
        assert died["thread_name"] == "sync-loop" and "injected bug" in died["error"]


def test_a_source_thread_that_dies_turns_healthz_red_until_the_process_exits_70(folder, netns, tmp_path):
    """The loop is held inside `ip` (after its first sync) so the process provably lives on while
    it stops: /healthz must already be red then, and the exit code non-zero after."""
    env, held_pid_file = ip_holding(tmp_path, "route show")
    inject = ("import netpol.sources.directory as d\nread = d.read_objects\ncalls = []\n"
              "def failing(folder):\n    calls.append(1)\n    if len(calls) > 1:\n"
              "        raise AttributeError(\"'str' object has no attribute 'get'\")\n    return read(folder)\n"
              "d.read_objects = failing\n")
    held = None
    with running(folder, netns, env=env, inject=inject) as agent:
        try:
            held = wait_held(agent.proc, held_pid_file)
            assert held is not None, "the loop never reached its route check"
            assert agent.get("/healthz") == (200, "ok\n")
            write_atomically(folder / "zz.yaml", policy_yaml("frontend", "lock", "{podSelector: {}}"))
            wait_until(lambda: agent.get("/healthz")[0] == 503, "/healthz red")
            _, body = agent.get("/healthz")
            assert "dir-source: AttributeError" in body and agent.get("/readyz")[0] == 503
            kill_if_held(held)  # the loop finishes its step; the process exits
            assert agent.exit_code() == 70
        finally:
            kill_if_held(held)


def test_a_malformed_object_in_the_folder_is_counted_and_later_changes_are_applied(folder, netns):
    """`metadata: oops` used to raise in the event path: the loop ended, /healthz and /readyz
    stayed 200 and no later change was ever applied."""
    (folder / "oops.yaml").write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: oops\n"
                                      "spec: {podSelector: {}}\n")
    with running(folder, netns) as agent:
        agent.wait_record("synced")
        assert agent.get("/healthz") == (200, "ok\n")
        assert agent.metric('netpol_invalid_objects_total{kind="NetworkPolicy"}') >= 1
        write_atomically(folder / "zz.yaml", policy_yaml("frontend", "lock-frontend", "{podSelector: {}}"))
        agent.wait_record("synced", resource_versions=dict.fromkeys(KIND_NAMES, "dir-2"))
        assert nft_table(netns) == expected_table(folder)
        assert "frontend/lock-frontend" in nft(netns, "list", "table", "inet", "netpol").stdout
        assert agent.get("/healthz") == (200, "ok\n") and agent.get("/readyz")[0] == 200


# ── drift: what others change in our table is restored ──────────────────────────────────────

DRIFT = {
    "table deleted": (["delete", "table", "inet", "netpol"], "table deleted netpol"),
    "accept inserted at the top of forward": (["insert", "rule", "inet", "netpol", "forward", "accept"],
                                              "rule added to chain forward"),
    "element added to one of our sets": (["add", "element", "inet", "netpol", "node-pods-v4", "{ 10.244.0.250 }"],
                                         "element added to set node-pods-v4"),
}


@pytest.mark.parametrize("case", list(DRIFT))
def test_a_change_made_to_our_table_from_outside_is_restored_without_any_cluster_change(case, folder, netns):
    """It used to survive until the next cluster change (an accept at the top of forward
    outlived 6 syncs, /readyz 200)."""
    command, said = DRIFT[case]
    with running(folder, netns) as agent:
        agent.wait_record("synced")
        expected = expected_table(folder)
        assert nft_table(netns) == expected
        assert nft(netns, *command).returncode == 0
        agent.wait_record("repaired: the table is the program last applied")
        assert agent.metric('netpol_repairs_total{what="table"}') == 1
        drift = agent.wait_record("drift: our table was changed from outside; restoring the program last applied")
        assert any(found.startswith(said) for found in drift["found"]), drift
        assert drift["by"] and drift["by"][0].startswith("nft (thread ")
        assert nft_table(netns) == expected
        assert agent.get("/readyz")[0] == 200 and agent.record("synced", mode="full") is not None


def test_a_route_removed_from_outside_is_added_back(folder, netns):
    for args in (["link", "add", "fabric", "type", "veth", "peer", "name", "fabric-peer"],
                 ["addr", "add", "192.168.50.10/24", "dev", "fabric"],
                 ["link", "set", "fabric-peer", "up"], ["link", "set", "fabric", "up"]):
        subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True)

    def our_routes() -> str:
        return subprocess.run(["ip", "-n", netns, "route", "show", "proto", "199"], capture_output=True,
                              text=True, check=True).stdout

    with running(folder, netns) as agent:
        wait_until(lambda: "10.244.1.0/24 via 192.168.50.11" in our_routes(), "the route to node-b")
        subprocess.run(["ip", "-n", netns, "route", "flush", "proto", "199"], check=True)  # the README's cleanup
        assert our_routes() == ""
        agent.wait_record("drift: our routes were changed from outside; repaired")
        assert agent.metric('netpol_repairs_total{what="routes"}') == 1
        assert "10.244.1.0/24 via 192.168.50.11" in our_routes()


# ── in a pod: in-cluster config over TLS, its ClusterRole enforced ───────────────────────────


def in_pod_env(api: FakeApiServer, directory: Path) -> dict[str, str]:
    return dict(os.environ, KUBERNETES_SERVICE_HOST=api.host, KUBERNETES_SERVICE_PORT=str(api.port),
                **{DIR_VARIABLE: str(directory)})


def test_in_a_pod_the_agent_follows_the_cluster_over_tls_within_its_cluster_role_across_a_token_rotation(
        folder, netns, tmp_path):
    objects = read_objects(str(folder))
    assert objects is not None
    certs = make_serving_certificate(tmp_path / "pki")
    with FakeApiServer(tls=certs, rbac=RULES, user=USER, bookmark_interval=0.2) as api:
        api.apply_all(o for kind in objects.values() for o in kind)
        with running(None, netns, env=in_pod_env(api, api.service_account(tmp_path / "sa"))) as agent:
            agent.wait_record("synced")
            assert nft_table(netns) == expected_table(folder)
            assert api.wait_watching(len(KIND_NAMES), HANG)  # every watch open: the rotation finds none mid-request
            api.rotate_token()
            api.drop_watches()
            api.apply(policy_object("lock-frontend", "frontend"))
            wait_until(lambda: "frontend/lock-frontend" in nft(netns, "list", "table", "inet", "netpol").stdout,
                       "a policy made after the rotation enforced")
            assert agent.proc.poll() is None and agent.get("/readyz")[0] == 200
        assert api.forbidden_requests() == [] and api.unauthorized_requests() == []


def test_in_a_pod_without_its_token_the_agent_exits_1_naming_the_file(netns, tmp_path):
    certs = make_serving_certificate(tmp_path / "pki")
    with FakeApiServer(tls=certs, rbac=RULES, user=USER) as api:
        directory = api.service_account(tmp_path / "sa")
        (directory / "token").unlink()
        with running(None, netns, env=in_pod_env(api, directory)) as agent:
            assert agent.exit_code() == 1
        said = f"in-cluster config: service-account token {directory}/token: No such file or directory"
        assert any(said in r.get("raw", "") for r in agent.records), agent.records[-3:]
        assert not any("Traceback" in r.get("raw", "") for r in agent.records)
    assert nft(netns, "list", "table", "inet", "netpol").returncode != 0  # nothing was written
