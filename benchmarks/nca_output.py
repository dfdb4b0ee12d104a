"""Reading network-config-analyzer's `txt_no_fw_rules` output, to compare its pod-to-pod map with ours.

Lines look like `ns-0/web-1 => ns-2/api-3 : {protocols:TCP,dst_ports:8080,9090}` or
`… : All connections`; address ranges (`0.0.0.0-9.255.255.255`) stand for outside endpoints and are
skipped here: NCA never matches ipBlocks against pod IPs, so only pod-to-pod lines are comparable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from netpol.semantics.probes import Probe

_CONN_SET = re.compile(r"\{protocols:(?P<protocols>[A-Z, ]+)(?:,dst_ports:(?P<ports>[0-9,\-]+))?\}")
_POD = re.compile(r"^[a-z0-9-]+/[a-z0-9.-]+$")


def _allows(conns: str, probe: Probe) -> bool:
    if conns.strip() == "All connections":
        return True
    for match in _CONN_SET.finditer(conns):
        protocols = {p.strip() for p in match.group("protocols").split(",")}
        if probe.protocol not in protocols:
            continue
        if match.group("ports") is None:
            return True
        for part in match.group("ports").split(","):
            low, _, high = part.partition("-")
            if probe.port is not None and int(low) <= probe.port <= int(high or low):
                return True
    return False


def listed_pods(path: Path) -> set[str]:
    """Every pod NCA's output names, on either side of a line. With kubectl's `ownerReferences`
    on the pods, NCA 2.1.0 names two pods of each ReplicaSet (`api-0-0`, `api-0-1` of five):
    cells of the others cannot be compared."""
    pods: set[str] = set()
    for line in path.read_text().splitlines():
        src, arrow, rest = line.partition(" => ")
        if arrow:
            pods.update(p for p in (src, rest.partition(" : ")[0]) if _POD.match(p))
    return pods


def pod_cells(path: Path, probes: tuple[Probe, ...]) -> Iterator[tuple[str, str, Probe]]:
    """(source pod, destination pod, probe) for every pod-to-pod connection NCA reports."""
    for line in path.read_text().splitlines():
        src, arrow, rest = line.partition(" => ")
        if not arrow:
            continue
        dst, _, conns = rest.partition(" : ")
        if not (_POD.match(src) and _POD.match(dst)):
            continue
        for probe in probes:
            if _allows(conns, probe):
                yield src, dst, probe
