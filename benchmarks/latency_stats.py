"""Nearest-rank percentiles for the latency benchmarks (cni_latency.py, agent_latency.py): a
reported p99 is a latency that was actually measured."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """The value at rank round(q · (n − 1)) of the sorted values; `q` in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
