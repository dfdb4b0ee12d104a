"""The audit side: what the policies mean, spec-literally, and the maps and explanations built
on it. Everything faster in netpol (the compiler, the backends, the kernel) is tested against
`reference`.

Modules:
    reference   the reference evaluator of DESIGN §2 and §2b (ClusterNetworkPolicy tiers):
                `allowed(state, src, dst, port, protocol)` → Verdict with the reasons (the tier,
                policy and rule that decided); slow on purpose, one clause at a time
    probes      the (port, protocol) pairs a map asks about (every port a policy or pod names)
    reach       the full reachability map, fast: equivalence classes of pods, label indexes,
                bitsets (checked cell by cell against `reference` by Hypothesis)
    explain     one connection: resolve the endpoints, say in words which policy and rule decide
    formats     a map as table, json (the DESIGN §3 contract), csv, grouped lines, html (cells
                linked to their class's explanation), dot (Graphviz: namespaces as clusters,
                edges with ports), md (for an issue or a pull request)

Control flow: `netpol reach` → `probes.default_probes(state)` → `reach.compute_reach` →
`formats.RENDERERS[fmt]`; `netpol explain` → `explain.resolve_endpoint` → `explain.explain`
(which asks `reference.pod_verdicts`) → `explain.render_text|render_json`.

The reference evaluator's public names are re-exported here: `from netpol.semantics import
allowed` reads as what it is.
"""

from netpol.semantics.reference import Endpoint, Verdict, allowed, pods_connect

__all__ = ["Endpoint", "Verdict", "allowed", "pods_connect"]
