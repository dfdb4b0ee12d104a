"""The `netpol` command line: argument parsing, exit codes (DESIGN §3), and nothing else.

Exit codes: 0 ok, 1 invalid input (or `verify` cannot build its lab), 2 usage error, 3 verification
found a mismatch (or the kernel refused a compiled ruleset), 4 an audit gate failed (`diff
--fail-on` saw such a change, `lint --fail-on` such a finding, an expectation was violated).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from netpol.audit import expect
from netpol.errors import (
    DeployError,
    InputError,
    LabError,
    Problem,
    RulesetRejected,
    SourceError,
    UsageError,
    WorkerError,
)
from netpol.gc import without_cyclic_gc
from netpol.load.manifests import LoadReport, expand_paths, load_state_with_report, read_text
from netpol.model import TIERS, ClusterState
from netpol.semantics import explain as explaining
from netpol.semantics.formats import RENDERERS, render_reach
from netpol.semantics.probes import Probe, default_probes, parse_probe
from netpol.semantics.reach import absent_notes, compute_reach, participants
from netpol.semantics.reference import priority_ties

if TYPE_CHECKING:
    from netpol.load.manifests import Labelled
    from netpol.pipeline.phases import Ruleset
    from netpol.sources.snapshot import ClusterSnapshot

EXIT_OK, EXIT_INVALID_INPUT, EXIT_USAGE, EXIT_MISMATCH, EXIT_GATE, EXIT_INTERNAL = 0, 1, 2, 3, 4, 70
# Choices of commands whose modules are imported when they run, not on every start (what `reach`
# costs is mostly starting up); tests/unit/root/test_cli.py holds them equal to those modules'.
DIFF_FAIL_ON = ("allowed", "denied", "any")  # netpol.audit.diff.FAIL_ON
DIFF_OUTPUTS = ("json", "md", "text")  # netpol.audit.diff_formats.RENDERERS
LINT_SEVERITIES = ("error", "warning", "info")  # netpol.audit.lint.SEVERITIES
IPTABLES_BACKENDS = ("iptables", "iptables-legacy")  # netpol.lab.verify.IPTABLES_VARIANTS
NAMESPACE_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label (RFC 1123)


def _add_inputs(parser: argparse.ArgumentParser, skip_unknown: bool = False) -> None:
    """`-f PATH...`, or a live cluster (`--kubeconfig FILE [--context NAME]`, `--context NAME`,
    `--in-cluster`: exactly one kind of input, `_cluster_snapshot` checks), and for the commands
    that read the state through `load_state_with_report`, `--skip-unknown`: a folder may hold
    other tools' files (`expected.json`); they are refused by default, as kubectl refuses them,
    and skipped (each named on stderr) with it."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-f", "--filename", dest="paths", action="extend", nargs="+",
                        metavar="PATH", help="manifest file, directory (recursive) or - for stdin")
    source.add_argument("--kubeconfig", metavar="FILE",
                        help="read a live cluster instead (list only): this kubeconfig's current "
                             "context, or --context's")
    source.add_argument("--in-cluster", action="store_true",
                        help="read the live cluster this pod runs in, as its service account")
    parser.add_argument("--context", metavar="NAME",
                        help="read the live cluster of this kubeconfig context (the kubeconfig: "
                             "--kubeconfig, else $KUBECONFIG, else ~/.kube/config)")
    if skip_unknown:
        parser.add_argument("--skip-unknown", action="store_true",
                            help="skip files that hold no Kubernetes object (no kind/apiVersion) "
                                 "instead of refusing them; each is named on stderr")


def _state(args: argparse.Namespace) -> tuple[ClusterState, LoadReport]:
    """The cluster a command reads: its `-f` inputs, or the live cluster it names (every
    command that takes `_add_inputs` loads through here, so another input source is added in
    one place; `compile` takes `_cluster_documents` to its own route)."""
    snapshot = _cluster_snapshot(args)
    if snapshot is not None:
        return snapshot.state()
    return load_state_with_report(args.paths, args.skip_unknown)


