"""The lab: the cluster built for real in Linux network namespaces, and the commands that use it
(`netpol verify`, `netpol demo`). Root only; everything it creates is removed afterwards, also
on errors, Ctrl-C and SIGTERM.

Modules:
    cluster   plan (pure: subnets, routes, names) and open a lab: fabric, node namespaces with
              bridge cni0 and br_netfilter, pod namespaces; teardown by PID and namespace
    traffic   the server and prober run inside pod namespaces (standard library only, by path)
    verify    compile, load each node's ruleset, probe every cell, compare with the semantics
    demo      three live nodes: pods attached by netpol-cni, the in-process API server, one
              agent process per node, scenarios probed after each change
    spoof     the demo's spoofing sender (raw-socket TCP SYNs, any source) and counting sniffer
              (standard library only, by path)

Control flow: `verify(state)` → `cluster.plan_lab` → `open_lab` (with `interrupts` deferring
signals while a step's undo is registered) → load rulesets (`dataplane`) → servers and probers
(`traffic`) → `compare` with `semantics.reference` → report; teardown in `finally`.
"""
