"""netpol_cni.install: the package lands in a directory named after its content, complete
before the launcher names it; installing again changes nothing; an upgrade keeps the package the
old launcher named (a call may still be importing from it) and removes older ones, and nothing
else in the library directory; `--root` writes under a mounted node root while the launcher
names the node's own paths."""

from __future__ import annotations

import sys

from netpol_cni.install import install, package_digest


def launcher_lib(launcher) -> str:
    line, = [line for line in launcher.read_text().splitlines() if line.startswith("sys.path.insert")]
    return line.split("'")[1]


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


def test_a_mounted_root_gets_the_files_and_the_launcher_the_nodes_paths(tmp_path):
    target = install("/opt/cni/bin", None, "/usr/bin/python3", root=tmp_path)
    assert target == tmp_path / "opt/cni/bin/netpol-cni"
    assert target.read_text().startswith("#!/usr/bin/python3 -IS\n")
    assert launcher_lib(target) == f"/opt/cni/lib/netpol-cni/{package_digest()}"
    assert (tmp_path / "opt/cni/lib/netpol-cni" / package_digest() / "netpol_cni" / "main.py").is_file()
