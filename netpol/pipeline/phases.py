"""The batch route, chosen in one place: manifests → load → compile → render → rulesets.

`compile_rulesets(request)` is what `netpol compile` runs. It picks one of two routes:

* **sharded** — every node, as `nft -f` scripts, more than one job allowed: the files are read
  and parsed here (`load.manifests.parse_paths`), then `pipeline.sharded.render_documents` forks
  before decoding, each process decoding and compiling a run of namespaces (the fast path for
  large clusters; with one process it is the serial route below, byte for byte);
* **serial** — everything else: `load_state`, one compile of the asked node or of every node
  (`compile.compiler`), then the backend's renderer.

The input is manifest files (`paths`), or documents parsed already (`documents`: a live
cluster's objects, `netpol.sources.snapshot`), which take either route from the point where
the files' parsed documents would.

Backends are a registry (`RENDERERS`): a new one is one renderer module, one line here, one test
module. Output is data (`Ruleset`: a node and its files); writing it is the caller's business.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from netpol.backends import iptables, nftables
from netpol.compile.compiler import NodeCompiler, compile_cluster, node_names, require_node
from netpol.compile.ir import NodeProgram
from netpol.load.manifests import (
    Labelled,
    LoadReport,
    decode_parsed,
    load_state_with_report,
    parse_paths,
    state_or_problems,
)
from netpol.model import ClusterState
from netpol.pipeline.sharded import render_documents


@dataclass(frozen=True)
class Renderer:
    """IR → files. A single-file form names its file by `suffix` (`NODE.nft`); a bundle names
    its files itself (`ipset.restore`, …) and is written to a directory per node."""

    render: Callable[[NodeProgram], dict[str, str]]
    suffix: str = ""

    @property
    def bundle(self) -> bool:
        return not self.suffix


def _nft_script(program: NodeProgram) -> dict[str, str]:
    return {"": nftables.render(program)}


def _nft_json(program: NodeProgram) -> dict[str, str]:
    return {"": json.dumps(nftables.render_json(program), indent=1) + "\n"}


def _iptables_bundle(program: NodeProgram) -> dict[str, str]:
    bundle = iptables.render(program)
    return {"ipset.restore": bundle.ipset, "iptables.restore": bundle.iptables,
            "ip6tables.restore": bundle.ip6tables}


# (backend, format) → renderer; iptables has one form, whatever --format says
RENDERERS: dict[tuple[str, str], Renderer] = {
    ("nftables", "nft"): Renderer(_nft_script, ".nft"),
    ("nftables", "json"): Renderer(_nft_json, ".json"),
    ("iptables", "nft"): Renderer(_iptables_bundle),
    ("iptables", "json"): Renderer(_iptables_bundle),
}


@dataclass(frozen=True)
class CompileRequest:
    paths: Sequence[str]
    node: str | None = None  # None: every node
    backend: str = "nftables"
    format: str = "nft"
    jobs: int | None = None  # every node: processes (None: as many as pay, 1: this one only)
    skip_unknown: bool = False  # files holding no Kubernetes object: skipped, not refused
    # Parsed already (a live cluster's objects), read instead of `paths`; handed over: emptied
    # when decoded, as `parse_paths`' documents are (the caller should keep no other reference).
    documents: list[Labelled] | None = None

    @property
    def renderer(self) -> Renderer:
        return RENDERERS[(self.backend, self.format)]


@dataclass(frozen=True)
class Ruleset:
    """One node's compiled ruleset: file name → text ("" for the single file of a non-bundle)."""

    node: str
    files: dict[str, str]


def compile_rulesets(request: CompileRequest, planned: Callable[[int], None] | None = None,
                     report: LoadReport | None = None) -> Iterator[Ruleset]:
    """Every ruleset the request asks for, node by node in node order; `planned` is told how many
    processes compile, `report` what the input held that no ruleset shows (skipped files and
    kinds). Raises InputError (bad manifests), UsageError (no such node), WorkerError (a compile
    process died)."""
    tell_plan = planned or (lambda processes: None)
    renderer = request.renderer
    if request.node is None and renderer is RENDERERS[("nftables", "nft")]:
        documents, jobs = request.documents, request.jobs
        rendered = (render_documents(documents, jobs, tell_plan) if documents is not None
                    else render_paths(request.paths, jobs, tell_plan, request.skip_unknown, report))
        for node, text in rendered:
            yield Ruleset(node, {"": text})
        return
    state = _request_state(request, report)
    tell_plan(1)
    if request.node is None:
        for node, program in compile_cluster(state).items():
            yield Ruleset(node, renderer.render(program))
        return
    require_node(node_names(state), request.node)
    yield Ruleset(request.node, renderer.render(NodeCompiler(state).compile(request.node)))


def render_paths(paths: Sequence[str], jobs: int | None = None, planned: Callable[[int], None] | None = None,
                 skip_unknown: bool = False, report: LoadReport | None = None) -> Iterator[tuple[str, str]]:
    """(node, `nft -f` script) for every node of the manifests under `paths`, as
    `render(compile_cluster(load_state(paths)))` prints them, by the sharded route (one process
    when `jobs` is 1 or splitting does not pay); raises InputError exactly as `load_state` does."""
    tell_plan = planned or (lambda processes: None)
    if jobs == 1:
        tell_plan(1)
        for node, program in compile_cluster(_load(paths, skip_unknown, report)).items():
            yield node, nftables.render(program)
        return
    parsed = parse_paths(paths, report, skip_unknown)
    if not parsed.complete:
        parsed.state()  # raises InputError: missing paths, unreadable files, syntax errors, and the rest
    yield from render_documents(parsed.take_documents(), jobs, tell_plan)


def _request_state(request: CompileRequest, report: LoadReport | None) -> ClusterState:
    """The request's state: its documents' (handed over: emptied once decoded), else its paths'."""
    if request.documents is None:
        return _load(request.paths, request.skip_unknown, report)
    objects = decode_parsed(request.documents)  # a cluster's kinds are netpol's: nothing to skip
    request.documents.clear()
    return state_or_problems([objects])


def _load(paths: Sequence[str], skip_unknown: bool, report: LoadReport | None) -> ClusterState:
    """`load_state`, adding what it skipped to `report`."""
    state, loaded = load_state_with_report(paths, skip_unknown)
    if report is not None:
        report.skipped_files += loaded.skipped_files
        report.skipped_kinds.update(loaded.skipped_kinds)
    return state
