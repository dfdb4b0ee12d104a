"""A big YAML text read by two processes: `yaml_fast` on each half, the halves joined.

Why: `yaml_fast` reads a 14 MB `kubectl get pods -A -o yaml` (5,000 pods, 500,000 lines) in
0.3 s, where orjson reads the same cluster as JSON in 0.12 s: what is left is the Python loop
over the lines. Two halves read at once, on a machine with two free CPUs, take 0.2 s.

When: a text of at least PARALLEL_FROM characters, at least two CPUs available to this process,
and no thread but this one (a fork copies only the calling thread: with others running, such as
the agent's, a lock one of them holds would stay held in the child). Otherwise, and whenever a
half cannot be read by `yaml_fast` alone (a construct it leaves to PyYAML, an error, a child that
failed), the text is read by `yaml_fast.load_all` as if this module did not exist, so the
documents, and every error with its line, are the same either way.

How the text is halved:
- A stream of documents (`---`) is cut between two documents near the middle.
- One document (`kind: List`) is cut between two items of its `items:` sequence, when it is
  written as kubectl writes it: `items:` once, at the first column, its entries `- ` at the first
  column too. The child reads the second half of the entries as a sequence, the parent the rest
  of the document; the parent's `items` is extended with the child's.
The child sends its documents back pickled, through a pipe of its own, and exits with `os._exit`
(nothing of the parent's is flushed or run twice).
"""

from __future__ import annotations

import itertools
import marshal
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

from netpol.load import yaml_fast

PARALLEL_FROM = 4_000_000  # characters: below, the fork and the pickling cost what they save
# The parent reads a little more than half: the child also encodes its half, the parent decodes it.
PARENT_SHARE = 0.55
ITEMS = "items:"


def load_all(text: str) -> Iterator[Any]:
    """What `yaml_fast.load_all(text)` yields, read in two processes when that pays."""
    documents = read_in_halves(text) if len(text) >= PARALLEL_FROM and can_fork() else None
    if documents is None:
        yield from yaml_fast.load_all(text)
    else:
        yield from documents


def can_fork() -> bool:
    """Two CPUs for this process and no other thread in it."""
    return hasattr(os, "fork") and threading.active_count() == 1 and len(os.sched_getaffinity(0)) >= 2


def read_in_halves(text: str) -> list[Any] | None:
    """The documents of `text` read by a child and this process, or None (read it the usual way).
    Each process checks and splits its own half of the text (`simple_text`, str.split: 60 ms
    of 14 MB that would otherwise come before the fork)."""
    if "\r" in text:
        return None
    starts = yaml_fast.document_starts(text)
    if starts:
        return _documents_in_halves(text, starts)
    return _items_in_halves(text)


def _documents_in_halves(text: str, starts: list[int]) -> list[Any] | None:
    """A stream cut before the first document that starts past PARENT_SHARE of the text."""
    cut = next((start for start in starts if start >= len(text) * PARENT_SHARE), None)
    if cut is None:
        return None
    later = _in_child(lambda: _read(text[cut:], [start - cut for start in starts if start > cut]))
    earlier = _safely(lambda: _read(text[:cut], [start for start in starts if start < cut]))
    rest = later()
    if earlier is None or rest is None:
        return None
    return earlier + rest


def _read(text: str, starts: list[int]) -> list[Any] | None:
    """The documents of `text` (whose documents other than the first start at `starts`), read by
    `yaml_fast` alone, or None."""
    if not yaml_fast.simple_text(text):
        return None
    cuts = [0, *starts, len(text)]
    parts = (text[start:stop] for start, stop in itertools.pairwise(cuts))
    return yaml_fast.read_lines(((part.split("\n"), part.startswith("---")) for part in parts), "\t" in text)


def _items_in_halves(text: str) -> list[Any] | None:
    """One document cut between two entries of its `items:` sequence (see the module). The
    places are found with str.find (C), not by walking 500,000 lines in Python."""
    key = text.find("\n" + ITEMS + "\n")
    if key < 0 or text.count("\n" + ITEMS) != 1 or text.startswith(ITEMS):
        return None
    first_entry = key + len(ITEMS) + 2
    last_entry = text.rfind("\n- ") + 1
    middle_entry = text.find("\n- ", first_entry + int((last_entry - first_entry) * PARENT_SHARE)) + 1
    if not text.startswith("- ", first_entry) or not first_entry < middle_entry <= last_entry:
        return None
    end = last_entry  # past the last entry's lines: the first line that is not part of an entry
    while (end := text.find("\n", end) + 1) and end < len(text) and text[end] in " -#\n":
        pass
    rest = text[end:] if end else ""
    if "\n-" in "\n" + rest:
        return None  # not one sequence of entries: read it the usual way
    later = _in_child(lambda: _read(text[middle_entry:len(text) - len(rest)], []))
    earlier = _safely(lambda: _read(text[:middle_entry] + rest, []))
    entries = later()
    if earlier is None or entries is None or len(earlier) != 1 or len(entries) != 1:
        return None
    document, tail = earlier[0], entries[0]
    if type(document) is not dict or type(document.get("items")) is not list or type(tail) is not list:
        return None
    document["items"].extend(tail)
    return [document]


def _safely(read: Callable[[], list[Any] | None]) -> list[Any] | None:
    """`read()`, or None if it raised: the usual reading says what went wrong, and where."""
    try:
        return read()
    except Exception:  # anything: the text is read again the usual way, which says what it is
        return None


def _in_child(read: Callable[[], list[Any] | None]) -> Callable[[], list[Any] | None]:
    """Start `read()` in a forked child; the returned function waits for its result (None if it
    could not read, or failed)."""
    receive, send = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(receive)
            documents = read()
            with os.fdopen(send, "wb") as pipe:
                pipe.write(_encode(documents))
            code = 0
        finally:
            os._exit(code)
    os.close(send)

    def wait() -> list[Any] | None:
        with os.fdopen(receive, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0 or not data:
            return None
        return _decode(data)

    return wait


def _encode(documents: list[Any] | None) -> bytes:
    """marshal where it can (a third faster to decode than pickle), pickle where a value is not
    one of marshal's types (a `!!timestamp`'s datetime)."""
    try:
        return b"M" + marshal.dumps(documents)
    except ValueError:
        return b"P" + pickle.dumps(documents, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(data: bytes) -> list[Any] | None:
    """What `_encode` wrote (our own child's, through our own pipe)."""
    decoded: list[Any] | None = marshal.loads(data[1:]) if data[:1] == b"M" else pickle.loads(data[1:])
    return decoded
