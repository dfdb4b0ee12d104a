"""Running the built image with podman, for the tests: the machine's podman flags and the
`podman run` arguments are `netpol.lab.podman`'s (one place, shared with `netpol demo --image`);
here only the image under test and the names of the tests' own containers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator

from netpol.deploy.image import DEFAULT_TAG
from netpol.lab import podman
from netpol.lab.podman import PODMAN, Container, Mount, remove_container, stop_container

__all__ = ["PODMAN", "PREFIX", "Container", "Mount", "container_name", "image_ref", "remove_container",
           "run_container", "started_container", "stop_container"]


def image_ref() -> str:
    """The image under test: $NETPOL_IMAGE (the Makefile passes its IMAGE), else `make image`'s tag."""
    return os.environ.get("NETPOL_IMAGE") or DEFAULT_TAG


# Of every container and network namespace the image tests create: per xdist worker, so that a
# test can tell its own leftovers from a concurrent test's.
PREFIX = f"np-img-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def container_name() -> str:
    return f"{PREFIX}-{uuid.uuid4().hex[:8]}"


def run_container(image: str, spec: Container) -> subprocess.CompletedProcess[str]:
    """Run one container to its end, output captured; removed afterwards even if it hangs."""
    return podman.run_container(image, spec, container_name())


@contextlib.contextmanager
def started_container(image: str, spec: Container, name: str | None = None,
                      ) -> Iterator[subprocess.Popen[str]]:
    """A long-running container: its podman process, removed on the way out."""
    with podman.started_container(image, spec, name or container_name()) as process:
        yield process
