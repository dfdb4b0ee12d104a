"""The outputs people look at say exactly what the map says, whatever the names hold: the DOT
graph's edges, expanded back into cells, are the map's allowed cells (a pod and itself aside), its
dashed nodes the pods with none, and it parses (by Graphviz too, when installed); the markdown's
matrices and counts are the map's; every cell of the HTML report links to an explanation whose
verdict is the cell's, within the page's bounds; quotes, backslashes, line breaks, pipes and
`<script>` in names break none of them."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol.labels import Labels, LabelSelector
from netpol.load.manifests import load_state
from netpol.model import ClusterState, ContainerPort, Namespace, NetworkPolicy, Peer, Pod, PolicyPort, Rule
from netpol.semantics import formats
from netpol.semantics.formats import (
    RENDERERS,
    allowed_pairs,
    dot_quote,
    iter_groups,
    md_code,
    render_dot,
    render_groups,
    render_html,
    render_md,
)
from netpol.semantics.probes import default_probes
from netpol.semantics.reach import ReachMap, compute_reach
from netpol.testing.strategies import clusters
from tests.conftest import EXAMPLE, cluster, pod_yaml, run_cli

NASTY_NAMESPACE = 'q"ns\\'  # not a valid name in Kubernetes; the renderers must not care
NASTY_NAMES = ('we"b\\', "<script>alert('x')</script>", "line\nbreak|`pipe`")


def nasty_state() -> ClusterState:
    """Names with quotes, backslashes, a line break, a pipe, backticks and markup; plain/db admits
    app=x on 5432; plain/alone is isolated both ways."""
    ip = ipaddress.ip_address
    pods = [
        Pod(NASTY_NAMESPACE, NASTY_NAMES[0], Labels({"app": "x"}), (ip("10.0.0.1"),), ports=(ContainerPort(80),)),
        Pod(NASTY_NAMESPACE, NASTY_NAMES[1], Labels({"app": "y"}), (ip("10.0.0.2"),)),
        Pod("plain", NASTY_NAMES[2], Labels({"app": "x"}), (ip("10.0.0.3"),)),
        Pod("plain", "db", Labels({"app": "db"}), (ip("10.0.0.4"),), ports=(ContainerPort(5432),)),
        Pod("plain", "alone", Labels({"app": "alone"}), (ip("10.0.0.5"),)),
    ]
    only_x = Rule(peers=(Peer(pod_selector=LabelSelector(Labels({"app": "x"})), namespace_selector=LabelSelector()),),
                  ports=(PolicyPort("TCP", 5432),))
    policies = [NetworkPolicy("plain", "db", LabelSelector(Labels({"app": "db"})), ingress=(only_x,)),
                NetworkPolicy("plain", "alone", LabelSelector(Labels({"app": "alone"})),
                              policy_types=("Ingress", "Egress"))]
    return ClusterState.build([Namespace(NASTY_NAMESPACE, Labels({"evil": "v"}))], pods, policies=policies)


def reach_of(state: ClusterState) -> ReachMap:
    return compute_reach(state, default_probes(state))


SHOP = load_state([str(EXAMPLE)])
NASTY = nasty_state()


def allowed_cells(reach: ReachMap) -> set[tuple[str, str, str]]:
    """(source, destination, probe span) of every allowed cell of two different pods."""
    return {(src.key, dst.key, probe.span) for pi, probe in enumerate(reach.probes)
            for s, src in enumerate(reach.pods) for d, dst in enumerate(reach.pods)
            if s != d and reach.allowed(pi, s, d)}


# -- DOT: a small reader for the statements we write ------------------------------------------------

_DOT_TOKEN = re.compile(r'\s+|"(?:[^"\\]|\\.)*"|->|[{}\[\];,=]|[A-Za-z_][A-Za-z0-9_]*|-?[0-9]+(?:\.[0-9]+)?',
                        re.S)


def dot_tokens(text: str) -> list[str]:
    """DOT's tokens; fails if a character is in none (an unterminated string, a stray quote)."""
    tokens, at = [], 0
    while at < len(text):
        match = _DOT_TOKEN.match(text, at)
        assert match is not None, f"not DOT at {at}: {text[at:at + 40]!r}"
        if not match.group().isspace():
            tokens.append(match.group())
        at = match.end()
    return tokens


def dot_unquote(token: str) -> str:
    """An ID as a label shows it: `\\"`, `\\\\` and `\\n` are the escapes we write, and no other."""
    if not token.startswith('"'):
        return token
    return re.sub(r"\\(.)", lambda m: {'"': '"', "\\": "\\", "n": "\n"}[m.group(1)], token[1:-1], flags=re.S)


