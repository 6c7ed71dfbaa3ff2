"""The dedup and index steps on Ray: embedding models in an actor pool, Milvus written from the driver.

Each actor builds its stage (and loads its model) once and then embeds batch after batch; with GPUs
in the cluster each actor takes one. Everything else (the embeddings table, aesthetic scores, the
Milvus collection, duplicate marking) happens in this process: Milvus Lite allows one writer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import typer

from curation.core.stage import Stage


def ray_mapper(workers: int | None = None) -> Callable:
    """A `indexing.embed.Mapper` that runs a stage over rows with a Ray Data actor pool."""

    def mapper(make_stage: Callable[[], Stage], rows: list[dict], batch_size: int, label: str) -> list[dict]:
        if not rows:
            return []
        import pandas as pd
        import ray
        from rich.progress import Progress

        from workflows.raysession import total_cpus

        gpus = int(ray.cluster_resources().get("GPU", 0))
        probe = make_stage()
        pool = workers or (gpus if gpus else max(1, total_cpus() // max(1, int(probe.num_cpus))))
        pool = max(1, min(pool, math.ceil(len(rows) / batch_size)))

        class StageActor:
            def __init__(self):
                self.stage = make_stage()
                self.stage.setup()

            def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
                out = self.stage(batch.to_dict("records"))
                return pd.DataFrame({
                    "clip_id": [r["clip_id"] for r in out],
                    "vector": [None if r["vector"] is None else [float(x) for x in r["vector"]] for r in out],
                    "error": [r.get("error") for r in out],
                })

        ds = ray.data.from_items(rows).map_batches(
            StageActor, batch_size=batch_size, batch_format="pandas", concurrency=pool,
            num_cpus=probe.num_cpus, num_gpus=1 if gpus else 0,
        )
        results: list[dict] = []
        with Progress(transient=True) as progress:
            task = progress.add_task(f"{label} ({pool} worker{'s' if pool > 1 else ''})", total=len(rows))
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                records = batch.to_dict("records")
                results.extend(records)
                progress.advance(task, len(records))
        return results

    return mapper


def run_index_step(wf, section) -> None:
    """Workflow step `index`: embed, score and upsert the run into Milvus."""
    from indexing.pipeline import index_run
    from workflows.raysession import ray_session

    with ray_session(wf.ray.address, wf.ray.workers):
        summary = index_run(wf.out, section, mapper=ray_mapper(wf.ray.workers))
    typer.echo(summary.line())


def run_dedup_step(wf, section) -> None:
    """Workflow step `dedup` (before captioning): mark near-duplicate clips filtered."""
    from indexing.pipeline import dedup_run
    from workflows.raysession import ray_session

    index_section = getattr(wf, "index", None)
    with ray_session(wf.ray.address, wf.ray.workers):
        summary = dedup_run(wf.out, section, text_cfg=index_section.text if index_section else None,
                            mapper=ray_mapper(wf.ray.workers))
    typer.echo(summary.line())
