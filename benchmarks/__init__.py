"""Benchmarks of tabfm against gradient-boosted trees (run from the repository root)."""
