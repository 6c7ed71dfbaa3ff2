"""The caption step on Ray Data: `recaption.run.CaptionWorker` mapped by the one executor.

The worker is a stage with a model: an actor pool keeps one per worker (the model loads once, with
`gpus_per_worker` GPUs when the cluster has them); each reads its clips' frames itself and writes one
atomic part of OUT/captions/ per batch, so a killed run keeps every finished batch and the next run
resumes. Only clip rows (no frames) travel through Ray's object store.
"""

from __future__ import annotations

from pathlib import Path

from recaption.config import CaptionConfig


def run_caption(out: Path | str, config: CaptionConfig, ray_address: str | None = None, progress: bool = True):
    """Caption the run at `out` on Ray; returns a recaption.run.CaptionSummary.

    Planned on the driver (`caption_run`), so a missing model fails before Ray starts."""
    from recaption.run import caption_run
    from workflows.executor import map_stage

    def on_ray(stage, rows, label):
        return map_stage(stage, rows, label, use_ray=True, address=ray_address, progress=progress,
                         workers=config.workers)

    # workers on other nodes write parts themselves: they need the run directory's absolute path
    return caption_run(Path(out).resolve(), config, mapper=on_ray)


def report_left_out(left_out: list[str], shown: int = 20) -> None:
    """The rows of an imported caption file that match no kept clip, each with its reason."""
    import typer

    for line in left_out[:shown]:
        typer.echo(f"left out: {line}", err=True)
    if len(left_out) > shown:
        typer.echo(f"left out: ... and {len(left_out) - shown} more rows", err=True)


def run_step(wf, section: CaptionConfig) -> None:
    """`rushes run`: the caption section of a workflow."""
    import typer

    from recaption.imported import CaptionFileError
    from recaption.models import ModelNotFound

    try:
        summary = run_caption(wf.out, section, ray_address=wf.ray.address)
    except (ModelNotFound, FileNotFoundError, CaptionFileError) as e:  # found while planning, before Ray starts
        typer.echo(f"error: caption: {e}", err=True)
        raise typer.Exit(2) from None
    report_left_out(summary.left_out)
    typer.echo(summary.line())
