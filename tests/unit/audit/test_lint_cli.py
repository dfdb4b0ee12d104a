"""`netpol lint` on the command line: the three outputs with file and line, exit 0 whatever is
found, 4 with `--fail-on` at or below the worst finding's severity, 1 for invalid input."""

from __future__ import annotations

import io
import json

import pytest

from netpol.cli import EXIT_GATE, EXIT_INVALID_INPUT, EXIT_OK, EXIT_USAGE, main
from tests.conftest import pod_yaml, policy_yaml

PODS = pod_yaml("shop", "web-0", "10.0.0.10", "{app: web}") + pod_yaml("shop", "db-0", "10.0.0.11", "{app: db}")
TYPO = policy_yaml("shop", "typo", "{podSelector: {matchLabels: {app: wbe}}}")
DENY = policy_yaml("shop", "deny", "{podSelector: {}}")


@pytest.fixture
def manifests(tmp_path, monkeypatch):
    """A folder of manifests: pods, a default deny (line 3 of policies.yaml is its kind) and a
    policy whose selector has a typo (its podSelector on line 10); run from the folder."""
    (tmp_path / "pods.yaml").write_text(PODS)
    (tmp_path / "policies.yaml").write_text(DENY + TYPO)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["lint", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_text(manifests, capsys):
    code, out, err = run(capsys, "-f", ".")
    assert code == EXIT_OK
    assert out == ("policies.yaml:10: warning policy-selects-nothing NetworkPolicy shop/typo spec.podSelector: "
                   "selects no pod: no pod of namespace shop matches podSelector app=wbe\n")
    assert "netpol: lint: 1 finding (1 warning)" in err


def test_json(manifests, capsys):
    code, out, _ = run(capsys, "-f", "policies.yaml", "pods.yaml", "-o", "json")
    assert code == EXIT_OK
    assert json.loads(out) == [{"id": "policy-selects-nothing", "severity": "warning", "object": "NetworkPolicy shop/typo",
                                "path": "spec.podSelector", "message": "selects no pod: no pod of namespace shop "
                                "matches podSelector app=wbe", "related": [], "file": "policies.yaml", "line": 10}]


def test_sarif(manifests, capsys):
    code, out, _ = run(capsys, "-f", str(manifests), "-o", "sarif")
    assert code == EXIT_OK
    [result] = json.loads(out)["runs"][0]["results"]
    assert result["ruleId"] == "policy-selects-nothing" and result["level"] == "warning"
    assert result["locations"][0]["physicalLocation"] == {"artifactLocation": {"uri": "policies.yaml"},
                                                          "region": {"startLine": 10}}


@pytest.mark.parametrize("severity, code", [("error", EXIT_OK), ("warning", EXIT_GATE), ("info", EXIT_GATE)])
def test_fail_on(manifests, capsys, severity, code):
    assert run(capsys, "-f", ".", "--fail-on", severity)[0] == code


def test_no_findings_exit_0_even_with_fail_on_info(manifests, capsys):
    (manifests / "policies.yaml").write_text(DENY)
    code, out, err = run(capsys, "-f", ".", "--fail-on", "info")
    assert (code, out) == (EXIT_OK, "") and "0 findings" in err


def test_stdin_findings_have_no_file(manifests, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((PODS + DENY + TYPO).encode())))
    code, out, _ = run(capsys, "-f", "-")
    assert code == EXIT_OK and out.startswith("warning policy-selects-nothing NetworkPolicy shop/typo spec.podSelector:")


def test_invalid_input_and_usage(manifests, capsys):
    (manifests / "bad.yaml").write_text(policy_yaml("shop", "bad", "{podSelector: {}, ingres: []}"))
    code, _, err = run(capsys, "-f", ".")
    assert code == EXIT_INVALID_INPUT and "bad.yaml" in err and "ingres" in err
    with pytest.raises(SystemExit) as exit_:
        main(["lint", "-f", ".", "--fail-on", "fatal"])
    assert exit_.value.code == EXIT_USAGE
