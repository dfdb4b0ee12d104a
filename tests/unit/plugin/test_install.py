"""netpol_cni.install: the package lands in a directory named after its content, complete
before the launcher names it; installing again changes nothing; an upgrade keeps the package the
old launcher named (a call may still be importing from it) and removes older ones, and nothing
else in the library directory; `--root` writes under a mounted node root, and a launcher in the
default layout finds its package from its own path, wherever that root is mounted and however
it is called."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from netpol_cni.install import install, package_digest


def launcher_lib(launcher) -> str:
    """The package directory a launcher names: absolute (`sys.path.insert`) or below BIN/.. (`package`)."""
    line, = [line for line in launcher.read_text().splitlines()
             if line.startswith(("sys.path.insert(0, '", "package = "))]
    return line.split("'")[1]


def version_of(launcher, cwd, *argv: str) -> dict:
    """What the launcher answers to CNI_COMMAND=VERSION, run as `argv` from `cwd`."""
    done = subprocess.run(argv or [str(launcher)], cwd=cwd, env={"CNI_COMMAND": "VERSION"}, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_package_is_named_by_its_content_and_twice_is_a_no_op(tmp_path):
    target = install(tmp_path / "bin", tmp_path / "lib", sys.executable)
    version = tmp_path / "lib" / package_digest()
    assert launcher_lib(target) == str(version)
    assert (version / "netpol_cni" / "main.py").is_file()
    assert list((version / "netpol_cni" / "__pycache__").glob("main.*.pyc"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    install(tmp_path / "bin", tmp_path / "lib", sys.executable)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_an_upgrade_keeps_the_previous_package_removes_older_ones_and_nothing_else(tmp_path):
    lib = tmp_path / "lib"
    for old in ("0123456789ab", "ba9876543210"):
        (lib / old / "netpol_cni").mkdir(parents=True)
    (lib / ".staging-1").mkdir()  # an install killed half-way
    (lib / "netpol-install.json").write_text("{}")  # netpol install-cni's record
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "netpol-cni").write_text(f"#!/usr/bin/python3 -IS\nimport sys\n"
                                                 f"sys.path.insert(0, {str(lib / 'ba9876543210')!r})\n")
    install(tmp_path / "bin", lib, sys.executable)
    assert sorted(p.name for p in lib.iterdir()) == sorted([package_digest(), "ba9876543210", "netpol-install.json"])


def test_the_old_layout_goes_once_no_launcher_names_it(tmp_path):
    lib = tmp_path / "lib"
    (lib / "netpol_cni").mkdir(parents=True)  # before versioned directories: LIB/netpol_cni
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "netpol-cni").write_text(f"sys.path.insert(0, {str(lib)!r})\n")
    install(tmp_path / "bin", lib, sys.executable)
    assert (lib / "netpol_cni").is_dir()  # the old launcher named it: kept this time
    install(tmp_path / "bin", lib, sys.executable)
    assert not (lib / "netpol_cni").exists()


def test_a_mounted_root_gets_the_files_and_the_launcher_finds_them_from_its_own_path(tmp_path):
    target = install("/opt/cni/bin", None, "/usr/bin/python3", root=tmp_path)
    assert target == tmp_path / "opt/cni/bin/netpol-cni"
    assert target.read_text().startswith("#!/usr/bin/python3 -IS\n")
    assert launcher_lib(target) == f"/lib/netpol-cni/{package_digest()}"  # below BIN/..: no node path
    assert (tmp_path / "opt/cni/lib/netpol-cni" / package_digest() / "netpol_cni" / "main.py").is_file()
    assert "import os" not in target.read_text()  # string operations only (test_plugin_imports)


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="the launcher names /usr/bin/python3")
@pytest.mark.parametrize("how", ["absolute", "relative", "dot-slash", "moved root"])
def test_the_default_layout_runs_wherever_the_root_is_mounted_and_however_it_is_called(tmp_path, how):
    """The same files under a node root mounted anywhere (the DaemonSet's /host, the lab's
    per-node roots): called by a clean path as runtimes do, by a relative one, as ./netpol-cni
    from BIN (where the path's name alone would miss), and after the whole root moved."""
    root = tmp_path / "root"
    target = install("/opt/cni/bin", None, "/usr/bin/python3", root=root)
    if how == "moved root":
        root = shutil.move(root, tmp_path / "elsewhere")
        target = root / "opt/cni/bin/netpol-cni"
    argv = {"relative": ("opt/cni/bin/netpol-cni",), "dot-slash": ("./netpol-cni",)}.get(how, ())
    cwd = target.parent if how == "dot-slash" else root
    assert version_of(target, cwd, *argv)["cniVersion"] == "1.1.0"


def test_an_upgrade_of_the_default_layout_keeps_the_package_the_launcher_named(tmp_path):
    bin_dir, lib = tmp_path / "opt/cni/bin", tmp_path / "opt/cni/lib/netpol-cni"
    (lib / "ba9876543210" / "netpol_cni").mkdir(parents=True)
    (lib / "0123456789ab" / "netpol_cni").mkdir(parents=True)
    bin_dir.mkdir(parents=True)
    (bin_dir / "netpol-cni").write_text("#!/usr/bin/python3 -IS\nimport sys\n"
                                        "package = '/lib/netpol-cni/ba9876543210'\n")
    install(bin_dir, None, sys.executable)
    assert sorted(p.name for p in lib.iterdir()) == sorted([package_digest(), "ba9876543210"])
