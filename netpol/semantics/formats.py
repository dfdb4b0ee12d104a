"""Rendering a ReachMap: table, json (DESIGN §3 contract), csv, html and grouped lines."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable, Iterator

from netpol.semantics.reach import ReachMap, iter_bits


def render_json(reach: ReachMap) -> str:
    """DESIGN §3: {"probes": [{"port", "protocol", "matrix": {src: {dst: bool}}}]}; a probe
    standing for a range of ports that behave alike also has "end_port" (inclusive)."""
    keys = [p.key for p in reach.pods]
    probes = []
    for pi, probe in enumerate(reach.probes):
        matrix = {
            src: {dst: reach.allowed(pi, s, d) for d, dst in enumerate(keys)}
            for s, src in enumerate(keys)
        }
        entry: dict[str, object] = {"port": probe.port}
        if probe.last is not None and probe.last != probe.port:
            entry["end_port"] = probe.last  # a range of ports that all behave alike (endPort)
        probes.append({**entry, "protocol": probe.protocol, "matrix": matrix})
    return json.dumps({"probes": probes}, indent=1) + "\n"


def render_csv(reach: ReachMap) -> str:
    """One row per (probe, source, destination)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["port", "protocol", "source", "destination", "allowed"])
    for pi, probe in enumerate(reach.probes):
        for s, src in enumerate(reach.pods):
            for d, dst in enumerate(reach.pods):
                port = "" if probe.port is None else probe.port
                verdict = "true" if reach.allowed(pi, s, d) else "false"
                writer.writerow([port, probe.protocol, src.key, dst.key, verdict])
    return out.getvalue()


def render_table(reach: ReachMap) -> str:
    """A grid per probe: rows are sources, columns destinations by number; '.' allowed, 'X' denied."""
    width = len(str(len(reach.pods)))
    name_width = max((len(p.key) for p in reach.pods), default=0)
    lines: list[str] = []
    for pi, probe in enumerate(reach.probes):
        lines.append(f"{probe.span}   (rows: source, columns: destination; . allowed, X denied)")
        digits = [str(i + 1).rjust(width) for i in range(len(reach.pods))]
        for row in range(width):
            lines.append(" " * (name_width + width + 4) + " ".join(d[row] for d in digits))
        for s, src in enumerate(reach.pods):
            cells = " ".join("." if reach.allowed(pi, s, d) else "X" for d in range(len(reach.pods)))
            lines.append(f"{str(s + 1).rjust(width)}  {src.key.ljust(name_width)}  {cells}")
        lines.append("")
    return "\n".join(lines)


