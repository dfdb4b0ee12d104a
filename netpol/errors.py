"""The exceptions netpol raises, one tree:

    NetpolError                 base class; `str()` is a complete message for a person
    ├── InputError              the input (files, manifests, objects) is invalid: every
    │                           `Problem` found, each naming file, object and field. Exit 1.
    ├── UsageError              the command line asks for something impossible. Exit 2.
    ├── LabError                `verify` cannot build its network-namespace lab: not root, no
    │                           `ip`/`nft`, br_netfilter missing, or the kernel refused a step. Exit 1.
    └── RulesetRejected         `nft -f` refused a compiled ruleset while verifying: the compiler
                                produced something the kernel does not accept. Exit 3.

Foreign errors (YAML, JSON, OS) are translated into these at the boundary that meets them.
"""

from __future__ import annotations

from collections.abc import Iterable
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
