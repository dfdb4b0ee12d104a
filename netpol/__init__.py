"""netpol: a Kubernetes NetworkPolicy compiler.

The public door: manifests in (`load_state`), a validated immutable model out; the reference
semantics (`allowed`), reachability maps (`compute_reach`) and explanations built on them.

The package tree reads as the pipeline (DESIGN §1), imports pointing only down it:
`load` → `sources` → `semantics` (the audit side) | `compile` → `backends` → `dataplane` →
`agent`, `pipeline` (the batch route), with `testing` and `lab` on top and `cli` above all. The
root holds the vocabulary every stage speaks: `model`, `labels`, `intervals`, `errors` (the one
exception tree), `gc`; and `cli`, the command line.
"""

from netpol.errors import InputError, NetpolError, Problem, UsageError
from netpol.labels import Labels, LabelSelector, Requirement
from netpol.load.manifests import load_state
from netpol.model import (
    ClusterNetworkPolicy,
    ClusterState,
    ContainerPort,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Node,
    Peer,
    Pod,
    PolicyPort,
    Rule,
)
from netpol.semantics.probes import Probe, default_probes
from netpol.semantics.reach import ReachMap, compute_reach
from netpol.semantics.reference import Endpoint, Verdict, allowed, pods_connect

__version__ = "0.1.0"

__all__ = [
    "ClusterNetworkPolicy",
    "ClusterState",
    "ContainerPort",
    "Endpoint",
    "IPBlock",
    "InputError",
    "LabelSelector",
    "Labels",
    "Namespace",
    "NetpolError",
    "NetworkPolicy",
    "Node",
    "Peer",
    "Pod",
    "PolicyPort",
    "Probe",
    "Problem",
    "ReachMap",
    "Requirement",
    "Rule",
    "UsageError",
    "Verdict",
    "__version__",
    "allowed",
    "compute_reach",
    "default_probes",
    "load_state",
    "pods_connect",
]
