"""Install the `netpol-cni` executable on a node.

    python -m netpol_cni.install [BIN_DIR] [--lib DIR] [--python /usr/bin/python3] [--root DIR]

Writes BIN_DIR/netpol-cni (default /opt/cni/bin), a launcher of a few lines whose first is
`#!PYTHON -IS`, and the package beside it in a library directory (default BIN_DIR/../lib/
netpol-cni), byte-compiled by that same interpreter. `-I` (isolated: no PYTHONPATH, no user
site) and `-S` (no `site`: no .pth files, no site-packages scan) make the interpreter start in
~7 ms instead of ~20 ms from a virtualenv; the plugin needs nothing but the standard library.
Not a zipapp: running a zip goes through `runpy`, which imports `contextlib` and friends (+5
ms). Linux hands everything after the interpreter on a `#!` line over as one argument, so the
flags are spelled as one word.

In the default library directory, the launcher finds the package relative to its own path, so
the same files work wherever the node's `/` is mounted (a container's /host, the lab's per-node
roots). Two entries go on sys.path: first, `__file__` (absolute: the interpreter makes it so)
cut at its last two `/`, which is BIN_DIR's parent by name as the installer computed it (right
for a clean path, and runtimes exec plugins by one: libcni joins the CNI_PATH directory and the
type, cleaned); last, after the standard library so that no other import looks there, BIN_DIR/..
as the kernel resolves it (right for any spelling, `./netpol-cni` included, unless BIN_DIR is a
symlink). String operations only: importing `os.path` would cost the plugin ~1.3 ms. A library
directory given elsewhere (--lib) is named by its absolute path.

Atomic and idempotent: the package goes in a directory named after its content
(LIB/<12 hex>/netpol_cni), complete and compiled before the launcher names it, and the launcher
is replaced by a rename. A call started during an upgrade imports the old package or the new
one, never a half-copied one. The previous package stays until the next install (a call that
read the old launcher may still be importing from it); older ones, and nothing else in LIB, go.

`--root DIR` installs into a node whose `/` is mounted at DIR (the DaemonSet's init container):
files are written under DIR, the launcher names the node's interpreter (and a --lib directory
by the node's path), and the package is compiled by this interpreter, since the node's cannot
run here (a node whose python3 is another version compiles the package again on first use)."""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
EXECUTABLE = "netpol-cni"
LAUNCHER = '''#!{python} -IS
import sys
{path}
from netpol_cni.main import run
run()
'''
PATH_LINE = "sys.path.insert(0, "  # then the package directory's absolute path
PACKAGE_LINE = "package = "  # then its path below BIN_DIR/.. (the default library directory)
# In the default library directory, the package is found from the launcher's own path: BIN_DIR's
# parent by name (as the installer computed it), then BIN_DIR/.. as the kernel resolves it.
BESIDE_BIN = PACKAGE_LINE + """{package!r}
here = __file__.rpartition('/')[0]
sys.path.insert(0, here.rpartition('/')[0] + package)
sys.path.append(here + '/..' + package)"""
VERSION_DIR = re.compile(r"^[0-9a-f]{12}$")
STAGING = ".staging-"
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc")


def default_lib_dir(bin_dir: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(bin_dir)).parent / "lib" / EXECUTABLE


def package_digest() -> str:
    """12 hex digits of the package's files (what is copied): its directory's name."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(PACKAGE)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
            digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def install(bin_dir: str | os.PathLike[str], lib_dir: str | os.PathLike[str] | None = None,
            python: str = "/usr/bin/python3", root: str | os.PathLike[str] | None = None) -> Path:
    """Install the package and the launcher (see the module); the launcher's path as written.
    `bin_dir`, `lib_dir` and `python` are the node's paths; `root` is where its `/` is mounted."""
    under = _rooted(root)
    bin_path = Path(os.path.abspath(bin_dir))
    lib = Path(os.path.abspath(lib_dir)) if lib_dir is not None else default_lib_dir(bin_dir)
    version = lib / package_digest()
    _ensure_package(under(version), python if root is None else sys.executable)
    target = under(bin_path) / EXECUTABLE
    previous = _launcher_lib(target, bin_path)
    write_atomically(target, LAUNCHER.format(python=python, path=_path_lines(version, bin_path)), 0o755)
    _remove_old(under(lib), keep={version.name, previous.name if previous else ""},
                old_layout_in_use=previous == lib)
    return target


