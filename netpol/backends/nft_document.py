"""A small object model of one nftables table, printed two ways: as an `nft -f` script and as
libnftables JSON (`nft -j -f`). The nftables backend builds it from the IR; both printers see the
same objects, so the two forms cannot drift apart (a kernel test loads both and compares).

Only what netpol emits is modelled: payload/meta/ct expressions, concatenations, matches against
named sets or anonymous sets, verdict maps, and the verdicts accept/drop/return/jump.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from netpol.compile.identity_cache import weak_identity_cache

JSON = dict[str, Any]


def quote(text: str) -> str:
    """Any text as an nft string literal; names and labels are never pasted unquoted."""
    return '"' + text.replace("\\", "").replace('"', "'")[:120] + '"'


def clean_comment(text: str) -> str:
    """The comment as the kernel will store it, identical in both printed forms."""
    return text.replace("\\", "").replace('"', "'")[:120]


@dataclass(frozen=True)
class Payload:
    protocol: str  # ip, ip6, th, icmpv6
    field: str

    def text(self) -> str:
        return f"{self.protocol} {self.field}"

    def json(self) -> JSON:
        return {"payload": {"protocol": self.protocol, "field": self.field}}


@dataclass(frozen=True)
class Meta:
    key: str

    def text(self) -> str:
        return f"meta {self.key}"

    def json(self) -> JSON:
        return {"meta": {"key": self.key}}


@dataclass(frozen=True)
class Ct:
    key: str

    def text(self) -> str:
        return f"ct {self.key}"

    def json(self) -> JSON:
        return {"ct": {"key": self.key}}


@dataclass(frozen=True)
class Concat:
    parts: tuple[Payload | Meta, ...]

    def text(self) -> str:
        return " . ".join(p.text() for p in self.parts)

    def json(self) -> JSON:
        return {"concat": [p.json() for p in self.parts]}


Expression = Payload | Meta | Ct | Concat
Scalar = str | int
Range = tuple[Scalar, Scalar]
Element = Scalar | Range | tuple[Scalar, ...]  # concatenations are tuples of 3 or more


def _element_text(element: Element) -> str:
    if isinstance(element, tuple):
        if len(element) == 2:
            return f"{element[0]}-{element[1]}"
        return " . ".join(str(part) for part in element)
    return str(element)


def _element_json(element: Element) -> Any:
    if isinstance(element, tuple):
        if len(element) == 2:
            return {"range": list(element)}
        return {"concat": list(element)}
    return element


@dataclass(frozen=True)
class InNamedSet:
    """`LEFT @set` — membership in a named set (`LEFT != @set` when `negate`)."""

    left: Expression
    set_name: str
    negate: bool = False

    def text(self) -> str:
        return f"{self.left.text()} {'!= ' if self.negate else ''}@{self.set_name}"

    def json(self) -> JSON:
        return {"match": {"op": "!=" if self.negate else "==", "left": self.left.json(),
                          "right": f"@{self.set_name}"}}


@dataclass(frozen=True)
class InValues:
    """`LEFT value` or `LEFT { a, b-c }` (always braced when `braced`)."""

    left: Expression
    values: tuple[Element, ...]
    braced: bool = True

    def text(self) -> str:
        if not self.braced and len(self.values) == 1:
            return f"{self.left.text()} {_element_text(self.values[0])}"
        return f"{self.left.text()} {{ {', '.join(_element_text(v) for v in self.values)} }}"

    def json(self) -> JSON:
        if not self.braced and len(self.values) == 1:
            right = _element_json(self.values[0])
        else:
            right = {"set": [_element_json(v) for v in self.values]}
        return {"match": {"op": "==", "left": self.left.json(), "right": right}}


@dataclass(frozen=True)
class InFlags:
    """`ct state established,related` — a bitmask match."""

    left: Expression
    flags: tuple[str, ...]

    def text(self) -> str:
        return f"{self.left.text()} {','.join(self.flags)}"

    def json(self) -> JSON:
        return {"match": {"op": "in", "left": self.left.json(), "right": list(self.flags)}}


@dataclass(frozen=True)
class VerdictMapLookup:
    """`LEFT vmap @map`."""

    left: Expression
    map_name: str

    def text(self) -> str:
        return f"{self.left.text()} vmap @{self.map_name}"

    def json(self) -> JSON:
        return {"vmap": {"key": self.left.json(), "data": f"@{self.map_name}"}}


@dataclass(frozen=True)
class Verdict:
    kind: str  # accept, drop, return, jump
    target: str | None = None

    def text(self) -> str:
        return f"{self.kind} {self.target}" if self.target else self.kind

    def json(self) -> JSON:
        return {self.kind: {"target": self.target} if self.target else None}


Statement = InNamedSet | InValues | InFlags | VerdictMapLookup | Verdict


# Rules and sets compare by identity: the backend builds each once and reuses it in every node
# that needs it, so their printed text is cached per object (hashing their contents would cost
# as much as printing them) — on the object itself, so that it goes with it (a cache of its own
# kept the rules of every policy the agent had seen replaced: issue 14).
@dataclass(frozen=True, eq=False)
class Rule:
    statements: tuple[Statement, ...]
    comment: str | None = None

    @functools.cached_property
    def text(self) -> str:
        """The rule as `nft -f` reads it, without indentation."""
        body = " ".join(s.text() for s in self.statements)
        return body + (f" comment {quote(self.comment)}" if self.comment else "")


@dataclass(frozen=True, eq=False)
class NamedSet:
    name: str
    key_types: tuple[str, ...]
    elements: tuple[Element, ...]
    interval: bool = False
    comment: str | None = None


@dataclass(frozen=True)
class VerdictMap:
    name: str
    key_type: str
    elements: tuple[tuple[Scalar, Verdict], ...]


@dataclass(frozen=True)
class BaseHook:
    type: str
    hook: str
    priority: str
    policy: str


PRIORITIES = {"filter": 0}


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    comment: str | None = None
    base: BaseHook | None = None


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    comment: str
    sets: tuple[NamedSet, ...] = ()
    maps: tuple[VerdictMap, ...] = ()
    chains: tuple[Chain, ...] = field(default_factory=tuple)


# --- the `nft -f` script ---------------------------------------------------------------------

def _declare(kind: str, name: str, spec: str, elements: list[str] | str, prefix: str = "\t") -> str:
    """`set`/`map` NAME { SPEC elements = { … }; } — nft refuses an empty element list."""
    listed = elements if isinstance(elements, str) else ", ".join(elements)
    return f"{prefix}{kind} {name} {{ {spec}" + (f" elements = {{ {listed} }};" if listed else "") + " }"


@weak_identity_cache()  # a set object is printed once, in however many nodes' rulesets
def set_text(s: NamedSet, table: Table | None = None) -> str:
    """The set inside a table block, or (given its table) as an `add set` command."""
    spec = f"type {' . '.join(s.key_types)};" + (" flags interval;" if s.interval else "")
    if s.comment:
        spec += f" comment {quote(s.comment)};"
    if table is not None:
        where = f"{table.family} {table.name} {s.name}"
        return _declare("set", where, spec, _elements_text(s.elements), "add ")
    return _declare("set", s.name, spec, _elements_text(s.elements))


def _elements_text(elements: tuple[Element, ...]) -> str:
    try:  # single addresses (most sets, a cluster policy's of 10,000): strings already
        return ", ".join(elements)  # type: ignore[arg-type]
    except TypeError:  # ranges, concatenations, numbers
        return ", ".join(_element_text(e) for e in elements)


# --- single commands, for transactions that change a loaded table in place -----------------

def element_command(verb: str, table: Table, set_name: str, elements: Sequence[Element]) -> str:
    """`add element`/`delete element` FAMILY TABLE SET { … } — one line of a transaction."""
    listed = ", ".join(map(_element_text, elements))
    return f"{verb} element {table.family} {table.name} {set_name} {{ {listed} }}"


def map_element_command(verb: str, table: Table, map_name: str,
                        elements: Sequence[tuple[Scalar, Verdict]]) -> str:
    """`add element … { KEY : VERDICT, … }`, or `delete element … { KEY, … }` (keys only)."""
    listed = ", ".join(f"{key} : {verdict.text()}" if verb == "add" else str(key)
                       for key, verdict in elements)
    return f"{verb} element {table.family} {table.name} {map_name} {{ {listed} }}"


def add_set_command(table: Table, named_set: NamedSet) -> str:
    return set_text(named_set, table)


def add_chain_commands(table: Table, chain: Chain) -> list[str]:
    """`add chain` (with its comment) and one `add rule` per rule."""
    where = f"{table.family} {table.name} {chain.name}"
    head = f"add chain {where}" + (f" {{ comment {quote(chain.comment)}; }}" if chain.comment else "")
    return [head, *(f"add rule {where} {rule.text}" for rule in chain.rules)]


def object_command(verb: str, kind: str, table: Table, name: str) -> str:
    """`flush chain …`, `delete chain …`, `delete set …`."""
    return f"{verb} {kind} {table.family} {table.name} {name}"


def chain_lines(chain: Chain, rules: str | None = None) -> Iterator[str]:
    """The chain inside a table block, line by line (`rules`: its `rules_text`, if printed)."""
    yield f"\tchain {chain.name} {{"
    if chain.base:
        b = chain.base
        yield f"\t\ttype {b.type} hook {b.hook} priority {b.priority}; policy {b.policy};"
    if chain.comment:
        yield f"\t\tcomment {quote(chain.comment)}"
    if chain.rules:
        yield rules if rules is not None else rules_text(chain.rules)
    yield "\t}"


def rules_text(rules: tuple[Rule, ...]) -> str:
    """A chain's rules inside its block (callers keep what they print more than once)."""
    return "\n".join(f"\t\t{rule.text}" for rule in rules)


