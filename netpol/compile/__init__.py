"""Stage 3, compile: the cluster's objects → each node's program (the IR), from scratch or kept
current by watch events.

Purpose: work out which pods every policy selects and which peers every rule admits (a
networkx graph with label indexes), and express each node's pods' ingress and egress decisions
over named, shared sets — the only thing the backends read.

Modules:
    resolver        the graph: namespaces, pods, policies, rules and shared peer nodes; label
                    indexes; after an event, which pods, rules and nodes it touched
    ir              the IR types (NodeProgram, PodProgram, Allow, PeerSet, PortSet …): the
                    contract between this stage and the backends
    compiler        IR from the resolver: ProgramCompiler (pod programs and their sets, cached
                    per rule and spelling), `assemble` (the one NodeProgram assembler),
                    NodeCompiler / compile_cluster / compile_node
    incremental     IncrementalCompiler: programs kept equal to a compile from scratch after
                    every event, reporting which nodes changed and whether in elements only
    identity_cache  caches keyed by IR objects' identity, held weakly

Control flow: batch — `compile_cluster(state)` → `Resolver.from_state` → per node
`ProgramCompiler.pod_program` for its pods → `assemble`. Agent — `IncrementalCompiler.apply(event,
obj)` → `Resolver.apply` (what changed) → `ProgramCompiler.refresh_members`/`forget_policy` →
recompile the touched pods → `assemble` the nodes whose structure or sets changed → `Update`.
"""
