"""The exceptions netpol raises, one tree (every leaf says when it is raised):

    NetpolError                 base class; `str()` is a complete message for a person
    ├── InputError              the input (files, manifests, objects) is invalid: every
    │                           `Problem` found, each naming file, object and field. Exit 1.
    ├── UsageError              the command line asks for something impossible. Exit 2.
    ├── LabError                `verify`/`demo` cannot build their network-namespace lab: not
    │                           root, no `ip`/`nft`, br_netfilter missing, or the kernel refused
    │                           a step. Exit 1.
    ├── RulesetRejected         `nft -f` refused a compiled ruleset while verifying: the compiler
    │                           produced something the kernel does not accept. Exit 3.
    ├── ApplyError              the data plane (`netpol.dataplane`) refused a ruleset: nft's (or
    │                           ipset's, iptables-restore's) messages, as `NftMessage`s with the
    │                           line of our input; the last good ruleset stays in force.
    ├── WorkerError             a process of `compile --all-nodes` (`netpol.pipeline.sharded`)
    │                           failed or was killed (a bug, or the machine's memory). Exit 70.
    ├── OutOfScope              an `IncrementalCompiler(nodes=…)` was asked for another node.
    ├── NamespaceError          a named network namespace cannot be entered (missing, no rights).
    ├── AgentError              `netpol agent` cannot run on this node: no `ip` on PATH, no
    │                           libnftables, its namespace or listen address unusable, an
    │                           unreadable kubeconfig or service-account token/CA. Raised
    │                           before anything is written. Exit 1.
    ├── RouteError              `ip` is missing or answers nonsense while the agent keeps its
    │                           host-gw routes (`netpol.dataplane.routes`; the agent logs it and
    │                           tries again on its next route check, never dies of it).
    ├── DeployError             `netpol install-cni` or `netpol cleanup` cannot do its job on a
    │                           node: no usable python3 for netpol-cni, the Node unreadable from
    │                           the API server, a directory or command refusing. Exit 1.
    ├── ImageError              `python -m netpol.deploy.image` cannot build the container image:
    │                           not root, a tool missing, or a step (mmdebstrap, pip, podman)
    │                           failing, quoted. Exit 1.
    ├── SourceError             a source cannot follow its input: the folder of `--dir` is gone,
    │                           the in-cluster config's variables or service-account files are
    │                           missing or unusable, or a list answer is not a list (the kube
    │                           source retries that, and a token file unreadable mid-run); or a
    │                           batch command cannot read its live cluster (`--kubeconfig`,
    │                           `--context`, `--in-cluster`: no such context, no answer, 401,
    │                           403 naming the verb and resource). Exit 1.
    │   ├── ResourceExpired     410 Gone: a resourceVersion or continue token is older than the
    │   │                       API server's history (the kube source relists; never escapes it).
    │   └── WatchStreamError    a watch stream sent something that is not a watch event (the
    │                           kube source reconnects with backoff; never escapes it).
    └── UnsupportedExpression   `netpol.testing.nft_trace` met an nftables expression it cannot
                                evaluate: the tracer refuses rather than guess.

Foreign errors (YAML, JSON, OS, the kubernetes client, libnftables) are translated into these at
the boundary that meets them. Not in the tree, on purpose: `TypeError` from the resolver's
data-free graph when code tries to attach data to it (a bug, as with any read-only mapping),
`AssertionError` from `netpol.testing`'s oracles (what test runners report), and
`load.decode_fast`'s private signal to give an object up to the full decoder (it never leaves
that module).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (file), what (object), which field, and why."""

    source: str
    obj: str
    path: str
    message: str

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.obj, self.path) if part)
        return f"{where}: {self.message}" if where else self.message


class NetpolError(Exception):
    """Base of every error netpol raises on purpose."""


class InputError(NetpolError):
    """Raised when manifests or objects are invalid; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UsageError(NetpolError):
    """Raised when command-line arguments are inconsistent (unknown pod, bad --port …)."""


class LabError(NetpolError):
    """Raised when `verify` cannot build or run its lab; names the command and quotes its error."""


class RulesetRejected(NetpolError):
    """Raised when the kernel refuses a node's compiled ruleset during `verify`."""

    def __init__(self, node: str, detail: str) -> None:
        self.node, self.detail = node, detail
        super().__init__(f"nft refused the compiled ruleset of node {node}: {detail}")


@dataclass(frozen=True)
class NftMessage:
    """One error nft reported; `line` is 1-based in our input, 0 when nft gave no location."""

    message: str
    line: int = 0
    text: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        shown = f"\n    {self.text.strip()}" if self.text else ""
        return f"{where}{self.message}{shown}"


class ApplyError(NetpolError):
    """Raised when the kernel refuses a ruleset (check pass or commit); the previous one is still
    in force."""

    def __init__(self, stage: str, messages: Sequence[NftMessage]) -> None:
        self.stage, self.messages = stage, list(messages)
        listed = "\n  ".join(str(m) for m in messages) or "no message from libnftables"
        super().__init__(f"nft rejected the ruleset ({stage}); "
                         f"the last good ruleset stays in force:\n  {listed}")


class WorkerError(NetpolError):
    """Raised when a compile worker failed or died: a bug, or the machine killed it (memory)."""


class OutOfScope(NetpolError):
    """Raised when a node-scoped incremental compiler is asked for a node outside its scope."""


class NamespaceError(NetpolError):
    """Raised when a named network namespace cannot be entered."""


class AgentError(NetpolError):
    """Raised when `netpol agent` cannot start on this node (a tool, library, namespace, address
    or credential it needs is missing); nothing has been written to the kernel yet."""


class RouteError(NetpolError):
    """Raised when `ip` is missing or fails in a way that is not about one route."""


class DeployError(NetpolError):
    """Raised when installing netpol-cni on a node, or cleaning a node up, cannot be done (the
    message names the file, the object or the command); what was done before stays."""


class ImageError(NetpolError):
    """Raised when the container image cannot be built; names the step and quotes the tool."""


class SourceError(NetpolError):
    """Raised when a source cannot follow its input."""


class ResourceExpired(SourceError):
    """410 Gone: the resourceVersion (or continue token) is older than the server's history."""


class WatchStreamError(SourceError):
    """A watch stream carried something other than a watch event object."""


class UnsupportedExpression(NetpolError):
    """Raised by the nft tracer for an expression it does not evaluate."""
