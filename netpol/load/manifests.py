"""Reading manifests: files, directories (recursive), `-` for stdin → a validated ClusterState.

Accepts multi-document YAML, JSON, `v1/List` and `kubectl get -o yaml|json` output. Kinds we do
not use are skipped, and counted (`LoadReport`) so the command line can say so. A file holding no
Kubernetes object is refused, as kubectl refuses it, unless the caller asks to skip such files.
Every problem in the whole input is collected, then raised as one InputError.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from netpol.errors import InputError, Problem
from netpol.load import yaml_parallel
from netpol.load.decode import KubeObject, Wanted, decode_document, says_what_it_is, type_name
from netpol.model import ClusterNetworkPolicy, ClusterState, Namespace, NetworkPolicy, Node, Pod

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Files as given; directories walked recursively for *.yaml|*.yml|*.json, sorted."""
    found: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES
                            and p.is_file())
        elif raw == "-" or path.exists():  # regular files, FIFOs, <(process substitution)
            found.append(raw)
        else:
            problems.append(Problem(raw, "", "", "no such file or directory"))
    return found, problems


def read_text(source: str) -> str:
    """The file's (or stdin's) text; raises InputError for unreadable or non-UTF-8 input."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise InputError([Problem(source, "", "", f"cannot read: {exc.strerror or exc}")]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError([Problem(source, "", "", f"not UTF-8 text (byte {exc.start}): "
                                                  "expected YAML or JSON manifests")]) from None


def parse_documents(text: str, source: str) -> tuple[list[Any], Problem | None]:
    """The documents in `text` (JSON if it parses as JSON, else multi-document YAML), and the
    syntax error that stopped parsing, if any: documents before it are still returned."""
    if "\x00" in text:
        return [], Problem(source, "", "", "binary data (NUL byte): expected YAML or JSON")
    if text.lstrip().startswith(("{", "[")):
        for loads in (orjson.loads, json.loads):  # orjson: 0.5 s instead of 0.9 s for 53 MB
            try:
                doc = loads(text)
                return (doc if isinstance(doc, list) else [doc]), None
            except (ValueError, RecursionError):
                continue  # orjson refuses what json takes (ints over 64 bits, NaN): try json
        # YAML is a superset of most JSON; let the YAML parser report the error
    documents: list[Any] = []
    try:
        for doc in yaml_parallel.load_all(text):  # PyYAML's SafeLoader's documents, faster (big: 2 CPUs)
            documents.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return documents, Problem(source, "", "", f"invalid YAML: {where}{exc.problem or exc}")
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return documents, Problem(source, "", "", f"invalid YAML: {reason}")
    return documents, None


Located = tuple[str, KubeObject]  # (where it was read, the object)
Labelled = tuple[str, Any]  # (where it was read, a parsed document)

NOT_AN_OBJECT = "not a Kubernetes object (no kind/apiVersion)"
SKIP_UNKNOWN_HINT = "pass the manifest files themselves to -f, or add --skip-unknown to skip such files"


@dataclass(frozen=True)
class ForeignFile(Problem):
    """A file that parses but holds no Kubernetes object, such as a tool's `expected.json` next to
    the manifests: refused, as kubectl refuses it, but skipped when the caller asks for it."""


def foreign_file(documents: list[Any], source: str) -> ForeignFile | None:
    """The problem of a file none of whose documents is a Kubernetes object; None when one is,
    or when the file is empty (only comments or `---`: nothing to refuse)."""
    present = [doc for doc in documents if doc is not None]
    if not present or any(says_what_it_is(doc) for doc in present):
        return None
    found = ""
    if len(present) == 1 and not isinstance(present[0], dict):  # a bare list or scalar
        found = f": expected a Kubernetes object (a mapping), got {type_name(present[0])}"
    return ForeignFile(source, "", "", f"{NOT_AN_OBJECT}{found}; {SKIP_UNKNOWN_HINT}")


def parsed_text(text: str, source: str) -> tuple[list[Labelled], Problem | None]:
    """The documents of `text`, each with its label for messages, and the problem that stopped
    the file, if any: a syntax error (the documents before it are kept), or `ForeignFile` (no
    documents: they are some other tool's, and one message for the file says so)."""
    documents, syntax_error = parse_documents(text, source)
    if syntax_error is None and (foreign := foreign_file(documents, source)) is not None:
        return [], foreign
    several = len(documents) > 1 or syntax_error is not None
    return [(f"{source} (document {i + 1})" if several else source, doc)
            for i, doc in enumerate(documents)], syntax_error


def decode_parsed(documents: Iterable[Labelled], wanted: Wanted | None = None,
                  skipped: Counter[str] | None = None) -> tuple[list[Located], list[Problem]]:
    """Objects and problems of parsed documents; with `wanted`, only the objects it accepts
    are decoded (the rest are neither decoded nor checked). Objects of kinds we do not use are
    counted per kind in `skipped`."""
    objects: list[Located] = []
    problems: list[Problem] = []
    for label, doc in documents:
        found, bad = decode_document(doc, label, wanted=wanted, skipped=skipped)
        objects += [(label, obj) for obj in found]
        problems += bad
    return objects, problems


# Kinds whose pod template would make pods: their presence without pods is the tutorial trap.
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob",
                            "ReplicationController"})


