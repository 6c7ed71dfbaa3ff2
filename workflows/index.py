"""The dedup and index steps of `rushes run`: embedding stages on Ray, Milvus written from the driver.

The embedding and scoring stages run through the one executor (`workflows.executor`), an actor pool
per stage that loads its model once per worker (one GPU each when the cluster has GPUs). Everything
else (the embeddings table, scores and decisions, the Milvus collection) happens in this process:
Milvus Lite allows one writer.
"""

from __future__ import annotations

import typer


def run_index_step(wf, section) -> None:
    """Workflow step `index`: embed, score and upsert the run into Milvus."""
    from indexing.pipeline import index_run
    from workflows.executor import ray_executor
    from workflows.raysession import ray_session

    with ray_session(wf.ray.address, wf.ray.workers):
        summary = index_run(wf.out, section, mapper=ray_executor(wf.ray.address, wf.ray.workers))
    typer.echo(summary.line())


def run_dedup_step(wf, section) -> None:
    """Workflow step `dedup` (before captioning): filter near-duplicate clips."""
    from indexing.pipeline import dedup_run
    from workflows.executor import ray_executor
    from workflows.raysession import ray_session

    index_section = getattr(wf, "index", None)
    with ray_session(wf.ray.address, wf.ray.workers):
        summary = dedup_run(wf.out, section, text_cfg=index_section.text if index_section else None,
                            mapper=ray_executor(wf.ray.address, wf.ray.workers))
    typer.echo(summary.line())