@dataclass
class DotGraph:
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    clusters: dict[str, list[str]] = field(default_factory=dict)  # subgraph id → its node ids
    cluster_labels: dict[str, str] = field(default_factory=dict)


def parse_dot(text: str) -> DotGraph:
    tokens = dot_tokens(text)
    assert tokens[:3] == ["digraph", "netpol", "{"]
    graph = DotGraph()
    assert _block(tokens, 3, graph, None) == len(tokens) - 1
    return graph


def _attributes(tokens: list[str], at: int) -> tuple[dict[str, str], int]:
    assert tokens[at] == "["
    attrs, at = {}, at + 1
    while tokens[at] != "]":
        key, equals, value = tokens[at:at + 3]
        assert equals == "="
        attrs[dot_unquote(key)] = dot_unquote(value)
        at += 4 if tokens[at + 3] in (",", ";") else 3
    return attrs, at + 1


def _block(tokens: list[str], at: int, graph: DotGraph, subgraph: str | None) -> int:
    """The statements up to the closing brace; returns its index."""
    while tokens[at] != "}":
        first = tokens[at]
        if first in ("graph", "node", "edge"):
            _, at = _attributes(tokens, at + 1)
        elif first == "subgraph":
            name = dot_unquote(tokens[at + 1])
            assert tokens[at + 2] == "{" and name not in graph.clusters
            graph.clusters[name] = []
            at = _block(tokens, at + 3, graph, name) + 1
        elif tokens[at + 1] == "=":
            if subgraph is not None and first == "label":
                graph.cluster_labels[subgraph] = dot_unquote(tokens[at + 2])
            at += 3
        elif tokens[at + 1] == "->":
            attrs, end = _attributes(tokens, at + 3)
            graph.edges.append((first, tokens[at + 2], attrs))
            at = end
        else:
            attrs, at = _attributes(tokens, at + 1)
            assert first not in graph.nodes
            graph.nodes[first] = attrs
            if subgraph is not None:
                graph.clusters[subgraph].append(first)
        if tokens[at] == ";":
            at += 1
    return at


def node_pods(reach: ReachMap, label: str) -> set[str]:
    """The pods a node's label names: `ns/*` or `ns/[a, b]` (lines broken after commas)."""
    namespace, _, rest = label.removesuffix("\n(isolated)").replace(",\n", ", ").partition("/")
    if rest == "*":
        return {p.key for p in reach.pods if p.namespace == namespace}
    assert rest.startswith("[") and rest.endswith("]")
    return {f"{namespace}/{name}" for name in rest[1:-1].split(", ")}


def edge_spans(reach: ReachMap, label: str) -> set[str]:
    """The probes an edge's label names: `TCP 53,7000-7010; UDP 53` or `all probed ports`."""
    if label == "all probed ports":
        return {p.span for p in reach.probes}
    spans = set()
    for part in label.split("; "):
        protocol, _, ports = part.partition(" ")
        spans |= {protocol if port == protocol else f"{port}/{protocol}" for port in ports.split(",")}
    return spans


_DESCRIBED = re.compile(r"([^/\[\],]+)/(?:\*|\[([^\]]*)\])(?:, |$)", re.S)


def described_pods(reach: ReachMap, text: str, flat: bool = False) -> set[str]:
    """The pods `ns/*, ns2/[a, b]` names (`flat`: line breaks in names were written as spaces)."""
    keys = {p.key.replace("\n", " ") if flat else p.key: p for p in reach.pods}
    found: set[str] = set()
    at = 0
    while at < len(text):
        match = _DESCRIBED.match(text, at)
        assert match is not None, text[at:]
        namespace, names = match.groups()
        if names is None:
            found |= {k for k, p in keys.items() if p.namespace == namespace}
        else:
            found |= {f"{namespace}/{name}" for name in names.split(", ")}
        at = match.end()
    assert found <= set(keys), found - set(keys)
    return found


def group_cells(reach: ReachMap, rows: list[list[str]], flat: bool = False) -> set[tuple[str, str, str]]:
    """The cells that rows of (from, to, connections, …) say are allowed."""
    return {(s, d, span) for row in rows for s in described_pods(reach, row[0], flat)
            for d in described_pods(reach, row[1], flat) for span in edge_spans(reach, row[2]) if s != d}


def flat_cells(reach: ReachMap) -> set[tuple[str, str, str]]:
    return {(s.replace("\n", " "), d.replace("\n", " "), span) for s, d, span in allowed_cells(reach)}