def _cluster_snapshot(args: argparse.Namespace) -> ClusterSnapshot | None:
    """The live cluster `_add_inputs`' flags name, read (its notes on stderr); None for `-f`.
    UsageError for no input at all, or --context with -f or --in-cluster."""
    if args.context and (args.paths or args.in_cluster):
        raise UsageError(f"--context picks a kubeconfig context: it goes with --kubeconfig (or alone), "
                         f"not with {'-f' if args.paths else '--in-cluster'}")
    if args.paths:
        return None
    if not (args.kubeconfig or args.context or args.in_cluster):
        raise UsageError("no input: give -f PATH... (manifests), or read a live cluster with "
                         "--kubeconfig FILE [--context NAME], --context NAME or --in-cluster")
    from netpol.sources.snapshot import (  # noqa: PLC0415 - only a cluster read loads the kubernetes client
        ClusterOrigin,
        read_snapshot,
    )

    snapshot = read_snapshot(ClusterOrigin(args.kubeconfig, args.context, args.in_cluster))
    _print_notes(snapshot.notes)
    return snapshot


def _cluster_documents(args: argparse.Namespace) -> list[Labelled] | None:
    """The live cluster's objects as documents for `compile`'s route (this list their only
    holder, as the route wants); None for `-f`."""
    snapshot = _cluster_snapshot(args)
    return None if snapshot is None else list(snapshot.documents)


def _print_notes(notes: Iterable[str | None]) -> None:
    """What the input left out and why, on stderr: stdout stays the command's contract."""
    for note in notes:
        if note:
            print(f"netpol: note: {note}", file=sys.stderr)