def script_head(table: Table, header: str) -> list[str]:
    """The first lines of `script`: create-if-missing, delete, and open the new table."""
    return [
        f"# {header}",
        f"table {table.family} {table.name} {{}}",
        f"delete table {table.family} {table.name}",
        f"table {table.family} {table.name} {{",
        f"\tcomment {quote(table.comment)}",
    ]


def map_text(name: str, key_type: str, elements: list[str]) -> str:
    """A verdict map inside a table block; `elements` as `KEY : VERDICT`."""
    return _declare("map", name, f"type {key_type} : verdict;", elements)


def element_text(key: Scalar, verdict: Verdict) -> str:
    """One verdict-map element, `KEY : VERDICT`."""
    return f"{key} : {verdict.text()}"


def script(table: Table, header: str) -> str:
    """The table as an `nft -f` script that replaces its previous version in one transaction."""
    lines = [
        *script_head(table, header),
        *(set_text(s) for s in table.sets),
        *(map_text(m.name, m.key_type, [element_text(k, v) for k, v in m.elements]) for m in table.maps),
        *(line for chain in table.chains for line in chain_lines(chain)),
        "}",
    ]
    return "\n".join(lines) + "\n"


# --- libnftables JSON ------------------------------------------------------------------------

def _with_comment(obj: JSON, comment: str | None) -> JSON:
    if comment:
        obj["comment"] = clean_comment(comment)
    return obj


