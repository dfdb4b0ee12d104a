"""Audit tools built on the reference semantics: what a change opens or closes, what in the
policies is dead, redundant or risky, and whether the cluster still meets what its owners expect
— for people reading a pull request and for CI gates.

Modules:
    diff     two clusters (before, after a change) → every cell whose verdict changes, grouped,
             with the object changes that caused it and the reasons on both sides
    lint     findings with a stable id, severity, object and field path
    locate   where an object or a field of it was written (file and line), for findings
    sarif    findings as SARIF 2.1.0 (code scanning shows them inline)
    expect   a file of expected connectivity, checked against the semantics

It sits above `netpol.semantics` (whose evaluator and maps it uses) and below the command line.
"""
