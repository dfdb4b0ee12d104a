"""Stage 6, agent: `netpol agent`, the long-running process that keeps one node's ruleset equal to
what the cluster's objects say.

Modules:
    runner    wires it together: a source, the loop, the Applier, the HTTP endpoints; signals
    loop      Agent: the sync loop (intake → coalesce → render → apply), readiness, routes, GC
    intake    source events → decoded objects (invalid ones counted; policies fail closed) →
              the node's IncrementalCompiler
    coalesce  when to sync: min / max interval, backoff after a failed apply (SyncTiming)
    http      /healthz, /readyz, /metrics
    metrics   the Prometheus metrics
    logs      one JSON object per log line

Control flow: `run_agent(options)` starts a source whose threads `submit` events to the Agent's
queue; the loop thread drains the queue into `Intake.take`, notes each change of the node's
program in the `Coalescer`, and when a sync is due renders (`render` or `render_update`) and
applies it, keeping the program it applied for the next diff.
"""