def _probe(text: str) -> Probe:
    try:
        return parse_probe(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netpol", description=(
        "Kubernetes NetworkPolicy compiler: validate manifests, audit reachability, explain verdicts."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check manifests; report every problem")
    _add_inputs(validate, skip_unknown=True)
    validate.set_defaults(run=run_validate)

    _add_reach_command(commands)

    compile_ = commands.add_parser("compile", help="a node's complete ruleset (nftables)")
    _add_inputs(compile_, skip_unknown=True)
    target = compile_.add_mutually_exclusive_group(required=True)
    target.add_argument("--node", help="the node whose ruleset to write")
    target.add_argument("--all-nodes", action="store_true", help="one file per node, in --out-dir")
    compile_.add_argument("--backend", choices=("nftables", "iptables"), default="nftables",
                          help="iptables: -o DIR gets ipset.restore, iptables.restore, ip6tables.restore")
    compile_.add_argument("--format", choices=("nft", "json"), default="nft",
                          help="an `nft -f` script (default) or the same transaction as libnftables JSON")
    compile_.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout (--node)")
    compile_.add_argument("--out-dir", metavar="DIR", help="directory for --all-nodes (NODE.nft each)")
    compile_.add_argument("--jobs", type=int, metavar="N",
                          help="--all-nodes: compile in N processes, sharded by namespace (default: one "
                               "per available CPU when the cluster is big enough for it to pay; "
                               "1: in this process, least memory)")
    compile_.set_defaults(run=run_compile)

    explain = commands.add_parser("explain", help="verdict for one connection and the rules deciding it")
    _add_inputs(explain, skip_unknown=True)
    explain.add_argument("--from", dest="source", required=True, metavar="NS/POD|IP")
    explain.add_argument("--to", dest="destination", required=True, metavar="NS/POD|IP")
    explain.add_argument("--port", dest="probe", required=True, type=_probe, metavar="PORT/PROTO")
    explain.add_argument("-o", "--output", choices=("text", "json"), default="text")
    explain.set_defaults(run=run_explain)
    _add_check_command(commands)

    diff = commands.add_parser("diff", help="cells whose verdict changes from OLD to NEW, grouped, with the "
                                            "object changes that caused them and the reasons on both sides",
                               description="Exit codes: 0 (whatever changed, without --fail-on), 1 invalid "
                                           "input, 2 usage error, 4 --fail-on saw such a change.")
    _add_inputs(diff, skip_unknown=True)  # -f: OLD
    diff.add_argument("--to", dest="new_paths", action="extend", nargs="+", required=True, metavar="PATH",
                      help="NEW: what -f takes (files, directories, -)")
    diff.add_argument("--fail-on", choices=DIFF_FAIL_ON,
                      help="exit 4 if a cell became allowed (allowed), denied (denied), either (any)")
    diff.add_argument("-o", "--output", choices=DIFF_OUTPUTS, default="text",
                      help="md: for a pull-request comment")
    diff.add_argument("--port", dest="probes", action="append", type=_probe, metavar="PORT/PROTO",
                      help="probe this port (repeatable); default: every port a policy or container "
                           "port names on either side")
    diff.add_argument("--family", type=int, choices=(4, 6),
                      help="only this address family (default: a cell is allowed over any family)")
    diff.set_defaults(run=run_diff)

    lint_ = commands.add_parser("lint", help="findings: policies and rules that are dead, redundant or "
                                             "risky, with file and line",
                                description="Exit codes: 0 (whatever was found, without --fail-on), 1 "
                                            "invalid input, 2 usage error, 4 --fail-on saw such a finding.")
    _add_inputs(lint_, skip_unknown=True)
    lint_.add_argument("-o", "--output", choices=("text", "json", "sarif"), default="text",
                       help="sarif: SARIF 2.1.0, for code scanning")
    lint_.add_argument("--fail-on", choices=LINT_SEVERITIES,
                       help="exit 4 if a finding is this severe or more (error > warning > info)")
    lint_.set_defaults(run=run_lint)

    verify_ = commands.add_parser("verify", help="build the cluster in network namespaces, load the "
                                  "compiled rulesets, probe with real packets, compare with the semantics")
    _add_inputs(verify_, skip_unknown=True)
    verify_.add_argument("--node", help="only pairs with the source or the destination on this node")
    verify_.add_argument("--backend", choices=("nftables", *IPTABLES_BACKENDS), default="nftables")
    verify_.add_argument("--port", dest="probes", action="append", type=_probe, metavar="PORT/PROTO",
                         help="probe this port (repeatable); default: every port a policy or "
                              "container port names")
    verify_.set_defaults(run=run_verify)

    _add_agent_command(commands)
    _add_deploy_commands(commands)

    demo = commands.add_parser("demo", help="a live 3-node cluster: CNI plugin, API server, one agent per "
                                            "node, scenarios probed with real packets (root)")
    demo.add_argument("-f", "--filename", dest="example",
                      default=str(Path(__file__).parent / "examples" / "shop"),
                      help="the example cluster (default: the bundled shop)")
    demo.add_argument("--image", metavar="REF",
                      help="run this image on the nodes as `netpol manifests --image REF`'s DaemonSet says "
                           "(podman: install-cni, then the agent), with an HTTPS API server enforcing its "
                           "ClusterRole, and add a rolling update of one agent (`make image` builds one)")
    demo.set_defaults(run=run_demo_command)
    return parser


def _add_reach_command(commands: Any) -> None:
    """`netpol reach`'s parser (its own function: build_parser stays readable)."""
    reach = commands.add_parser("reach", help="reachability matrix from the reference semantics")
    _add_inputs(reach, skip_unknown=True)
    reach.add_argument("--port", dest="probes", action="append", type=_probe, metavar="PORT/PROTO",
                       help="probe this port (repeatable); default: every port a policy or "
                            "container port names")
    reach.add_argument("-o", "--output", choices=sorted(RENDERERS), default="table")
    reach.add_argument("--family", type=int, choices=(4, 6),
                       help="only this address family (default: a cell is allowed over any family)")
    reach.add_argument("--expect", metavar="FILE",
                       help="also check these expectations (netpol check's report on stderr; exit 4 "
                            "if one is violated)")
    reach.set_defaults(run=run_reach)


def _add_check_command(commands: Any) -> None:
    """`netpol check`'s parser: expected connectivity (`netpol.audit.expect`), checked."""
    check = commands.add_parser("check", help="check a file of expected connectivity against the map",
                                description="Exit codes: 0 every expectation holds, 1 invalid input (the "
                                            "manifests or the expectations file), 2 usage error, 4 an "
                                            "expectation is violated.")
    _add_inputs(check, skip_unknown=True)
    check.add_argument("--expect", required=True, metavar="FILE",
                       help="the expectations (YAML or JSON; see netpol.audit.expect)")
    check.add_argument("-o", "--output", choices=sorted(expect.RENDERERS), default="text")
    check.add_argument("--family", type=int, choices=(4, 6),
                       help="only this address family (default: a cell is allowed over any family)")
    check.set_defaults(run=run_check)


def _add_agent_command(commands: Any) -> None:
    """`netpol agent`'s parser (its own function: the agent has the most flags)."""
    agent = commands.add_parser("agent", help="enforce policy on one node: watch, compile, apply "
                                              "(long-running)")
    agent.add_argument("--node", required=True, help="this node's name (spec.nodeName of its pods)")
    source = agent.add_mutually_exclusive_group()
    source.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    source.add_argument("--dir", dest="directory",
                        help="a folder of manifests to follow instead of an API server")
    agent.add_argument("--netns", help="load rulesets into this named network namespace, not our own")
    agent.add_argument("--listen", default="127.0.0.1:9909",
                       help="/healthz, /readyz, /metrics (HOST:PORT; an IPv6 HOST bare or in [])")
    agent.add_argument("--min-interval", type=float, default=0.02,
                       help="coalesce events until none came for this long (s)")
    agent.add_argument("--max-interval", type=float, default=0.5, help="never delay a change longer (s)")
    agent.add_argument("--replace-on-structure", action="store_true",
                       help="a full table replace when pods' chains change (default: only what changed)")
    agent.add_argument("--verify-interval", type=float, default=5.0,
                       help="check the host-gw routes against the kernel this often (s); changes to the "
                            "table are noticed at once from nftables' notifications")
    agent.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    agent.set_defaults(run=run_agent_command)


def _absolute(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: an absolute path on the node")
    return text


def _namespace(text: str) -> str:
    if not NAMESPACE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a namespace name is a DNS label (RFC 1123: "
                                         "at most 63 of a-z, 0-9 and '-', alphanumeric at both ends)")
    return text


def _add_cni_dirs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cni-bin-dir", type=_absolute, default="/opt/cni/bin",
                        help="the node's CNI plugin directory (default %(default)s)")
    parser.add_argument("--cni-conf-dir", type=_absolute, default="/etc/cni/net.d",
                        help="the node's CNI configuration directory (default %(default)s)")


def _add_deploy_commands(commands: Any) -> None:
    """`manifests`, `install-cni`, `cleanup`: getting netpol onto a cluster and off a node. (The
    defaults of `manifests` are netpol.deploy.manifests.ManifestOptions'; not imported here.)"""
    manifests = commands.add_parser("manifests", help="the kubectl-appliable install bundle (RBAC, "
                                                      "DaemonSet, CNI install) on stdout")
    manifests.add_argument("--image", help="the netpol image (default: the tag `make image` gives)")
    manifests.add_argument("--namespace", type=_namespace, help="default netpol")
    manifests.add_argument("--image-pull-policy", dest="pull_policy",
                           choices=("IfNotPresent", "Always", "Never"), help="default IfNotPresent")
    manifests.add_argument("--port", type=int, choices=range(1, 65536), metavar="PORT",
                           help="the agent's /healthz, /readyz and /metrics, on the node's IP (default 9909)")
    _add_cni_dirs(manifests)
    manifests.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    manifests.set_defaults(run=run_manifests)

    install = commands.add_parser("install-cni", help="on a node (the DaemonSet's init container): "
                                  "netpol-cni, host-local and the node's conflist into the host's CNI dirs")
    install.add_argument("--node", required=True, help="this node's name (the Node whose podCIDRs to use)")
    source = install.add_mutually_exclusive_group()
    source.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    source.add_argument("--node-file", help="read the Node from this file (kubectl get node NAME -o json) "
                                            "instead of the API server")
    install.add_argument("--host-root", type=_absolute, default="/",
                         help="where the node's / is mounted here (default %(default)s: this is the node)")
    _add_cni_dirs(install)
    install.add_argument("--python", type=_absolute, default="/usr/bin/python3",
                         help="the node's interpreter for netpol-cni (≥ 3.11; default %(default)s)")
    install.add_argument("--host-local", default="/usr/lib/cni/host-local",
                         help="the host-local IPAM plugin to install (default %(default)s)")
    install.add_argument("--bridge", default="cni0", help="the pods' bridge (default %(default)s)")
    install.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                         help="wait this long for the Node's podCIDRs (default %(default)s)")
    install.set_defaults(run=run_install_cni)

    cleanup = commands.add_parser("cleanup", help="uninstall from a node: our tables, iptables chains "
                                  "and sets, routes, CNI config and binaries, nothing else (root)")
    cleanup.add_argument("--node", action="store_true", required=True,
                         help="clean this node up (the cluster's objects go with `kubectl delete -f`)")
    cleanup.add_argument("--netns", help="the node's kernel objects are in this named network namespace")
    cleanup.add_argument("--host-root", type=_absolute, default="/",
                         help="where the node's / is mounted here (default %(default)s)")
    _add_cni_dirs(cleanup)
    cleanup.set_defaults(run=run_cleanup)


