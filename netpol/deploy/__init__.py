"""Getting netpol onto a cluster: the container image, the manifests (DaemonSet, RBAC), the
node-side install of netpol-cni and its conflist (the DaemonSet's init container), and the
node-side uninstall. Everything here runs at install time, never on the policy path.

Modules:
    image        the container image (`make image`), from Debian packages
    rbac         the ClusterRole's rules: what the agent reads, nothing more
    manifests    `netpol manifests`: Namespace, RBAC, DaemonSet (pure: options → objects → YAML);
                 netpol.yaml beside it is the default rendering
    cni_install  `netpol install-cni`: netpol-cni, host-local and the node's conflist into the
                 host's CNI directories (the init container)
    cleanup      `netpol cleanup --node`: our tables, chains, sets, routes and CNI files, only

Control flow: `netpol manifests` renders the bundle; the kubelet runs the DaemonSet's init
container (`install-cni`: reads its Node through `netpol.sources.kube`'s client, runs
`netpol_cni.install` as a process) and then the agent; `cleanup` removes through
`netpol.dataplane` what the agent and the plugin left in the kernel, and the files install-cni
recorded."""
