"""Benchmarks: ``python -m latentgen.bench <name> [--json]``.

Each benchmark times our procedure against a reference procedure in the same
process on the same data, so the ratio is meaningful on any machine.
"""