def run_validate(args: argparse.Namespace) -> int:
    """The counts on stdout; on stderr, everything the input holds that no answer will show:
    skipped files and kinds, pods outside the matrix; and cluster policies whose order the API
    leaves undefined (equal priorities in a tier), as warnings."""
    state, report = _state(args)
    print(f"ok: {len(state.namespaces)} namespaces, {len(state.pods)} pods, "
          f"{len(state.nodes)} nodes, {len(state.policies)} network policies, {_cluster_counts(state)}")
    _print_notes([report.files_note(), report.kinds_note(pods_missing=not participants(state)),
                  *absent_notes(state)])
    for warning in priority_ties(state):
        print(f"netpol: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _cluster_counts(state: ClusterState) -> str:
    """`3 cluster network policies (2 Admin, 1 Baseline; 1 converted from v1alpha1)`."""
    policies = state.cluster_policies
    if not policies:
        return "0 cluster network policies"
    tiers = ", ".join(f"{count} {tier}" for tier in TIERS if (count := len(state.tier_policies(tier))))
    converted = sum(p.kind != "ClusterNetworkPolicy" for p in policies)
    return (f"{len(policies)} cluster network polic{'ies' if len(policies) != 1 else 'y'} ({tiers}"
            f"{f'; {converted} converted from v1alpha1' if converted else ''})")


def run_reach(args: argparse.Namespace) -> int:
    """The matrix on stdout (its format is a contract); on stderr, the pods it leaves out and
    why, and, when it is empty, the kinds that were skipped (a folder of Deployments). With
    `--expect`, `check`'s text report follows on stderr (stdout stays the map, so one run gives
    CI both the artefact and the gate) and a violated expectation exits EXIT_GATE (4)."""
    expectations = _read_expectations(args.expect) if args.expect else None
    state, report = _state(args)
    probes = tuple(args.probes) if args.probes else default_probes(state)
    reach = compute_reach(state, probes, args.family)
    if not reach.pods:
        address = f"an IPv{args.family} address" if args.family else "an IP address"
        print(f"netpol: no pods with {address} in the input", file=sys.stderr)
    no_pods = not reach.pods and not participants(state)  # not only none of --family's
    _print_notes([report.files_note(), report.kinds_note(pods_missing=True) if no_pods else None,
                  *absent_notes(state, args.family)])
    sys.stdout.write(render_reach(args.output, reach, state))  # html: cells linked to why
    if expectations is None:
        return EXIT_OK
    sys.stdout.flush()  # the map before the report, when both go to one terminal
    outcomes = expect.check_expectations(state, expectations, args.family)
    sys.stderr.write(expect.render_text(outcomes))
    return EXIT_OK if all(o.holds for o in outcomes) else EXIT_GATE


def _read_expectations(path: str) -> tuple[expect.Expectation, ...]:
    """The expectations file of `--expect`, read before the cluster: its mistakes come first."""
    return expect.parse_expectations(read_text(path), path)


def run_check(args: argparse.Namespace) -> int:
    """Each expectation of `--expect` against the map: the report on stdout (`-o text|json`),
    what the input leaves out on stderr. EXIT_GATE (4) when one is violated (or covers no cell),
    0 when all hold."""
    expectations = _read_expectations(args.expect)
    state, report = _state(args)
    _print_notes([report.files_note(), *absent_notes(state, args.family)])
    outcomes = expect.check_expectations(state, expectations, args.family)
    sys.stdout.write(expect.RENDERERS[args.output](outcomes))
    return EXIT_OK if all(o.holds for o in outcomes) else EXIT_GATE


def run_compile(args: argparse.Namespace) -> int:
    """The route is `netpol.pipeline.phases`'; here, only where the files go."""
    from netpol.pipeline.phases import CompileRequest, compile_rulesets  # noqa: PLC0415 - as run_verify

    if args.all_nodes and not args.out_dir:
        raise UsageError("--all-nodes needs --out-dir DIR")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be 1 or more")
    request = CompileRequest(args.paths or (), None if args.all_nodes else args.node, args.backend,
                             args.format, args.jobs, args.skip_unknown)
    renderer = request.renderer
    if request.node is not None and renderer.bundle and not args.output:
        raise UsageError(f"--backend {args.backend} writes three files: give -o DIR")
    request = dataclasses.replace(request, documents=_cluster_documents(args))  # a live cluster's, or None
    processes = [1]
    written: list[Path] = []
    report = LoadReport()
    for ruleset in compile_rulesets(request, processes.append, report):
        if request.node is None:
            written.append(_write(ruleset, Path(args.out_dir), renderer.suffix, per_node=True))
        elif args.output:
            written.append(_write(ruleset, Path(args.output), renderer.suffix, per_node=False))
        else:
            sys.stdout.write(ruleset.files[""])
    _print_notes([report.files_note()])
    if renderer.bundle:
        print(f"wrote the {args.backend} bundles of {len(written)} node(s) to {', '.join(map(str, written))}",
              file=sys.stderr)
    elif request.node is None:
        print(f"wrote {len(written)} rulesets to {args.out_dir} ({processes[-1]} process"
              f"{'es' if processes[-1] > 1 else ''})", file=sys.stderr)
    return EXIT_OK


def _write(ruleset: Ruleset, target: Path, suffix: str, per_node: bool) -> Path:
    """A single file: TARGET/NODE.SUFFIX per node, else TARGET itself. A bundle: its files in
    TARGET/NODE/ per node, else in TARGET/."""
    if suffix:
        path = target / f"{ruleset.node}{suffix}" if per_node else target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ruleset.files[""])
        return path
    directory = target / ruleset.node if per_node else target
    directory.mkdir(parents=True, exist_ok=True)
    for filename, text in ruleset.files.items():
        (directory / filename).write_text(text)
    return directory


