"""`rushes extract`: clip files, later, for a finished clip-free run (`extract.enabled: false`)."""

from __future__ import annotations

from pathlib import Path

import typer

from workflows.commands import examples


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def extract(
    out: Path = typer.Option(..., "--out", "-o", help="run directory written by `rushes curate`"),
    clip_ids: list[str] = typer.Option(None, "--clip-id", help="extract this kept clip (repeat for more); "
                                       "default: every kept clip without a clip file"),
) -> None:
    """Write h264 clip files (and thumbnails) for kept clips that have none, with the run's saved extract
    settings; the files are recorded in OUT/clip_files/ and every later stage reads them."""
    from curation.core.rundir import RunDir
    from curation.extract import extract_run, plan_extraction
    from workflows.progress import ProgressBar

    run = RunDir(out)
    if not run.manifest.exists():
        _fail(f"{out} is not a run directory (no manifest/); run `rushes curate ... --out {out}` first")
    try:
        todo, _ = plan_extraction(run, clip_ids or None)
        with ProgressBar("extracting clips", len(todo)) as bar:
            summary = extract_run(out, clip_ids or None, progress=lambda n: bar.advance(count=n))
    except ValueError as e:
        _fail(str(e))
    for failure in summary.failed:
        typer.echo(f"failed: {failure}", err=True)
    typer.echo(summary.line())
    if summary.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples("rushes extract --out OUT",
                                "rushes extract --out OUT --clip-id 3f2a9c0d1e4b5a6c7d8e --clip-id 0a1b2c3d4e5f60718293"))(extract)
