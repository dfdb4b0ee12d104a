"""Stage 6, agent: `netpol agent`, the long-running process that keeps one node's ruleset equal to
what the cluster's objects say.

Modules:
    runner    wires it together: a source, the loop, the Applier, the drift watch, the HTTP
              endpoints; signals; Health (a dead thread: /healthz 503, exit 70); exit codes
    loop      Agent: the sync loop (intake → coalesce → render → apply), readiness, drift
              repair, routes, GC
    intake    source events → decoded objects (invalid ones counted; policies, cluster
              policies, namespaces and conflicting copies fail closed) → the node's
              IncrementalCompiler
    stand_ins what an invalid object leaves in force: the deny-all stand-ins intake compiles
              in its place
    coalesce  when to sync: min / max interval, backoff after a failed apply (SyncTiming)
    http      /healthz, /readyz, /metrics
    metrics   the Prometheus metrics
    logs      one JSON object per log line

Control flow: `run_agent(options)` checks the node (`ip`, libnftables, the namespace), starts a
source whose threads `submit` events to the Agent's queue and the nftables TableWatch; the loop
thread drains the queue into `Intake.take`, notes each change of the node's program in the
`Coalescer`, and when a sync is due renders (`render` or `render_update`) and applies it,
keeping the program it applied for the next diff; at every turn it also takes what others
changed in its table (restoring the program it applied) and checks its routes when due. Every
thread runs under `run_reporting_death`: one that dies stops the agent (exit 70).
"""