def write_atomically(target: Path, text: str, mode: int) -> None:
    """`target` holds `text` (and `mode`), appearing complete or not at all; unchanged if equal."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if target.read_text() == text and target.stat().st_mode & 0o7777 == mode:
            return
    except (OSError, UnicodeDecodeError):
        pass
    temp = target.parent / f".{target.name}.{os.getpid()}"
    temp.write_text(text)
    temp.chmod(mode)
    temp.replace(target)


def _rooted(root: str | os.PathLike[str] | None) -> Callable[[Path], Path]:
    if root is None:
        return lambda path: path
    base = Path(root)
    return lambda path: base / path.relative_to(path.anchor)


def _ensure_package(version: Path, compiler: str) -> None:
    """VERSION/netpol_cni, copied and compiled under a staging name, then renamed into place."""
    if (version / "netpol_cni").is_dir():
        return
    staging = version.parent / f"{STAGING}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PACKAGE, staging / "netpol_cni", ignore=SKIPPED)
    subprocess.run([compiler, "-m", "compileall", "-q", str(staging / "netpol_cni")], check=True)
    try:
        staging.rename(version)
    except OSError:  # another install put the same version there first
        shutil.rmtree(staging, ignore_errors=True)
        if not (version / "netpol_cni").is_dir():
            raise


def _path_lines(version: Path, bin_path: Path) -> str:
    """How the launcher puts `version` on sys.path: beside BIN_DIR (the default library
    directory) relative to its own path, else by the absolute path (see the module)."""
    if version.parent == default_lib_dir(bin_path):
        return BESIDE_BIN.format(package="/" + version.relative_to(bin_path.parent).as_posix())
    return f"{PATH_LINE}{str(version)!r})"


def _launcher_lib(launcher: Path, bin_path: Path) -> Path | None:
    """The package directory an installed launcher at `bin_path` (the node's path) names
    (None: no launcher, or not ours)."""
    try:
        lines = launcher.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        absolute = line.startswith(PATH_LINE) and line.endswith(")")
        if absolute or line.startswith(PACKAGE_LINE):
            try:
                named = ast.literal_eval(line[len(PATH_LINE):-1] if absolute else line[len(PACKAGE_LINE):])
            except (ValueError, SyntaxError):
                return None
            if not isinstance(named, str):
                return None
            return Path(named) if absolute else bin_path.parent / named.lstrip("/")
    return None


def _remove_old(lib: Path, keep: set[str], old_layout_in_use: bool) -> None:
    """Package versions other than `keep`, abandoned staging copies and the old layout's
    LIB/netpol_cni (once no launcher names it); anything else in LIB stays."""
    for entry in lib.iterdir():
        ours = (VERSION_DIR.match(entry.name) and entry.name not in keep) or entry.name.startswith(STAGING) \
            or (entry.name == "netpol_cni" and not old_layout_in_use)
        if ours and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netpol_cni.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bin_dir", nargs="?", default="/opt/cni/bin")
    parser.add_argument("--lib", help="where the package goes (default BIN_DIR/../lib/netpol-cni)")
    parser.add_argument("--python", default="/usr/bin/python3",
                        help="the node's interpreter (≥ 3.11; standard library only)")
    parser.add_argument("--root", help="where the node's / is mounted (paths above are the node's)")
    args = parser.parse_args(argv)
    print(install(args.bin_dir, args.lib, args.python, args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
