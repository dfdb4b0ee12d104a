"""The nftables backend in the kernel: `nft -c` accepts every generated ruleset, loading twice
changes nothing, and foreign tables survive. Only inside a namespace the test creates and deletes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from netpol.backends.nftables import render
from netpol.compile.compiler import compile_cluster
from netpol.load.manifests import load_state
from netpol.testing import clusters
from tests.kernel.conftest import fresh_netns, nft

netns = pytest.fixture(fresh_netns, scope="module")


def test_the_kernel_accepts_loads_twice_and_spares_foreign_tables(example_path, netns):
    programs = compile_cluster(load_state([example_path]))
    assert nft(netns, "add", "table", "ip", "foreign").returncode == 0
    assert nft(netns, "add", "chain", "ip", "foreign", "keep").returncode == 0
    for program in programs.values():
        text = render(program)
        checked = nft(netns, "-c", "-f", "-", stdin=text)
        assert checked.returncode == 0, checked.stderr
        for _ in range(2):  # loading the same ruleset twice changes nothing
            loaded = nft(netns, "-f", "-", stdin=text)
            assert loaded.returncode == 0, loaded.stderr
        first = nft(netns, "list", "table", "inet", "netpol").stdout
        assert nft(netns, "-f", "-", stdin=text).returncode == 0
        assert nft(netns, "list", "table", "inet", "netpol").stdout == first
    assert "chain keep" in nft(netns, "list", "table", "ip", "foreign").stdout


@settings(max_examples=40)
@given(clusters(max_pods=8, max_policies=5))
def test_generated_rulesets_pass_the_kernel_check(netns, state):
    for program in compile_cluster(state).values():
        checked = nft(netns, "-c", "-f", "-", stdin=render(program))
        assert checked.returncode == 0, checked.stderr
