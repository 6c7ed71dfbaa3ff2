"""The curation workflow: inputs -> (analyze -> extract -> manifest part) per source, on Ray Data.

The work unit is one source. A worker analyses it (`curation.process.analyze_source`), extracts its
kept clips and thumbnails (`curation.extract.extract_source`) and writes the source's manifest part
atomically as `OUT/manifest/<source key>-<config hash>.parquet`. That file is the proof the source
is done: a re-run skips every source whose part exists for the same config, so a run killed at any
point (even `kill -9`) resumes where it stopped, and a finished run re-run does nothing.

Failures: a `PermanentError` (bad input) is written as a quarantine part under `OUT/_quarantine/`
(which also marks the source done) and folded into `OUT/quarantine.parquet` by the driver; any other
exception is transient: nothing is written, the run reports it and the next run retries the source.

The per-source function is plain Python (tests call it directly); only `run_pipeline` touches Ray.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from curation.config import CurateConfig
from curation.core import schema
from curation.core.rundir import (
    RunDir,
    atomic_write_bytes,
    atomic_write_table,
    config_hash,
    now_utc,
    rows_to_table,
)
from curation.core.stage import PermanentError
from curation.inputs import InputError, is_remote, local_path, resolve_inputs, source_key

M, Q = schema.M, schema.Q
PROCESSED, QUARANTINED, FAILED, DONE_EARLIER = "processed", "quarantined", "failed", "done earlier"
RESULT_KEYS = ("source", "status", "detected", "kept", "error", "node")


# ---------------------------------------------------------------------------------------------
# Where a source's results live


def manifest_part(run: RunDir, source: str, chash: str) -> Path:
    return run.manifest / f"{source_key(source)}-{chash}.parquet"


def quarantine_part(run: RunDir, source: str, chash: str) -> Path:
    """The whole source failed permanently (its presence marks the source done)."""
    return run.quarantine_parts / f"{source_key(source)}-{chash}.parquet"


def clip_quarantine_part(run: RunDir, source: str, chash: str) -> Path:
    """Clips of a processed source that could not be extracted (does not mark the source done)."""
    return run.quarantine_parts / f"{source_key(source)}-{chash}.clips.parquet"


def input_cache(run: RunDir) -> Path:
    return run.root / "_cache" / "inputs"


def is_done(run: RunDir, source: str, chash: str) -> bool:
    return manifest_part(run, source, chash).exists() or quarantine_part(run, source, chash).exists()


def _remove_stale_parts(run: RunDir, source: str, chash: str) -> None:
    """Parts of this source written under another config are replaced by the new ones."""
    key = source_key(source)
    for directory in (run.manifest, run.quarantine_parts):
        if directory.exists():
            for part in directory.glob(f"{key}-*.parquet"):
                if not part.name.startswith(f"{key}-{chash}."):
                    part.unlink(missing_ok=True)


def remove_temp_files(run: RunDir) -> int:
    """Delete the hidden temp files a killed run leaves (never trusted, only in the way); returns how many."""
    count = 0
    for directory in (run.clips, run.thumbs, run.manifest, run.quarantine_parts, input_cache(run),
                      run.root / "configs", run.root):
        if directory.exists():
            for tmp in directory.glob("**/.*.tmp") if directory != run.root else directory.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                count += 1
    return count


def save_config(run: RunDir, cfg: CurateConfig) -> Path:
    """The config behind a config hash, kept in OUT so the report (and a person) can read it later."""
    import yaml

    path = run.root / "configs" / f"curate-{config_hash(cfg)}.yaml"
    if not path.exists():
        atomic_write_bytes(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode())
    return path


# ---------------------------------------------------------------------------------------------
# One source: plain Python, run inside a Ray worker


MAX_ATTEMPTS = 3  # a source whose processing killed its worker this many times is quarantined


def hard_limit_s(cfg: CurateConfig) -> float:
    """Backstop per source: probe and analysis each stop themselves at probe.timeout_s (cooperatively);
    this catches a call that blocks inside FFmpeg, with room left for extraction."""
    return 4 * cfg.probe.timeout_s + 60


def attempts_dir(run: RunDir, source: str, chash: str) -> Path:
    return run.root / "_attempts" / f"{source_key(source)}-{chash}"


def process_source(source: str, out: str | Path, cfg: CurateConfig, chash: str,
                   time_limit_s: float | None = None) -> dict:
    """Analyse, extract and record one source; returns a summary (see RESULT_KEYS). Never raises.

    Each attempt leaves a marker file while it runs. A worker that dies mid-source (a decoder crash, a
    lost node, the `time_limit_s` watchdog) leaves its marker behind; after MAX_ATTEMPTS such deaths the
    source is quarantined instead of tried again, so one pathological file cannot stall a run forever.
    """
    import faulthandler
    import uuid

    run = RunDir(out)
    result = {"source": source, "status": PROCESSED, "detected": 0, "kept": 0, "error": None, "node": None}
    if is_done(run, source, chash):  # e.g. a retry of a task whose first attempt finished
        return {**result, "status": DONE_EARLIER}
    attempts = attempts_dir(run, source, chash)
    died = sorted(attempts.glob("attempt-*")) if attempts.exists() else []
    if len(died) >= MAX_ATTEMPTS:
        error = (f"processing this source stopped its worker {len(died)} times (a crash, or a hang past the "
                 f"{hard_limit_s(cfg):g} s limit); quarantined so the run can finish. Check the file; "
                 f"raise probe.timeout_s if it is just very long")
        _quarantine(run, source, chash, "worker", error)
        shutil.rmtree(attempts, ignore_errors=True)
        return {**result, "status": QUARANTINED, "error": f"worker: {error}"}
    marker = attempts / f"attempt-{uuid.uuid4().hex}"
    attempts.mkdir(parents=True, exist_ok=True)
    marker.touch()
    if time_limit_s:
        faulthandler.dump_traceback_later(time_limit_s, exit=True)  # the traceback goes to the worker's log
    try:
        outcome = _process(source, run, cfg, chash)
    finally:
        if time_limit_s:
            faulthandler.cancel_dump_traceback_later()
        marker.unlink(missing_ok=True)  # a normal return (or exception) is not a dead worker
    if outcome["status"] != FAILED:  # the source is done: earlier deaths no longer matter
        shutil.rmtree(attempts, ignore_errors=True)
    elif not any(attempts.iterdir()):
        attempts.rmdir()
    return {**result, **outcome}


def _quarantine(run: RunDir, source: str, chash: str, stage: str, error: str) -> None:
    row = {Q.source: source, Q.stage: stage, Q.error: error, Q.clip_id: None, Q.created_at: now_utc()}
    atomic_write_table(rows_to_table([row], schema.QUARANTINE), quarantine_part(run, source, chash))
    _remove_stale_parts(run, source, chash)


def _process(source: str, run: RunDir, cfg: CurateConfig, chash: str) -> dict:
    stage = "input"
    try:
        path = local_path(source, input_cache(run))
        stage = "analysis"
        from curation.process import analyze_source

        rows = analyze_source(source, path, cfg)
        stage = "extract"
        for row in rows:
            row[M.config_hash] = chash
            row[M.created_at] = now_utc()
        rows, clip_failures = _extract(path, rows, run, cfg)
    except PermanentError as e:
        stage = e.stage or stage
        _quarantine(run, source, chash, stage, str(e))
        return {"status": QUARANTINED, "error": f"{stage}: {e}"}
    except Exception as e:  # noqa: BLE001 - transient by contract: report it, write nothing, retry next run
        return {"status": FAILED, "error": f"{stage}: {type(e).__name__}: {e}"}
    if clip_failures:  # written before the manifest part: a kill in between is redone on resume
        atomic_write_table(rows_to_table(clip_failures, schema.QUARANTINE), clip_quarantine_part(run, source, chash))
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), manifest_part(run, source, chash))
    _remove_stale_parts(run, source, chash)
    kept = sum(1 for row in rows if row[M.status] == schema.STATUS_KEPT)
    return {"status": PROCESSED, "detected": len(rows), "kept": kept}


def _extract(path: Path, rows: list[dict], run: RunDir, cfg: CurateConfig) -> tuple[list[dict], list[dict]]:
    from curation.extract import extract_source

    return extract_source(path, rows, run, cfg.extract)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class CurateOutcome:
    sources: list[str]
    todo: int
    results: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] == FAILED]

    @property
    def completed(self) -> bool:
        return not self.failed


def fold_quarantine(run: RunDir) -> int:
    """Rebuild OUT/quarantine.parquet from the workers' parts; returns its row count."""
    from curation.core.rundir import read_table

    table = read_table(run.quarantine_parts, schema.QUARANTINE)
    if table.num_rows or run.quarantine.exists():
        old = pq.read_table(run.quarantine) if run.quarantine.exists() else None
        if old is None or not old.equals(table):
            atomic_write_table(table, run.quarantine)
    return table.num_rows


