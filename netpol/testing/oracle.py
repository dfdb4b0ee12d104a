"""Checking any implementation against `netpol.semantics.reference`, cell by cell.

Two shapes of implementation are supported:
- a predicate `(state, src_pod, dst_pod, probe) -> bool`, asked about every pair and probe;
- a matrix in the `netpol reach -o json` shape (DESIGN §3), e.g. another tool's output
  converted, checked with `assert_matrix_agrees`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netpol.model import ClusterState, Pod
from netpol.semantics.explain import render_text
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reach import participants
from netpol.semantics.reference import pod_verdicts

Implementation = Callable[[ClusterState, Pod, Pod, Probe], bool]


@dataclass(frozen=True)
class Disagreement:
    """One cell where the implementation and the reference semantics differ."""

    state: ClusterState
    src: Pod
    dst: Pod
    probe: Probe
    got: bool | None

    @property
    def expected(self) -> bool:
        return any(v.allowed for v in self._verdicts())

    def _verdicts(self) -> list[Any]:
        return pod_verdicts(self.state, self.src, self.dst, self.probe.port, self.probe.protocol)

    def __str__(self) -> str:
        got = "missing" if self.got is None else ("allowed" if self.got else "denied")
        return (f"{self.src.key} -> {self.dst.key} on {self.probe}: implementation says {got}, "
                f"semantics say {'allowed' if self.expected else 'denied'}\n"
                + render_text(self._verdicts()))


def find_disagreements(state: ClusterState, implementation: Implementation,
                       probes: Sequence[Probe] | None = None) -> list[Disagreement]:
    """Every (probe, source, destination) where `implementation` differs from the semantics."""
    found = []
    pods = participants(state)
    for probe in probes or default_probes(state):
        for src in pods:
            for dst in pods:
                got = implementation(state, src, dst, probe)
                d = Disagreement(state, src, dst, probe, got)
                if got != d.expected:
                    found.append(d)
    return found


def _raise(disagreements: list[Disagreement], limit: int = 5) -> None:
    if disagreements:
        shown = "\n".join(str(d) for d in disagreements[:limit])
        more = len(disagreements) - limit
        raise AssertionError(f"{len(disagreements)} cell(s) disagree with netpol.semantics:\n{shown}"
                             + (f"\n… and {more} more" if more > 0 else ""))


def assert_agrees(state: ClusterState, implementation: Implementation,
                  probes: Sequence[Probe] | None = None) -> None:
    """Raise AssertionError, with explanations, if any cell disagrees with the semantics."""
    _raise(find_disagreements(state, implementation, probes))


def assert_matrix_agrees(state: ClusterState, reach_json: Mapping[str, Any]) -> None:
    """Check a `{"probes": [{"port", ["end_port",] "protocol", "matrix"}]}` document cell by cell."""
    disagreements = []
    pods = participants(state)
    for entry in reach_json["probes"]:
        probe = Probe(entry["protocol"], entry["port"], entry.get("end_port"))
        matrix = entry["matrix"]
        for src in pods:
            for dst in pods:
                got = matrix.get(src.key, {}).get(dst.key)
                d = Disagreement(state, src, dst, probe, got)
                if got != d.expected:
                    disagreements.append(d)
    _raise(disagreements)
