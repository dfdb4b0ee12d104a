"""Audit tools on the reference semantics (the audit side, not a compile stage): what a change
opens or closes, what in the policies is dead, redundant or risky, and whether the cluster still
meets what its owners expect — for people reading a pull request and for CI gates.

Modules:
    changes       two clusters → the objects added, removed or edited, with the field paths that
                  differ (compared as netpol understood them: `netpol.load.encode`)
    diff          two clusters (before, after a change) → every cell whose verdict changes,
                  grouped as `reach -o groups`, with the object changes that caused it and the
                  reasons on both sides
    diff_formats  a Diff as text, JSON or markdown (a pull-request comment)
    lint          findings with a stable id, severity, object and field path (`CHECKS`)
    selection     which pods a policy, a peer or a cluster-policy subject selects, as bitsets with
                  label and namespace indexes (the lint checks' questions, answered fast)
    redundancy    which NetworkPolicies and rules can be removed without changing any verdict
                  (computed with the reach map and the reference evaluator, not guessed)
    locate        where an object or a field of it was written (file and line), for findings
    sarif         findings as SARIF 2.1.0 (code scanning shows them inline)
    expect        a file of expected connectivity, checked against the map, each violation with
                  counterexample cells and `explain`'s reason

It sits above `netpol.semantics` (whose evaluator and maps it uses) and below the command line;
nothing on the compiler side imports it.

Control flow: `netpol diff` → `diff.diff_states(old, new, probes)`: `compute_reach` on both
sides → joint classes → changed cells grouped → `changes.object_changes` attributes each group →
the reason for one cell per group on both sides → `diff_formats.render_text|json|markdown`.
`netpol lint` → `lint.lint(state)`: each check of `CHECKS` (asking `selection`, and
`redundancy` for the computed ones) → findings → `locate` adds file and line → text, JSON or
SARIF (`sarif.render_sarif`). `netpol check` / `reach --expect` → `expect.parse_expectations` →
`expect.check_expectations(state, expectations)` on the map → outcomes with counterexamples and
reasons. A gate that fails (`--fail-on`, a violated expectation) exits 4 (`cli.EXIT_GATE`).
"""
