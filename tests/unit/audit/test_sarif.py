"""`netpol.audit.sarif`: the log is valid against the OASIS SARIF 2.1.0 schema (vendored under
tests/data/sarif/), and says what code scanning needs: rule, level, message, file and line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from netpol.audit.lint import CHECKS, Finding
from netpol.audit.sarif import SCHEMA, artifact_uri, to_sarif

SCHEMA_FILE = Path(__file__).parents[2] / "data" / "sarif" / "sarif-schema-2.1.0.json"
FINDINGS = [
    Finding("egress-blocks-dns", "error", "NetworkPolicy shop/out", "spec.policyTypes", "no DNS",
            ("Pod shop/web-0",), "policies/shop.yaml", 12),
    Finding("policy-redundant", "warning", "NetworkPolicy shop/a", "", "removing it changes nothing",
            (), "/elsewhere/a.yaml", None),
    Finding("namespace-without-default-deny", "info", "Namespace ops", "", "no default deny"),
]


def validate(document: dict) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    validator.validate(document)


def test_the_log_is_valid_sarif_2_1_0():
    document = to_sarif(FINDINGS, "0.1.0", "/work/repo")
    validate(document)
    assert document["version"] == "2.1.0" and document["$schema"] == SCHEMA and len(document["runs"]) == 1


@pytest.mark.parametrize("break_it", [
    lambda d: d["runs"][0]["results"][0].__setitem__("level", "info"),  # SARIF says note
    lambda d: d["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"].__setitem__("startLine", 0),
    lambda d: d["runs"][0]["tool"]["driver"].pop("name"),
    lambda d: d.__setitem__("version", "2.1"),
])
def test_the_schema_check_refuses_what_is_not_sarif(break_it):
    document = copy.deepcopy(to_sarif(FINDINGS, "0.1.0", "/work/repo"))
    break_it(document)
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_rules_and_results():
    run = to_sarif(FINDINGS, "0.1.0", "/work/repo")["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "netpol" and driver["version"] == "0.1.0"
    assert [r["id"] for r in driver["rules"]] == list(CHECKS)
    assert {r["id"]: r["defaultConfiguration"]["level"] for r in driver["rules"]}["namespace-without-default-deny"] == "note"
    first, second, third = run["results"]
    assert driver["rules"][first["ruleIndex"]]["id"] == first["ruleId"] == "egress-blocks-dns"
    assert first["level"] == "error" and first["message"]["text"] == "NetworkPolicy shop/out spec.policyTypes: no DNS"
    location = first["locations"][0]
    assert location["physicalLocation"] == {"artifactLocation": {"uri": "policies/shop.yaml"}, "region": {"startLine": 12}}
    assert location["logicalLocations"] == [{"name": "shop/out", "fullyQualifiedName": "NetworkPolicy shop/out",
                                             "kind": "resource"}]
    assert first["properties"]["related"] == ["Pod shop/web-0"]
    assert second["locations"][0]["physicalLocation"] == {"artifactLocation": {"uri": "file:///elsewhere/a.yaml"}}
    assert third["level"] == "note" and "physicalLocation" not in third["locations"][0]
    assert len({r["partialFingerprints"]["netpolFinding/v1"] for r in run["results"]}) == 3


def test_artifact_uris_are_relative_under_the_working_directory():
    assert artifact_uri("./a b/p.yaml", "/repo") == "a%20b/p.yaml"
    assert artifact_uri("/repo/k8s/p.yaml", "/repo") == "k8s/p.yaml"
    assert artifact_uri("../other/p.yaml", "/repo") == "file:///other/p.yaml"
