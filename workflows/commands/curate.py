"""`rushes curate`, `rushes run`, `rushes report` and `rushes generate-footage`."""

from __future__ import annotations

from pathlib import Path

import typer

from workflows.commands import examples


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def curate(
    inputs: list[str] = typer.Argument(..., metavar="INPUT", help="video files, directories, glob patterns, "
                                       "list files (.txt, one input per line) or URLs (file://, s3://, http(s)://)"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (created if missing; re-use it to resume)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="curation settings (YAML); defaults otherwise"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="join this Ray cluster (else RAY_ADDRESS, "
                                           "else a local Ray on this machine's cores)"),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="sources processed at once "
                                       "(default: every CPU Ray has)"),
) -> None:
    """Split footage into shot clips, score and filter them, extract the kept ones, and write the report."""
    from curation.config import CurateConfig
    from curation.core.config import ConfigError, load_yaml
    from curation.inputs import InputError
    from workflows.curate import curate as run_curate

    try:
        cfg = load_yaml(config, CurateConfig) if config else CurateConfig()
        outcome = run_curate(out, inputs, cfg, address=ray_address, workers=workers)
    except (ConfigError, InputError) as e:
        _fail(str(e))
    except ConnectionError as e:
        _fail(str(e), 1)
    if not outcome.completed:
        _fail(f"{len(outcome.failed)} sources failed and were not recorded; run the same command again to retry them",
              1)


def run(config: Path = typer.Argument(..., help="workflow YAML: out, inputs, ray, and a section per stage")) -> None:
    """Run a whole workflow described in one YAML file (e.g. workflows/configs/demo.yaml)."""
    from curation.core.config import ConfigError, load_yaml
    from curation.inputs import InputError
    from workflows.curate import TransientFailures
    from workflows.workflow import WorkflowConfig, run_workflow

    try:
        wf = load_yaml(config, WorkflowConfig)
        run_workflow(wf)
    except (ConfigError, InputError) as e:
        _fail(str(e))
    except (TransientFailures, ConnectionError) as e:
        _fail(str(e), 1)


def report(out: Path = typer.Argument(..., help="run directory")) -> None:
    """Re-render OUT/report.html from the tables in OUT and print the funnel."""
    from rich.console import Console

    from curation.core.rundir import RunDir
    from workflows import report as report_module

    run_dir = RunDir(out)
    if not run_dir.manifest.exists() and not run_dir.quarantine.exists():
        _fail(f"{out} is not a run directory (no manifest/ or quarantine.parquet); run `rushes curate` first")
    report_module.print_funnel(report_module.funnel(run_dir), Console())
    kind = report_module.run_kind_line(run_dir)
    if kind:
        typer.echo(kind)
    typer.echo(f"wrote {report_module.write_report(run_dir)}")


def generate_footage(
    out_dir: Path = typer.Argument(..., help="directory for the generated reels (mp4) and their truth (json)"),
    reels: int = typer.Option(3, min=1, help="how many reels"),
    seconds: float = typer.Option(20.0, min=1, help="length of each reel"),
    seed: int = typer.Option(0, help="same seed, same footage"),
) -> None:
    """Write procedural test footage (moving shapes, cuts, camera moves, text, black shots) with its truth."""
    from curation.core.config import ConfigError, validate
    from workflows.generate import generate_footage as generate
    from workflows.workflow import GenerateConfig

    try:
        cfg = validate({"out_dir": str(out_dir), "reels": reels, "seconds": seconds, "seed": seed}, GenerateConfig)
    except ConfigError as e:
        _fail(str(e))
    for path in generate(cfg):
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command(epilog=examples('rushes curate footage/ --out OUT', 'rushes curate inputs.txt --out OUT --config curate.yaml --workers 4'))(curate)
    app.command(epilog=examples('rushes run workflows/configs/demo.yaml'))(run)
    app.command(epilog=examples('rushes report demo-out'))(report)
    app.command("generate-footage", epilog=examples('rushes generate-footage footage/ --reels 3 --seconds 20'))(generate_footage)
