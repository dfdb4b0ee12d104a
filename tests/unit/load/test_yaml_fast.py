"""netpol.load.yaml_fast reads YAML exactly as PyYAML's SafeLoader does (YAML 1.1): the same
documents, the same objects (types included: `yes` is True, `012` is 10, `"123"` a string), and
the same error after the same documents. Checked on Kubernetes-shaped manifests written every way
a person or a dumper writes them (block, indentless or indented sequences, flow, quoted, literal
and folded block scalars, comments, anchors, several documents, CRLF), with tricky scalars
planted as keys and values, and on the same texts with random edits that often break them."""

from __future__ import annotations

import datetime
import json
import math
import random
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from netpol.errors import Problem
from netpol.load import yaml_fast
from netpol.load.encode import encode_state
from netpol.load.manifests import parse_documents
from netpol.testing import cluster_policy_manifests, clusters, policy_manifests

LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Scalars whose YAML 1.1 meaning differs from YAML 1.2's, or from a string, or that PyYAML refuses.
TRICKY = ("yes", "No", "on", "OFF", "y", "n", "Y", "true", "True", "tRUE", "0x1F", "+0x1F", "012", "08", "0o12",
          "0b101", "1_0", "1__0", "1_000.5", "1:30", "-1:30", "190:20:30.15", ".5", "0.", "1e3", "1.0e+3", "1E3",
          "+1", "-1", "-0", "-.inf", ".Inf", ".NaN", "~", "null", "Null", "NULL", "2024-01-01",
          "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5", "=", "<<", "0x_", "0_", "1e400",
          "123456789012345678901234567890", "héllo", "☺", "a b", "a  b", "a:b", "a,b", "a[0]", "{x}", "x}", "a#b",
          "-x", "--x", "---x", ".", "..", "...", "@x", "`x`", "%x", "!x", "&x", "*x", "?x", ":x", "x:", "a: b",
          "a #b", "#x", "- x", "-", "|", ">", "'", '"', "it's", 'say "hi"', "back\\slash", "tab\there",
          "", " ", " lead", "trail ", "new\nline", "\x85", "\u2028", "\ufeff", "\x7f", "\x00"[:0] + "é\u263a",
          "10.0.0.1", "10.0.0.0/8", "app.kubernetes.io/name", "quay.io/app:latest", "TCP", "0", "1", "3.14")
INDICATORS = ("- ", "-", ": ", ":", "#", " #", "\t", "'", '"', "|", ">", "&a ", "*a", "!!str ", "{", "}", "[", "]",
              ",", "? ", "%", "@", "\n", "\r\n", "\r", "  ", "---", "...", "<<: ", "\\", "\\x41", "\\u263A")


def reference(text: str) -> tuple[list[Any], Any]:
    """PyYAML's documents of `text`, and how it failed (None when it did not)."""
    return _outcome(lambda: yaml.load_all(text, Loader=LOADER))


def fast(text: str) -> tuple[list[Any], Any]:
    return _outcome(lambda: yaml_fast.load_all(text))


def _outcome(documents: Any) -> tuple[list[Any], Any]:
    found: list[Any] = []
    try:
        for doc in documents():
            found.append(typed(doc))
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = (mark.line, mark.column) if mark is not None else None
        return found, (type(exc).__name__, getattr(exc, "problem", None) or str(exc), where)
    return found, None


