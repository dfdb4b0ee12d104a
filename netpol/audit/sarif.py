"""Lint findings as SARIF 2.1.0, the format code-scanning tools (GitHub code scanning, IDE
viewers) read to show findings inline, next to the line of the manifest.

One run; `tool.driver` names netpol and lists every check as a rule (`CHECKS`, in their order,
so `ruleIndex` is stable); each result names its rule, its level (`info` is SARIF's `note`), the
message (prefixed with the object and field, which an inline view would not otherwise show), the
file (a URI relative to the working directory when the file is under it) and line, the object as
a logical location, and a fingerprint of (id, object, field) so a viewer follows a finding across
edits that move it. Checked against the OASIS schema (tests/data/sarif/) in the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from netpol.audit.lint import CHECKS, Finding

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}
FINGERPRINT = "netpolFinding/v1"


def artifact_uri(file: str, cwd: str) -> str:
    """A relative URI for a file under `cwd` (what code scanning resolves against the checkout),
    a `file:` URI otherwise."""
    absolute = os.path.normpath(os.path.join(cwd, file))
    relative = os.path.relpath(absolute, cwd)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return Path(absolute).as_uri()
    return quote(relative.replace(os.sep, "/"))


def _rule(check_id: str) -> dict[str, Any]:
    check = CHECKS[check_id]
    return {"id": check.id, "shortDescription": {"text": check.summary},
            "fullDescription": {"text": check.why}, "help": {"text": check.why},
            "defaultConfiguration": {"level": LEVELS[check.severity]}}


def _result(finding: Finding, rule_index: int, cwd: str) -> dict[str, Any]:
    where = f"{finding.object} {finding.path}".rstrip()
    kind, _, name = finding.object.partition(" ")
    location: dict[str, Any] = {}
    if finding.file is not None:
        physical: dict[str, Any] = {"artifactLocation": {"uri": artifact_uri(finding.file, cwd)}}
        if finding.line is not None:
            physical["region"] = {"startLine": finding.line}
        location["physicalLocation"] = physical
    location["logicalLocations"] = [{"name": name, "fullyQualifiedName": finding.object, "kind": "resource"}]
    digest = hashlib.sha256(f"{finding.id}\0{finding.object}\0{finding.path}".encode()).hexdigest()[:32]
    return {"ruleId": finding.id, "ruleIndex": rule_index, "level": LEVELS[finding.severity],
            "message": {"text": f"{where}: {finding.message}"}, "locations": [location],
            "partialFingerprints": {FINGERPRINT: digest},
            "properties": {"object": finding.object, "kind": kind, "path": finding.path,
                           "related": list(finding.related)}}


def to_sarif(findings: list[Finding], version: str, cwd: str) -> dict[str, Any]:
    """The SARIF log of `findings`, as JSON-ready values."""
    order = list(CHECKS)
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "netpol", "version": version, "rules": [_rule(c) for c in order]}},
            "results": [_result(f, order.index(f.id), cwd) for f in findings],
        }],
    }


def render_sarif(findings: list[Finding], version: str, cwd: str) -> str:
    return json.dumps(to_sarif(findings, version, cwd), indent=2) + "\n"