def run_explain(args: argparse.Namespace) -> int:
    """The verdicts on stdout; an endpoint that is no pod of the input is a usage error, preceded
    on stderr by the kinds that were skipped (the pod may be in a Deployment's template)."""
    state, report = _state(args)
    unknown = any("/" in end and state.pod(end) is None for end in (args.source, args.destination))
    _print_notes([report.files_note(), report.kinds_note(pods_missing=True) if unknown else None])
    src = explaining.resolve_endpoint(state, args.source)
    dst = explaining.resolve_endpoint(state, args.destination)
    verdicts = explaining.explain(state, src, dst, args.probe)
    render = explaining.render_json if args.output == "json" else explaining.render_text
    sys.stdout.write(render(verdicts))
    return EXIT_OK


def run_diff(args: argparse.Namespace) -> int:
    """The changed cells on stdout in `-o`'s format; on stderr, what each side's input left out.
    Exit 0 whatever changed; with `--fail-on allowed|denied|any`, EXIT_GATE (4) if a cell
    became allowed, denied, either; 1 and 2 as for every command."""
    from netpol.audit import diff_formats  # noqa: PLC0415 - audits load only when asked for
    from netpol.audit.diff import diff_states, union_probes  # noqa: PLC0415

    if "-" in (args.paths or ()) and "-" in args.new_paths:  # (no paths: OLD is a live cluster)
        raise UsageError("diff: stdin (-) can be read by one side only: give -f or --to a file")
    old, old_report = _state(args)
    new, new_report = load_state_with_report(args.new_paths, args.skip_unknown)
    probes = tuple(args.probes) if args.probes else union_probes(default_probes(old), default_probes(new))
    _print_notes([old_report.files_note(), new_report.files_note()])
    result = diff_states(old, new, probes, args.family)
    sys.stdout.write(diff_formats.RENDERERS[args.output](result))
    return EXIT_GATE if result.fails(args.fail_on) else EXIT_OK


