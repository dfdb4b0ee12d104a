"""Golden per-node rulesets of the bundled examples (`rulesets/`); regenerate with `make rulesets`."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

import netpol
from netpol.backends.nftables import render
from netpol.compile.compiler import compile_cluster
from netpol.load.manifests import load_state
from tests.conftest import REPO

EXAMPLES = Path(netpol.__file__).parent / "examples"
GOLDEN = REPO / "rulesets"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_compiled_rulesets_match_the_golden_files(example):
    programs = compile_cluster(load_state([str(EXAMPLES / example)]))
    golden = GOLDEN / example
    assert sorted(p.stem for p in golden.glob("*.nft")) == sorted(programs), "run `make rulesets`"
    for node, program in programs.items():
        expected = (golden / f"{node}.nft").read_text()
        got = render(program)
        diff = "".join(difflib.unified_diff(expected.splitlines(True), got.splitlines(True),
                                            f"rulesets/{example}/{node}.nft", "compiled"))
        assert got == expected, f"ruleset changed; if intended, run `make rulesets`\n{diff}"
