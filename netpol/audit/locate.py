"""Where a finding's object, and the field it names, were written: file and line.

The loader keeps no positions (building plain values is what makes it fast), and findings are
few; so afterwards, only the files that may hold an object with a finding (its name occurs in
the text) are composed again with PyYAML (`compose_all`, the SafeLoader's YAML 1.1 rules; its
nodes carry their line), the object is found by kind, namespace and name (in `v1/List` and
`kubectl get -o yaml|json` output too: `items[i]`, typed lists' items without a kind), and the
field path is walked down from it. The line is the field's (a mapping key's, a list item's);
where the path leaves what is written (a default, `spec.policyTypes` left out), the deepest
field written on the way; the object's first line for a finding about the whole object. Input
read from stdin (`-`) cannot be read again: its findings keep no file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import yaml

from netpol.audit.lint import Finding
from netpol.errors import InputError

Read = Callable[[str], str]  # a file's text (the loader's `read_text`)
ObjectKey = tuple[str, str, str]  # (kind, namespace or "", name)
NAMESPACED = frozenset({"Pod", "NetworkPolicy"})
MAX_LIST_NESTING = 3  # as the loader: deeper Lists are refused there
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def object_key(ref: str) -> ObjectKey:
    """`NetworkPolicy shop/web` → (NetworkPolicy, shop, web); `Namespace shop` → (Namespace, "", shop)."""
    kind, _, ident = ref.partition(" ")
    if kind in NAMESPACED:
        namespace, _, name = ident.partition("/")
        return kind, namespace, name
    return kind, "", ident


def _scalar(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _fields(node: yaml.Node | None) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """A mapping node's fields: name → (key node, value node)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: (key, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)}


def _objects(node: yaml.Node, item_kind: str | None = None,
             depth: int = 0) -> Iterator[tuple[ObjectKey, yaml.Node]]:
    """Every object in a document, Lists opened; `item_kind`: a typed list's (`PodList` → Pod)."""
    fields = _fields(node)
    kind = _scalar(fields.get("kind", (None, None))[1]) or item_kind
    if kind is None:
        return
    items = fields.get("items", (None, None))[1]
    if kind.endswith("List") and isinstance(items, yaml.SequenceNode) and depth < MAX_LIST_NESTING:
        for item in items.value:
            yield from _objects(item, kind.removesuffix("List") or None, depth + 1)
        return
    metadata = _fields(fields.get("metadata", (None, None))[1])
    name = _scalar(metadata.get("name", (None, None))[1])
    if name is None:
        return
    namespace = ""
    if kind in NAMESPACED:
        namespace = _scalar(metadata.get("namespace", (None, None))[1]) or "default"
    yield (kind, namespace, name), node


def _documents(text: str) -> list[yaml.Node]:
    """The documents of a file's text; a JSON array's items are documents, as the loader reads
    them. Tabs in JSON are whitespace outside strings (inside, JSON escapes them), which YAML
    does not always take: they become spaces, lines unchanged. Nothing when it does not compose."""
    is_json = text.lstrip().startswith(("{", "["))
    if is_json:
        text = text.replace("\t", " ")
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=_COMPOSER) if n is not None]
    except (yaml.YAMLError, RecursionError, ValueError):
        return []
    if is_json and len(nodes) == 1 and isinstance(nodes[0], yaml.SequenceNode):
        return list(nodes[0].value)
    return nodes


def field_line(node: yaml.Node, path: str) -> int:
    """The 1-based line of `path` under the object `node`, or of the deepest field of it written."""
    line = node.start_mark.line
    for name, index in _STEP.findall(path):
        if index:
            if not isinstance(node, yaml.SequenceNode) or int(index) >= len(node.value):
                break
            node = node.value[int(index)]
            line = node.start_mark.line
        else:
            found = _fields(node).get(name)
            if found is None:
                break
            key, node = found
            line = key.start_mark.line
    return line + 1


def locate(findings: Sequence[Finding], files: Sequence[str], read: Read) -> list[Finding]:
    """`findings` with `file` and `line` wherever their object is found in `files` (in order;
    the first file holding an object wins, as the loader refuses duplicates anyway)."""
    wanted = {object_key(f.object) for f in findings}
    where: dict[ObjectKey, tuple[str, yaml.Node]] = {}
    for file in files:
        missing = wanted - where.keys()
        if not missing:
            break
        if file == "-":
            continue
        try:
            text = read(file)
        except InputError:
            continue  # gone since it was loaded: its findings keep no file
        if not any(name in text for _, _, name in missing):
            continue
        for document in _documents(text):
            for key, node in _objects(document):
                if key in missing and key not in where:
                    where[key] = (file, node)
    located = []
    for finding in findings:
        found = where.get(object_key(finding.object))
        if found is None:
            located.append(finding)
        else:
            file, node = found
            located.append(replace(finding, file=file, line=field_line(node, finding.path)))
    return located