def run_lint(args: argparse.Namespace) -> int:
    """The findings on stdout, each with the file and line of what it is about; on stderr, the
    notes (what was skipped, what could not be checked) and a count."""
    from netpol.audit.lint import Finding, at_least, lint  # noqa: PLC0415 - loaded only when asked for
    from netpol.audit.lint import render_json as render_lint_json  # noqa: PLC0415
    from netpol.audit.lint import render_text as render_lint_text  # noqa: PLC0415
    from netpol.audit.lint import summary as lint_summary  # noqa: PLC0415
    from netpol.audit.locate import locate  # noqa: PLC0415
    from netpol.audit.sarif import render_sarif  # noqa: PLC0415

    state, report = _state(args)
    result = lint(state)
    files, _ = expand_paths(args.paths or [])
    findings = locate(result.findings, files, read_text)
    findings.sort(key=Finding.sort_key)
    _print_notes([report.files_note(), *result.notes])
    if args.output == "sarif":
        version = sys.modules["netpol"].__version__  # the package's, set in netpol/__init__ (no stage)
        sys.stdout.write(render_sarif(findings, version, os.getcwd()))
    else:
        sys.stdout.write((render_lint_json if args.output == "json" else render_lint_text)(findings))
    print(f"netpol: lint: {lint_summary(findings)}", file=sys.stderr)
    return EXIT_GATE if args.fail_on and at_least(findings, args.fail_on) else EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from netpol.backends.nftables import render as render_nftables  # noqa: PLC0415 - the compiler side
    from netpol.lab.verify import format_report, verify  # noqa: PLC0415 - loads only for what needs it

    state, loaded = _state(args)
    _print_notes([loaded.files_note()])
    report = verify(state, args.probes, args.node, render=render_nftables, backend=args.backend)
    sys.stdout.write(format_report(report))
    return EXIT_MISMATCH if report.mismatches else EXIT_OK