def check_dot_says_the_map(reach: ReachMap) -> DotGraph:
    graph = parse_dot(render_dot(reach))
    cells = set()
    for a, b, attrs in graph.edges:
        srcs, dsts = node_pods(reach, graph.nodes[a]["label"]), node_pods(reach, graph.nodes[b]["label"])
        cells |= {(s, d, span) for s in srcs for d in dsts for span in edge_spans(reach, attrs["label"]) if s != d}
    assert cells == allowed_cells(reach)
    touching = {p for s, d, _ in cells for p in (s, d)}
    isolated = {p for node, attrs in graph.nodes.items() if attrs.get("style") == "rounded,dashed"
                for p in node_pods(reach, attrs["label"])}
    assert isolated == {p.key for p in reach.pods} - touching
    assert {node for members in graph.clusters.values() for node in members} == set(graph.nodes)
    for name, members in graph.clusters.items():  # a cluster per namespace, its pods' nodes in it
        namespace = graph.cluster_labels[name]
        assert name == f"cluster_{namespace}"
        assert all(p.startswith(f"{namespace}/") for n in members for p in node_pods(reach, graph.nodes[n]["label"]))
    return graph


def test_dot_of_the_shop_is_its_map_as_a_graph():
    reach = reach_of(SHOP)
    graph = check_dot_says_the_map(reach)
    labels = {graph.nodes[a]["label"]: {} for a in graph.nodes}
    assert {"frontend/*", "backend/[api-1, api-2]", "db/*", "kube-system/*"} <= set(labels)
    by_label = {(graph.nodes[a]["label"], graph.nodes[b]["label"]): attrs["label"] for a, b, attrs in graph.edges}
    assert by_label[("frontend/*", "backend/[api-1, api-2]")] == "TCP 8443"
    assert len(graph.edges) == len(render_groups(reach).splitlines())  # one namespace on each side here


def test_dot_with_nasty_names_parses_and_says_the_map():
    reach = reach_of(NASTY)
    graph = check_dot_says_the_map(reach)
    assert f"cluster_{NASTY_NAMESPACE}" in graph.clusters
    labels = {attrs["label"] for attrs in graph.nodes.values()}
    assert f"{NASTY_NAMESPACE}/[{NASTY_NAMES[0]}]" in labels and "plain/[alone]\n(isolated)" in labels


@settings(max_examples=60)
@given(clusters(max_pods=7, max_policies=4))
def test_dot_says_the_map_of_generated_clusters(state):
    check_dot_says_the_map(reach_of(state))


@given(st.text())
def test_dot_quote_reads_back_as_written(text):
    quoted = dot_quote(text)
    assert "\n" not in quoted and "\r" not in quoted  # no raw line break: `\` + newline continues a line
    [token] = dot_tokens(quoted)
    assert dot_unquote(token) == text.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed (apt install graphviz)")
@pytest.mark.parametrize("state", [SHOP, NASTY], ids=["shop", "nasty"])
def test_graphviz_renders_it(state):
    reach = reach_of(state)
    text = render_dot(reach)
    graph = parse_dot(text)
    done = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and not done.stderr, done.stderr
    svg = ET.fromstring(done.stdout)
    groups = [g.get("class") for g in svg.iter("{http://www.w3.org/2000/svg}g")]
    assert groups.count("node") == len(graph.nodes) and groups.count("edge") == len(graph.edges)
    assert groups.count("cluster") == len(graph.clusters)
    shown = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    for attrs in graph.nodes.values():
        assert set(attrs["label"].split("\n")) <= shown  # every line of every label, as written


# -- markdown ---------------------------------------------------------------------------------------

_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def md_rows(text: str, header: str) -> list[list[str]]:
    """The rows of the table whose first line is `header`, each split into its cells."""
    lines = text.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in _CELL_SPLIT.split(line)[1:-1]])
    return rows


def md_uncode(cell: str) -> str:
    """A code span's text as GFM shows it in a table cell (CommonMark's one-space stripping)."""
    match = re.fullmatch(r"(`+)(.*?)\1", cell, re.S)
    assert match is not None and match.group(2), cell
    content = match.group(2)
    if content.startswith(" ") and content.endswith(" ") and content.strip(" "):
        content = content[1:-1]
    return content.replace("\\|", "|")


