"""Benchmarks (not tests): `python -m bench.run [--quick]` writes docs/benchmarks.md."""