def run_agent_command(args: argparse.Namespace) -> int:
    from netpol.agent import logs  # noqa: PLC0415 - the agent's imports stay out of batch runs
    from netpol.agent.coalesce import SyncTiming  # noqa: PLC0415
    from netpol.agent.runner import AgentOptions, run_agent  # noqa: PLC0415
    from netpol.errors import AgentError  # noqa: PLC0415

    logs.configure(args.log_level)
    if args.directory and not Path(args.directory).exists():
        raise UsageError(f"--dir {args.directory}: no such directory")
    if args.verify_interval <= 0:
        raise UsageError(f"--verify-interval {args.verify_interval}: must be more than 0")
    timing = SyncTiming(min_interval=args.min_interval, max_interval=args.max_interval)
    options = AgentOptions(args.node, args.kubeconfig, args.directory, args.netns, args.listen, timing,
                           args.replace_on_structure, args.verify_interval)
    try:
        return run_agent(options)
    except AgentError as exc:  # the node cannot run the agent: nothing was written
        print(f"netpol: agent: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT


def run_manifests(args: argparse.Namespace) -> int:
    from netpol.deploy.manifests import ManifestOptions, render_yaml  # noqa: PLC0415

    given = {name: getattr(args, name) for name in ("image", "namespace", "pull_policy", "port")}
    text = render_yaml(ManifestOptions(cni_bin_dir=args.cni_bin_dir, cni_conf_dir=args.cni_conf_dir,
                                       **{name: value for name, value in given.items() if value is not None}))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _print_outcome(command: str, outcome: Any) -> int:
    for line in outcome.done:
        print(line)
    for line in outcome.notes:
        print(f"netpol: {command}: note: {line}", file=sys.stderr)
    for line in outcome.failed:
        print(f"netpol: {command}: {line}", file=sys.stderr)
    return EXIT_INVALID_INPUT if outcome.failed else EXIT_OK


def run_install_cni(args: argparse.Namespace) -> int:
    from netpol.deploy import cni_install  # noqa: PLC0415 - the install's imports stay out of batch runs

    layout = cni_install.CniLayout(Path(args.host_root), args.cni_bin_dir, args.cni_conf_dir)
    if args.node_file:
        source, read = args.node_file, lambda: _node_document(args.node_file, args.node)
    else:
        source, read = "the API server", cni_install.read_node_from_api(args.node, args.kubeconfig)
    outcome = cni_install.install_cni(layout, read, source=source, python=args.python,
                                      host_local=Path(args.host_local), bridge=args.bridge, wait=args.wait)
    return _print_outcome("install-cni", outcome)


def _node_document(path: str, name: str) -> dict[str, Any]:
    """The one document of a `kubectl get node NAME -o json|yaml` file, Node `name`'s."""
    from netpol.load.manifests import parse_documents, read_text  # noqa: PLC0415

    documents, problem = parse_documents(read_text(path), path)
    documents = [d for d in documents if d is not None]
    if problem is not None:
        raise InputError([problem])
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise InputError([Problem(path, "", "", f"expected one Node, found {len(documents)} documents")])
    metadata = documents[0].get("metadata")
    found = metadata.get("name") if isinstance(metadata, dict) else None
    if found != name:
        raise UsageError(f"--node-file {path} holds Node {found}, not --node {name}")
    return documents[0]


def run_cleanup(args: argparse.Namespace) -> int:
    from netpol.deploy.cleanup import cleanup_node  # noqa: PLC0415
    from netpol.deploy.cni_install import CniLayout  # noqa: PLC0415

    layout = CniLayout(Path(args.host_root), args.cni_bin_dir, args.cni_conf_dir)
    outcome = cleanup_node(layout, args.netns)
    if not outcome.done and not outcome.failed:
        print("nothing of netpol's on this node")
    return _print_outcome("cleanup", outcome)


def run_demo_command(args: argparse.Namespace) -> int:
    from netpol.lab.cluster import check_environment  # noqa: PLC0415
    from netpol.lab.demo import run_demo  # noqa: PLC0415 - only the demo needs the API server and lab

    check_environment()
    return run_demo(args.example, image=args.image)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        with without_cyclic_gc():  # a batch run: see netpol.gc
            return run(args)
    except InputError as exc:
        print(f"netpol: invalid input ({len(exc.problems)} problem"
              f"{'s' if len(exc.problems) != 1 else ''}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except UsageError as exc:
        print(f"netpol: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LabError as exc:
        print(f"netpol: {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except DeployError as exc:
        print(f"netpol: {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except SourceError as exc:  # a live cluster could not be read (`--kubeconfig`, `--in-cluster`)
        print(f"netpol: {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except RulesetRejected as exc:
        print(f"netpol: verify: {exc}", file=sys.stderr)
        return EXIT_MISMATCH
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (`| head`); not an error
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except WorkerError as exc:  # one of `compile --all-nodes`'s processes failed or was killed
        print(f"netpol: {exc}\nnetpol: --jobs 1 compiles in this process alone, with the least memory",
              file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # last resort: never a traceback for the user
        print(f"netpol: internal error ({type(exc).__name__}: {exc}); please report it", file=sys.stderr)
        return EXIT_INTERNAL


def console() -> NoReturn:
    """The `netpol` command: `main`, then exit without tearing the heap down. Freeing a large
    cluster's millions of objects one by one (and the collector's last pass over them) took
    longer than a 10k-pod compile's own work; the kernel reclaims the memory at once. Output
    streams and log handlers are flushed first; files are closed where they are written."""
    code = main()
    with contextlib.suppress(BrokenPipeError):  # the reader went away (`| head`)
        sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    console()
