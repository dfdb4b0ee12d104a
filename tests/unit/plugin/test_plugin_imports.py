"""What the CNI plugin's hot path imports: a list of modules, not a timing."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PLUGIN_DIR = REPO / "plugin"


def test_the_plugin_imports_no_heavy_modules():
    """What the plugin's hot path loads (not a timing test: a list of modules). `re` (via json),
    `enum` (via socket), `contextlib`, `typing`, `dataclasses`, `subprocess` each cost
    milliseconds of a ~10 ms budget; `os` (its environ pulls in `_collections_abc`) ~1.3 ms, the
    difference between 1.54x and 1.44x the reference ADD (netpol_cni.sysos stands in for it);
    `netpol` must never be imported."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "import netpol_cni.main, netpol_cni.commands; print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-I", "-S", "-c", code, str(PLUGIN_DIR)], check=True,
                                capture_output=True, text=True).stdout.split())
    heavy = {"re", "json", "enum", "socket", "contextlib", "typing", "dataclasses", "subprocess",
             "ipaddress", "ctypes", "netpol", "threading", "selectors", "os", "_collections_abc"}
    assert loaded & heavy == set()
    assert "netpol_cni.commands" in loaded
