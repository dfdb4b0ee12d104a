"""podman, as this machine runs containers: every flag the machine needs lives here and nowhere
else (not in the manifests, not in the tests, which import this), and the `podman run` argument
list of one container spec.

Why these flags (found on the CI VMs, Debian's podman 4.3 run as root without systemd): crun
cannot set rlimits here, so `--runtime runc` (Debian's runc package); no systemd, so cgroups
through the file system (`--cgroup-manager cgroupfs`) and events in a file (`--events-backend
file`); and runc cannot raise the container's rlimits to podman's defaults (nofile 1048576) above
this machine's hard limits, so the container asks for ones it can have (`--ulimit`). They are
harmless where they are not needed (a machine with systemd and crun runs the same way).

`Container` is what a pod spec says of one container, already resolved (the kubelet's part:
`netpol.lab.daemonset`); `podman_run_args` turns it into arguments, one flag per field.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file")
RUN_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
TIMEOUT = 120.0  # seconds a one-shot container or a podman command may take: a hang bound, never a verdict
REMOVE_AGAIN = 1.0  # s between removals of a container whose podman process has not exited yet
PULL = {"IfNotPresent": "missing", "Always": "always", "Never": "never"}  # imagePullPolicy → --pull


@dataclass(frozen=True)
class Mount:
    """A bind mount, as a pod's hostPath (or emptyDir, or projected) volume and volumeMount give it."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Resources:
    """What the kubelet sets in the container's cgroup: CPU shares from the CPU request, a CFS
    quota from the CPU limit, the memory limit (None: not set)."""

    cpu_shares: int | None = None
    cpus: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class Container:
    """One container as a pod spec gives it. `entrypoint` replaces the image's ENTRYPOINT (a
    pod's `command`; it also drops the image's CMD), `command` follows the image (a pod's
    `args`). `netns` is the path of the network namespace it joins (/run/netns/NAME — a node's,
    as hostNetwork gives it); None keeps podman's network. `read_only`: nothing writable but
    the mounts (readOnlyRootFilesystem; podman would otherwise add tmpfs on /run, /tmp, /var/tmp)."""

    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    netns: str | None = None
    privileged: bool = False
    read_only: bool = False
    no_new_privileges: bool = False
    user: str | None = None  # UID[:GID]
    workdir: str | None = None
    pull: str | None = None  # always | missing | never (podman's default: missing)
    resources: Resources = Resources()


def podman_run_args(image: str, spec: Container, name: str) -> list[str]:
    """The `podman run` argument list for `spec` in a container called `name`."""
    argv = [*PODMAN, "run", "--rm", "--name", name, *RUN_FLAGS]
    if spec.pull is not None:
        argv.append(f"--pull={spec.pull}")
    if spec.netns is not None:
        argv += ["--network", f"ns:{spec.netns}"]
    argv += [arg for cap in spec.cap_drop for arg in ("--cap-drop", cap)]
    argv += [arg for cap in spec.cap_add for arg in ("--cap-add", cap)]
    if spec.privileged:
        argv.append("--privileged")
    if spec.read_only:
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if spec.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    if spec.user is not None:
        argv += ["--user", spec.user]
    if spec.workdir is not None:
        argv += ["--workdir", spec.workdir]
    argv += _resource_args(spec.resources)
    argv += [arg for key, value in spec.env.items() for arg in ("--env", f"{key}={value}")]
    for mount in spec.mounts:
        argv += ["--mount", f"type=bind,source={mount.source},target={mount.target}"
                            + (",ro=true" if mount.read_only else "")]
    if spec.entrypoint is not None:
        argv.append("--entrypoint=" + _json_array(spec.entrypoint))
    return [*argv, image, *spec.command]


def _resource_args(resources: Resources) -> list[str]:
    argv = []
    if resources.cpu_shares is not None:
        argv.append(f"--cpu-shares={resources.cpu_shares}")
    if resources.cpus is not None:
        argv.append(f"--cpus={resources.cpus:g}")
    if resources.memory_bytes is not None:
        argv.append(f"--memory={resources.memory_bytes}b")
    return argv


def _json_array(words: tuple[str, ...]) -> str:
    """The JSON form of --entrypoint: the words exactly, no shell in between."""
    return json.dumps(list(words))


def remove_container(name: str) -> None:
    """Gone, whatever state it is in (already gone included)."""
    subprocess.run([*PODMAN, "rm", "--force", "--ignore", "--time", "0", name],
                   capture_output=True, check=False, timeout=TIMEOUT)


def stop_container(name: str, grace: float = 30.0) -> None:
    """What the kubelet does to a pod's container on a rolling update: SIGTERM, then SIGKILL
    after the grace period."""
    subprocess.run([*PODMAN, "stop", "--time", str(round(grace)), name], capture_output=True,
                   check=False, timeout=grace + TIMEOUT)


def end_started(name: str, process: subprocess.Popen[str]) -> None:
    """A container started with its podman process (`podman run`, attached): removed until its
    podman process exits — again every REMOVE_AGAIN s, since a podman still creating the
    container when a removal runs makes it afterwards — and that process killed by PID if it
    outlives TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        remove_container(name)
        try:
            _reap(process, REMOVE_AGAIN)
            return
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                process.kill()  # podman itself hung after its container went
                _reap(process, None)
                return


def _reap(process: subprocess.Popen[str], timeout: float | None) -> None:
    try:
        process.communicate(timeout=timeout)
    except (ValueError, OSError):  # its pipes were read to the end, and closed, elsewhere
        process.wait(timeout)


def run_container(image: str, spec: Container, name: str) -> subprocess.CompletedProcess[str]:
    """Run one container to its end, output captured; removed afterwards even if it hangs."""
    try:
        return subprocess.run(podman_run_args(image, spec, name), capture_output=True, text=True,
                              check=False, timeout=TIMEOUT)
    finally:
        remove_container(name)


@contextlib.contextmanager
def started_container(image: str, spec: Container, name: str) -> Iterator[subprocess.Popen[str]]:
    """A long-running container (an agent): its podman process, output on the process's pipes.
    Removed on the way out, however the block ends."""
    process = subprocess.Popen(podman_run_args(image, spec, name), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        end_started(name, process)
