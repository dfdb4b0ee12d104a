"""The container image (`make image`; `python -m netpol.deploy.image --tag REF`): a Debian bookworm
root filesystem made from Debian packages only by `mmdebstrap` (no registry base image), this
checkout's wheel and its dependencies installed for bookworm's python3, trimmed, `podman import`ed.
Measured on the CI VM: 181 MB (podman's Size: 101 MB Debian, 80 MB Python), 58 s cold, 22 s
with the Debian part cached.

Steps, one function each: the Debian part (`debian_root`, cached), unpack it into a scratch
directory, `install_netpol` (wheels for cp311 and glibc 2.36, whatever the host's Python),
`precompile` (the image's own python3 imports every netpol module once, writing the .pyc of
exactly what runs), `trim`, `import_image`. The Debian part is a tarball keyed by everything that
decides its content, the archive's state included (each suite's InRelease): a security update
rebuilds it, an unchanged archive reuses it. Everything after it is redone on every build.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from netpol.errors import ImageError

DEFAULT_TAG = "localhost/netpol:dev"
CHECKOUT = Path(__file__).resolve().parents[2]  # the checkout this module runs from (editable install)

SUITE = "bookworm"
# The mirror this machine's apt already uses (/etc/apt/sources.list.d), with updates and security.
SOURCES = (
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian", "bookworm-updates"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
)
PACKAGES = ("python3", "libnftables1", "nftables", "iproute2", "iptables", "ipset",
            "containernetworking-plugins")
PYTHON = "3.11"  # bookworm's python3 (3.11.2): the wheels are chosen for it, not for the host's
GLIBC_MINOR = 36  # bookworm's glibc 2.36: the newest manylinux wheels it runs

# dpkg never unpacks these (the last matching filter decides). The copyrights stay (Debian
# policy 12.5); gconv is iconv's charset modules, which nothing here calls (Python has its own
# codecs); of the CNI plugins, only host-local is ours to install on nodes.
DPKG_FILTERS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/bash-completion/*",
    "path-exclude=/usr/lib/*/gconv/*",
    "path-exclude=/usr/lib/cni/*",
    "path-include=/usr/lib/cni/host-local",
)
# `essential` has no apt (an image is rebuilt, never upgraded in place); the merged-usr hook
# installs usr-is-merged instead of usrmerge, which would pull in perl (50 MB).
MMDEBSTRAP_OPTIONS = ("--variant=essential", "--mode=root", "--format=tar",
                      "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr")
CACHE_FORMAT = 1  # bump when the base tarball's meaning changes without its inputs changing

# Left by package installation, never read at run time (globs under the root).
DEBIAN_LEFTOVERS = ("var/lib/apt/lists/*", "var/cache/apt/archives/*", "var/cache/debconf/*-old",
                    "var/lib/dpkg/*-old", "var/log/*")
# Under dist-packages: the kubernetes client's asyncio twin (netpol uses the synchronous client,
# `netpol.sources.kube`) and the libraries only it imports — 48 of the 118 MB of Python — and
# the test suites shipped inside packages.
PYTHON_LEFTOVERS = ("kubernetes/aio", "kubernetes/**/*_test.py", "**/tests",
                    *(f"{name}{suffix}" for name in ("aiohttp", "aiohttp_retry", "aiohappyeyeballs",
                                                     "aiosignal", "frozenlist", "multidict",
                                                     "propcache", "yarl")
                      for suffix in ("", "-*.dist-info")))
# Run by the image's python3 at build time: importing every module writes the .pyc of what
# runs (and proves it imports); the kubernetes client loads its API classes lazily, so the ones
# the agent calls are touched too. The rest of the client compiles on first use, if ever.
PRECOMPILE = """\
import importlib, pkgutil
import netpol, netpol_cni
for package in (netpol, netpol_cni):
    for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(found.name)
from kubernetes import client
from netpol.sources.kube import KINDS
for kind in KINDS:
    getattr(client, kind.api)
