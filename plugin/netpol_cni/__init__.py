"""netpol-cni: a minimal bridge CNI plugin (CNI 1.1.0, accepts 1.0.0 configs).

A container runtime execs it once per pod network operation, so it starts lean: it imports only
C-level pieces of the standard library (`_json`, `_socket`, `struct`, `os`, `binascii`), speaks
rtnetlink itself instead of running `ip`, and enters the pod's network namespace only long
enough to open a netlink socket there. It shares no code with `netpol` (the compiler and agent).

Modules, one job each:
    errors   CNI error codes and the one exception type (`CniError`)
    jsonio   JSON in and out through the C accelerator only (no `re`, no `json` package)
    config   stdin + environment → a validated `NetConf`/`Invocation` (pure)
    netlink  an rtnetlink client: links, veths, addresses, routes, bridge ports
    netns    a netlink socket inside another network namespace (setns, then straight back)
    ipam     delegating to the IPAM plugin named in `ipam.type` on CNI_PATH
    node     what the node needs: the bridge, forwarding and br_netfilter sysctls
    store    one record per attachment, claimed before the address is asked for (DEL, GC)
    commands ADD, DEL, CHECK, STATUS, GC, VERSION
    main     the executable: dispatch on CNI_COMMAND, errors as CNI error JSON on stdout
    install  writes the launcher for /opt/cni/bin (run as `python3 -IS`) and the package beside it
"""
