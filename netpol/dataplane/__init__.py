"""Stage 5, dataplane: the only code that writes to the kernel — rulesets, routes — always into
one named network namespace or the one the process runs in, atomically, keeping the last good
ruleset when the kernel refuses a new one.

Modules:
    nft       Applier: libnftables (check pass, then one transaction); ApplyError with nft's
              message and the offending line of our input
    iptables  apply_iptables: ipset restore, iptables-restore, ip6tables-restore, the FORWARD hook,
              stale chains and sets of ours removed
    routes    RouteKeeper: host-gw routes to other nodes' podCIDRs, tagged so only ours change
    netns     enter_netns: setns(2) for one thread
    nft_monitor  TableWatch: the kernel's nftables notifications, for changes others make to our
              table (drift), told apart from our own commits by the committing thread

Control flow: the agent (or `netpol verify`'s lab) renders text with a backend and calls
`Applier(netns).apply(text)` — dry run, commit, remember — or `apply_iptables(bundle, netns)`.
The agent also starts `TableWatch(netns, {applier.committer_id()})` and restores its table when
`take()` reports a change it did not make.
"""
