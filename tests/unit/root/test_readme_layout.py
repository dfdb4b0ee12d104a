"""The README's "Layout" section matches the tree: every package of netpol/ has its row, and each
row names exactly the modules its package holds (no module forgotten, none that is gone)."""

from __future__ import annotations

import re

from tests.conftest import REPO

PACKAGE = REPO / "netpol"


def layout_rows() -> dict[str, set[str]]:
    """`netpol/<package>/` → the backticked names in its row (the root's row under "")."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Layout"):]
    section = section[:section.find("\n## ", 3)] if "\n## " in section[3:] else section
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `netpol/(\w*)/?` (?:\(root\) )?\| (.*) \|$", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    return rows


def test_every_package_has_its_row_naming_exactly_its_modules():
    rows = layout_rows()
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(rows) == packages | {""}
    for package in packages:
        modules = {p.stem for p in (PACKAGE / package).glob("*.py") if p.stem != "__init__"}
        assert modules <= rows[package], f"netpol/{package}/: {sorted(modules - rows[package])} not in the README"
        named = {name for name in rows[package] if (PACKAGE / package / f"{name}.py").exists()}
        assert named == modules


def test_the_root_row_names_the_root_modules():
    root = {p.stem for p in PACKAGE.glob("*.py")}
    assert root <= layout_rows()[""]
