"""The lab: the cluster built for real in Linux network namespaces, and the commands that use it
(`netpol verify`, `netpol demo`). Root only; everything it creates is removed afterwards, also
on errors, Ctrl-C and SIGTERM.

Modules:
    cluster   plan (pure: subnets, routes, names) and open a lab: fabric, node namespaces with
              bridge cni0 and br_netfilter, pod namespaces; teardown by PID and namespace
    traffic   the server and prober run inside pod namespaces (standard library only, by path)
    verify    compile, load each node's ruleset, probe every cell, compare with the semantics
    demo      three live nodes: pods attached by netpol-cni, the in-process API server, one
              agent per node, scenarios probed after each change (with an image: a rolling
              update of one agent, probed throughout)
    nodes     what runs netpol on the demo's nodes: this checkout's processes, or the image
              (TLS API server enforcing the bundle's ClusterRole, DaemonSet pods, installed CNI)
    daemonset the lab's kubelet: the rendered DaemonSet's containers as podman runs, hostPaths
              mapped into per-node roots
    podman    the machine's podman flags (one place) and `podman run` arguments of a container
    cni_runtime  the container runtime's side of CNI (as libcni): the node's installed conflist
              and plugins, state directories moved under the node's root
    spoof     the demo's spoofing sender (raw-socket TCP SYNs, any source) and counting sniffer
              (standard library only, by path)

Control flow: `verify(state)` → `cluster.plan_lab` → `open_lab` (with `interrupts` deferring
signals while a step's undo is registered) → load rulesets (`dataplane`) → servers and probers
(`traffic`) → `compare` with `semantics.reference` → report; teardown in `finally`.
`run_demo` → `live_cluster` (`open_lab`, then `nodes`: `checkout_nodes`, or `image_nodes` →
`daemonset` pods run by `podman`, pods attached through `cni_runtime`) → scenarios, each
waited for in the agents' logs and probed (`verify`) → teardown: containers, processes,
namespaces, files.
"""