"""
IMAGE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
             # the .pyc that matter are in the image; a read-only root filesystem stays usable
             "PYTHONDONTWRITEBYTECODE=1",
             "PYTHONUNBUFFERED=1")  # log lines reach the container log as they are written


@dataclass(frozen=True)
class Built:
    """What `build_image` made: the tag, podman's image ID and Size (bytes), how long it took,
    and whether the Debian part came from the cache."""

    tag: str
    image_id: str
    size: int
    seconds: float
    cached: bool


def run(argv: Sequence[str], what: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (an argument list), its output captured; a failure is an ImageError that
    names the step and quotes the end of what the command said."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False, env=env)
    except OSError as exc:
        raise ImageError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        said = "\n".join((done.stderr or done.stdout).strip().splitlines()[-20:])
        raise ImageError(f"{what}: {argv[0]} exited with {done.returncode}\n{said}")
    return done


def check_prerequisites() -> None:
    """Root (mmdebstrap's root mode, chroot, podman's storage) and the tools, before any work."""
    if os.geteuid() != 0:
        raise ImageError("building the image needs root (mmdebstrap --mode=root, chroot, podman)")
    missing = [tool for tool in ("mmdebstrap", "podman", "tar", "chroot") if shutil.which(tool) is None]
    if missing:
        raise ImageError(f"not on PATH: {', '.join(missing)} (make setup installs them)")


def archive_state() -> str:
    """A digest of every suite's InRelease: it changes whenever the archive publishes anything."""
    digest = hashlib.sha256()
    for uri, suite in SOURCES:
        url = f"{uri}/dists/{suite}/InRelease"
        try:
            with urllib.request.urlopen(url, timeout=60) as answer:
                digest.update(answer.read())
        except (urllib.error.URLError, OSError) as exc:
            raise ImageError(f"cannot read {url}: {exc}") from None
    return digest.hexdigest()


def mmdebstrap_argv(output: Path) -> list[str]:
    return ["mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--include={','.join(PACKAGES)}",
            *(f"--dpkgopt={rule}" for rule in DPKG_FILTERS), SUITE, str(output),
            *(f"deb {uri} {suite} main" for uri, suite in SOURCES)]


def debian_root(cache_dir: Path, refresh: bool, say: Callable[[str], None]) -> tuple[Path, bool]:
    """The Debian part as a tarball, and whether it came from the cache. Written under a
    temporary name and renamed, so a tarball in the cache is always whole; older ones go."""
    key = json.dumps([CACHE_FORMAT, mmdebstrap_argv(Path("-")), archive_state()])
    tarball = cache_dir / f"debian-{SUITE}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.tar"
    if tarball.exists() and not refresh:
        return tarball, True
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f"partial-{tarball.name}"  # not one the clean-up below matches
    say(f"debian root filesystem: mmdebstrap {SUITE} ({', '.join(PACKAGES)})")
    try:
        run(mmdebstrap_argv(partial), "mmdebstrap")
        partial.rename(tarball)
    finally:
        partial.unlink(missing_ok=True)
    for old in cache_dir.glob(f"debian-{SUITE}-*.tar"):
        if old != tarball:
            old.unlink()
    return tarball, False


def wheel_platforms() -> list[str]:
    """Every manylinux tag bookworm's glibc runs, newest first, with the legacy aliases (pip
    matches tags literally when given --platform)."""
    machine = platform.machine()
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = []
    for minor in range(GLIBC_MINOR, 4, -1):
        tags.append(f"manylinux_2_{minor}_{machine}")
        if minor in legacy:
            tags.append(f"{legacy[minor]}_{machine}")
    return tags


def install_netpol(source: Path, root: Path, scratch: Path) -> None:
    """netpol's wheel from `source`, installed with its dependencies into the root's
    dist-packages; its console scripts into /usr/local/bin, for the image's python3."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    wheels = scratch / "wheels"
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(source)],
        f"building netpol's wheel from {source}")
    wheel = next(wheels.glob("*.whl"), None)
    if wheel is None:
        raise ImageError(f"pip built no wheel from {source}")
    site = root / f"usr/local/lib/python{PYTHON}/dist-packages"
    run([*pip, "install", "--quiet", "--no-compile", "--target", str(site), "--only-binary=:all:",
         "--implementation", "cp", "--python-version", PYTHON, "--abi", f"cp{PYTHON.replace('.', '')}",
         *(f"--platform={tag}" for tag in wheel_platforms()), str(wheel)],
        "installing netpol and its dependencies")
    install_scripts(site, root / "usr/local/bin")


def install_scripts(site: Path, bindir: Path) -> None:
    """pip writes console scripts for the interpreter it runs under: netpol's get the image's
    python3 and go on PATH; the dependencies' (wsdump, normalizer …) go."""
    entry_points = configparser.ConfigParser()
    for found in site.glob("netpol_compiler-*.dist-info/entry_points.txt"):
        entry_points.read(found)
    ours = set(entry_points["console_scripts"]) if entry_points.has_section("console_scripts") else set()
    if "netpol" not in ours:
        raise ImageError(f"netpol's wheel declares no `netpol` console script (found {sorted(ours)})")
    bindir.mkdir(parents=True, exist_ok=True)
    for script in (site / "bin").iterdir():
        if script.name in ours:
            body = script.read_text().split("\n", 1)[1]
            (bindir / script.name).write_text(f"#!/usr/bin/python3\n{body}")
            (bindir / script.name).chmod(0o755)
    shutil.rmtree(site / "bin")


