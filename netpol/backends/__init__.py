"""Backends: pure functions from a node's IR program to a ruleset (text). No I/O."""
