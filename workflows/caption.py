"""The caption stage on Ray Data: kept clips mapped through a pool of captioning actors.

Each actor builds one `recaption.run.CaptionWorker` (the model loads once per actor, with
`num_gpus` when the cluster has GPUs), reads its clips' frames itself and writes one atomic part of
OUT/captions/ per batch, so a killed run keeps every finished batch and the next run resumes. Only
clip rows (no frames) travel through Ray's object store.
"""

from __future__ import annotations

from pathlib import Path

from recaption.config import CaptionConfig


class CaptionActor:
    """Ray Data's callable class: one CaptionWorker per actor, set up once."""

    def __init__(self, out: str, config: dict):
        from recaption.run import CaptionWorker

        self.worker = CaptionWorker(out, CaptionConfig.model_validate(config))
        self.worker.setup()

    def __call__(self, batch):
        from curation.core.schema import CAP

        rows = self.worker(batch.to_pylist())
        return {"clip_id": [r[CAP.clip_id] for r in rows], "ok": [r[CAP.error] is None for r in rows]}


def worker_layout(config: CaptionConfig, cluster_gpus: float) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per `gpus_per_worker` GPUs when there are GPUs, else CPU actors."""
    if cluster_gpus > 0 and config.captioner != "metadata" and config.gpus_per_worker > 0:
        fit = max(1, int(cluster_gpus // config.gpus_per_worker))
        return min(config.workers or fit, fit), config.gpus_per_worker
    return config.workers or 1, 0.0


def run_caption(out: Path | str, config: CaptionConfig, ray_address: str | None = None, progress: bool = True):
    """Caption the run at `out` with Ray; returns a recaption.run.CaptionSummary."""
    import pyarrow as pa

    from curation.core.schema import MANIFEST
    from recaption.run import ProgressBar, plan_captions
    from workflows.raysession import ray_session

    # planned on the driver: a missing model fails here, before Ray starts; the actors load the model
    _, todo, summary = plan_captions(out, config)
    if not todo:
        return summary

    with ray_session(ray_address):
        import ray

        actors, gpus = worker_layout(config, ray.cluster_resources().get("GPU", 0))
        rows = pa.Table.from_pylist(todo, schema=MANIFEST)
        results = ray.data.from_arrow(rows).map_batches(
            CaptionActor,
            fn_constructor_kwargs={"out": str(Path(out).resolve()), "config": config.model_dump(mode="json")},
            batch_size=config.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpus, num_cpus=1,
        )
        with ProgressBar(progress, len(todo)) as advance:
            for batch in results.iter_batches(batch_format="pyarrow", batch_size=None):
                ok = batch.column("ok").to_pylist()
                summary.captioned += sum(ok)
                summary.failed += len(ok) - sum(ok)
                advance(len(ok))
    return summary


def run_step(wf, section: CaptionConfig) -> None:
    """`rushes run`: the caption section of a workflow."""
    import typer

    summary = run_caption(wf.out, section, ray_address=wf.ray.address)
    typer.echo(summary.line())
