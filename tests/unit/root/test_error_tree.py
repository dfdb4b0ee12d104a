"""One exception tree: every exception class netpol defines lives in `netpol.errors`, derives from
`NetpolError`, and is drawn in that module's docstring (the private signals of
`load.decode_fast` and `load.yaml_fast`, which never leave their modules, aside)."""

from __future__ import annotations

import ast
import importlib
import inspect

import netpol.errors
from tests.unit.root.test_layering import MODULES

PRIVATE_SIGNALS = {("netpol.load.decode_fast", "_Unusual"), ("netpol.load.yaml_fast", "_Unsupported")}


def exception_classes(module: str) -> list[str]:
    """Names of the classes a module defines whose bases name an Exception or Error."""
    tree = ast.parse(MODULES[module].read_text())
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception", "Expired"))
                    for b in node.bases)]


def test_no_module_but_errors_defines_an_exception():
    elsewhere = [(module, name) for module in MODULES if module != "netpol.errors"
                 for name in exception_classes(module) if (module, name) not in PRIVATE_SIGNALS]
    assert not elsewhere, elsewhere


def test_every_exception_is_a_netpol_error_drawn_in_the_tree():
    doc = netpol.errors.__doc__ or ""
    classes = [obj for _, obj in inspect.getmembers(netpol.errors, inspect.isclass)
               if issubclass(obj, Exception) and obj.__module__ == "netpol.errors"]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, netpol.errors.NetpolError), cls
        assert f" {cls.__name__} " in doc, f"{cls.__name__} is not drawn in netpol.errors' docstring"
        assert cls.__doc__, f"{cls.__name__} does not say when it is raised"


def test_the_private_signal_never_leaves_its_module():
    """Every public function of decode_fast goes through `_attempt`, which catches it."""
    module = importlib.import_module("netpol.load.decode_fast")
    public = [name for name, fn in inspect.getmembers(module, inspect.isfunction)
              if fn.__module__ == module.__name__ and not name.startswith("_")]
    assert {"fast_namespace", "fast_pod", "fast_policy"} <= set(public)
    for name in ("fast_namespace", "fast_pod", "fast_policy"):
        assert "return _attempt(" in inspect.getsource(getattr(module, name)), name
    assert "except _Unusual:" in inspect.getsource(module._attempt)
