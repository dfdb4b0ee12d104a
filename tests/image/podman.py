"""Running the built image with podman, for the tests: every flag this machine needs lives here
and nowhere else (the manifests carry none of them). What a test passes in — command, env,
mounts, capabilities, network namespace — is what a DaemonSet's container spec says."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from netpol.deploy.image import DEFAULT_TAG

# Known on these VMs: crun cannot set rlimits here, so runc; no systemd, so cgroupfs and events
# in a file; and runc cannot raise podman's default rlimits (nofile 1048576) above this
# machine's hard limits, so the container asks for ones it can have.
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file")
RUN_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
TIMEOUT = 120.0  # seconds a one-shot container may take: a hang bound, never a verdict


def image_ref() -> str:
    """The image under test: $NETPOL_IMAGE (the Makefile passes its IMAGE), else `make image`'s tag."""
    return os.environ.get("NETPOL_IMAGE") or DEFAULT_TAG


# Of every container and network namespace the image tests create: per xdist worker, so that a
# test can tell its own leftovers from a concurrent test's.
PREFIX = f"np-img-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def container_name() -> str:
    return f"{PREFIX}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Mount:
    """A bind mount, as a pod's hostPath volume and volumeMount give it."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Container:
    """One container as a pod spec gives it: `netns` is the path of the network namespace it
    joins (/run/netns/NAME — a node's, as hostNetwork gives it); None keeps podman's network."""

    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    cap_add: tuple[str, ...] = ()
    netns: str | None = None
    privileged: bool = False
    read_only: bool = False


def podman_run_args(image: str, spec: Container, name: str) -> list[str]:
    """The `podman run` argument list for `spec` in a container called `name`."""
    argv = [*PODMAN, "run", "--rm", "--name", name, *RUN_FLAGS]
    if spec.netns is not None:
        argv += ["--network", f"ns:{spec.netns}"]
    argv += [arg for cap in spec.cap_add for arg in ("--cap-add", cap)]
    if spec.privileged:
        argv.append("--privileged")
    if spec.read_only:
        argv.append("--read-only")
    argv += [arg for key, value in spec.env.items() for arg in ("--env", f"{key}={value}")]
    for mount in spec.mounts:
        argv += ["--mount", f"type=bind,source={mount.source},target={mount.target}"
                            + (",ro=true" if mount.read_only else "")]
    return [*argv, image, *spec.command]


def remove_container(name: str) -> None:
    """Gone, whatever state it is in (already gone included)."""
    subprocess.run([*PODMAN, "rm", "--force", "--ignore", "--time", "0", name],
                   capture_output=True, check=False, timeout=TIMEOUT)


def stop_container(name: str, grace: float = 30.0) -> None:
    """What the kubelet does to a pod's container on a rolling update: SIGTERM, then SIGKILL
    after the grace period."""
    subprocess.run([*PODMAN, "stop", "--time", str(round(grace)), name], capture_output=True,
                   check=False, timeout=grace + TIMEOUT)


def run_container(image: str, spec: Container) -> subprocess.CompletedProcess[str]:
    """Run one container to its end, output captured; removed afterwards even if it hangs."""
    name = container_name()
    try:
        return subprocess.run(podman_run_args(image, spec, name), capture_output=True, text=True,
                              check=False, timeout=TIMEOUT)
    finally:
        remove_container(name)


@contextlib.contextmanager
def started_container(image: str, spec: Container, name: str | None = None,
                      ) -> Iterator[subprocess.Popen[str]]:
    """A long-running container (an agent): its podman process, output on the process's pipes.
    Removed on the way out, however the block ends."""
    name = name or container_name()
    process = subprocess.Popen(podman_run_args(image, spec, name), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        remove_container(name)
        try:
            process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()  # podman itself hung after its container went
            process.communicate()
