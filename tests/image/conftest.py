"""Image tests: the built image (`make image`), run with podman. This conftest marks every test
below it `kernel` and skips it, saying why, unless we are root with podman on PATH (make test
installs it and builds the image first). The `image` fixture builds the image with
`netpol.deploy.image` when its tag is missing; nothing a test starts — container, network
namespace — outlives it."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netpol.deploy.image import build_image, image_exists
from netpol.errors import ImageError
from tests.conftest import mark_kernel_folder
from tests.image.podman import PODMAN, PREFIX, image_ref
from tests.kernel.conftest import fresh_netns

HERE = Path(__file__).resolve().parent
MISSING = ("not root" if os.geteuid() != 0 else
           "no podman on PATH" if shutil.which("podman") is None else "")
BUILD_LOCK = os.path.join(tempfile.gettempdir(), "netpol-image-build.lock")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_kernel_folder(items, HERE, MISSING, "root and podman")


@pytest.fixture(scope="session")
def image() -> str:
    """The image under test, built first if its tag is missing (one build across xdist workers)."""
    ref = image_ref()
    with open(BUILD_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image_exists(ref):
            try:
                build_image(ref)
            except ImageError as exc:
                pytest.fail(f"cannot build {ref}: {exc}", pytrace=False)
    return ref


def ours() -> tuple[list[str], list[str]]:
    """The network namespaces and containers named like this process's."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    containers = subprocess.run([*PODMAN, "ps", "--all", "--format", "{{.Names}}"],
                                capture_output=True, text=True, check=True).stdout
    return ([line.split()[0] for line in netns.splitlines() if line.startswith(f"{PREFIX}-")],
            [name for name in containers.split() if name.startswith(f"{PREFIX}-")])


@pytest.fixture(autouse=True)
def leaves_no_trace() -> Iterator[None]:
    before = ours()
    yield
    assert ours() == before, "a network namespace or container outlived its test"


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of this test's own (never the machine's), always deleted."""
    yield from fresh_netns(PREFIX)
