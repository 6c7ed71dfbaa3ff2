"""Model conventions every package follows: device choice, CPU threads, "untrained" markers, not-found errors.

A model that cannot be found fails at start-up with `ModelNotFound`, naming the setting to change.
Placeholder models with random weights (built for tests and the demo) carry "untrained" in the name
recorded beside everything they make, so their output never passes for a real model's. torch is
imported inside the functions: this module is cheap to import.
"""

from __future__ import annotations

import os

UNTRAINED = "untrained"  # in a model's recorded name: its weights are random placeholders
UNTRAINED_MARKER = "rushes_untrained.json"  # file in a model directory built with random weights
UNTRAINED_TAG = f" [{UNTRAINED} random weights]"  # appended to the provenance of a model with the marker


class ModelNotFound(ValueError):
    """The model (or device) a setting names cannot be had; the message says which setting to change."""


def is_untrained(model_name: str | None) -> bool:
    """True when a recorded model name says its weights are random placeholders."""
    return bool(model_name) and UNTRAINED in model_name


def pick_device(device: str = "auto", setting: str = "device") -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; an explicit "cuda" without a GPU is an error."""
    import torch

    if device in ("auto", None):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFound(f"{setting} {device!r} was asked for but torch sees no GPU; set {setting} to 'auto' or 'cpu'")
    return device


def cap_torch_threads(default: int) -> int:
    """Keep torch's CPU threads to OMP_NUM_THREADS (else `default`), never more than it would use anyway.

    Workers share the machine: a Ray worker per core each running torch's full thread pool would
    oversubscribe it many times over. Returns the thread count set."""
    import torch

    threads = max(1, min(torch.get_num_threads(), int(os.environ.get("OMP_NUM_THREADS", default))))
    torch.set_num_threads(threads)
    return threads
