"""The all-nodes compile sharded over processes (netpol.pipeline.sharded) prints exactly what one process
prints, reports bad input exactly as `load_state` does, and never leaves a worker behind."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netpol
from netpol.backends.nft_document import script
from netpol.backends.nftables import build_table, render
from netpol.cli import main
from netpol.compile.compiler import compile_cluster
from netpol.errors import InputError, WorkerError
from netpol.load.encode import encode_network_policy, encode_state
from netpol.load.manifests import load_state
from netpol.model import ClusterState
from netpol.pipeline import phases
from netpol.pipeline import sharded as parallel
from netpol.testing import clusters
from tests.conftest import policy_object

EXAMPLES = Path(netpol.__file__).parent / "examples"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())


def serial(state: ClusterState) -> dict[str, str]:
    return {node: render(program) for node, program in compile_cluster(state).items()}


def write_list(path: Path, state: ClusterState, seed: int = 0, extra: list[dict[str, Any]] = ()) -> Path:
    """The state as one `v1/List` file, its items shuffled (the output must not depend on order)."""
    document = encode_state(state)
    document["items"] += list(extra)
    random.Random(seed).shuffle(document["items"])
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_the_examples_print_as_in_one_process(example, jobs):
    expected = serial(load_state([str(EXAMPLES / example)]))
    assert dict(phases.render_paths([str(EXAMPLES / example)], jobs)) == expected
    assert dict(parallel.render_nodes(load_state([str(EXAMPLES / example)]), jobs)) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=clusters(max_pods=10, max_policies=6, max_cluster_policies=3), jobs=st.integers(2, 4),
       seed=st.integers(0, 9))
def test_generated_clusters_print_as_in_one_process(tmp_path, state, jobs, seed):
    """More processes than namespaces included: the extra ones have nothing to do. Cluster
    policies included: every process reads them, chains two shards print are joined once."""
    expected = serial(state)
    path = write_list(tmp_path / "cluster.json", state, seed)
    assert dict(phases.render_paths([str(path)], jobs)) == expected
    assert dict(parallel.render_nodes(state, jobs)) == expected


@settings(max_examples=80, deadline=None)
@given(state=clusters(max_pods=10, max_policies=6, max_cluster_policies=3))
def test_printing_pods_in_parts_equals_printing_the_table(state):
    """`render` joins printed parts (`script_text`); `script(build_table(…))` prints the object
    model that the JSON form is also printed from: the two must agree byte for byte."""
    for node, program in compile_cluster(state).items():
        header = f"netpol ruleset for node {node}: `nft -f` replaces table inet netpol atomically"
        assert render(program) == script(build_table(program), header)


@settings(max_examples=200)
@given(weights=st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.integers(1, 500), max_size=30),
       count=st.integers(1, 5))
def test_shards_are_runs_of_sorted_namespaces(weights, count):
    owners = parallel.balance(weights, count)
    assert set(owners) == set(weights)
    indices = [owners[ns] for ns in sorted(weights)]
    assert indices == sorted(indices)  # runs, in namespace order
    assert sorted(set(indices)) == list(range(len(set(indices))))  # numbered from 0, none empty
    assert all(0 <= index < count for index in indices)


def test_the_shard_plan_keeps_no_string_of_the_parsed_documents(tmp_path):
    """Namespaces are counted from the parsed documents before decoding; the plan, kept to the
    end, must hold strings of its own, or it pins the documents' memory once they are freed."""
    path = write_list(tmp_path / "cluster.json", load_state([str(EXAMPLES / "shop")]))
    document = orjson.loads(path.read_bytes())
    weights, pods, policies = parallel._raw_counts([("cluster.json", document)])
    raw = {id(item["metadata"]["namespace"]) for item in document["items"]
           if "namespace" in item["metadata"]}
    assert weights and pods and policies and not raw & {id(ns) for ns in weights}


# -- bad input ---------------------------------------------------------------------------------

def bad_policy(namespace: str) -> dict[str, Any]:
    """A label value the API server refuses (it may not start with `-`)."""
    return policy_object("broken", namespace, podSelector={"matchLabels": {"app": "-bad-"}})


def problems_of(load: Any) -> list[str]:
    with pytest.raises(InputError) as caught:
        load()
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("where", ["first", "last", "both", "duplicate"])
def test_bad_input_is_reported_as_load_state_reports_it(tmp_path, where):
    """A problem in the parent's shard, in a worker's shard, in both, or between two objects:
    the report is `load_state`'s, whole and in order."""
    state = load_state([str(EXAMPLES / "shop")])
    namespaces = sorted(n.name for n in state.namespaces)
    extra = {"first": [bad_policy(namespaces[0])], "last": [bad_policy(namespaces[-1])],
             "both": [bad_policy(namespaces[0]), bad_policy(namespaces[-1])],
             "duplicate": [encode_network_policy(state.policies[-1])]}[where]
    path = write_list(tmp_path / "cluster.json", state, extra=extra)
    expected = problems_of(lambda: load_state([str(path)]))
    assert expected
    assert problems_of(lambda: list(phases.render_paths([str(path)], 2))) == expected


