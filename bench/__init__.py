"""Benchmarks of the sidecar against the references a user would pick instead
(`make bench`, `python -m bench`; docs/benchmarks.md)."""
