"""lumos_fx benchmarks on offline proxies of the paper's SciML workloads.

Run ``python -m benchmarks WORKLOAD|all [--quick] [--device cpu|cuda] [--budget F] [--out DIR]``;
see ``benchmarks/cli.py``. Never part of the library or its test suite.
"""