def test_syntax_errors_and_missing_files_are_reported_as_load_state_reports_them(tmp_path):
    good = write_list(tmp_path / "a.json", load_state([str(EXAMPLES / "shop")]))
    broken = tmp_path / "b.yaml"
    broken.write_text("kind: [unclosed\n")
    for paths in ([str(good), str(broken)], [str(good), str(tmp_path / "missing.json")]):
        expected = problems_of(lambda paths=paths: load_state(paths))
        assert problems_of(lambda paths=paths: list(phases.render_paths(paths, 2))) == expected


# -- workers that fail -------------------------------------------------------------------------

@pytest.fixture
def forked(monkeypatch):
    """The pids of the workers a test forks."""
    pids: list[int] = []
    start = parallel._Worker.__init__

    def recording(self: Any, *args: Any) -> None:
        start(self, *args)
        pids.append(self.pid)

    monkeypatch.setattr(parallel._Worker, "__init__", recording)
    return pids


def reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def in_workers_only(monkeypatch, action):
    parent = os.getpid()
    compile_shard = parallel.compile_shard

    def failing(*args: Any) -> Any:
        if os.getpid() != parent:
            action()
        return compile_shard(*args)

    monkeypatch.setattr(parallel, "compile_shard", failing)


def test_a_worker_that_raises_is_reported_with_its_traceback_and_reaped(monkeypatch, forked):
    def fail() -> None:
        raise RuntimeError("planted failure")

    in_workers_only(monkeypatch, fail)
    with pytest.raises(WorkerError, match="planted failure"):
        list(phases.render_paths([str(EXAMPLES / "shop")], 2))
    assert forked and all(reaped(pid) for pid in forked)


def test_a_worker_that_dies_is_reported_and_reaped(monkeypatch, forked):
    in_workers_only(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(WorkerError, match="killed by SIGKILL"):
        list(phases.render_paths([str(EXAMPLES / "shop")], 2))
    assert forked and all(reaped(pid) for pid in forked)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_failing_parent_kills_and_reaps_its_workers_and_closes_their_pipes(monkeypatch, forked):
    parent = os.getpid()
    compile_shard = parallel.compile_shard

    def failing(*args: Any) -> Any:
        if os.getpid() == parent:
            raise KeyboardInterrupt  # Ctrl-C while the workers run
        return compile_shard(*args)

    monkeypatch.setattr(parallel, "compile_shard", failing)
    before = open_fds()
    with pytest.raises(KeyboardInterrupt):
        list(phases.render_paths([str(EXAMPLES / "shop")], 3))
    assert len(forked) == 2 and all(reaped(pid) for pid in forked)
    assert open_fds() <= before


def test_without_jobs_it_splits_only_when_there_is_enough_work(tmp_path, monkeypatch, forked):
    """Forking pays only above SPLIT_MIN_WORK (pods + 4 × policies); here the threshold is
    moved so that the small shop example falls on either side of it."""
    shop = load_state([str(EXAMPLES / "shop")])
    work = len(shop.pods) + parallel.POLICY_WEIGHT * len(shop.policies)
    path = write_list(tmp_path / "cluster.json", shop)
    for threshold, processes in ((work + 1, 1), (work, min(parallel.available_cpus(), len(shop.namespaces)))):
        monkeypatch.setattr(parallel, "SPLIT_MIN_WORK", threshold)
        forked.clear()
        planned: list[int] = []
        assert dict(phases.render_paths([str(path)], None, planned.append)) == serial(shop)
        assert planned == [processes] and len(forked) == processes - 1


def test_without_jobs_a_threaded_caller_is_not_forked(monkeypatch, forked):
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 2)
    planned: list[int] = []
    expected = serial(load_state([str(EXAMPLES / "shop")]))
    assert dict(phases.render_paths([str(EXAMPLES / "shop")], None, planned.append)) == expected
    assert planned == [1] and not forked
    assert dict(phases.render_paths([str(EXAMPLES / "shop")], 2, planned.append)) == expected
    assert planned == [1, 2] and len(forked) == 1  # asked for: forked all the same


# -- the command line --------------------------------------------------------------------------

def test_compile_all_nodes_with_jobs_writes_what_one_job_writes(tmp_path, capsys):
    for jobs in ("1", "2"):
        assert main(["compile", "-f", str(EXAMPLES / "shop"), "--all-nodes", "--out-dir",
                     str(tmp_path / jobs), "--jobs", jobs]) == 0
    one = {p.name: p.read_text() for p in (tmp_path / "1").iterdir()}
    assert one and one == {p.name: p.read_text() for p in (tmp_path / "2").iterdir()}
    assert main(["compile", "-f", str(EXAMPLES / "shop"), "--all-nodes", "--out-dir", str(tmp_path / "0"),
                 "--jobs", "0"]) == 2
    assert "--jobs must be 1 or more" in capsys.readouterr().err


def test_a_dead_worker_is_a_clear_error_on_the_command_line(tmp_path, monkeypatch, capsys):
    in_workers_only(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert main(["compile", "-f", str(EXAMPLES / "shop"), "--all-nodes", "--out-dir", str(tmp_path),
                 "--jobs", "2"]) == 70
    err = capsys.readouterr().err
    assert "killed by SIGKILL" in err and "--jobs 1" in err and "Traceback" not in err