@pytest.mark.parametrize("state", [SHOP, NASTY], ids=["shop", "nasty"])
def test_markdown_says_the_map(state):
    reach = reach_of(state)
    text = render_md(reach)
    n = len(reach.pods)
    counts = md_rows(text, "| probe | allowed pairs |")
    assert [(md_uncode(p), a) for p, a in counts] == [
        (probe.span, f"{allowed_pairs(reach, pi):,} of {n * (n - 1):,}") for pi, probe in enumerate(reach.probes)]
    groups = [[md_uncode(cell) for cell in row] for row in md_rows(text, "| from | to | allowed |")]
    assert group_cells(reach, groups, flat=True) == flat_cells(reach)
    assert len(groups) == len([g for g in iter_groups(reach) if not (len(g[0]) == 1 and g[0] == g[1])])
    header = "| | source | " + " | ".join(str(i) for i in range(1, n + 1)) + " |"
    blocks = text.split(header)[1:]
    assert len(blocks) == len(reach.probes)
    for pi, block in enumerate(blocks):
        rows = md_rows(header + block, header)
        assert [len(row) for row in rows] == [n + 2] * n  # a pipe or a line break in a name splits nothing
        for s, row in enumerate(rows):
            assert md_uncode(row[1]) == reach.pods[s].key.replace("\n", " ")
            assert row[2:] == ["•" if s == d else "✓" if reach.allowed(pi, s, d) else "✗" for d in range(n)]


def test_allowed_pairs_counts_the_cells():
    for state in (SHOP, NASTY):
        reach = reach_of(state)
        for pi in range(len(reach.probes)):
            assert allowed_pairs(reach, pi) == sum(
                reach.allowed(pi, s, d) for s in range(len(reach.pods)) for d in range(len(reach.pods)) if s != d)


def test_markdown_leaves_big_matrices_out():
    pods = "".join(pod_yaml("a", f"p-{i}", f"10.0.0.{i + 1}") for i in range(formats.MARKDOWN_MATRIX_PODS + 1))
    text = render_md(reach_of(cluster(pods)))
    assert "## Matrices" not in text and "The matrices are left out (21 pods, more than 20)" in text
    assert md_rows(text, "| from | to | allowed |") == [["`a/*`", "`a/*`", "`all probed ports`"]]


@given(st.text().filter(lambda t: " ".join(t.splitlines())))
def test_md_code_stays_in_its_cell(text):
    row = f"| {md_code(text)} | x |"
    cells = _CELL_SPLIT.split(row)[1:-1]
    assert len(cells) == 2 and "\n" not in row and "\r" not in row
    assert md_uncode(cells[0][1:-1]) == " ".join(text.splitlines())


# -- HTML ------------------------------------------------------------------------------------------