def remove(root: Path, patterns: Sequence[str]) -> None:
    for pattern in patterns:
        for path in sorted(root.glob(pattern), reverse=True):  # children before their parents
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


def trim(root: Path) -> None:
    remove(root, DEBIAN_LEFTOVERS)
    remove(root / f"usr/local/lib/python{PYTHON}/dist-packages", PYTHON_LEFTOVERS)


def precompile(root: Path) -> None:
    """The image's python3 imports every netpol module (inside the root, with a clean
    environment), writing their .pyc and those of everything they load; a module that fails to
    import in the image fails the build here."""
    env = {"PATH": IMAGE_ENV[0].split("=", 1)[1], "LANG": "C.UTF-8", "HOME": "/root"}
    if not (root / f"usr/lib/python{PYTHON}").is_dir():
        raise ImageError(f"the root filesystem has no python{PYTHON}: {SUITE}'s python3 changed?")
    run(["chroot", str(root), "/usr/bin/python3", "-c", PRECOMPILE], "importing netpol in the image",
        env=env)


def image_id(tag: str) -> str | None:
    found = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", tag],
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def image_exists(tag: str) -> bool:
    return image_id(tag) is not None


def import_image(root: Path, tag: str, scratch: Path) -> str:
    """The root as one layer tagged `tag`; the image the tag named before is removed unless
    something still uses it."""
    tarball = scratch / "image.tar"
    run(["tar", "--create", "--file", str(tarball), "--numeric-owner", "--directory", str(root), "."],
        "packing the root filesystem")
    changes = ['CMD ["netpol", "--help"]', "WORKDIR /", *(f"ENV {env}" for env in IMAGE_ENV),
               "LABEL org.opencontainers.image.title=netpol"]
    before = image_id(tag)
    done = run(["podman", "import", "--quiet", *(arg for c in changes for arg in ("--change", c)),
                "--message", f"netpol from {SUITE} packages (python -m netpol.deploy.image)",
                str(tarball), tag], f"podman import {tag}")
    new = done.stdout.strip().splitlines()[-1].removeprefix("sha256:")
    if before and before != new:
        subprocess.run(["podman", "image", "rm", before], capture_output=True, check=False)
    return new


def build_image(tag: str = DEFAULT_TAG, source: Path = CHECKOUT, cache_dir: Path | None = None,
                refresh: bool = False, say: Callable[[str], None] = lambda _: None) -> Built:
    """Build the image from `source` (a checkout: pyproject.toml, netpol/, plugin/) and tag it."""
    started = time.monotonic()
    check_prerequisites()
    if not (source / "pyproject.toml").is_file():
        raise ImageError(f"{source} is not a netpol checkout (no pyproject.toml): give --source")
    cache_dir = cache_dir or default_cache_dir()
    tarball, cached = debian_root(cache_dir, refresh, say)
    say(f"netpol from {source}, {'cached' if cached else 'new'} debian part {tarball.name}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=cache_dir) as scratch_dir:
        scratch = Path(scratch_dir)
        root = scratch / "root"
        root.mkdir()
        run(["tar", "--extract", "--file", str(tarball), "--numeric-owner", "--directory", str(root)],
            f"unpacking {tarball}")
        install_netpol(source, root, scratch)
        trim(root)
        precompile(root)
        new_id = import_image(root, tag, scratch)
    size = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", tag], "podman image inspect")
               .stdout.strip())
    return Built(tag, new_id, size, time.monotonic() - started, cached)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netpol-image"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netpol.deploy.image",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image reference to tag (default {DEFAULT_TAG})")
    parser.add_argument("--source", type=Path, default=CHECKOUT, help="the netpol checkout to install")
    parser.add_argument("--cache-dir", type=Path, help="where the Debian part is cached "
                        "(default $XDG_CACHE_HOME/netpol-image or ~/.cache/netpol-image)")
    parser.add_argument("--refresh", action="store_true", help="rebuild the Debian part even if cached")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(f"image: {line}", file=sys.stderr, flush=True)

    try:
        built = build_image(args.tag, args.source, args.cache_dir, args.refresh, say)
    except ImageError as exc:
        print(f"image: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    say(f"built {built.tag} ({built.image_id[:12]}): {built.size / 1e6:.0f} MB, {built.seconds:.0f} s"
        f"{' (debian part cached)' if built.cached else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
