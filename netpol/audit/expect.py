"""Expected connectivity, checked: a file of "who must (not) reach whom", held against the map.

Owners write down what must stay true (`frontend` reaches `db` on 5432, nothing else reaches
`db`) and CI checks it on every change, as NCA's `--permits`/`--forbids` or cyclonus' expected
matrices do. The check runs on the fast map (`netpol.semantics.reach`), and each violated
expectation comes with a few counterexample cells and `explain`'s reason for the first.

The file (YAML or JSON) is a list of expectations, or a mapping whose `expectations` is that list:

    expectations:
    - name: web reaches the database         # optional; reports use it
      from: frontend/*                        # NS/POD, NS/*, */POD or */*
      to: {namespace: db, podSelector: {matchLabels: {app: postgres}}}
      port: 5432/TCP                          # or 5432 (TCP), 53/UDP, ICMP, a list; absent: every probe
      allowed: true
    - from: {namespaceSelector: {matchLabels: {team: ads}}}
      to: db/*
      allowed: false                          # denied on every port `reach` probes by default

A selector is a string `NS/POD` (either part may be `*`), or a mapping of `namespace` (a name)
or `namespaceSelector`, and `podSelector` (label selectors as in a NetworkPolicy, validated the
same way); a mapping without a namespace part means every namespace, without `podSelector`
every pod. Selectors choose among the map's pods (`reach`'s rows and columns: not hostNetwork,
with an IP, not finished).

An expectation holds when every (source, destination, probe) cell it covers has its verdict; a
pod and itself are never a cell (a pod always reaches itself). Without `port`, its probes are
those `netpol reach` uses without `--port`: every port a policy or a container port names.
An expectation that covers no cell is violated, never vacuously true — a selector that matches
no pod ("matches no pod") or `from` and `to` that leave only a pod and itself — so a typo cannot
pass silently. Errors in the file name it, the expectation and the field:
`expect.yaml: expectations[2].from.podSelector.matchLabels.app: 'a b': a valid label must …`.

`netpol check -f … --expect FILE [-o text|json]` prints the report; `netpol reach … --expect FILE`
prints its map as usual and the text report on stderr. Both exit 4 when one is violated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netpol.errors import InputError, Problem, UsageError
from netpol.labels import LabelSelector
from netpol.load import validation
from netpol.load.decode import Reader, type_name
from netpol.load.manifests import parse_documents
from netpol.model import ClusterState, Pod
from netpol.semantics.formats import explain_cell
from netpol.semantics.probes import Probe, default_probes, parse_probe
from netpol.semantics.reach import ABSENCE_REASONS, ReachMap, absence_reason, compute_reach, iter_bits

EXPECTATION_FIELDS = ("name", "from", "to", "port", "allowed")
SELECTOR_FIELDS = ("namespace", "namespaceSelector", "podSelector")
COUNTEREXAMPLES = 3  # cells shown per violated expectation: enough to see the pattern
ANY = "*"


@dataclass(frozen=True)
class Selection:
    """Which pods a `from` or a `to` means; `text` is how reports show it."""

    text: str
    namespace: str | None = None  # a name; None: every namespace (or `namespace_selector`'s)
    namespace_selector: LabelSelector = LabelSelector()
    pod: str | None = None  # a name; None: every pod (or `pod_selector`'s)
    pod_selector: LabelSelector = LabelSelector()

    def matches(self, state: ClusterState, pod: Pod) -> bool:
        if self.namespace is not None and pod.namespace != self.namespace:
            return False
        if self.pod is not None and pod.name != self.pod:
            return False
        if not self.namespace_selector.matches(state.namespace(pod.namespace).labels):
            return False
        return self.pod_selector.matches(pod.labels)


@dataclass(frozen=True)
class Expectation:
    """`allowed` is the verdict every cell from `source` to `destination` must have, on `probes`
    (None: every probe `netpol reach` uses by default)."""

    index: int
    name: str | None
    source: Selection
    destination: Selection
    probes: tuple[Probe, ...] | None
    allowed: bool

    @property
    def title(self) -> str:
        where = f"expectations[{self.index}]"
        return f"{where} {self.name!r}" if self.name else where

    @property
    def claim(self) -> str:
        """`frontend/* -> db/* on 5432/TCP: allowed`."""
        ports = "every probed port" if self.probes is None else ", ".join(p.span for p in self.probes)
        verdict = "allowed" if self.allowed else "denied"
        return f"{self.source.text} -> {self.destination.text} on {ports}: {verdict}"


@dataclass(frozen=True)
class Cell:
    """One (source, destination, probe) cell of the map with its verdict."""

    source: str
    destination: str
    probe: Probe
    allowed: bool

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "denied"
        return f"{self.source} -> {self.destination} on {self.probe.span}: {verdict}"


@dataclass(frozen=True)
class Outcome:
    """How one expectation fared: `cells` covered, `violations` of them with the other verdict,
    a few of those, and why the first has its verdict; `problem` when it covers no cell."""

    expectation: Expectation
    probes: tuple[Probe, ...]
    cells: int
    violations: int
    counterexamples: tuple[Cell, ...] = ()
    explanation: str = ""
    problem: str | None = None

    @property
    def holds(self) -> bool:
        return self.problem is None and self.violations == 0


# -- reading the file ------------------------------------------------------------------------------


def parse_expectations(text: str, source: str) -> tuple[Expectation, ...]:
    """The expectations in `text` (YAML or JSON, read as manifests are); raises InputError naming
    `source`, the expectation and the field of every problem."""
    documents = _documents(text, source)
    if len(documents) != 1:
        what = f"{len(documents)} documents" if documents else "nothing"
        raise InputError([Problem(source, "", "", f"expected one document holding a list of expectations, "
                                                  f"found {what}")])
    reader = Reader(source, "")
    items = _items(reader, documents[0])
    found = [_expectation(reader, item, path, i)
             for i, (path, item) in enumerate(reader.items(items, "expectations"))] if items else []
    if reader.problems:
        raise InputError(reader.problems)
    return tuple(e for e in found if e is not None)


def _items(reader: Reader, document: Any) -> Any:
    """The list of expectations: the document, or its `expectations`."""
    items = document
    if isinstance(document, dict):
        items = reader.mapping(document, "", ("expectations",)).get("expectations")
        if items is None:
            reader.error("expectations", "Required value")
    elif not isinstance(document, list):
        reader.error("", f"must be a list of expectations (or a mapping with `expectations`), "
                         f"got {type_name(document)}")
        return None
    if isinstance(items, list) and not items:
        reader.error("expectations", "holds no expectation")
    return items


def _documents(text: str, source: str) -> list[Any]:
    """The file's documents: JSON as one document (`parse_documents` takes a JSON list for a list
    of objects, and here a list is the one document), else YAML, read as manifests are."""
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    documents, problem = parse_documents(text, source)
    if problem is not None:
        raise InputError([problem])
    return [d for d in documents if d is not None]


def _expectation(reader: Reader, value: Any, path: str, index: int) -> Expectation | None:
    before = len(reader.problems)
    if not isinstance(value, dict):
        reader.error(path, f"must be a mapping with {', '.join(EXPECTATION_FIELDS)}, got {type_name(value)}")
        return None
    spec = reader.mapping(value, path, EXPECTATION_FIELDS)
    name = reader.string(spec.get("name"), f"{path}.name")
    source = _selection(reader, reader.required(spec.get("from"), f"{path}.from"), f"{path}.from")
    destination = _selection(reader, reader.required(spec.get("to"), f"{path}.to"), f"{path}.to")
    probes = _probes(reader, spec.get("port"), f"{path}.port")
    allowed = reader.required(reader.boolean(spec.get("allowed"), f"{path}.allowed"), f"{path}.allowed")
    if len(reader.problems) > before or source is None or destination is None or allowed is None:
        return None
    return Expectation(index, name, source, destination, probes, allowed)


def _selection(reader: Reader, value: Any, path: str) -> Selection | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _named_selection(reader, value, path)
    if not isinstance(value, dict):
        reader.error(path, f"must be NS/POD, NS/*, */* or a mapping with {', '.join(SELECTOR_FIELDS)}, "
                           f"got {type_name(value)}")
        return None
    spec = reader.mapping(value, path, SELECTOR_FIELDS)
    namespace = reader.checked(reader.string(spec.get("namespace"), f"{path}.namespace"),
                               f"{path}.namespace", validation.check_dns1123_label)
    namespaces = reader.selector(spec.get("namespaceSelector"), f"{path}.namespaceSelector")
    pods = reader.selector(spec.get("podSelector"), f"{path}.podSelector")
    if "namespace" in spec and "namespaceSelector" in spec:
        reader.error(f"{path}.namespaceSelector", "give `namespace` or `namespaceSelector`, not both")
    return Selection(_describe(namespace, namespaces, pods), namespace, namespaces, None, pods)


def _named_selection(reader: Reader, text: str, path: str) -> Selection | None:
    """`NS/POD`, where either part may be `*`."""
    namespace, slash, pod = text.partition("/")
    if not slash or "/" in pod or not namespace or not pod:
        reader.error(path, f"{text!r}: expected NS/POD, NS/*, */POD or */*")
        return None
    checks = ((namespace, validation.check_dns1123_label), (pod, validation.check_dns1123_subdomain))
    for part, check in checks:
        if part != ANY and reader.checked(part, path, check) is None:
            return None
    return Selection(text, None if namespace == ANY else namespace, pod=None if pod == ANY else pod)


def _describe(namespace: str | None, namespaces: LabelSelector, pods: LabelSelector) -> str:
    """`pods app=web in namespace shop`, `every pod in namespaces team=x`."""
    who = "every pod" if pods.is_empty else f"pods {pods.describe()}"
    if namespace is not None:
        return f"{who} in namespace {namespace}"
    if namespaces.is_empty:
        return f"{who} in every namespace"
    return f"{who} in namespaces {namespaces.describe()}"


def _probes(reader: Reader, value: Any, path: str) -> tuple[Probe, ...] | None:
    """`port`: one entry or a list of them; None (absent) for every default probe."""
    if value is None:
        return None
    entries = list(reader.items(value, path)) if isinstance(value, list) else [(path, value)]
    if isinstance(value, list) and not value:
        reader.error(path, "names no port; leave `port` out for every probed port")
    probes: list[Probe] = []
    for entry_path, entry in entries:
        if isinstance(entry, bool) or not isinstance(entry, str | int):
            reader.error(entry_path, f"must be PORT/PROTOCOL (5432/TCP, 53/UDP, ICMP) or a port number, "
                                     f"got {type_name(entry)}")
            continue
        try:
            probes.append(parse_probe(str(entry)))
        except UsageError as exc:  # its message speaks of --port; here the field is named instead
            reader.error(entry_path, str(exc).removeprefix("--port "))
    return tuple(dict.fromkeys(probes))


# -- checking ----------------------------------------------------------------------------------------


def needed_probes(expectations: Iterable[Expectation], defaults: tuple[Probe, ...]) -> tuple[Probe, ...]:
    """Every probe some expectation asks about: its own, or `defaults` where it names none."""
    wanted: dict[Probe, None] = {}
    for expectation in expectations:
        wanted.update(dict.fromkeys(expectation.probes if expectation.probes is not None else defaults))
    return tuple(wanted)


def check_expectations(state: ClusterState, expectations: Sequence[Expectation],
                       family: int | None = None) -> list[Outcome]:
    """Each expectation against the map of `state` (over any family, or `family`)."""
    defaults = default_probes(state)
    reach = compute_reach(state, needed_probes(expectations, defaults), family)
    return [_check(state, reach, e, e.probes if e.probes is not None else defaults, family)
            for e in expectations]


def _check(state: ClusterState, reach: ReachMap, expectation: Expectation, probes: tuple[Probe, ...],
           family: int | None) -> Outcome:
    sources = [i for i, pod in enumerate(reach.pods) if expectation.source.matches(state, pod)]
    destinations = [i for i, pod in enumerate(reach.pods) if expectation.destination.matches(state, pod)]
    problem = (_no_match(state, "from", expectation.source, sources, family)
               or _no_match(state, "to", expectation.destination, destinations, family))
    pairs = len(sources) * len(destinations) - len(set(sources) & set(destinations))
    if problem is None and not pairs:
        problem = "`from` and `to` leave no pair of two different pods (a pod always reaches itself)"
    if problem is not None:
        return Outcome(expectation, probes, 0, 0, problem=problem)
    index = {probe: i for i, probe in enumerate(reach.probes)}
    violations, examples = _violations(reach, [index[p] for p in probes], sources, destinations,
                                       expectation.allowed)
    explanation = ""
    if examples:
        first = examples[0]
        src, dst = state.pod(first.source), state.pod(first.destination)
        assert src is not None and dst is not None  # the map's own pods
        explanation = explain_cell(state, src, dst, first.probe)
    return Outcome(expectation, probes, pairs * len(probes), violations, tuple(examples), explanation)


def _no_match(state: ClusterState, field: str, selection: Selection, found: list[int],
              family: int | None) -> str | None:
    """Why a selector that matches no pod of the map does so; None when it matches some."""
    if found:
        return None
    message = f"`{field}` {selection.text} matches no pod"
    named = None
    if selection.pod is not None and selection.namespace is not None:
        named = state.pod(f"{selection.namespace}/{selection.pod}")
    if named is not None and (reason := absence_reason(named, family)) is not None:
        why = ABSENCE_REASONS[reason][0] if reason in ABSENCE_REASONS else f"no IPv{family} address"
        message += f" of the map ({named.key} is a {why}, not in the map)"
    return message


def _violations(reach: ReachMap, probe_ids: list[int], sources: list[int], destinations: list[int],
                allowed: bool) -> tuple[int, list[Cell]]:
    """How many covered cells have the other verdict, and the first few of them. Counted per pair
    of pod classes (pods of a class behave alike), a pod and itself left out."""
    src_members, dst_members = _by_class(reach, sources), _by_class(reach, destinations)
    dst_classes = sum(1 << c for c in dst_members)
    count = 0
    examples: list[Cell] = []
    for pi in probe_ids:
        row = reach.allowed_classes[pi]
        for cs, srcs in src_members.items():
            wrong = dst_classes & ~row[cs] if allowed else dst_classes & row[cs]
            for cd in iter_bits(wrong):
                dsts = dst_members[cd]
                count += len(srcs) * len(dsts) - (len(set(srcs) & set(dsts)) if cs == cd else 0)
                examples += [Cell(reach.pods[s].key, reach.pods[d].key, reach.probes[pi], not allowed)
                             for s in srcs[:COUNTEREXAMPLES] for d in dsts[:COUNTEREXAMPLES + 1] if s != d
                             ][:COUNTEREXAMPLES - len(examples)]
    return count, examples


def _by_class(reach: ReachMap, pods: list[int]) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for pod in pods:
        members.setdefault(reach.pod_class[pod], []).append(pod)
    return members


# -- reports -----------------------------------------------------------------------------------------


def render_text(outcomes: Sequence[Outcome]) -> str:
    """One line per expectation (`ok` or `FAIL`); under each failure, counterexamples and why."""
    lines: list[str] = []
    for outcome in outcomes:
        e = outcome.expectation
        lines.append(f"{'ok  ' if outcome.holds else 'FAIL'} {e.title}: {e.claim}")
        if outcome.problem is not None:
            lines.append(f"  {outcome.problem}")
        elif outcome.violations:
            other = "denied" if e.allowed else "allowed"
            lines.append(f"  {outcome.violations} of {outcome.cells} cells {other}, e.g.:")
            lines += [f"    {cell}" for cell in outcome.counterexamples]
            if outcome.explanation:
                lines.append("  why (netpol explain):")
                lines += [f"    {line}" for line in outcome.explanation.rstrip("\n").splitlines()]
    violated = sum(not o.holds for o in outcomes)
    lines.append(f"{len(outcomes)} expectation{'s' if len(outcomes) != 1 else ''}: "
                 f"{len(outcomes) - violated} hold, {violated} violated")
    return "\n".join(lines) + "\n"


def _cell_json(cell: Cell) -> dict[str, Any]:
    return {"source": cell.source, "destination": cell.destination, "port": cell.probe.port,
            "protocol": cell.probe.protocol, "allowed": cell.allowed}


def render_json(outcomes: Sequence[Outcome]) -> str:
    """`{"expectations": [{index, name, from, to, ports, allowed, holds, problem, cells, violations,
    counterexamples: [{source, destination, port, protocol, allowed}], explanation}], "held",
    "violated"}`; `explanation` is `netpol explain`'s text for the first counterexample."""
    entries = [{
        "index": o.expectation.index, "name": o.expectation.name,
        "from": o.expectation.source.text, "to": o.expectation.destination.text,
        "ports": [p.span for p in o.probes], "allowed": o.expectation.allowed,
        "holds": o.holds, "problem": o.problem, "cells": o.cells, "violations": o.violations,
        "counterexamples": [_cell_json(c) for c in o.counterexamples], "explanation": o.explanation,
    } for o in outcomes]
    violated = sum(not o.holds for o in outcomes)
    return json.dumps({"expectations": entries, "held": len(outcomes) - violated, "violated": violated},
                      indent=1) + "\n"


RENDERERS = {"text": render_text, "json": render_json}