class Page(HTMLParser):
    """The report's cells (class, title, link), explanation sections (heading, text), row names,
    groups (cells of the groups table) and the text of every <pre>."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: list[dict[str, str | None]] = []
        self.sections: dict[str, dict[str, str]] = {}
        self.rows: list[str] = []
        self.groups: list[list[str]] = []
        self.pres: list[str] = []
        self.open: list[str] = []
        self._text: list[str] | None = None
        self._section: str | None = None
        self._in_groups = False
        self._th_class: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag not in ("meta", "br"):
            self.open.append(tag)
        if tag == "table" and a.get("class") == "groups":
            self._in_groups = True
        elif tag == "td" and not self._in_groups:
            self.cells.append({"class": a.get("class"), "title": a.get("title"), "href": None})
        elif tag == "a" and self.cells and self.open[-2] == "td":
            self.cells[-1].update(title=a.get("title"), href=a.get("href"))
        elif tag == "section":
            self._section = a.get("id")
            self.sections[str(a.get("id"))] = {}
        elif tag == "tr" and self._in_groups:
            self.groups.append([])
        if tag == "th":
            self._th_class = a.get("class")
        if tag in ("h3", "pre", "th", "td"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open[-3:])
        self.open.pop()
        text = "".join(self._text or [])
        if tag == "table":
            self._in_groups = False
        elif tag in ("h3", "pre") and self._section is not None:
            self.sections[self._section][tag] = text
        elif tag == "th" and self._th_class == "src":
            self.rows.append(text)
        elif tag == "td" and self._in_groups and self.groups:
            self.groups[-1].append(text)
        if tag == "pre":
            self.pres.append(text)
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


@pytest.mark.parametrize("state", [SHOP, NASTY], ids=["shop", "nasty"])
def test_every_cell_links_to_why_and_the_why_has_its_verdict(state):
    reach = reach_of(state)
    page = Page(render_html(reach, state))
    assert not page.open  # every element closed
    n = len(reach.pods)
    assert len(page.cells) == n * n * len(reach.probes)
    assert page.rows[:n] == [p.key for p in reach.pods]  # names escaped, read back as written
    for i, cell in enumerate(page.cells):
        pi, s, d = i // (n * n), i // n % n, i % n
        src, dst, probe = reach.pods[s], reach.pods[d], reach.probes[pi]
        verdict = "allowed" if reach.allowed(pi, s, d) else "denied"
        assert str(cell["title"]).startswith(f"{src.key} → {dst.key} {probe}: {verdict}")
        if s == d:
            assert cell["class"] == "self" and cell["href"] is None
            continue
        assert cell["class"] == ("y" if verdict == "allowed" else "n")
        assert cell["href"] == f"#x{pi}-{reach.pod_class[s]}-{reach.pod_class[d]}"
        why = page.sections[str(cell["href"])[1:]]
        assert why["h3"].endswith(f" on {probe.span}: {verdict}")
        assert why["pre"].split(f" on {probe}: ", 1)[1].startswith(verdict.upper())  # explain's first line
    assert "<script>" not in render_html(reach, state)


def test_why_names_the_policies():
    reach = reach_of(SHOP)
    page = Page(render_html(reach, SHOP))
    s = next(i for i, p in enumerate(reach.pods) if p.key == "frontend/web-1")
    d = next(i for i, p in enumerate(reach.pods) if p.key == "db/postgres-0")
    pi = next(i for i, p in enumerate(reach.probes) if p.span == "5432/TCP")
    why = page.sections[f"x{pi}-{reach.pod_class[s]}-{reach.pod_class[d]}"]
    assert why["h3"] == "frontend/* → db/[postgres-0] on 5432/TCP: denied"  # role: primary, its own class
    assert "NetworkPolicy db/allow-postgres spec.ingress[0]: peer does not match" in why["pre"]


def test_explanations_stop_at_their_budget(monkeypatch):
    reach = reach_of(SHOP)
    classes = len(set(reach.pod_class))
    singles = sum(reach.pod_class.count(c) == 1 for c in set(reach.pod_class))
    monkeypatch.setattr(formats, "HTML_EXPLANATIONS", 3 * (classes * classes - singles))  # three probes' worth
    page = Page(render_html(reach, SHOP))
    n = len(reach.pods)
    linked = {i // (n * n) for i, cell in enumerate(page.cells) if cell["href"]}
    assert linked == {0, 1, 2}
    assert {key.split("-")[0] for key in page.sections} == {"x0", "x1", "x2"}
    assert len(page.sections) == 3 * (classes * classes - singles)
    assert "click a cell of the first 3 probes for why" in render_html(reach, SHOP)


def test_without_the_state_there_is_no_why():
    reach = reach_of(SHOP)
    text = RENDERERS["html"](reach)
    page = Page(text)
    assert not page.sections and not any(cell["href"] for cell in page.cells)
    assert "netpol explain -f PATH --from NS/POD --to NS/POD --port PORT/PROTO" in text


@pytest.mark.parametrize("state", [SHOP, NASTY], ids=["shop", "nasty"])
def test_past_its_cell_budget_the_page_shows_the_groups(monkeypatch, state):
    monkeypatch.setattr(formats, "HTML_MATRIX_CELLS", 10)
    reach = reach_of(state)
    text = render_html(reach, state)
    page = Page(text)
    assert not page.cells and "<table>" not in text
    assert page.groups[0] == []  # the header row: <th>s
    assert group_cells(reach, page.groups[1:]) == allowed_cells(reach)
    assert len(page.pres) == len(page.groups) - 1 and all(re.search(r" on \S+: ALLOWED\n", pre) for pre in page.pres)
    monkeypatch.setattr(formats, "HTML_EXPLANATIONS", 1)
    page = Page(render_html(reach, state))
    assert len(page.pres) == 1
    assert all(cells[3].startswith("netpol explain -f PATH --from ") for cells in page.groups[2:])


# -- the command line ---------------------------------------------------------------------------------

def test_reach_dot_md_and_html_from_the_command_line():
    code, out, _ = run_cli("reach", "-f", str(EXAMPLE), "-o", "dot")
    assert code == 0 and out == render_dot(reach_of(SHOP))
    code, out, _ = run_cli("reach", "-f", str(EXAMPLE), "-o", "md")
    assert code == 0 and out == render_md(reach_of(SHOP))
    code, out, _ = run_cli("reach", "-f", str(EXAMPLE), "-o", "html")
    assert code == 0 and out == render_html(reach_of(SHOP), SHOP) and "<h2>Why</h2>" in out