_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0 0 2em}
th,td{border:1px solid #ccc;padding:0;text-align:center}
th.src{text-align:right;padding:0 .5em;white-space:nowrap;font-weight:normal}
th.dst{height:9em;vertical-align:bottom;white-space:nowrap;font-weight:normal}
th.dst div{writing-mode:vertical-rl;transform:rotate(180deg);padding:.3em 0}
td{width:1.5em;height:1.5em;font-size:.85em;color:#fff;font-weight:bold}
td.y{background:#1b7837} td.n{background:#c51b7d} td.self{background:#d9f0d3;color:#1b7837}
.probes{display:flex;flex-wrap:wrap;gap:0 2.5em;align-items:flex-start}
th.corner{font-weight:normal;color:#666;font-size:.8em;vertical-align:bottom;text-align:right}
.legend span{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}
h2{font-size:1.1em;margin:.5em 0}
"""


def render_html(reach: ReachMap) -> str:
    """A self-contained page: one colour matrix per probe, a tooltip on every cell."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>netpol reachability</title>",
        f"<style>{_STYLE}</style></head><body><h1>Reachability</h1>",
        "<p class='legend'>rows: source, columns: destination"
        "<span style='background:#1b7837'></span>✓ allowed<span style='background:#c51b7d'></span>✗ denied"
        "<span style='background:#d9f0d3'></span>• the pod itself</p><div class='probes'>",
    ]
    for pi, probe in enumerate(reach.probes):
        parts.append(f"<div><h2>{esc(probe.span)}</h2><table>"
                     "<tr><th class='corner'>source \\ destination</th>")
        parts += [f"<th class='dst'><div>{esc(p.key)}</div></th>" for p in reach.pods]
        parts.append("</tr>")
        for s, src in enumerate(reach.pods):
            parts.append(f"<tr><th class='src'>{esc(src.key)}</th>")
            for d, dst in enumerate(reach.pods):
                ok = reach.allowed(pi, s, d)
                cls, mark = ("self", "•") if s == d else (("y", "✓") if ok else ("n", "✗"))
                verdict = "allowed" if ok else "denied"
                parts.append(f"<td class='{cls}' title='{esc(src.key)} → {esc(dst.key)} "
                             f"{esc(str(probe))}: {verdict}'>{mark}</td>")
            parts.append("</tr>")
        parts.append("</table></div>")
    parts.append("</div></body></html>\n")
    return "".join(parts)


def _partition(universe: int, cuts: list[int]) -> list[int]:
    """Split `universe` into blocks that each cut either contains or misses entirely."""
    blocks = [universe] if universe else []
    for cut in cuts:
        split = []
        for block in blocks:
            inside, outside = block & cut, block & ~cut
            split += [b for b in (inside, outside) if b]
        blocks = split
    return blocks


def _describe_pods(reach: ReachMap, pods: list[int], namespace_sizes: dict[str, int]) -> str:
    by_ns: dict[str, list[str]] = {}
    for i in sorted(pods, key=lambda i: reach.pods[i].key):
        by_ns.setdefault(reach.pods[i].namespace, []).append(reach.pods[i].name)
    return ", ".join(
        f"{ns}/*" if len(names) == namespace_sizes[ns] else f"{ns}/[{', '.join(names)}]"
        for ns, names in by_ns.items()
    )


def _describe_probes(reach: ReachMap, probe_ids: tuple[int, ...]) -> str:
    if len(probe_ids) == len(reach.probes):
        return "all probed ports"
    by_proto: dict[str, list[str]] = {}
    for pi in probe_ids:
        probe = reach.probes[pi]
        by_proto.setdefault(probe.protocol, []).append(probe.span.split("/")[0])
    return "; ".join(f"{proto} {','.join(ports)}" for proto, ports in by_proto.items())


def iter_groups(reach: ReachMap) -> Iterator[tuple[list[int], list[int], tuple[int, ...]]]:
    """(source pods, destination pods, allowed probe ids): the map in few, maximal groups."""
    members = reach.class_members()
    rows: dict[tuple[int, ...], int] = {}
    for c in range(len(reach.classes)):
        signature = tuple(per_probe[c] for per_probe in reach.allowed_classes)
        rows[signature] = rows.get(signature, 0) | 1 << c
    all_classes = (1 << len(reach.classes)) - 1
    for signature, src_classes in rows.items():
        for dst_block in _partition(all_classes, list(signature)):
            allowed = tuple(pi for pi, bits in enumerate(signature) if bits & dst_block)
            if not allowed:
                continue
            srcs = [p for c in iter_bits(src_classes) for p in members[c]]
            dsts = [p for c in iter_bits(dst_block) for p in members[c]]
            yield srcs, dsts, allowed


def render_groups(reach: ReachMap) -> str:
    """`src_ns/[pods] => dst_ns/[pods] : connections`, one line per maximal group, sorted.

    A pod's connections to itself are always allowed and not listed.
    """
    sizes: dict[str, int] = {}
    for p in reach.pods:
        sizes[p.namespace] = sizes.get(p.namespace, 0) + 1
    lines = []
    for srcs, dsts, allowed in iter_groups(reach):
        if len(srcs) == 1 and dsts == srcs:
            continue
        lines.append(f"{_describe_pods(reach, srcs, sizes)} => {_describe_pods(reach, dsts, sizes)} : "
                     f"{_describe_probes(reach, allowed)}")
    return "\n".join(sorted(lines)) + ("\n" if lines else "")


RENDERERS: dict[str, Callable[[ReachMap], str]] = {
    "table": render_table,
    "json": render_json,
    "csv": render_csv,
    "html": render_html,
    "groups": render_groups,
}
