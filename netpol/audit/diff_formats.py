"""Rendering a `netpol.audit.diff.Diff`: text (for a terminal), JSON (for scripts), markdown
(for a pull-request comment).

JSON schema (`-o json`; keys are stable, new keys may be added)::

    {"summary": {"newly_allowed": int, "newly_denied": int,      # cells
                 "groups": int, "pods_compared": int, "probes": int,
                 "objects_changed": int, "explained_groups": int,
                 "pods_added": ["ns/pod", …], "pods_removed": ["ns/pod", …]},
     "changes": [{"change": "allowed" | "denied",                 # newly allowed / newly denied
                  "from": "frontend/*", "to": "db/[postgres-0]",  # as `reach -o groups` spells them
                  "sources": ["ns/pod", …], "destinations": ["ns/pod", …],
                  "ports": [{"port": 5432, "protocol": "TCP"}, …],  # "end_port" too for a range;
                                                                   # "port": null for ICMP
                  "cells": int,          # sources × destinations × ports, a pod and itself left out
                  "causes": [OBJECT, …],
                  "example": {"from": "ns/pod", "to": "ns/pod", "port": int | null, "protocol": str}
                             | null,     # null past the first groups explained
                  "before": {"verdict": "allowed" | "denied", "reason": str} | null,
                  "after": {"verdict": …, "reason": …} | null}, …],
     "objects": [OBJECT, …]}             # every object change, whether it changed a cell or not
    OBJECT = {"kind": "NetworkPolicy", "object": "ns/name" | "name",
              "change": "added" | "removed" | "edited",
              "fields": ["spec.ingress[0].ports[0].port", …],           # edited only, else []
              "edits": [{"path": str, "before": JSON | null, "after": JSON | null}, …]}

A change's cells are every source × every destination × every port of it (`pairs` would be
their product; the lists keep the document linear in the pods, not quadratic).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from netpol.audit.changes import FieldEdit, ObjectChange
from netpol.audit.diff import ChangeGroup, Diff, Outcome
from netpol.semantics.probes import Probe

CAUSES_SHOWN = 8  # per group in text and markdown; JSON lists them all
EDITS_SHOWN = 4  # per object in text and markdown
TABLE_ROWS = 50  # markdown: a pull-request comment stays readable (and under GitHub's 65,536 characters)


def _value(value: Any) -> str:
    if value is None:
        return "absent"
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _edit(edit: FieldEdit) -> str:
    return f"{edit.path} ({_value(edit.before)} → {_value(edit.after)})"


def describe_change(change: ObjectChange) -> str:
    """`NetworkPolicy db/allow-postgres edited: spec.ingress[0].ports[0].port (5433 → 5432)`."""
    text = f"{change.ref} {change.change}"
    if not change.edits:
        return text
    shown = [_edit(e) for e in change.edits[:EDITS_SHOWN]]
    more = len(change.edits) - EDITS_SHOWN
    return f"{text}: {', '.join(shown)}{f', and {more} more' if more > 0 else ''}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _headline(diff: Diff) -> str:
    allowed, denied = diff.cells("allowed"), diff.cells("denied")
    return (f"{_count(allowed, 'cell')} newly allowed, {denied} newly denied, "
            f"in {_count(len(diff.groups), 'group')} ({diff.pods_compared} pods on both sides, "
            f"{_count(len(diff.probes), 'probe')})")


def _unchanged(diff: Diff) -> str:
    return (f"no change: the {diff.pods_compared} pods on both sides have the same verdicts on all "
            f"{len(diff.probes)} probes")


def _outcome_text(outcome: Outcome) -> str:
    return f"{outcome.verdict}: {outcome.reason}"


def _group_text(group: ChangeGroup) -> list[str]:
    lines = [group.line, f"  {group.cells} cell{'s' if group.cells != 1 else ''}"]
    if group.causes:
        lines.append("  caused by:")
        lines += [f"    {describe_change(c)}" for c in group.causes[:CAUSES_SHOWN]]
        if len(group.causes) > CAUSES_SHOWN:
            lines.append(f"    … and {len(group.causes) - CAUSES_SHOWN} more (-o json lists them all)")
    else:
        lines.append("  caused by: no changed object concerns these pods directly")
    if group.example is not None:
        e = group.example
        lines += [f"  e.g. {e.source} -> {e.destination} on {e.probe}",
                  f"    before: {_outcome_text(e.before)}", f"    after:  {_outcome_text(e.after)}"]
    return lines


def _objects_text(diff: Diff) -> list[str]:
    lines = []
    for title, pods in (("only in OLD", diff.pods_removed), ("only in NEW", diff.pods_added)):
        if pods:
            lines.append(f"pods {title}, not compared ({len(pods)}): {', '.join(pods)}")
    if diff.objects:
        causing = diff.causing()
        lines.append(f"objects changed ({len(diff.objects)}):")
        lines += [f"  {describe_change(c)}{'' if c in causing else '  (changes no cell)'}"
                  for c in diff.objects]
    return lines


def render_text(diff: Diff) -> str:
    lines = [_unchanged(diff) if diff.unchanged else f"netpol diff: {_headline(diff)}", ""]
    for group in diff.groups:
        lines += [*_group_text(group), ""]
    if diff.groups and diff.explained < len(diff.groups):
        lines += [f"(reasons for the first {diff.explained} groups; `netpol explain` gives any cell's)", ""]
    lines += _objects_text(diff)
    return "\n".join(lines).rstrip("\n") + "\n"


# -- JSON ----------------------------------------------------------------------------------------


def _probe_json(probe: Probe) -> dict[str, Any]:
    entry: dict[str, Any] = {"port": probe.port}
    if probe.last is not None and probe.last != probe.port:
        entry["end_port"] = probe.last
    return {**entry, "protocol": probe.protocol}


def _object_json(change: ObjectChange) -> dict[str, Any]:
    return {"kind": change.kind, "object": change.name, "change": change.change,
            "fields": list(change.fields),
            "edits": [{"path": e.path, "before": e.before, "after": e.after} for e in change.edits]}


def _outcome_json(outcome: Outcome | None) -> dict[str, Any] | None:
    return None if outcome is None else {"verdict": outcome.verdict, "reason": outcome.reason}


def _group_json(group: ChangeGroup) -> dict[str, Any]:
    e = group.example
    return {
        "change": group.change, "from": group.source_text, "to": group.destination_text,
        "sources": list(group.sources), "destinations": list(group.destinations),
        "ports": [_probe_json(p) for p in group.probes], "cells": group.cells,
        "causes": [_object_json(c) for c in group.causes],
        "example": None if e is None else {"from": e.source, "to": e.destination, "port": e.probe.port,
                                           "protocol": e.probe.protocol},
        "before": _outcome_json(e.before if e else None), "after": _outcome_json(e.after if e else None),
    }


def render_json(diff: Diff) -> str:
    summary = {"newly_allowed": diff.cells("allowed"), "newly_denied": diff.cells("denied"),
               "groups": len(diff.groups), "pods_compared": diff.pods_compared, "probes": len(diff.probes),
               "objects_changed": len(diff.objects), "explained_groups": diff.explained,
               "pods_added": list(diff.pods_added), "pods_removed": list(diff.pods_removed)}
    document = {"summary": summary, "changes": [_group_json(g) for g in diff.groups],
                "objects": [_object_json(c) for c in diff.objects]}
    return json.dumps(document, indent=1) + "\n"


# -- markdown ------------------------------------------------------------------------------------


def _code(text: str) -> str:
    """Inline code (pod and field names hold `*`, `[`, `_`); `|` would end a table cell."""
    return f"`{text}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def _cause_md(change: ObjectChange) -> str:
    fields = change.fields[:EDITS_SHOWN]
    more = len(change.fields) - len(fields)
    detail = f" ({', '.join(_code(f) for f in fields)}{f', +{more}' if more > 0 else ''})" if fields else ""
    return f"{_cell(change.kind)} {_code(change.name)} {change.change}{detail}"


def _causes_md(group: ChangeGroup) -> str:
    if not group.causes:
        return "—"
    shown = [_cause_md(c) for c in group.causes[:CAUSES_SHOWN]]
    more = len(group.causes) - CAUSES_SHOWN
    return "<br>".join(shown) + (f"<br>… and {more} more" if more > 0 else "")


def _reasons_md(diff: Diff) -> list[str]:
    lines = []
    for group in diff.groups:
        e = group.example
        if e is None:
            continue
        lines += [f"- {_code(e.source + ' -> ' + e.destination)} on {_code(str(e.probe))}, "
                  f"in {_code(group.line)}",
                  f"  - before: **{e.before.verdict}**: {_cell(e.before.reason)}",
                  f"  - after: **{e.after.verdict}**: {_cell(e.after.reason)}"]
    return lines


def render_markdown(diff: Diff) -> str:
    """A heading, a summary line, a table of the groups, the reasons and the object changes in
    collapsible sections."""
    lines = ["### netpol diff", ""]
    if diff.unchanged:
        lines += [f"**No change**: {_cell(_unchanged(diff).removeprefix('no change: '))}.", ""]
    else:
        allowed, denied = diff.cells("allowed"), diff.cells("denied")
        lines += [f"**{allowed} newly allowed, {denied} newly denied** cells (source, destination, port) "
                  f"in {_count(len(diff.groups), 'group')}; {diff.pods_compared} pods compared on "
                  f"{_count(len(diff.probes), 'probe')}; {_count(len(diff.objects), 'object')} changed.", "",
                  "| change | from | to | ports | cells | caused by |", "|---|---|---|---|---:|---|"]
        lines += [f"| newly {g.change} | {_code(g.source_text)} | {_code(g.destination_text)} | "
                  f"{_cell(g.ports_text)} | {g.cells} | {_causes_md(g)} |" for g in diff.groups[:TABLE_ROWS]]
        if len(diff.groups) > TABLE_ROWS:
            lines.append(f"\n… and {len(diff.groups) - TABLE_ROWS} more groups (`netpol diff -o text` lists "
                         "them all).")
        lines += ["", "<details><summary>Why: one example per group, before and after</summary>", "",
                  *_reasons_md(diff), "", "</details>"]
    other = _objects_text(diff)
    if other:
        lines += ["", "<details><summary>Objects changed, pods added and removed</summary>", "", "```",
                  *other, "```", "", "</details>"]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Diff], str]] = {
    "text": render_text,
    "json": render_json,
    "md": render_markdown,
}
