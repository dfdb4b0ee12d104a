"""The documented example of netpol.testing works, and the oracle catches a wrong engine."""

from __future__ import annotations

import pytest
from hypothesis import Phase, given, settings

import netpol.testing
from netpol.semantics.reference import pods_connect
from netpol.testing import assert_agrees, clusters, find_disagreements


def engine_that_ignores_named_ports(state, src, dst, probe):
    """A plausible bug (Cilium #24779): named ports resolved against the *source* pod."""
    from netpol.semantics.reference import Endpoint, allowed
    swapped = [(s, d) for s in src.ips for d in dst.ips if s.version == d.version]
    return src == dst or any(
        allowed(state, Endpoint(s, src), Endpoint(d, src), probe.port, probe.protocol).allowed
        and allowed(state, Endpoint(s, src), Endpoint(d, dst), probe.port, probe.protocol).egress.allowed
        for s, d in swapped)


@settings(max_examples=50)
@given(clusters())
def test_the_reference_agrees_with_itself(state):
    assert_agrees(state, lambda s, a, b, probe: pods_connect(s, a, b, probe.port, probe.protocol))


def test_the_oracle_finds_a_planted_bug(example_path):
    from netpol.load.manifests import load_state

    state = load_state([example_path])
    found = find_disagreements(state, engine_that_ignores_named_ports)
    assert found
    with pytest.raises(AssertionError, match="disagree with netpol.semantics"):
        assert_agrees(state, engine_that_ignores_named_ports)


def test_the_docstring_example_runs():
    """The example must catch the toy engine. Only that it fails matters here, not the smallest
    failing cluster: shrinking it from scratch (a clean clone has no example database) took
    minutes on a loaded CI machine, so the example is built under a profile without shrinking."""
    namespace: dict = {}
    code = netpol.testing.__doc__.split("::", 1)[1].split("\n\nA tool")[0]
    settings.register_profile("no-shrink", settings.get_profile("ci"),
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    settings.load_profile("no-shrink")
    try:
        exec(compile(__import__("textwrap").dedent(code), "<docstring>", "exec"), namespace)
    finally:
        settings.load_profile("ci")
    with pytest.raises(AssertionError):  # the toy engine allows everything: it must be caught
        namespace["test_my_engine_agrees"]()
