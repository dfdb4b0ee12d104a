"""CNI plugin tests: netpol-cni run as a runtime runs it, in network namespaces the tests create.
Every test below is marked `kernel` and skipped unless we are root with `ip` and Debian's
containernetworking-plugins (host-local) installed (make test installs them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.cni.cni_runtime import CniNode, have_reference_plugins
from tests.conftest import mark_kernel_folder

HERE = Path(__file__).resolve().parent
MISSING = ("not root" if os.geteuid() != 0 else "no ip on PATH" if shutil.which("ip") is None
           else "" if have_reference_plugins() else "no containernetworking-plugins")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_kernel_folder(items, HERE, MISSING, "root, iproute2 and containernetworking-plugins")


@pytest.fixture
def node(tmp_path):
    """A node namespace with the plugin installed; everything it made goes with it."""
    cni = CniNode(tmp_path / "cni")
    try:
        yield cni
    finally:
        cni.close()
