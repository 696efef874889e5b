"""Benchmarks of the service against baselines, run with `python -m bench`.

Never part of the test suite: timings live here, with their method and the
machine they ran on, and are published in docs/benchmarks.md.
"""
