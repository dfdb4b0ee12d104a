"""The batch route of `netpol compile`: manifests → load → compile → render, chosen in one place.

Modules:
    phases    `compile_rulesets(request)`: picks the route (sharded or serial) and the renderer
              (`RENDERERS`: nftables script, nftables JSON, iptables bundle); `render_paths`
    sharded   every node's nftables script from processes sharded by namespace, forked after
              parsing, joined byte for byte as one process prints it

Control flow: `cli.run_compile` → `phases.compile_rulesets` → either `load.parse_paths` →
`sharded.render_documents`, or `load_state` → `compile.compiler` → a backend; the CLI writes
the files.
"""
