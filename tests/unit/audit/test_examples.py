"""The audit examples the README and `make demo` show, run: the shop meets its owners'
expectations; the pull request in shop-change.yaml opens exactly worker → database on 5432, which
`diff --fail-on allowed` and the expectations both catch; the README's auditor ClusterRole is the
one the live-cluster tests read through."""

from __future__ import annotations

import json
import re

import yaml

from netpol.deploy.rbac import audit_role_rules
from tests.conftest import EXAMPLE, REPO, run_cli

EXPECTATIONS = str(EXAMPLE.parent / "shop-expectations.yaml")
CHANGE = str(EXAMPLE.parent / "shop-change.yaml")


def test_the_shop_meets_every_expectation_its_owners_wrote():
    code, out, _ = run_cli("check", "-f", str(EXAMPLE), "--expect", EXPECTATIONS)
    assert code == 0, out
    assert out.splitlines()[-1] == "5 expectations: 5 hold, 0 violated"


def test_the_change_breaks_only_the_expectation_that_the_database_is_the_apis():
    code, out, _ = run_cli("check", "-f", str(EXAMPLE), CHANGE, "--expect", EXPECTATIONS, "-o", "json")
    assert code == 4
    failed = [o for o in json.loads(out)["expectations"] if not o["holds"]]
    assert [o["name"] for o in failed] == ["only the API reaches the database"]


def test_the_diff_of_the_change_is_one_group_caused_by_the_two_new_policies():
    code, out, _ = run_cli("diff", "-f", str(EXAMPLE), "--to", str(EXAMPLE), CHANGE, "-o", "json",
                           "--fail-on", "allowed")
    assert code == 4
    doc = json.loads(out)
    [group] = doc["changes"]
    assert (group["change"], group["from"], group["to"]) == ("allowed", "backend/[worker-1]", "db/*")
    assert group["ports"] == [{"port": 5432, "protocol": "TCP"}]
    assert doc["summary"]["newly_denied"] == 0
    code, _, _ = run_cli("diff", "-f", str(EXAMPLE), "--to", str(EXAMPLE), CHANGE, "--fail-on", "denied")
    assert code == 0


def test_the_readme_shows_the_auditors_role_the_tests_read_through():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Reading a live cluster"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    role = yaml.safe_load(block.group(1))
    assert role["kind"] == "ClusterRole" and role["rules"] == audit_role_rules()
