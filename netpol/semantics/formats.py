"""Rendering a ReachMap: table, json (DESIGN §3 contract), csv, html (cells linked to why),
grouped lines, and for people to look at: dot (a Graphviz graph of the groups) and md (markdown
for a pull request)."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator

from netpol.errors import UsageError
from netpol.model import ClusterState, Pod
from netpol.semantics import explain as explaining
from netpol.semantics.probes import Probe
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
td a{display:block;color:inherit;text-decoration:none}
.probes{display:flex;flex-wrap:wrap;gap:0 2.5em;align-items:flex-start}
th.corner{font-weight:normal;color:#666;font-size:.8em;vertical-align:bottom;text-align:right}
.legend span{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}
h2{font-size:1.1em;margin:.5em 0} h3{font-size:1em;margin:1em 0 .3em}
table.groups td{width:auto;height:auto;color:#222;font-weight:normal;text-align:left;padding:.2em .5em}
pre{background:#f6f6f6;padding:.5em;margin:.3em 0;overflow-x:auto}
section:target{outline:2px solid #1b7837;outline-offset:4px}
"""
HTML_MATRIX_CELLS = 100_000  # pods × pods × probes drawn as matrices (~10 MB); past it, the groups
HTML_EXPLANATIONS = 5_000  # `explain` texts written into one page (~0.1 ms and ~1 kB each)


def explain_cell(state: ClusterState, src: Pod, dst: Pod, probe: Probe) -> str:
    """`netpol explain`'s text for one cell of the map (two pods that share no address family
    cannot connect: said so, where `explain` refuses them)."""
    try:
        return explaining.render_text(explaining.explain(state, src, dst, probe))
    except UsageError as exc:
        return f"{src.key} -> {dst.key} on {probe}: DENIED\n  {exc}\n"


def _explain_command(src: Pod, dst: Pod, probe: Probe) -> str:
    return f"netpol explain -f PATH --from {src.key} --to {dst.key} --port {probe}"


def _counts(reach: ReachMap) -> str:
    namespaces = len({p.namespace for p in reach.pods})
    return (f"{len(reach.pods)} pod{'s' if len(reach.pods) != 1 else ''} in {namespaces} "
            f"namespace{'s' if namespaces != 1 else ''}, {len(reach.probes)} probe"
            f"{'s' if len(reach.probes) != 1 else ''}")


