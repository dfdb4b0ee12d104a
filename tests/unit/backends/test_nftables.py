"""The nftables backend: shape and stability of the text, and the kernel's own check of it.

Kernel tests run `nft` only inside a network namespace the test creates and always deletes.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import fresh_netns
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.backends.nftables import render, sorted_changes
from netpol.compile.ir import compile_cluster
from netpol.load.manifests import load_state
from netpol.testing import clusters

needs_kernel = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                                  reason="needs root and nft (make test installs nftables)")


netns = pytest.fixture(fresh_netns, scope="module")


def nft(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], input=stdin, text=True,
                          capture_output=True, check=False)


def test_one_table_stable_names_and_audit_comments(example_path):
    state = load_state([example_path])
    programs = compile_cluster(state)
    text = render(programs["node-a"])
    assert render(compile_cluster(load_state([example_path]))["node-a"]) == text  # stable across runs
    assert text.count("table inet netpol {") == 2 and "delete table inet netpol" in text
    assert "comment \"NetworkPolicy db/allow-postgres spec.ingress[0]\"" in text
    assert "10.244.0.30 : jump ingress-" in text  # postgres-0 is on node-a
    assert "10.244.1.30 : jump" not in text  # postgres-1 is not
    assert "cni0" not in text and "veth" not in text  # pods by address only


@needs_kernel
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


@needs_kernel
@settings(max_examples=40)
@given(clusters(max_pods=8, max_policies=5))
def test_generated_rulesets_pass_the_kernel_check(netns, state):
    for program in compile_cluster(state).values():
        checked = nft(netns, "-c", "-f", "-", stdin=render(program))
        assert checked.returncode == 0, checked.stderr


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(0, 3000), max_size=1500), st.sets(st.integers(0, 3000), max_size=8),
       st.sets(st.integers(0, 3000), max_size=8), st.booleans())
def test_sorted_changes_is_the_set_difference_both_ways(base, leaving, joining, unrelated):
    """Mostly shared elements (what the incremental compiler produces), or two unrelated sets."""
    was = base
    now = {a * 7 % 3001 for a in base} if unrelated else (base - leaving) | joining
    before = tuple((a, a) for a in sorted(was))
    after = tuple((a, a) for a in sorted(now))
    removed, added = sorted_changes(before, after)
    assert removed == [(a, a) for a in sorted(was - now)]
    assert added == [(a, a) for a in sorted(now - was)]