def document(table: Table) -> JSON:
    """The same transaction as `script`, as libnftables JSON commands."""
    ids = {"family": table.family, "table": table.name}
    commands: list[JSON] = [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": {"family": table.family, "name": table.name}}},
        {"delete": {"table": {"family": table.family, "name": table.name}}},
        {"add": {"table": _with_comment({"family": table.family, "name": table.name}, table.comment)}},
    ]
    for chain in table.chains:  # before the maps whose verdicts jump to them
        obj: JSON = {**ids, "name": chain.name}
        if chain.base:
            obj |= {"type": chain.base.type, "hook": chain.base.hook,
                    "prio": PRIORITIES[chain.base.priority], "policy": chain.base.policy}
        commands.append({"add": {"chain": _with_comment(obj, chain.comment)}})
    for s in table.sets:
        key: Any = s.key_types[0] if len(s.key_types) == 1 else list(s.key_types)
        obj = {**ids, "name": s.name, "type": key}
        if s.interval:
            obj["flags"] = ["interval"]
        if s.elements:
            obj["elem"] = [_element_json(e) for e in s.elements]
        commands.append({"add": {"set": _with_comment(obj, s.comment)}})
    for m in table.maps:
        obj = {**ids, "name": m.name, "type": m.key_type, "map": "verdict"}
        if m.elements:
            obj["elem"] = [[key, verdict.json()] for key, verdict in m.elements]
        commands.append({"add": {"map": obj}})
    for chain in table.chains:
        for rule in chain.rules:
            expr = [s.json() for s in rule.statements]
            commands.append({"add": {"rule": _with_comment({**ids, "chain": chain.name, "expr": expr},
                                                           rule.comment)}})
    return {"nftables": commands}
