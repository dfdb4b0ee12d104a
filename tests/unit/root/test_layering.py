"""The tree reads as the pipeline (DESIGN §1, README "Layout"), and the imports keep it so: every
module imports only from its own stage or a lower one, no backend imports a sibling backend, the
compiler side never consults the reference semantics it is tested against, no module reaches
into another package's private names, nothing edits `sys.path`, netpol and the CNI plugin never
import each other, and there is no import cycle. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import netpol
from tests.conftest import REPO

PACKAGE = Path(netpol.__file__).parent
# Lowest first. The root's vocabulary is spoken by every stage; `cli` sits above everything.
STAGES = ("vocabulary", "load", "sources", "semantics", "audit", "compile", "backends", "dataplane",
          "agent", "pipeline", "deploy", "testing", "lab", "cli")
VOCABULARY = {"model", "labels", "intervals", "errors", "gc"}
# The compiler side must stay independent of the reference it is differentially tested against.
NEVER = {stage: {"semantics"} for stage in ("compile", "backends", "dataplane", "agent", "pipeline")}
BACKEND_FAMILIES = {"nftables": "nft", "nft_document": "nft", "iptables": "iptables", "common": "common"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "door"  # netpol/__init__: re-exports only
    if parts[1] in VOCABULARY:
        return "vocabulary"
    return parts[1]


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, nested ones too."""
    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def netpol_imports() -> list[tuple[str, str, list[str], int]]:
    """(importer, imported module, names, line), the imported module resolved to a module of ours
    (`from netpol.lab import cluster` imports netpol.lab.cluster)."""
    found = []
    for importer, path in MODULES.items():
        for module, names, line in imports(path):
            if module.split(".")[0] != "netpol":
                continue
            for name in names or [""]:
                target = f"{module}.{name}" if f"{module}.{name}" in MODULES else module
                found.append((importer, target, [name] if name else [], line))
    return found


def test_every_module_belongs_to_a_known_stage():
    unknown = {m for m in MODULES if stage_of(m) not in (*STAGES, "door")}
    assert not unknown, f"modules outside the stages of DESIGN §1: {sorted(unknown)}"


def test_imports_point_down_the_stages_only():
    upward = []
    for importer, target, _, line in netpol_imports():
        source, dest = stage_of(importer), stage_of(target)
        if source == "door":
            continue
        if STAGES.index(dest) > STAGES.index(source) or dest in NEVER.get(source, ()):
            upward.append(f"{importer}:{line} imports {target} ({source} → {dest})")
    assert not upward, "\n".join(upward)


def test_no_backend_imports_a_sibling_backend():
    crossings = []
    for importer, target, _, line in netpol_imports():
        if importer.startswith("netpol.backends.") and target.startswith("netpol.backends."):
            a, b = (BACKEND_FAMILIES[m.rsplit(".", 1)[1]] for m in (importer, target))
            if b not in (a, "common"):
                crossings.append(f"{importer}:{line} imports {target}")
    assert not crossings, "\n".join(crossings)


def test_no_private_name_is_imported_across_packages():
    private = [f"{importer}:{line} imports {target}.{name}"
               for importer, target, names, line in netpol_imports() for name in names
               if name.startswith("_") and importer.rsplit(".", 1)[0] != target.rsplit(".", 1)[0]]
    private += [f"{importer}:{line} imports {target}" for importer, target, _, line in netpol_imports()
                if any(part.startswith("_") and part != "__init__" for part in target.split("."))]
    assert not private, "\n".join(private)


def test_nothing_edits_sys_path_and_netpol_and_the_plugin_stay_apart():
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if "sys.path" in p.read_text()]
    offenders += [f"{m} imports netpol_cni" for m, p in MODULES.items()
                  if any(module.split(".")[0] == "netpol_cni" for module, _, _ in imports(p))]
    plugin = REPO / "plugin" / "netpol_cni"
    offenders += [f"{p} imports netpol" for p in plugin.rglob("*.py")
                  if any(module.split(".")[0] == "netpol" for module, _, _ in imports(p))]
    assert not offenders, offenders


def test_there_is_no_import_cycle():
    graph = nx.DiGraph()
    for importer, target, _, _ in netpol_imports():
        if target != importer and not importer.startswith(target + "."):  # a package's own __init__
            graph.add_edge(importer, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, cycles[:5]


def test_each_stage_package_says_what_it_is_for_which_modules_it_holds_and_how_control_flows():
    for stage in STAGES[1:-1]:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text())) or ""
        assert "Control flow" in doc, f"netpol/{stage}/__init__.py: no control flow in its docstring"
        modules = {p.stem for p in (PACKAGE / stage).glob("*.py") if p.stem != "__init__"}
        missing = {m for m in modules if m not in doc}
        assert not missing, f"netpol/{stage}/__init__.py does not describe {sorted(missing)}"
