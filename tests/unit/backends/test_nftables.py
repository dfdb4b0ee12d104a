"""The nftables backend without a kernel: shape and stability of the text, and the sorted-set
difference `render_update` is built on. The kernel's own check: tests/kernel/test_nftables.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.backends.nftables import render, sorted_changes
from netpol.compile.compiler import compile_cluster
from netpol.load.manifests import load_state
from tests.kernel.conftest import fresh_netns

netns = pytest.fixture(fresh_netns, scope="module")


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
