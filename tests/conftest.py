"""Shared test settings: nothing reaches the internet, and tests stay polite on a 2-core machine."""

import os

# No test downloads anything: model hubs are switched off for every library that would try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Keep BLAS/torch from oversubscribing the CI machine's two cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
