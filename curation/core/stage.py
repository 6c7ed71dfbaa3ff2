"""The stage contract: what every step of a run is, whichever executor runs it.

A stage is plain Python: a class whose `__call__` takes a batch (a list of row dicts) and returns
the output rows. It declares what it needs as class attributes: `num_cpus`, `num_gpus` and
`batch_size` (rows per call), and whether it holds a model (`stateful`: the executor keeps one
long-lived worker per copy, so `setup` loads the model once). Stateless stages run as plain tasks.

Failures come in two kinds. A `PermanentError` means the input itself is bad (a corrupt file, a clip
a model cannot read): it is quarantined with its message and never retried. Anything else is
transient (a full disk, a lost worker): the row is not written, so the next run retries it.

Executors: `map_in_process` below runs a stage here, batch by batch (tests, and steps that must stay
in one process such as Milvus Lite's single writer); `workflows.executor.map_stage` runs any stage on
Ray Data with one progress display. Stages never import ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


class PermanentError(Exception):
    """The input cannot be processed, now or later: quarantine it with this message, don't retry.

    `stage` names where it failed in the quarantine table; None leaves it to the caller, which knows
    which step it was running. Subclasses set it for errors raised inside another stage's step."""

    stage: str | None = None


class Stage:
    """Base of every stage. Subclasses set the attributes and override `setup` and `__call__`."""

    name: str = "stage"
    num_cpus: float = 1
    num_gpus: float = 0
    batch_size: int = 16
    stateful: bool = True  # holds a model: one long-lived worker per copy (an actor), set up once
    copies_without_gpu: int | None = None  # copies when it gets no GPU (a VLM: 1); None: one per CPU

    def setup(self) -> None:
        """Load models; called once per worker before the first batch."""

    def __call__(self, batch: list[dict]) -> list[dict]:
        raise NotImplementedError


def batches(rows: list[dict], size: int) -> Iterator[list[dict]]:
    size = max(1, int(size))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# An executor runs a stage over rows and returns its output rows: `map_in_process` here, or one of
# workflows.executor's (Ray Data, with a progress display). Pipelines take one as their `mapper`.
Mapper = Callable[[Stage, list[dict], str], list[dict]]


def map_in_process(stage: Stage, rows: list[dict], label: str = "") -> list[dict]:
    """Run `stage` over `rows` in this process, `stage.batch_size` rows a call; returns all output rows."""
    out: list[dict] = []
    if not rows:
        return out
    stage.setup()
    for chunk in batches(rows, stage.batch_size):
        out.extend(stage(chunk))
    return out