def typed(value: Any) -> Any:
    """`value` with every type spelled out (True != 1, 1.0 != 1) and key order kept."""
    if isinstance(value, dict):
        return ("map", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("seq", [typed(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    if isinstance(value, (datetime.date, datetime.datetime)):
        return (type(value).__name__, value.isoformat(), repr(getattr(value, "tzinfo", None)))
    return (type(value).__name__, value)


def assert_same(text: str) -> None:
    assert fast(text) == reference(text), text


def old_parse_documents(text: str, source: str) -> tuple[list[Any], Problem | None]:
    """parse_documents as it was before yaml_fast (PyYAML for all YAML): the oracle for messages."""
    real = yaml_fast.load_all  # what manifests reads YAML with (through yaml_parallel, for small texts)
    try:
        yaml_fast.load_all = lambda text: yaml.load_all(text, Loader=LOADER)  # type: ignore[assignment]
        return parse_documents(text, source)
    finally:
        yaml_fast.load_all = real  # type: ignore[assignment]


# -- writing documents every way YAML allows -------------------------------------------------


def token(rng: random.Random, value: Any, is_key: bool = False) -> str:
    """One scalar written plain (as is, even when that changes its meaning), quoted or escaped."""
    text = value if isinstance(value, str) else rng.choice((json.dumps(value), str(value), repr(value)))
    style = rng.choice(("plain",) * 7 + ("single", "double", "escaped"))
    if "\n" in text and style == "plain":
        style = "double"
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    if style == "double":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if style == "escaped":
        return json.dumps(text, ensure_ascii=rng.random() < 0.5)
    return text


def comment(rng: random.Random) -> str:
    return rng.choice(("", "", "", " # note", "  #: x", " #")) if rng.random() < 0.3 else ""


def emit(rng: random.Random, value: Any, indent: int, out: list[str], prefix: str) -> None:
    """Lines for `value` starting with `prefix` (`key:` or `- ` items) at column `indent`."""
    if isinstance(value, dict) and value and rng.random() < 0.97:
        lead = prefix
        for key, item in value.items():
            key_text = token(rng, key, is_key=True)
            _member(rng, item, indent, out, lead + key_text + ":")
            lead = " " * indent
        return
    if isinstance(value, list) and value and rng.random() < 0.97:
        lead = prefix
        for item in value:
            gap = rng.choice((1, 1, 1, 2, 3))
            if isinstance(item, (dict, list)) and item and rng.random() < 0.95:
                if rng.random() < 0.8:
                    emit(rng, item, indent + 1 + gap, out, lead + "-" + " " * gap)
                else:
                    out.append(lead + "-" + comment(rng))
                    deeper = indent + rng.choice((1, 2, 4))
                    emit(rng, item, deeper, out, " " * deeper)
            else:
                out.append(lead + "-" + " " * gap + scalar_or_flow(rng, item) + comment(rng))
            lead = " " * indent
            if rng.random() < 0.05:
                out.append(rng.choice(("", "#", " " * indent + "# between")))
        return
    out.append(prefix + scalar_or_flow(rng, value) + comment(rng))


def scalar_or_flow(rng: random.Random, value: Any) -> str:
    if isinstance(value, (dict, list)):
        if rng.random() < 0.5:
            return json.dumps(value)
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return token(rng, value)


def _member(rng: random.Random, item: Any, indent: int, out: list[str], head: str) -> None:
    if isinstance(item, (dict, list)) and item and rng.random() < 0.97:
        out.append(head + comment(rng))
        if isinstance(item, list) and rng.random() < 0.5:
            emit(rng, item, indent, out, " " * indent)  # indentless sequence
        else:
            step = rng.choice((1, 2, 2, 4))
            emit(rng, item, indent + step, out, " " * (indent + step))
        return
    if isinstance(item, str) and rng.random() < 0.1:
        chomp = rng.choice(("", "-", "+"))
        out.append(head + " " + rng.choice(("|", ">")) + chomp + comment(rng))
        for line in (item or "x").split("\n"):
            out.append(" " * (indent + 2) + line if line else "")
        return
    out.append(head + " " + scalar_or_flow(rng, item) + comment(rng))


def write(rng: random.Random, documents: list[Any]) -> str:
    """A multi-document stream in one of the ways people and tools write one."""
    way = rng.choice(("hand",) * 6 + ("dump", "dump", "json"))
    parts = []
    for doc in documents:
        if way == "dump":
            class Dumper(yaml.SafeDumper):
                def ignore_aliases(self, data: Any) -> bool:
                    return rng.random() < 0.8
            parts.append(yaml.dump(doc, Dumper=Dumper, default_flow_style=rng.choice((False, False, None, True)),
                                   width=rng.choice((20, 80, 10_000)), indent=rng.choice((2, 4)),
                                   allow_unicode=rng.random() < 0.5, sort_keys=rng.random() < 0.5,
                                   default_style=rng.choice((None, None, None, "'", '"'))))
        elif way == "json":
            parts.append(json.dumps(doc, indent=rng.choice((None, 2))) + "\n")
        else:
            lines: list[str] = []
            emit(rng, doc, 0, lines, "")
            parts.append("\n".join(lines) + "\n")
    separators = ("---\n", "--- # next\n", "...\n---\n", "\n---\n", "---   \n")
    text = rng.choice(("", "", "---\n", "# leading comment\n", "...\n", "# c\n...\n---\n")
                      + ("%YAML 1.1\n---\n",) * (rng.random() < 0.1)) + "".join(
        part if i == 0 else rng.choice(separators) + part for i, part in enumerate(parts))
    if rng.random() < 0.1:
        text = text.replace("\n", "\r\n")
    if rng.random() < 0.1:
        text = text.rstrip("\n")
    return text


def plant(rng: random.Random, doc: Any) -> Any:
    """`doc` with tricky scalars put in place of some values and as some keys."""
    if isinstance(doc, dict):
        out = {}
        for key, value in doc.items():
            if rng.random() < 0.05:
                out[rng.choice(TRICKY)] = plant(rng, value)
            out[key] = rng.choice(TRICKY) if rng.random() < 0.1 else plant(rng, value)
        return out
    if isinstance(doc, list):
        return [rng.choice(TRICKY) if rng.random() < 0.1 else plant(rng, v) for v in doc]
    return doc


def edit(rng: random.Random, text: str) -> str:
    """`text` with a few random edits: most of them break its structure or its meaning."""
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        kind = rng.random()
        if kind < 0.4:
            text = text[:at] + rng.choice(INDICATORS) + text[at:]
        elif kind < 0.6:
            text = text[:at] + text[at + 1:]
        elif kind < 0.8:
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            lines[i] = " " * rng.randint(0, 3) + lines[i] if rng.random() < 0.5 else lines[i][rng.randint(0, 2):]
            text = "\n".join(lines)
        else:
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
            text = "\n".join(lines)
    return text


manifests = (clusters(max_pods=4, max_policies=2, max_cluster_policies=1).map(lambda s: encode_state(s)["items"])
             | st.lists(policy_manifests() | cluster_policy_manifests(), min_size=1, max_size=3))


# -- the properties ---------------------------------------------------------------------------

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(manifests, st.randoms(use_true_random=False))
def test_manifests_read_as_pyyaml_reads_them(documents, rng):
    assert_same(write(rng, [plant(rng, doc) for doc in documents]))


@SETTINGS
@given(manifests, st.randoms(use_true_random=False))
def test_edited_manifests_read_or_fail_as_pyyaml(documents, rng):
    assert_same(edit(rng, write(rng, [plant(rng, doc) for doc in documents])))


@SETTINGS
@given(st.lists(st.sampled_from(INDICATORS + TRICKY + ("a", "b: ", "\n  ", "\n- ", "\n    ")), max_size=40)
       .map("".join))
def test_garbage_reads_or_fails_as_pyyaml(text):
    assert_same(text)


@pytest.mark.parametrize("scalar", TRICKY)
def test_each_tricky_scalar_as_key_and_value(scalar):
    for text in (f"k: {scalar}\n", f"{scalar}: v\n", f"- {scalar}\n", f"a:\n  - {scalar}\n  - x\n",
                 f"- k: {scalar}\n  j: {scalar} # c\n", f"k: '{scalar}'\n", f'k: "{scalar}"\n'):
        assert_same(text)


@SETTINGS
@given(manifests, st.randoms(use_true_random=False))
def test_parse_documents_gives_the_same_problems(documents, rng):
    text = edit(rng, write(rng, [plant(rng, doc) for doc in documents]))
    assert parse_documents(text, "f.yaml") == old_parse_documents(text, "f.yaml")


@settings(max_examples=100, deadline=None)
@given(manifests, st.randoms(use_true_random=False))
def test_block_style_manifests_take_the_fast_path(documents, rng):
    """What kubectl and PyYAML's block dumper write never leaves the fast path (so the tests above
    compare the fast path, not PyYAML with itself)."""
    text = yaml.dump_all(documents, Dumper=_NoAliases, default_flow_style=False, width=10_000,
                         sort_keys=rng.random() < 0.5, indent=rng.choice((2, 4)))
    reader = yaml_fast._Reader(tabs=False)
    read = [doc for _, part in yaml_fast.pieces(text)
            for doc in reader.document(part.split("\n"), part.startswith("---"))]
    assert read == documents


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


@example("kind: it's\nspec:\n    podSelector: {}\n...    egress: []")  # `...` then content, on one line
@example("a: 1\n---\nb: [1,\n---\nc: 3\n")
@example("a: &x 1\nb: *x\n---\nc: 3\n")
@example("k: |\n  line\n\n  more\n---\nk: >-\n  folded\n  text\n")
@example("- a\nb: 1\n")
@example("a:\n- b\n- c\nd: e\n")
@example("a:\n  b\n")
@example("a: 1\n  b: 2\n")
@example("k: v\r\nj: w\r\n")
@example("k: v\rj: w\n")
@example("\ufeffk: v\n")
@example("k:\tv\n")
@example("x: " + "[" * 2000 + "]" * 2000 + "\n")
@example("".join(" " * i + "a:\n" for i in range(600)))
@given(st.just(""))
def test_known_hard_cases(text):
    assert_same(text)