@dataclass
class LoadReport:
    """What a load read and left out of the state, for the command's notes on stderr (the state
    itself has no place for it): objects of kinds netpol does not use, per kind, and the files
    skipped as not Kubernetes objects (`skip_unknown`)."""

    skipped_kinds: Counter[str] = field(default_factory=Counter)
    skipped_files: list[str] = field(default_factory=list)

    def kinds_note(self, pods_missing: bool) -> str | None:
        """The skipped kinds with their counts, most first; when pods are missing (an empty
        matrix, an unknown pod), why that matters and how to get pods: netpol does not make
        pods from workload templates (a template has no address, and a pod without one takes no
        part), it reads the running ones."""
        if not self.skipped_kinds:
            return None
        counts = sorted(self.skipped_kinds.items(), key=lambda item: (-item[1], item[0]))
        listed = ", ".join(f"{count} {kind}" for kind, count in counts)
        if not pods_missing:
            return f"skipped {listed} (kinds netpol does not use)"
        templates = not WORKLOAD_KINDS.isdisjoint(self.skipped_kinds)
        return (f"skipped {listed}: netpol needs Pods with status.podIP"
                f"{' and does not make them from workload templates' if templates else ''}; "
                "try `kubectl get pods -A -o yaml`")

    def files_note(self) -> str | None:
        """The files `skip_unknown` left out, by name: skipping is never silent."""
        if not self.skipped_files:
            return None
        many = len(self.skipped_files) != 1
        return (f"skipped {len(self.skipped_files)} file{'s' if many else ''} that "
                f"{'are' if many else 'is'} not a Kubernetes object (--skip-unknown): "
                f"{', '.join(self.skipped_files)}")


def decode_file(text: str, source: str, report: LoadReport,
                skip_unknown: bool = False) -> tuple[list[Located], list[Problem]]:
    """Objects and problems of every document in one file's `text`; what was skipped goes to
    `report`. With `skip_unknown`, a file holding no Kubernetes object gives neither."""
    documents, stop = parsed_text(text, source)
    if skip_unknown and isinstance(stop, ForeignFile):
        report.skipped_files.append(source)
        return [], []
    objects, problems = decode_parsed(documents, skipped=report.skipped_kinds)
    return objects, ([stop] if stop else []) + problems


def decode_text(text: str, source: str) -> tuple[list[Located], list[Problem]]:
    """Objects and problems of every document in `text`."""
    return decode_file(text, source, LoadReport())


@dataclass(frozen=True)
class Source:
    """One input file's text, or why it could not be read."""

    name: str
    text: str | None
    problems: tuple[Problem, ...] = ()


def read_sources(paths: Iterable[str]) -> tuple[list[Problem], list[Source]]:
    """Paths that do not exist, and every file under the others, read."""
    files, missing = expand_paths(paths)
    sources = []
    for name in files:
        try:
            sources.append(Source(name, read_text(name)))
        except InputError as exc:
            sources.append(Source(name, None, tuple(exc.problems)))
    return missing, sources


def iter_sources(missing: list[Problem], sources: Iterable[Source], report: LoadReport | None = None,
                 skip_unknown: bool = False) -> Iterator[tuple[list[Located], list[Problem]]]:
    """Objects and problems of every document of every file, file by file; what was skipped
    goes to `report` (see `decode_file`)."""
    report = LoadReport() if report is None else report
    if missing:
        yield [], missing
    for source in sources:
        if source.text is None:
            yield [], list(source.problems)
        else:
            yield decode_file(source.text, source.name, report, skip_unknown)


def iter_objects(paths: Iterable[str]) -> Iterator[tuple[list[Located], list[Problem]]]:
    """Objects and problems of every document of every file, file by file."""
    return iter_sources(*read_sources(paths))


