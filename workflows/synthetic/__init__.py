"""Synthetic data the demo, the tests and the benchmarks make: procedural footage with known truth
(`footage`) and tiny random-weight models built from real configs (`tiny_models`).

Kept off the production floor: no stage imports this package; only `rushes generate-footage`, the
demo workflow, tests and benchmarks do.
"""
