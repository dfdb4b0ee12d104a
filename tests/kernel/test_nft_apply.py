"""`netpol.dataplane.nft`: libnftables, a check pass, one transaction, the last good ruleset kept on
failure with nft's message and our offending line, idempotent, foreign tables untouched; and the
JSON form of the ruleset loads into exactly the same kernel state as the script.

Everything runs in network namespaces these tests create and always delete."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from netpol.backends.nftables import render, render_json
from netpol.compile.compiler import compile_cluster
from netpol.dataplane.nft import Applier
from netpol.errors import ApplyError
from netpol.load.manifests import load_state
from netpol.testing import clusters
from tests.kernel.conftest import fresh_netns, nft

netns = pytest.fixture(fresh_netns)
other_netns = pytest.fixture(fresh_netns)


def without_object_comments(listing: str) -> list[str]:
    """nft 1.0.6's JSON parser drops table/set/chain comments (rule comments survive)."""
    return [line for line in listing.splitlines() if not line.strip().startswith("comment ")]


@pytest.fixture
def shop_programs(example_path):
    return compile_cluster(load_state([example_path]))


def test_apply_is_idempotent_and_spares_foreign_tables(shop_programs, netns):
    assert nft(netns, "add", "table", "ip", "foreign").returncode == 0
    assert nft(netns, "add", "chain", "ip", "foreign", "keep").returncode == 0
    with Applier(netns) as applier:
        for program in shop_programs.values():
            text = render(program)
            assert applier.apply(text).changed
            listed = applier.list_table()
            assert "chain forward" in listed and listed == nft(netns, "list", "table", "inet", "netpol").stdout
            assert not applier.apply(text).changed  # same ruleset: nothing sent to the kernel
            assert applier.apply(text, force=True).changed  # sent again: the kernel state is identical
            assert applier.list_table() == listed
            assert "chain keep" in nft(netns, "list", "table", "ip", "foreign").stdout
    tables = nft(netns, "list", "tables").stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table inet netpol", "table ip foreign"]


def test_a_rejected_ruleset_keeps_the_last_good_one_and_names_the_line(shop_programs, netns):
    good = render(shop_programs["node-a"])
    with Applier(netns) as applier:
        applier.apply(good)
        before = applier.list_table()
        lines = good.splitlines()
        broken_at = next(i for i, line in enumerate(lines) if "ip saddr @pods-" in line)
        lines[broken_at] = lines[broken_at].replace("@pods-", "@missing-pods-")
        with pytest.raises(ApplyError) as failure:
            applier.apply("\n".join(lines) + "\n")
        assert failure.value.stage == "check"
        assert failure.value.messages[0].line == broken_at + 1
        assert "@missing-pods-" in failure.value.messages[0].text
        assert f"line {broken_at + 1}: " in str(failure.value) and "last good ruleset" in str(failure.value)
        assert applier.list_table() == before and applier.last_good == good
        with pytest.raises(ApplyError):
            applier.apply({"nftables": [{"add": {"chain": {"family": "inet", "table": "nope", "name": "x"}}}]})
        assert applier.list_table() == before


def test_json_form_loads_into_the_same_kernel_state(shop_programs, netns, other_netns):
    with Applier(netns) as by_text, Applier(other_netns) as by_json:
        for program in shop_programs.values():
            by_text.apply(render(program))
            by_json.apply(render_json(program))
            assert not by_json.apply(render_json(program)).changed
            assert without_object_comments(by_text.list_table()) == without_object_comments(by_json.list_table())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=clusters(max_pods=8, max_policies=5))
def test_json_and_script_agree_on_generated_clusters(netns, other_netns, state):
    with Applier(netns) as by_text, Applier(other_netns) as by_json:
        for program in compile_cluster(state).values():
            by_text.apply(render(program))
            by_json.apply(render_json(program))
            assert without_object_comments(by_text.list_table()) == without_object_comments(by_json.list_table())


def test_one_applier_takes_a_chain_of_updates_that_replace_chains(example_path, netns):
    """The agent's pattern: one Applier, a full table, then updates that drop a pod's chains and
    add new ones under the same names. With one libnftables context reused across calls, the
    check of the third update failed on a stale cache, with an error message read from freed
    memory (or an assertion that killed the process); every call now gets a fresh context."""
    from netpol.backends.nftables import render_update
    from netpol.compile.incremental import IncrementalCompiler
    from netpol.load.decode import decode_document

    state = load_state([example_path])
    compiler = IncrementalCompiler(state)
    node = "node-a"
    pod = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "extra", "namespace": "frontend",
                                                           "labels": {"app": "web"}},
           "spec": {"nodeName": node, "containers": [{"name": "c"}]},
           "status": {"phase": "Running", "podIP": "10.244.0.99"}}
    lock = {"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
            "metadata": {"name": "lock", "namespace": "kube-system"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.253.0.0/24"}}]}]}}
    events = [("ADDED", pod), ("DELETED", pod), ("ADDED", lock), ("DELETED", lock), ("ADDED", lock)]
    with Applier(netns) as applier:
        old = compiler.program(node)
        applier.apply(render(old))
        for event, raw in events:
            compiler.apply(event, decode_document(raw, "test")[0][0])
            new = compiler.program(node)
            applier.apply(render_update(old, new))
            old = new
        table = nft(netns, "list", "table", "inet", "netpol").stdout
    assert "10.253.0.0" in table and "10.244.0.99" not in table
