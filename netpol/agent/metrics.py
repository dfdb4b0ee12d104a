"""The agent's Prometheus metrics, in a registry of its own (several agents can share a process
in tests and the demo), and the text exposition `/metrics` serves."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from netpol.compile.ir import NodeProgram

SYNC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sync_duration = Histogram("netpol_sync_duration_seconds", "Render and apply of one sync",
                                       ["mode"], buckets=SYNC_BUCKETS, registry=r)
        self.syncs = Counter("netpol_syncs", "Successful syncs", ["mode"], registry=r)
        self.events = Counter("netpol_events", "Object changes taken from the sources", ["kind", "type"],
                              registry=r)
        self.invalid_objects = Counter("netpol_invalid_objects", "Objects rejected as invalid", ["kind"],
                                       registry=r)
        self.invalid_now = Gauge("netpol_invalid_objects_current", "Objects invalid now (failing closed "
                                 "or skipped)", ["kind"], registry=r)
        self.apply_errors = Counter("netpol_apply_errors", "Rulesets the kernel refused", registry=r)
        self.repairs = Counter("netpol_repairs", "Drift repaired: our table changed from outside (restored), "
                               "or our routes (re-added)", ["what"], registry=r)
        self.route_errors = Counter("netpol_route_errors", "Route checks that could not run (ip missing or "
                                    "failing)", registry=r)
        self.last_sync = Gauge("netpol_last_successful_sync_timestamp_seconds",
                               "Unix time of the last successful sync", registry=r)
        self.ready = Gauge("netpol_ready", "1 when the last sync succeeded", registry=r)
        self.pods = Gauge("netpol_ruleset_pods", "Pods programmed on this node", registry=r)
        self.chains = Gauge("netpol_ruleset_chains", "Per-pod chains in the ruleset", registry=r)
        self.rules = Gauge("netpol_ruleset_rules", "Allow and tier rules in the per-pod chains", registry=r)
        self.sets = Gauge("netpol_ruleset_sets", "Named peer and port sets", registry=r)
        self.elements = Gauge("netpol_ruleset_set_elements", "Elements in the named sets", registry=r)

    def observe_sync(self, program: NodeProgram, mode: str, seconds: float) -> None:
        self.sync_duration.labels(mode).observe(seconds)
        self.syncs.labels(mode).inc()
        self.last_sync.set(time.time())
        self.ready.set(1)
        self.pods.set(len(program.pods))
        sides = [side for pod in program.pods for side in (pod.ingress, pod.egress) if side.enforced]
        self.chains.set(len(sides))
        self.rules.set(sum(len(side.allows) + len(side.admin) + len(side.baseline) for side in sides))
        self.sets.set(len(program.peer_sets) + len(program.port_sets))
        self.elements.set(sum(len(s.v4) + len(s.v6) for s in program.peer_sets)
                          + sum(len(s.elements) for s in program.port_sets))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
