"""Multi-document YAML read as PyYAML's SafeLoader reads it (YAML 1.1), at close to JSON speed.

Why: Kubernetes reads manifests with YAML 1.1 rules (go-yaml: `yes`/`no`/`on`/`off` are booleans,
`012` is octal), netpol has always read them with PyYAML's (which also reads `1:30` as the
sexagesimal 90, where go-yaml keeps the string and reads `y`/`n` as booleans), and netpol's
validation errors depend on that meaning: the documents must be exactly what
`yaml.load_all(text, Loader=yaml.SafeLoader)` returns. But
PyYAML builds those objects in Python (even with libyaml's CSafeLoader, every event becomes a
Python node, then a Python object): 2.0 s for a 6 MB cluster whose JSON orjson reads in 0.2 s.

Measured (best of 3, one CPU of this project's VM, 2026-12-06, the same objects as CSafeLoader):
kube-burner-shaped 5,000 pods / 2,000 policies, 6.2 MB, 7,155 documents: CSafeLoader 1.79-1.96 s,
this module 0.19-0.20 s; `kubectl get pods -o yaml`-shaped 5,000 pods, 13.2 MB, 498,000 lines:
0.31-0.33 s, where orjson reads the same List as JSON in 0.12 s. Most lines of a cluster repeat
(`protocol: TCP`, `- effect: NoExecute`): a line read once is remembered whole (`known_lines`),
so that reading it again costs a dict lookup and placing its value; that, and str.find instead
of multi-line regular expressions over the whole text, took this from 0.66 to 0.32 s
(`netpol.load.yaml_parallel` reads such a text in two halves at once). The YAML parsers on PyPI
that are written in C, C++ or Rust are YAML 1.2 (`yaml-rs` 0.37 s on the 6.2 MB, `oryaml`, `ryaml`,
`pyyaml-rs`, `fastyaml-rs`): they read plain `yes` and quoted `"yes"` both as the string "yes",
so no pass over their result can restore the 1.1 meaning; they also read `012` as 12, `1e3` as
1000.0, `1:30` as a string, and two of them refuse integers over 128 bits. `rapidyaml` keeps
each scalar's style, but walking its tree from Python costs what building the objects does.

So: a line-oriented reader for the block-style subset that manifests are written in (and that
`kubectl get -o yaml`, go-yaml and PyYAML's dumper write): indented mappings and sequences,
plain, single- and double-quoted one-line scalars, `{}` and `[]`, comments, `---`. Every plain
scalar is resolved with PyYAML's own resolver table (the loader's `yaml_implicit_resolvers`) and
built with PyYAML's own SafeConstructor functions, so `yes`, `0x1F`, `1_000`, `.inf`, `~` and
`2001-12-14` become exactly the objects PyYAML makes. Rare forms inside a line it can delimit
with certainty (escapes in double quotes, one-line flow collections, block scalars `|` `>`) are
handed to libyaml on a document of their own. At the first construct it does not take with
certainty (an anchor, an alias, a tag, a merge key, a `?` key, a tab, a scalar continued on the
next line, an indentation it did not expect, anything malformed) it gives up on that document
(`_Unsupported`), and PyYAML reads the document instead; if PyYAML cannot read that document on
its own, PyYAML reads the whole rest of the stream, so errors, and the documents before them,
are PyYAML's own, with PyYAML's line and column.

Documents are cut at `---` lines: a line starting with `---` and a blank is a document start
wherever it stands (libyaml ends any scalar there), so a document that reads on its own reads
the same inside the stream. tests/unit/load/test_yaml_fast.py holds this module equal to
PyYAML's SafeLoader, results and errors, on generated manifests with the tricky scalars.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode

LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Unsupported(Exception):
    """A construct this reader does not take with certainty: PyYAML reads the document."""


# Characters libyaml refuses anywhere (its reader's printable set), and line breaks other than
# \n and \r\n (YAML 1.1 breaks lines at NEL, LS and PS too): the whole text goes to PyYAML.
_NOT_SIMPLE_TEXT = re.compile(
    "[^\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
_PRINTABLE_ASCII = bytes([0x09, 0x0A, *range(0x20, 0x7F)])  # the same set, for ASCII text (faster)
_DOCUMENT_END = re.compile(r"\.\.\.(?: +#.*| *)\Z")
_SINGLE_QUOTED = re.compile(r"'((?:[^']|'')*)'")
_DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BLOCK_HEADER = re.compile(r"[|>][-+1-9]{0,2}(?: +(?:#.*)?)?")
# A plain scalar may not start with an indicator (`-`, `?`, `:` only when a non-blank follows:
# `::/0`, an IPv6 CIDR, is plain).
_NOT_PLAIN_START = frozenset("?:,[]{}#&*!|>'\"%@`")
_MAX_KEY = 1024  # libyaml's longest simple key
_MAX_DEPTH = 500  # libyaml refuses more than 1,000 levels: leave deep documents to it

_RESOLVERS: dict[Any, list[tuple[str, re.Pattern[str]]]] = LOADER.yaml_implicit_resolvers
_WILDCARD = _RESOLVERS.get(None, [])
_CONSTRUCTOR = SafeConstructor()
_BUILDERS = {tag: build for tag, build in SafeConstructor.yaml_constructors.items()
             if tag in ("tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                        "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")}
_NO_KEY = object()
_IMMUTABLE = frozenset((str, int, float, bool, type(None), datetime.date, datetime.datetime))


def load_all(text: str) -> Iterator[Any]:
    """The documents of `text`, as `yaml.load_all(text, Loader=yaml.SafeLoader)` yields them,
    raising what it raises where it raises it (after the documents before the error)."""
    if not simple_text(text.replace("\r\n", "\n") if "\r" in text else text):
        yield from yaml.load_all(text, Loader=LOADER)
        return
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # libyaml reads a CRLF as one line break, as LF
    reader = _Reader("\t" in text)
    line = 0  # where the document starts, for PyYAML's messages
    for start, part in pieces(text):
        lines = part.split("\n")  # one document at a time: its lines are dropped once read
        try:
            yield from reader.document(lines, part.startswith("---"))
        except _Unsupported:
            try:
                documents = list(yaml.load_all(part, Loader=LOADER))
            except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
                # Read the rest of the stream as PyYAML does, with its own lines and columns.
                yield from yaml.load_all("\n" * line + text[start:], Loader=LOADER)
                return
            yield from documents
        line += len(lines) - 1


def read_lines(documents: Iterable[tuple[list[str], bool]], tabs: bool) -> list[Any] | None:
    """The documents of `documents` (each a document's lines, and whether its first is `---`),
    read by this module alone, or None if one of them needs PyYAML (then read the text with
    `load_all`, which says what PyYAML says where PyYAML says it). For `netpol.load.yaml_parallel`;
    the text must be simple (`simple_text`) and without CR; `tabs`: whether it holds a tab."""
    reader = _Reader(tabs)
    read: list[Any] = []
    try:
        for lines, explicit in documents:
            read += reader.document(lines, explicit)
    except _Unsupported:
        return None
    return read


def simple_text(text: str) -> bool:
    """Nothing in `text` that libyaml refuses or reads as a line break, but LF (`_NOT_SIMPLE_TEXT`)."""
    if text.isascii():  # 14 MB: 13 ms this way, 45 ms with the regular expression
        return not text.encode("ascii").translate(None, _PRINTABLE_ASCII)
    return _NOT_SIMPLE_TEXT.search(text) is None


def document_starts(text: str) -> list[int]:
    """Where each line that starts a document (`---`, then a blank or the end of the line) starts,
    but the first line (str.find: 7 ms on 14 MB, where a multi-line regular expression takes 65)."""
    starts = []
    at = text.find("\n---")
    while at >= 0:
        after = at + 4
        if after == len(text) or text[after] in " \t\n":
            starts.append(at + 1)
        at = text.find("\n---", at + 1)
    return starts


def pieces(text: str) -> Iterator[tuple[int, str]]:
    """(where it starts, its text) of each document of `text`: cut before every `---` line."""
    cuts = [0, *document_starts(text), len(text)]
    for start, stop in itertools.pairwise(cuts):
        yield start, text[start:stop]


def plain_scalar(text: str) -> Any:
    """A plain scalar's value under YAML 1.1 (PyYAML's resolver and SafeConstructor)."""
    for tag, regexp in _RESOLVERS.get(text[0] if text else "", []) + _WILDCARD:
        if regexp.match(text):
            build = _BUILDERS.get(tag)
            if build is None:  # `<<` (merge), `=` (value): PyYAML decides what they mean
                raise _Unsupported(tag)
            try:
                return build(_CONSTRUCTOR, ScalarNode(tag, text))
            except (ValueError, OverflowError, KeyError) as exc:  # `0x_`: PyYAML raises it
                raise _Unsupported(text) from exc
    return text


def _single(source: str) -> Any:
    """The one value of a tiny document read by libyaml: `k: <source>`."""
    try:
        documents = list(yaml.load_all(source, Loader=LOADER))
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        raise _Unsupported(source[:40]) from exc
    if len(documents) != 1 or type(documents[0]) is not dict or len(documents[0]) != 1:
        raise _Unsupported(source[:40])
    return documents[0]


def _close(stack: list[list[Any]], col: int, dash: bool) -> list[Any]:
    """The frame a line at `col` (a sequence entry if `dash`) belongs to: the frames it ends are
    popped, a value still to come becomes the collection the line starts, or null."""
    while True:
        top = stack[-1]
        tcol = top[0]
        if top[3] is not _NO_KEY:
            if col > tcol or (col == tcol and dash and not top[2]):
                child: Any = [] if dash else {}
                if top[2]:
                    top[1].append(child)
                else:
                    top[1][top[3]] = child
                top[3] = _NO_KEY
                top = [col, child, dash, _NO_KEY, col == tcol]
                stack.append(top)
                if len(stack) > _MAX_DEPTH:
                    raise _Unsupported("nested deeply")
                return top
            if top[2]:
                top[1].append(None)
            else:
                top[1][top[3]] = None
            top[3] = _NO_KEY
        if col == tcol:
            if top[2] and not dash:
                if not top[4]:
                    raise _Unsupported("key beside a sequence")
                stack.pop()  # an indentless sequence ends at its mapping's next key
                continue
            if dash and not top[2]:
                raise _Unsupported("sequence entry in a mapping")
            return top
        if col > tcol:
            raise _Unsupported("continued scalar or unexpected indentation")
        stack.pop()
        if not stack:
            raise _Unsupported("less indented than the root node")


def _frame_for(stack: list[list[Any]], top: list[Any], col: int, sequence: bool) -> list[Any]:
    """`_close(stack, col, sequence)`, its two common cases first: the first key (entry) of a
    mapping (sequence) that is a pending key's value — a sequence may stand at the key's column —
    and a key (entry) of a collection some levels up."""
    if top[3] is not _NO_KEY:
        if not top[2] and (col > top[0] or (sequence and col == top[0])):
            child: Any = [] if sequence else {}
            top[1][top[3]] = child
            top[3] = _NO_KEY
            top = [col, child, sequence, _NO_KEY, col == top[0]]
            stack.append(top)
            if len(stack) > _MAX_DEPTH:
                raise _Unsupported("nested deeply")
            return top
    elif col < top[0]:
        depth = len(stack) - 1
        while depth and stack[depth][0] > col:
            depth -= 1
        frame = stack[depth]
        if frame[0] == col and frame[2] == sequence and frame[3] is _NO_KEY:
            del stack[depth + 1:]
            return frame
    return _close(stack, col, sequence)


class _Reader:
    """Reads one document's lines; raises _Unsupported where it is not certain."""

    def __init__(self, tabs: bool) -> None:
        self.lines: list[str] = []
        self.tabs = tabs
        self.quoted: dict[str, Any] = {}  # double-quoted scalar with escapes → its value
        self.keys: dict[str, Any] = {}  # a plain key's text (before `: `) → the key
        self.values: dict[str, Any] = {}  # a line's text after `: ` → its (immutable) value
        # a whole `key: value` or `- key: value` line (indentation included) → (column, key,
        # immutable value or _NO_KEY for a value on the lines below, the key's column after a
        # `- ` or -1): most lines of a cluster repeat (`protocol: TCP`), and are read once
        self.known_lines: dict[str, tuple[int, Any, Any, int]] = {}

    def resolve(self, text: str) -> Any:
        """A plain scalar's value, checked to be one (no indicator first)."""
        first = text[0]
        if (first in _NOT_PLAIN_START and (first not in "?:" or len(text) == 1 or text[1] == " ")) or (
                first == "-" and (len(text) == 1 or text[1] == " ")):
            raise _Unsupported(text)
        return self.plain_value(text)

    def plain_value(self, text: str) -> Any:
        """A plain scalar's value."""
        return plain_scalar(text) if text[0] in _RESOLVERS else text

    def double_quoted(self, raw: str) -> Any:
        value = self.quoted.get(raw, _NO_KEY)
        if value is _NO_KEY:
            value = self.quoted[raw] = _single("k: " + raw)["k"]
        return value

    def document(self, lines: list[str], explicit: bool) -> list[Any]:
        """[the document] of one document's `lines` (the first is `---` if `explicit`), or []
        for the comments before a stream's first `---`."""
        self.lines = lines
        first = 0
        if explicit:
            marker = lines[0][3:].lstrip(" ")
            if marker and not marker.startswith("#"):
                raise _Unsupported("content after ---")
            first = 1
        root = self.node(first, len(lines))
        if root is _NO_KEY:
            if not explicit and any(_DOCUMENT_END.match(line) for line in lines):
                raise _Unsupported("... before any document")
            return [None] if explicit else []
        return [root]

    def node(self, first: int, end: int) -> Any:  # noqa: PLR0915 — one loop, for speed
        """The block node of lines[first:end]."""
        lines = self.lines
        tabs = self.tabs
        keys = self.keys
        values = self.values
        known_lines = self.known_lines
        # frames: [column, container, is_sequence, pending, indentless]; pending is the key whose
        # value is still to come (mappings) or True for an entry still to come (sequences)
        stack: list[list[Any]] = []
        root: Any = _NO_KEY
        k = first
        while k < end:
            line = lines[k]
            k += 1
            known = known_lines.get(line)
            if known is not None and stack:  # read before: only where it stands is new
                col, key, value, inner = known
                top = stack[-1]
                if inner < 0:
                    if top[0] != col or top[2] or top[3] is not _NO_KEY:
                        top = _frame_for(stack, top, col, False)
                else:  # `- key: value`: a mapping as the next entry of a sequence
                    if top[0] != col or not top[2] or top[3] is not _NO_KEY:
                        top = _frame_for(stack, top, col, True)
                    entry: dict[Any, Any] = {}
                    top[1].append(entry)
                    top = [inner, entry, False, _NO_KEY, False]
                    stack.append(top)
                    if len(stack) > _MAX_DEPTH:
                        raise _Unsupported("nested deeply")
                if value is _NO_KEY:
                    top[3] = key
                else:
                    top[1][key] = value
                continue
            text = line.lstrip(" ")
            if not text or text[0] == "#":
                continue
            if tabs and "\t" in line:
                raise _Unsupported("tab")
            col = len(line) - len(text)
            if col == 0 and text.startswith("...") and (len(text) == 3 or text[3] in " \t"):
                if not _DOCUMENT_END.match(text):  # `...` ends the document, whatever follows
                    raise _Unsupported("content after ... on its line")
                self.after_end(k, end)
                break
            dash = text[0] == "-" and (len(text) == 1 or text[1] == " ")
            if stack:
                top = stack[-1]
                if top[0] != col or top[2] != dash or top[3] is not _NO_KEY:
                    top = _close(stack, col, dash)
            else:
                if root is not _NO_KEY:
                    raise _Unsupported("content after the root node")
                root = [] if dash else {}
                top = [col, root, dash, _NO_KEY, False]
                stack.append(top)
            if dash:
                item = text[1:].lstrip(" ")
                if not item or item[0] == "#":
                    top[3] = True
                    continue
                if item[0] == "-" and (len(item) == 1 or item[1] == " "):
                    k = self.entry(text, col, top, stack, k, end)  # `- - x`
                    if len(stack) > _MAX_DEPTH:
                        raise _Unsupported("nested deeply")
                    continue
                raw, colon, rest = item.partition(": ")
                if not colon and item[-1] != ":":  # `- value`
                    value = values.get(item, _NO_KEY)
                    if value is _NO_KEY:
                        k, value = self.value(item, k, end, col)
                        if item[0] not in "{[|>" and type(value) in _IMMUTABLE:
                            values[item] = value
                    top[1].append(value)
                    continue
                entry_col = col
                col += len(text) - len(item)  # `- key: value`: a mapping starts at `key`
                child: dict[Any, Any] = {}
                top[1].append(child)
                top = [col, child, False, _NO_KEY, False]
                stack.append(top)
                text = item
            else:
                raw, colon, rest = text.partition(": ")
            if not colon:
                if text[-1] != ":":
                    raise _Unsupported("a scalar where a key belongs: " + text[:40])
                raw = text[:-1]
            key = keys.get(raw, _NO_KEY)
            if key is _NO_KEY:
                key, rest = self.split_key(text)
                if key is _NO_KEY:
                    raise _Unsupported("not a key")
            value = values.get(rest, _NO_KEY)
            if value is _NO_KEY:
                read = k
                k, value = self.value(rest, k, end, col)
                if value is _NO_KEY:
                    top[3] = key
                    self.remember(line, entry_col if dash else col, key, value, col if dash else -1)
                    continue
                if rest[0] not in "{[|>" and type(value) in _IMMUTABLE and k == read:
                    if len(values) > 100_000:
                        values.clear()
                    values[rest] = value  # the line is remembered when its value comes again:
                    # a value seen once (a uid, an address) would only fill known_lines
            else:
                self.remember(line, entry_col if dash else col, key, value, col if dash else -1)
            top[1][key] = value
            if len(stack) > _MAX_DEPTH:
                raise _Unsupported("nested deeply")
        for frame in stack:  # values still to come at the end: empty
            if frame[3] is not _NO_KEY:
                if frame[2]:
                    frame[1].append(None)
                else:
                    frame[1][frame[3]] = None
        return root

    def remember(self, line: str, col: int, key: Any, value: Any, inner: int) -> None:
        """`line`, a `key: value` (at `col`) or `- key: value` (the `-` at `col`, the key at
        `inner`) whose value does not depend on the lines below."""
        if len(self.known_lines) > 200_000:
            self.known_lines.clear()
        self.known_lines[line] = (col, key, value, inner)

    def after_end(self, k: int, end: int) -> None:
        """Past `...`: only comments (or more `...`) up to the next `---`."""
        for line in self.lines[k:end]:
            text = line.lstrip(" ")
            if text and text[0] != "#" and (len(line) != len(text) or not _DOCUMENT_END.match(text)):
                raise _Unsupported("content after ...")

    def entry(self, text: str, col: int, top: list[Any], stack: list[list[Any]],  # noqa: PLR0917
              k: int, end: int) -> int:
        """Read the entry of a line the common pattern does not take; the next line's index."""
        while True:
            container = top[1]
            if top[2]:
                rest = text[1:].lstrip(" ")
                if not rest or rest[0] == "#":
                    top[3] = True
                    return k
                col += len(text) - len(rest)
                text = rest
                if text[0] == "-" and (len(text) == 1 or text[1] == " "):
                    child: Any = []
                    container.append(child)
                    top = [col, child, True, _NO_KEY, False]
                    stack.append(top)
                    continue
                key, rest = self.split_key(text)
                if key is _NO_KEY:
                    k, value = self.value(rest, k, end, top[0])
                    if value is _NO_KEY:
                        raise _Unsupported("empty value")
                    container.append(value)
                    return k
                child = {}
                container.append(child)
                top = [col, child, False, _NO_KEY, False]
                stack.append(top)
                container = child
            else:
                key, rest = self.split_key(text)
                if key is _NO_KEY:
                    raise _Unsupported("not a key")
            k, value = self.value(rest, k, end, col)
            if value is _NO_KEY:
                top[3] = key
            else:
                container[key] = value
            return k

    def split_key(self, text: str) -> tuple[Any, str]:
        """(key, the rest after `: `) of a `key: value` line, or (_NO_KEY, text)."""
        first = text[0]
        if first in {'"', "'"}:
            found = (_DOUBLE_QUOTED if first == '"' else _SINGLE_QUOTED).match(text)
            if found is None:
                raise _Unsupported("quote")
            after = text[found.end():]
            if not after.startswith(":"):
                return _NO_KEY, text
            if len(after) > 1 and after[1] != " ":
                raise _Unsupported("quoted key")
            if found.end() > _MAX_KEY:
                raise _Unsupported("long key")
            raw = found.group(0)
            if first == "'":
                key = found.group(1).replace("''", "'")
            elif "\\" in raw:
                key = self.double_quoted(raw)
            else:
                key = found.group(1)
            return key, after[2:]
        split = text.find(": ")
        if split < 0:
            if not text.endswith(":"):
                return _NO_KEY, text
            split = len(text) - 1
        raw = text[:split].rstrip(" ")
        if not raw:
            raise _Unsupported("empty key")
        if " #" in raw or split > _MAX_KEY:
            if " #" in raw and text.find(" #") < split:
                return _NO_KEY, text  # a scalar, then a comment that holds ": "
            raise _Unsupported("key")
        key = self.keys[text[:split]] = self.resolve(raw)
        return key, text[split + 2:]

    def value(self, rest: str, k: int, end: int, indent: int) -> tuple[int, Any]:
        """(the next line, the value of `rest`), _NO_KEY when the value is on the lines below."""
        rest = rest.lstrip(" ")
        if not rest or rest[0] == "#":
            return k, _NO_KEY
        first = rest[0]
        if first in {'"', "'"}:
            found = (_DOUBLE_QUOTED if first == '"' else _SINGLE_QUOTED).match(rest)
            if found is None:
                raise _Unsupported("quote")
            after = rest[found.end():]
            if (after and after[0] != " ") or (after.strip(" ") and not after.lstrip(" ").startswith("#")):
                raise _Unsupported("after a quoted scalar")
            if first == "'":
                return k, found.group(1).replace("''", "'")
            raw = found.group(0)
            return k, (self.double_quoted(raw) if "\\" in raw else found.group(1))
        if first in {"{", "["}:
            after = rest[2:].lstrip(" ")
            if rest.startswith(("{}", "[]")) and (len(rest) == 2 or (rest[2] == " " and
                                                                    (not after or after[0] == "#"))):
                return k, ({} if first == "{" else [])
            return k, _single(" " * indent + "k: " + rest)["k"]
        if first in {"|", ">"}:
            if _BLOCK_HEADER.fullmatch(rest) is None:
                raise _Unsupported("block scalar header")
            lines = self.lines
            stop = k
            while stop < end:
                line = lines[stop]
                text = line.lstrip(" ")
                if text and len(line) - len(text) <= indent:
                    break
                stop += 1
            source = "\n".join([" " * indent + "k: " + rest, *lines[k:stop]])
            if stop < len(lines):
                source += "\n"
            return stop, _single(source)["k"]
        comment = rest.find(" #")
        if comment >= 0:
            rest = rest[:comment]
        rest = rest.rstrip(" ")
        if ": " in rest or rest.endswith(":"):
            raise _Unsupported("mapping value in a scalar")
        return k, self.resolve(rest)