def check_consistency(objects: Iterable[Located]) -> list[Problem]:
    """Problems between objects: the same object twice, two pods with one address. (A converted
    AdminNetworkPolicy keeps its kind: `AdminNetworkPolicy x` and `ClusterNetworkPolicy x` are two
    objects, as they are two resources on the API server.)"""
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], str] = {}
    owners: dict[object, Pod] = {}
    for source, obj in objects:
        key = (getattr(obj, "kind", type(obj).__name__), getattr(obj, "namespace", ""), obj.name)
        if key in seen:
            problems.append(Problem(source, obj.ref, "metadata.name",
                                    f"Duplicate value: also defined in {seen[key]}"))
        seen[key] = source
        if isinstance(obj, Pod) and obj.takes_part:
            for ip in obj.ips:
                if ip in owners and owners[ip].key != obj.key:
                    problems.append(Problem(source, obj.ref, "status.podIPs",
                                            f"{ip} is also the address of {owners[ip].ref}"))
                owners[ip] = obj
    return problems


def build_state(objects: Iterable[KubeObject]) -> ClusterState:
    """A ClusterState from decoded, consistent objects."""
    values = list(objects)
    return ClusterState.build(
        namespaces=[o for o in values if isinstance(o, Namespace)],
        pods=[o for o in values if isinstance(o, Pod)],
        nodes=[o for o in values if isinstance(o, Node)],
        policies=[o for o in values if isinstance(o, NetworkPolicy)],
        cluster_policies=[o for o in values if isinstance(o, ClusterNetworkPolicy)],
    )


def state_or_problems(results: Iterable[tuple[list[Located], list[Problem]]]) -> ClusterState:
    """The state of every object, or InputError with every problem, consistency included."""
    objects: list[Located] = []
    problems: list[Problem] = []
    for found, bad in results:
        objects += found
        problems += bad
    problems += check_consistency(objects)
    if problems:
        raise InputError(problems)
    return build_state(obj for _, obj in objects)


@dataclass
class ParsedFile:
    """One input file, parsed and not decoded: its documents, each labelled for messages, and
    what stopped it (it could not be read, or a syntax error after its last document)."""

    name: str
    documents: list[Labelled]
    problems: list[Problem]


@dataclass
class ParsedInput:
    """Every file under some paths, parsed and not decoded (texts are not kept)."""

    missing: list[Problem]
    files: list[ParsedFile]

    @property
    def complete(self) -> bool:
        """Every path exists, every file was read and parsed to its end."""
        return not self.missing and not any(f.problems for f in self.files)

    def take_documents(self) -> list[Labelled]:
        """Every document in file order, handed over: this object keeps none of them."""
        documents = [labelled for f in self.files for labelled in f.documents]
        for f in self.files:
            f.documents = []
        return documents

    def state(self) -> ClusterState:
        """What `load_state` gives for the same paths: the state, or InputError with every
        problem in the same order (missing paths, then file by file, then consistency)."""

        def results() -> Iterator[tuple[list[Located], list[Problem]]]:
            if self.missing:
                yield [], self.missing
            for f in self.files:
                objects, problems = decode_parsed(f.documents)
                yield objects, f.problems + problems

        return state_or_problems(results())


def parse_paths(paths: Iterable[str], report: LoadReport | None = None,
                skip_unknown: bool = False) -> ParsedInput:
    """Read and parse every file under `paths`, one at a time (a file's text is dropped once
    parsed); decode nothing. For callers that decode in parts (`netpol.pipeline.sharded`). With
    `skip_unknown`, a file that holds no Kubernetes object is left out and named in `report`."""
    files, missing = expand_paths(paths)
    parsed = []
    for name in files:
        try:
            documents, stop = parsed_text(read_text(name), name)
        except InputError as exc:
            parsed.append(ParsedFile(name, [], list(exc.problems)))
            continue
        if skip_unknown and isinstance(stop, ForeignFile):
            if report is not None:
                report.skipped_files.append(name)
            continue
        parsed.append(ParsedFile(name, documents, [stop] if stop else []))
    return ParsedInput(missing, parsed)


def load_text(text: str, source: str = "<text>") -> ClusterState:
    """Like `load_state`, for manifests already in memory."""
    return state_or_problems([decode_text(text, source)])


def load_state(paths: Iterable[str]) -> ClusterState:
    """Load and validate every manifest under `paths`; raises InputError listing every problem."""
    return state_or_problems(iter_objects(paths))


def load_state_with_report(paths: Iterable[str],
                           skip_unknown: bool = False) -> tuple[ClusterState, LoadReport]:
    """`load_state`, and what it left out (`LoadReport`), for commands that tell the user: an
    empty matrix from a folder of Deployments should say why. With `skip_unknown`, files that
    hold no Kubernetes object are skipped (and listed in the report) instead of refused."""
    report = LoadReport()
    state = state_or_problems(iter_sources(*read_sources(paths), report, skip_unknown))
    return state, report
