"""Stage 4, backends: a node's program (the IR) → ruleset text. Pure functions, no I/O; a backend
never sees the Kubernetes model, and no backend imports another (they share through `common`).

Modules:
    nftables      IR → one `table inet netpol`: `render` (a whole-table transaction), `render_json`
                  (the same as libnftables JSON), `render_update` (old → new program as one
                  transaction of element, chain and set changes)
    nft_document  the nftables table as a small object model, printed as script and as JSON
    iptables      IR → ipset + iptables-restore + ip6tables-restore payloads
    common        what both share: the leak-window guard's set names, address texts

Control flow: `nftables.render(program)` → `build_table` (sets, dispatch maps, per-pod chains,
the forward hook) → `nft_document.script`; `iptables.render(program)` → an `IptablesBundle`.
A new backend is one module here, one line in `netpol.pipeline.phases.RENDERERS`, one test module.
"""