def run_pipeline(todo: list[str], run: RunDir, cfg: CurateConfig, chash: str, workers: int | None,
                 on_result) -> None:
    """Map `process_source` over `todo` with Ray Data; `on_result(summary)` as each source finishes."""
    import ray

    from workflows.raysession import total_cpus

    workers = min(workers or total_cpus(), len(todo))
    ds = ray.data.from_items([{"source": s} for s in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(
        _process_batch,
        batch_size=1,
        fn_kwargs={"out": str(run.root), "cfg": cfg, "chash": chash},
        num_cpus=1,
        compute=ray.data.TaskPoolStrategy(size=workers),
    )
    for row in ds.iter_rows():
        on_result({key: row[key] for key in RESULT_KEYS})


def _process_batch(batch: dict, out: str, cfg: CurateConfig, chash: str) -> dict:
    import os

    _detach_stdin()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)  # one Ray CPU per source: no thread pools fighting over the cores
    import ray

    node = ray.get_runtime_context().get_node_id()  # where it ran: shown with failures, read by tests
    limit = hard_limit_s(cfg)
    results = [{**process_source(str(source), out, cfg, chash, limit), "node": node} for source in batch["source"]]
    return {key: [r[key] for r in results] for key in RESULT_KEYS}


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


def curate(out: Path | str, inputs: list[str], cfg: CurateConfig, address: str | None = None,
           workers: int | None = None, console=None, on_result=None) -> CurateOutcome:
    """Curate `inputs` into the run directory `out`; prints progress, the funnel, and writes the report.

    `on_result(summary)`, if given, is called in the driver as each source finishes (see RESULT_KEYS).
    """
    from rich.console import Console

    from workflows import report

    console = console or Console()
    run = RunDir(Path(out))
    started = time.monotonic()
    if not inputs:
        raise InputError("no inputs given: name video files, directories, glob patterns, list files or URLs")
    sources = _not_our_outputs(resolve_inputs(inputs), run, console)
    _check_models(cfg)
    chash = config_hash(cfg)
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(run, cfg)
    removed = remove_temp_files(run)
    if removed:
        console.print(f"curate: removed {removed} half-written temp files left by an interrupted run")
    todo = [s for s in sources if not is_done(run, s, chash)]
    outcome = CurateOutcome(sources=sources, todo=len(todo))
    if not todo:
        console.print(f"curate: nothing to do - all {len(sources)} inputs are already curated in {run.root} "
                      f"with this config ({chash})", soft_wrap=True)
    else:
        if len(todo) < len(sources):
            console.print(f"curate: resuming - {len(sources) - len(todo)} of {len(sources)} inputs were done "
                          f"by an earlier run, {len(todo)} to go")
        _run_with_progress(todo, run, cfg, chash, address, workers, outcome, console, on_result)
    fold_quarantine(run)
    try:
        (run.root / "_attempts").rmdir()  # only when empty: no source has a dead worker behind it
    except OSError:
        pass
    outcome.seconds = time.monotonic() - started
    funnel = report.funnel(run)
    report.print_funnel(funnel, console)
    for failure in outcome.failed:
        console.print(f"[red]failed (will be retried by the next run):[/red] {failure['source']}: {failure['error']} "
                      f"(on Ray node {str(failure['node'])[:12]})", soft_wrap=True)
    if outcome.todo or not run.report.exists():
        report.write_report(run, cfg)
    done = sum(1 for r in outcome.results if r["status"] in (PROCESSED, QUARANTINED, DONE_EARLIER))
    summary = (f"curate: {done}/{outcome.todo} sources this run, {funnel.kept} of {funnel.detected} clips kept "
               f"in total, {funnel.quarantined} inputs quarantined, {len(outcome.failed)} failed; "
               f"{outcome.seconds:.1f} s; report: {run.report}")
    console.print(summary, soft_wrap=True)
    return outcome


def _not_our_outputs(sources: list[str], run: RunDir, console) -> list[str]:
    """Drop the run's own clips (an input directory that contains OUT would feed them back in)."""
    ours = [d.resolve() for d in (run.clips, run.thumbs, input_cache(run))]
    kept = [s for s in sources if is_remote(s) or not any(Path(s).resolve().is_relative_to(d) for d in ours)]
    if len(kept) < len(sources):
        console.print(f"curate: left out {len(sources) - len(kept)} inputs that are this run's own clips")
    if not kept:
        raise InputError(f"every input is one of this run's own clips (under {run.root}); name the footage")
    return kept


def _check_models(cfg: CurateConfig) -> None:
    """A model the config needs but this machine lacks stops the run here, before any work."""
    from curation.core.config import ConfigError
    from curation.scores import TextDetectorUnavailable, get_text_detector

    try:
        get_text_detector(cfg.analysis)
    except TextDetectorUnavailable as e:
        raise ConfigError(str(e)) from None


def _run_with_progress(todo, run, cfg, chash, address, workers, outcome, console, observer) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from workflows.raysession import ray_session

    counts = {"kept": 0, "quarantined": 0, "failed": 0}
    columns = [TextColumn("curating"), BarColumn(), MofNCompleteColumn(), TextColumn("sources"),
               TimeElapsedColumn(), TextColumn("{task.fields[note]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("curate", total=len(todo), note="starting Ray")
        with ray_session(address, num_cpus=workers):
            progress.update(task, note="")

            def on_result(result: dict) -> None:
                outcome.results.append(result)
                counts["kept"] += int(result["kept"])
                counts["quarantined"] += result["status"] == QUARANTINED
                counts["failed"] += result["status"] == FAILED
                note = f"{counts['kept']} clips kept, {counts['quarantined']} quarantined"
                if counts["failed"]:
                    note += f", {counts['failed']} failed"
                progress.update(task, advance=1, note=note)
                if observer is not None:
                    observer(result)

            run_pipeline(todo, run, cfg, chash, workers, on_result)


# ---------------------------------------------------------------------------------------------
# `rushes run` steps


def run_step(wf, section: CurateConfig) -> None:
    """The `curate:` section of a workflow YAML (see workflows/workflow.py)."""
    outcome = curate(wf.out, wf.inputs, section, address=wf.ray.address, workers=wf.ray.workers)
    if not outcome.completed:
        raise TransientFailures(outcome.failed)


class TransientFailures(RuntimeError):
    """Some sources failed for a reason that may pass (a lost worker, a full disk): run again."""

    def __init__(self, failed: list[dict]):
        super().__init__(f"{len(failed)} sources failed and were not recorded; run the same command again "
                         f"to retry them (first: {failed[0]['source']}: {failed[0]['error']})")
        self.failed = failed


def generate_footage(cfg) -> list[Path]:
    """Write `cfg.reels` procedural reels (and their truth as JSON) to `cfg.out_dir`; existing ones are kept.

    Reel i is `reel_<seed+i>.mp4`, rendered from `workflows.synthetic.footage.random_segments` with that seed, so
    the same settings always give the same files and a re-run writes nothing.
    """
    import json
    import os
    import uuid

    from workflows.synthetic import footage

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(cfg.reels):
        seed = cfg.seed + i
        path = out_dir / f"reel_{seed:04d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        segments = footage.random_segments(seed, round(cfg.seconds * cfg.fps), fps=cfg.fps)
        tmp = out_dir / f".{path.stem}.{uuid.uuid4().hex}.mp4"  # hidden: input resolution skips it
        truth = footage.write_footage(tmp, segments, cfg.width, cfg.height, cfg.fps, seed=seed)
        atomic_write_bytes(path.with_suffix(".truth.json"), json.dumps(truth.to_dict(), indent=1).encode())
        os.replace(tmp, path)
    return paths


def run_generate_step(wf, section) -> None:
    """The `generate:` section of a workflow YAML: footage for the steps after it."""
    from rich.console import Console

    started = time.monotonic()
    paths = generate_footage(section)
    Console().print(f"generate: {len(paths)} reels of {section.seconds:g} s in {section.out_dir} "
                               f"({time.monotonic() - started:.1f} s)")
