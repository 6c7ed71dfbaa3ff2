"""The one executor: any stage over a list of rows, on Ray Data or in this process, with one progress bar.

    results = map_stage(stage, rows, "visual embeddings", use_ray=True, workers=4)

A stage (`curation.core.stage.Stage`) is plain Python; this is the only place that knows Ray.
- A stateless stage runs as Ray tasks; a stage that holds a model (`stateful`) runs in an actor pool,
  so each actor calls `setup` once and then takes batch after batch.
- Resources come from the stage: `num_cpus` per worker, `num_gpus` when the cluster has GPUs (none
  otherwise: the stage then runs on the CPU), `batch_size` rows per call. The pool is `workers`,
  else as many as the cluster's GPUs (or CPUs) allow, never more than there are batches.
- Rows travel pickled: a row may hold anything (timestamps, vectors, None), and Ray Data never has
  to agree on a column type across batches. Only rows travel, never frames: stages read their
  inputs from the run directory.
- A stage returns one output row per input row. An output row holding `"node": None` gets the id of
  the Ray node that made it (shown beside failures).
- `on_output(row)` is called in this process for each output row as it arrives; the string it
  returns, if any, is shown beside the progress bar (e.g. "12 clips kept, 1 quarantined").
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

from curation.core.stage import Stage, batches
from workflows.progress import ProgressBar


def map_stage(stage: Stage, rows: list[dict], label: str, *, use_ray: bool = True, address: str | None = None,
              workers: int | None = None, on_output: Callable[[dict], str | None] | None = None,
              progress: bool = True, console=None, transient: bool = True) -> list[dict]:
    """Run `stage` over `rows` and return its output rows (see the module doc)."""
    if not rows:
        return []
    results: list[dict] = []
    with ProgressBar(label, len(rows), progress, console, note="starting Ray" if use_ray else "",
                     transient=transient) as bar:
        def take(row: dict) -> None:
            results.append(row)
            bar.advance(on_output(row) if on_output else None)

        if use_ray:
            from workflows.raysession import ray_session

            with ray_session(address, workers):
                for row in _map_on_ray(stage, rows, workers, bar.note):
                    take(row)
        else:
            stage.setup()
            for chunk in batches(rows, stage.batch_size):
                for row in stage(chunk):
                    take(row)
    return results


def local_executor(stage: Stage, rows: list[dict], label: str) -> list[dict]:
    """`map_stage` in this process: what a pipeline takes as its `mapper` when Ray is not wanted."""
    return map_stage(stage, rows, label, use_ray=False)


def ray_executor(address: str | None = None, workers: int | None = None) -> Callable[[Stage, list[dict], str], list[dict]]:
    """`map_stage` on Ray, with these settings, as a pipeline's `mapper`."""

    def run(stage: Stage, rows: list[dict], label: str) -> list[dict]:
        return map_stage(stage, rows, label, use_ray=True, address=address, workers=workers)

    return run


# ---------------------------------------------------------------------------------------------
# Ray Data


def pool_size(stage: Stage, rows: int, workers: int | None, cluster_cpus: float, cluster_gpus: float) -> int:
    """How many workers: `workers`, else what the cluster's GPUs (or CPUs) hold, never more than batches."""
    gets_gpus = bool(cluster_gpus and stage.num_gpus)
    if workers:
        size = workers
    elif gets_gpus:
        size = int(cluster_gpus // stage.num_gpus)
    elif stage.copies_without_gpu:  # e.g. a VLM on CPUs: one copy, not one per core
        size = stage.copies_without_gpu
    else:
        size = int(cluster_cpus // max(stage.num_cpus, 1e-9))
    if gets_gpus:  # a GPU worker more than the GPUs would wait forever
        size = min(size, int(cluster_gpus // stage.num_gpus))
    return max(1, min(size, math.ceil(rows / max(1, stage.batch_size))))


def _map_on_ray(stage: Stage, rows: list[dict], workers: int | None, note: Callable[[str], None]):
    import ray

    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    size = pool_size(stage, len(rows), workers, float(resources.get("CPU", 1)), gpus)
    note(f"{size} worker{'s' if size > 1 else ''}")
    ds = ray.data.from_items([{"row": pickle.dumps(r)} for r in rows],
                             override_num_blocks=min(len(rows), max(size, math.ceil(len(rows) / stage.batch_size))))
    common = {"batch_size": stage.batch_size, "batch_format": "pyarrow", "num_cpus": stage.num_cpus,
              "num_gpus": stage.num_gpus if gpus else 0}
    if stage.stateful:
        ds = ds.map_batches(_StageActor, fn_constructor_kwargs={"stage": stage},
                            compute=ray.data.ActorPoolStrategy(size=size), **common)
    else:
        ds = ds.map_batches(_run_task, fn_kwargs={"stage": stage}, compute=ray.data.TaskPoolStrategy(size=size),
                            **common)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        for blob in batch.column("row").to_pylist():
            yield pickle.loads(blob)


def _run_batch(stage: Stage, batch) -> dict:
    import ray

    node = ray.get_runtime_context().get_node_id()
    out = stage([pickle.loads(blob) for blob in batch.column("row").to_pylist()])
    for row in out:
        if "node" in row and row["node"] is None:
            row["node"] = node
    return {"row": [pickle.dumps(r) for r in out]}


def _run_task(batch, stage: Stage) -> dict:
    _detach_stdin()
    stage.setup()  # a stateless stage's setup is cheap, or caches what it loads in its process
    return _run_batch(stage, batch)


class _StageActor:
    """One long-lived copy of a stage with a model: set up once, then batch after batch."""

    def __init__(self, stage: Stage):
        _detach_stdin()
        self.stage = stage
        self.stage.setup()

    def __call__(self, batch) -> dict:
        return _run_batch(self.stage, batch)


def _detach_stdin() -> None:
    """Give this worker /dev/null as standard input.

    A local Ray's workers inherit the user's terminal as stdin but run outside its foreground process
    group; a child that touches the terminal (PySceneDetect runs `ffmpeg -v quiet` to look for ffmpeg,
    and ffmpeg sets up the terminal) is then stopped by SIGTTOU and the run hangs.
    """
    import os

    if os.isatty(0):
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
