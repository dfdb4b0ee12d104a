"""Reading manifests: files, directories (recursive), `-` for stdin → a validated ClusterState.

Accepts multi-document YAML, JSON, `v1/List` and `kubectl get -o yaml|json` output. Kinds we do
not use are skipped. Every problem in the whole input is collected, then raised as one InputError.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from netpol.decode import KubeObject, decode_document
from netpol.errors import InputError, Problem
from netpol.model import ClusterState, Namespace, NetworkPolicy, Node, Pod

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[Problem]]:
    """Files as given; directories walked recursively for *.yaml|*.yml|*.json, sorted."""
    found: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if raw == "-" or path.is_file():
            found.append(raw)
        elif path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES
                            and p.is_file())
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


def parse_documents(text: str, source: str) -> list[Any]:
    """Every document in `text`: JSON if it parses as JSON, else (multi-document) YAML."""
    if "\x00" in text:
        raise InputError([Problem(source, "", "", "binary data (NUL byte): expected YAML or JSON")])
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            doc = json.loads(text)
            return doc if isinstance(doc, list) else [doc]
        except (ValueError, RecursionError):
            pass  # YAML is a superset of most JSON; let the YAML parser report the error
    try:
        return list(yaml.load_all(text, Loader=_YAML_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InputError([Problem(source, "", "", f"invalid YAML: {where}{exc.problem or exc}")]) from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InputError([Problem(source, "", "", f"invalid YAML: {reason}")]) from None


def iter_objects(paths: Iterable[str]) -> Iterator[tuple[list[KubeObject], list[Problem]]]:
    """Objects and problems of every document of every file, file by file."""
    files, missing = expand_paths(paths)
    if missing:
        yield [], missing
    for source in files:
        try:
            documents = parse_documents(read_text(source), source)
        except InputError as exc:
            yield [], list(exc.problems)
            continue
        for i, doc in enumerate(documents):
            label = f"{source} (document {i + 1})" if len(documents) > 1 else source
            yield decode_document(doc, label)


def build_state(objects: Iterable[KubeObject], source: str = "") -> ClusterState:
    """A ClusterState from decoded objects; raises InputError on duplicates and clashing pod IPs."""
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], KubeObject] = {}
    for obj in objects:
        key = (type(obj).__name__, getattr(obj, "namespace", ""), obj.name)
        if key in seen:
            problems.append(Problem(source, obj.ref, "metadata.name", "Duplicate value: defined twice"))
        seen[key] = obj
    owners: dict[object, Pod] = {}
    for obj in seen.values():
        if isinstance(obj, Pod) and obj.takes_part:
            for ip in obj.ips:
                if ip in owners:
                    problems.append(Problem(source, obj.ref, "status.podIPs",
                                            f"{ip} is also the address of {owners[ip].ref}"))
                owners[ip] = obj
    if problems:
        raise InputError(problems)
    values = list(seen.values())
    return ClusterState.build(
        namespaces=[o for o in values if isinstance(o, Namespace)],
        pods=[o for o in values if isinstance(o, Pod)],
        nodes=[o for o in values if isinstance(o, Node)],
        policies=[o for o in values if isinstance(o, NetworkPolicy)],
    )


def load_text(text: str, source: str = "<text>") -> ClusterState:
    """Like `load_state`, for manifests already in memory."""
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for i, doc in enumerate(parse_documents(text, source)):
        found, bad = decode_document(doc, f"{source} (document {i + 1})")
        objects += found
        problems += bad
    if problems:
        raise InputError(problems)
    return build_state(objects)


def load_state(paths: Iterable[str]) -> ClusterState:
    """Load and validate every manifest under `paths`; raises InputError listing every problem."""
    objects: list[KubeObject] = []
    problems: list[Problem] = []
    for found, bad in iter_objects(paths):
        objects += found
        problems += bad
    if problems:
        raise InputError(problems)
    return build_state(objects)