def render_html(reach: ReachMap, state: ClusterState | None = None) -> str:
    """A self-contained page: one colour matrix per probe, a tooltip on every cell, and — given
    the `state` — every cell a link to `explain`'s reason. Explanations are written per pair of
    pod classes (pods of a class have the same verdicts for the same reasons), for the first
    probes that HTML_EXPLANATIONS allows; for the others the legend gives the `netpol explain`
    command. Past HTML_MATRIX_CELLS cells the page shows the groups instead, each with the
    reason for one of its cells (within HTML_EXPLANATIONS; the command for the rest)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>netpol reachability</title>",
        f"<style>{_STYLE}</style></head><body><h1>Reachability</h1><p>{esc(_counts(reach))}</p>",
    ]
    if len(reach.pods) ** 2 * len(reach.probes) <= HTML_MATRIX_CELLS:
        parts += _html_matrices(reach, state)
    else:
        parts += _html_groups(reach, state)
    parts.append("</body></html>\n")
    return "".join(parts)


def _explained_probes(reach: ReachMap, state: ClusterState | None) -> int:
    """How many probes (the first ones) get explanations: one per pair of classes that holds
    two different pods, within HTML_EXPLANATIONS."""
    if state is None:
        return 0
    sizes = Counter(reach.pod_class)
    per_probe = len(sizes) ** 2 - sum(n == 1 for n in sizes.values())
    return min(len(reach.probes), HTML_EXPLANATIONS // per_probe) if per_probe else 0


def _html_matrices(reach: ReachMap, state: ClusterState | None) -> list[str]:
    esc = html.escape
    explained = _explained_probes(reach, state)
    command = "<code>netpol explain -f PATH --from NS/POD --to NS/POD --port PORT/PROTO</code>"
    first = "the first probe" if explained == 1 else f"the first {explained} probes"
    note = ("; click a cell for why" if explained == len(reach.probes) else
            f"; click a cell of {first} for why; {command} tells it for the others" if explained else
            f"; {command} tells why")
    parts = [
        f"<p class='legend'>rows: source, columns: destination{note}"
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
            parts += [_html_cell(reach, pi, s, d, pi < explained) for d in range(len(reach.pods))]
            parts.append("</tr>")
        parts.append("</table></div>")
    parts.append("</div>")
    if explained:
        assert state is not None  # explained is 0 without it
        parts += _html_explanations(reach, state, explained)
    return parts


def _html_cell(reach: ReachMap, pi: int, s: int, d: int, explained: bool) -> str:
    esc = html.escape
    src, dst, probe = reach.pods[s], reach.pods[d], reach.probes[pi]
    ok = reach.allowed(pi, s, d)
    verdict = "allowed" if ok else "denied"
    what = esc(f"{src.key} → {dst.key} {probe}: {verdict}")
    if s == d:
        return f"<td class='self' title='{what}'>•</td>"
    cls, mark = ("y", "✓") if ok else ("n", "✗")
    if explained:
        anchor = f"x{pi}-{reach.pod_class[s]}-{reach.pod_class[d]}"
        return f"<td class='{cls}'><a href='#{anchor}' title='{what} (click: why)'>{mark}</a></td>"
    return f"<td class='{cls}' title='{what}'>{mark}</td>"


def _html_explanations(reach: ReachMap, state: ClusterState, explained: int) -> list[str]:
    """One section per (probe, source class, destination class), for two pods of them."""
    esc = html.escape
    members = reach.class_members()
    sizes = _namespace_sizes(reach)
    parts = ["<h2>Why</h2>"]
    for pi in range(explained):
        probe = reach.probes[pi]
        for cs, srcs in enumerate(members):
            for cd, dsts in enumerate(members):
                pair = next(((s, d) for s in srcs[:2] for d in dsts[:2] if s != d), None)
                if pair is None:
                    continue  # one pod: only itself
                s, d = pair
                src_group, dst_group = describe_pods(reach, srcs, sizes), describe_pods(reach, dsts, sizes)
                verdict = "allowed" if reach.allowed(pi, s, d) else "denied"
                alike = ("" if len(srcs) == 1 and len(dsts) == 1 else
                         f"<p>shown for {esc(reach.pods[s].key)} → {esc(reach.pods[d].key)}; the other "
                         "pods of these groups are alike (namespace, labels, ports, ipBlocks)</p>")
                parts.append(f"<section id='x{pi}-{cs}-{cd}'><h3>{esc(src_group)} → {esc(dst_group)} on "
                             f"{esc(probe.span)}: {verdict}</h3>{alike}"
                             f"<pre>{esc(explain_cell(state, reach.pods[s], reach.pods[d], probe))}</pre>"
                             "</section>")
    return parts


def _html_groups(reach: ReachMap, state: ClusterState | None) -> list[str]:
    """The map as groups of allowed connections (everything not listed is denied), each with the
    reason for its first cell (or, past HTML_EXPLANATIONS, the command that tells)."""
    esc = html.escape
    cells = len(reach.pods) ** 2 * len(reach.probes)
    parts = [f"<p>{cells:,} cells are too many for one page (more than {HTML_MATRIX_CELLS:,}): these are "
             "the groups of allowed connections, as <code>netpol reach -o groups</code> prints them; "
             "everything not listed is denied. <code>netpol reach -o csv</code> lists every cell.</p>"
             "<table class='groups'><tr><th>from</th><th>to</th><th>allowed</th><th>why (one cell)</th></tr>"]
    for count, (src_group, dst_group, ports, cell) in enumerate(_sorted_groups(reach)):
        src, dst, probe = cell
        title = f"{src.key} → {dst.key} on {probe}"
        if state is not None and count < HTML_EXPLANATIONS:
            why = (f"<details><summary>{esc(title)}</summary>"
                   f"<pre>{esc(explain_cell(state, src, dst, probe))}</pre></details>")
        else:
            why = f"<code>{esc(_explain_command(src, dst, probe))}</code>"
        parts.append(f"<tr><td>{esc(src_group)}</td><td>{esc(dst_group)}</td><td>{esc(ports)}</td>"
                     f"<td>{why}</td></tr>")
    parts.append("</table>")
    return parts


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


def describe_pods(reach: ReachMap, pods: list[int], namespace_sizes: dict[str, int]) -> str:
    by_ns: dict[str, list[str]] = {}
    for i in sorted(pods, key=lambda i: reach.pods[i].key):
        by_ns.setdefault(reach.pods[i].namespace, []).append(reach.pods[i].name)
    return ", ".join(
        f"{ns}/*" if len(names) == namespace_sizes[ns] else f"{ns}/[{', '.join(names)}]"
        for ns, names in by_ns.items()
    )


def describe_probes(reach: ReachMap, probe_ids: tuple[int, ...]) -> str:
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
        lines.append(f"{describe_pods(reach, srcs, sizes)} => {describe_pods(reach, dsts, sizes)} : "
                     f"{describe_probes(reach, allowed)}")
    return "\n".join(sorted(lines)) + ("\n" if lines else "")


def _namespace_sizes(reach: ReachMap) -> dict[str, int]:
    return Counter(p.namespace for p in reach.pods)


def _sorted_groups(reach: ReachMap) -> list[tuple[str, str, str, tuple[Pod, Pod, Probe]]]:
    """`render_groups`' lines as (from, to, connections, one cell of the group: source,
    destination, probe), sorted as it sorts them; a pod alone with itself left out."""
    sizes = _namespace_sizes(reach)
    found = []
    for srcs, dsts, allowed in iter_groups(reach):
        if len(srcs) == 1 and dsts == srcs:
            continue
        s, d = next((s, d) for s in srcs[:2] for d in dsts[:2] if s != d)
        cell = (reach.pods[s], reach.pods[d], reach.probes[allowed[0]])
        found.append((describe_pods(reach, srcs, sizes), describe_pods(reach, dsts, sizes),
                      describe_probes(reach, allowed), cell))
    return sorted(found, key=lambda g: f"{g[0]} => {g[1]} : {g[2]}")


# -- Graphviz ------------------------------------------------------------------------------------

DOT_LINE = 48  # characters of a node label's line before it wraps


def dot_quote(text: str) -> str:
    """`text` as a DOT double-quoted string that a label shows as written: `"` escaped (the only
    escape DOT's grammar has), `\\` doubled (labels read `\\n`, `\\l`, `\\N` … as escapes), line
    breaks as `\\n`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return f'"{escaped}"'


def _wrapped(label: str) -> str:
    """A long `ns/[a, b, …]` on several lines, broken after commas."""
    lines, line = [], ""
    for word in label.split(", "):
        if line and len(line) + len(word) + 2 > DOT_LINE:
            lines.append(line + ",")
            line = word
        else:
            line = f"{line}, {word}" if line else word
    return "\n".join([*lines, line])


_DotNode = tuple[str, tuple[int, ...]]  # (namespace, its pods)
_DotEdges = dict[tuple[str, str], set[int]]  # (node id, node id) → allowed probe ids


def _dot_graph(reach: ReachMap) -> tuple[dict[_DotNode, str], _DotEdges, list[_DotNode]]:
    """The groups split by namespace: nodes (→ id), edges (ids → allowed probe ids), and the pods
    of no edge (they reach nothing and nothing reaches them), per namespace."""
    nodes: dict[_DotNode, str] = {}
    edges: _DotEdges = {}
    for srcs, dsts, allowed in iter_groups(reach):
        for src_part in _by_namespace(reach, srcs):
            for dst_part in _by_namespace(reach, dsts):
                if src_part == dst_part and len(src_part[1]) == 1:
                    continue  # a pod reaches itself: not an edge worth drawing
                a = nodes.setdefault(src_part, f"n{len(nodes)}")
                b = nodes.setdefault(dst_part, f"n{len(nodes)}")
                edges.setdefault((a, b), set()).update(allowed)
    shown = {pod for _, pods in nodes for pod in pods}
    return nodes, edges, _by_namespace(reach, [i for i in range(len(reach.pods)) if i not in shown])


def render_dot(reach: ReachMap) -> str:
    """A Graphviz digraph of the groups (`iter_groups`): a node per group of pods of one namespace
    (`ns/[pods]`, `ns/*`; dashed: isolated pods), namespaces as clusters, an edge per allowed
    group labelled with its connections. Render with `dot -Tsvg`."""
    sizes = _namespace_sizes(reach)
    nodes, edges, alone = _dot_graph(reach)
    statements: dict[str, list[tuple[str, str]]] = {}  # namespace → (label, node statement)
    for (namespace, pods), node in nodes.items():
        label = _wrapped(describe_pods(reach, list(pods), sizes))
        statements.setdefault(namespace, []).append((label, f"{node} [label={dot_quote(label)}];"))
    for i, (namespace, pods) in enumerate(alone):
        label = _wrapped(describe_pods(reach, list(pods), sizes)) + "\n(isolated)"
        statements.setdefault(namespace, []).append((label, f'alone{i} [label={dot_quote(label)}, '
                                                            'style="rounded,dashed"];'))
    lines = [
        "digraph netpol {",
        f"  graph [label={dot_quote(f'netpol reachability: {_counts(reach)}; edges: allowed connections')},"
        ' labelloc=t, rankdir=LR, fontname="sans-serif"];',
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="sans-serif"];',
        '  edge [color="#1b7837", fontname="sans-serif", fontsize=10];',
    ]
    for namespace in sorted(statements):
        lines.append(f"  subgraph {dot_quote('cluster_' + namespace)} {{")
        lines.append(f'    label={dot_quote(namespace)}; style="rounded"; color="#999999";')
        lines += [f"    {statement}" for _, statement in sorted(statements[namespace])]
        lines.append("  }")
    for (a, b), allowed in sorted(edges.items(), key=lambda e: (int(e[0][0][1:]), int(e[0][1][1:]))):
        lines.append(f"  {a} -> {b} [label={dot_quote(describe_probes(reach, tuple(sorted(allowed))))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _by_namespace(reach: ReachMap, pods: list[int]) -> list[tuple[str, tuple[int, ...]]]:
    """`pods` split by namespace: (namespace, its pods, sorted)."""
    parts: dict[str, list[int]] = {}
    for i in pods:
        parts.setdefault(reach.pods[i].namespace, []).append(i)
    return [(namespace, tuple(sorted(members))) for namespace, members in sorted(parts.items())]


# -- Markdown --------------------------------------------------------------------------------------

MARKDOWN_MATRIX_PODS = 20  # past this, a matrix is too wide for a pull-request comment
MARKDOWN_PROBES_LISTED = 20


def md_code(text: str) -> str:
    """`text` as a code span that stays in its table cell: line breaks as spaces, `|` escaped
    (GFM splits cells at it even in code), a fence longer than any run of backticks inside."""
    flat = " ".join(text.splitlines()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", flat)), default=0) + 1)
    # CommonMark strips one space from each side of a span that starts and ends with one
    spaced = flat.startswith(" ") and flat.endswith(" ") and flat.strip(" ")
    pad = " " if flat.startswith("`") or flat.endswith("`") or spaced else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def allowed_pairs(reach: ReachMap, probe: int) -> int:
    """How many (source, destination) pairs of two different pods `probe` allows, by classes."""
    sizes = Counter(reach.pod_class)
    by_size: dict[int, int] = {}  # classes of k pods, as a bitset: popcounts, not loops over bits
    for cls, n in sizes.items():
        by_size[n] = by_size.get(n, 0) | 1 << cls
    total = 0
    for cs, n in sizes.items():
        row = reach.allowed_classes[probe][cs]
        total += n * sum(k * (row & bits).bit_count() for k, bits in by_size.items())
        total -= n if row >> cs & 1 else 0  # a pod and itself
    return total


def render_md(reach: ReachMap) -> str:
    """Markdown for a pull request or a wiki: the counts, allowed pairs per probe, the groups as a
    table and, up to MARKDOWN_MATRIX_PODS pods, a matrix per probe."""
    n = len(reach.pods)
    pairs = n * (n - 1)
    lines = ["# Reachability", "", f"{_counts(reach)}, {pairs:,} pairs of two different pods per probe.", ""]
    if len(reach.probes) <= MARKDOWN_PROBES_LISTED:
        lines += ["| probe | allowed pairs |", "|---|--:|"]
        lines += [f"| {md_code(probe.span)} | {allowed_pairs(reach, pi):,} of {pairs:,} |"
                  for pi, probe in enumerate(reach.probes)]
    else:
        allowed = sum(allowed_pairs(reach, pi) for pi in range(len(reach.probes)))
        lines.append(f"Allowed: {allowed:,} of {pairs * len(reach.probes):,} (pair, probe) cells.")
    groups = _sorted_groups(reach)
    lines += ["", "## Allowed connections", "",
              f"{len(groups)} group{'s' if len(groups) != 1 else ''} (`ns/*`: every pod of the namespace); "
              "everything else is denied; a pod always reaches itself.", ""]
    if groups:
        lines += ["| from | to | allowed |", "|---|---|---|"]
        lines += [f"| {md_code(a)} | {md_code(b)} | {md_code(ports)} |" for a, b, ports, _ in groups]
    if n <= MARKDOWN_MATRIX_PODS:
        lines += _md_matrices(reach)
    else:
        lines += ["", f"The matrices are left out ({n} pods, more than {MARKDOWN_MATRIX_PODS}): "
                      "`netpol reach -o html` draws them, `-o csv` lists every cell."]
    return "\n".join(lines) + "\n"


def _md_matrices(reach: ReachMap) -> list[str]:
    lines = ["", "## Matrices", "",
             "Rows: source, columns: destination (numbered as the rows); "
             "✓ allowed, ✗ denied, • the pod itself."]
    numbers = range(1, len(reach.pods) + 1)
    for pi, probe in enumerate(reach.probes):
        lines += ["", f"### {md_code(probe.span)}", "",
                  "| | source | " + " | ".join(map(str, numbers)) + " |",
                  "|--:|---|" + ":-:|" * len(reach.pods)]
        for s, src in enumerate(reach.pods):
            cells = ("•" if s == d else "✓" if reach.allowed(pi, s, d) else "✗"
                     for d in range(len(reach.pods)))
            lines.append(f"| {s + 1} | {md_code(src.key)} | " + " | ".join(cells) + " |")
    return lines


def render_reach(name: str, reach: ReachMap, state: ClusterState | None = None) -> str:
    """`RENDERERS[name]`, given the cluster where the format explains cells (`html`)."""
    if name == "html":
        return render_html(reach, state)
    return RENDERERS[name](reach)


RENDERERS: dict[str, Callable[[ReachMap], str]] = {
    "table": render_table,
    "json": render_json,
    "csv": render_csv,
    "html": render_html,
    "groups": render_groups,
    "dot": render_dot,
    "md": render_md,
}
