"""The curation workflow: resolve the inputs, map `curation.pipeline.CurateSource` over them, report.

All per-source work (analysis, extraction, the manifest and quarantine parts, resume) lives in
`curation.pipeline`; this module only composes it: which sources are still to do, the one executor
(`workflows.executor.map_stage`, Ray tasks, one CPU per source), the funnel and the report.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from curation.config import CurateConfig
from curation.core.config import ConfigError
from curation.core.rundir import RunDir, config_hash
from curation.inputs import InputError, find_duplicates, find_inputs, is_remote, source_key
from curation.pipeline import (
    DONE_EARLIER,
    FAILED,
    PROCESSED,
    QUARANTINED,
    CurateSource,
    fold_quarantine,
    hard_limit_s,
    is_done,
    record_inputs,
    record_split,
    recorded_sources,
    remove_attempts_dir,
    remove_temp_files,
    save_config,
)
from recaption.sidecar import record_input_captions


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


def curate(out: Path | str, inputs: list[str], cfg: CurateConfig, address: str | None = None,
           workers: int | None = None, console=None, on_result=None, use_ray: bool = True) -> CurateOutcome:
    """Curate `inputs` into the run directory `out`; prints progress, the funnel, and writes the report.

    `on_result(summary)`, if given, is called in the driver as each source finishes
    (see `curation.pipeline.RESULT_KEYS`). Unreadable inputs (loops, dangling links, no permission)
    and byte-identical copies are recorded (`record_inputs`), not curated; `use_ray=False` curates
    in this process.
    """
    from rich.console import Console

    from workflows import report

    console = console or Console()
    run = RunDir(Path(out))
    started = time.monotonic()
    if not inputs:
        raise InputError("no inputs given: name video files, directories, glob patterns, list files or URLs")
    found = find_inputs(inputs)
    if not found.sources and not found.skipped:
        raise InputError("the inputs name no video files")
    sources = _not_our_outputs(found.sources, run, console) if found.sources else []
    _check_models(cfg)
    chash = config_hash(cfg)
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(run, cfg)
    removed = remove_temp_files(run)
    if removed:
        console.print(f"curate: removed {removed} half-written temp files left by an interrupted run")
    copies = find_duplicates(sources, lambda s: is_done(run, s, chash), recorded_sources(run))
    record_inputs(run, found.skipped, copies)
    record_input_captions(run, found.captions)
    for skip in found.skipped:
        console.print(f"[yellow]skipped:[/yellow] {skip.reason}", soft_wrap=True)
    if copies:
        console.print(f"curate: {len(copies)} inputs are byte-identical copies of others; each is curated once")
    sources = [s for s in sources if s not in copies]
    todo = [s for s in sources if not is_done(run, s, chash)]
    outcome = CurateOutcome(sources=sources, todo=len(todo))
    if not todo:
        console.print(f"curate: nothing to do - all {len(sources)} inputs are already curated in {run.root} "
                      f"with this config ({chash})", soft_wrap=True)
    else:
        if len(todo) < len(sources):
            console.print(f"curate: resuming - {len(sources) - len(todo)} of {len(sources)} inputs were done "
                          f"by an earlier run, {len(todo)} to go")
        _map_sources(todo, run, cfg, address, workers, outcome, console, on_result, use_ray)
    fold_quarantine(run)
    remove_attempts_dir(run)
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


def _map_sources(todo, run: RunDir, cfg: CurateConfig, address, workers, outcome: CurateOutcome, console,
                 observer, use_ray: bool = True) -> None:
    from workflows.executor import map_stage

    counts = {"kept": 0, "quarantined": 0, "failed": 0}

    def on_result(result: dict) -> str:
        outcome.results.append(result)
        counts["kept"] += int(result["kept"])
        counts["quarantined"] += result["status"] == QUARANTINED
        counts["failed"] += result["status"] == FAILED
        if observer is not None:
            observer(result)
        note = f"{counts['kept']} clips kept, {counts['quarantined']} quarantined"
        return note + (f", {counts['failed']} failed" if counts["failed"] else "")

    # the watchdog ends the process it runs in: a worker's, never this driver's
    stage = CurateSource(run.root, cfg, time_limit_s=hard_limit_s(cfg) if use_ray else None)
    units: dict[str, list[dict]] = {}  # a long source's unit summaries, folded into one when all are in

    def on_row(result: dict) -> str | None:
        if "unit" not in result:
            return on_result(result)
        units.setdefault(result["source"], []).append(result)
        return None

    from contextlib import nullcontext

    from workflows.raysession import ray_session

    with ray_session(address, workers) if use_ray else nullcontext():  # one Ray for both rounds
        from curation.units import unit_part

        chash = config_hash(cfg)
        split = _split_sources(todo, run, cfg)
        rows = [{"source": s, "unit": k, "units": n} for s, n in split.items() for k in range(n)
                if not unit_part(run, s, chash, k).exists()]  # a killed run's finished units stay done
        rows += [{"source": s} for s in todo if s not in split]
        map_stage(stage, rows, "curating sources", use_ray=use_ray, address=address,
                  workers=workers, on_output=on_row, console=console, transient=False)
        whole = []  # long sources that could not be split exactly: one worker each, as before
        for source, n in split.items():
            summary = _finish_split(run, source, cfg, n, units.get(source, []))
            if summary is None:
                whole.append(source)
            else:
                on_result(summary)
        if whole:
            console.print(f"curate: {len(whole)} long sources could not be split exactly; curating each whole")
            map_stage(stage, [{"source": s} for s in whole], "curating whole", use_ray=use_ray, address=address,
                      workers=workers, on_output=on_result, console=console, transient=False)


def _split_sources(todo: list[str], run: RunDir, cfg: CurateConfig) -> dict[str, int]:
    """{source: units} of the local sources long enough to be shared out in time ranges (`curation.units`)."""
    from curation.units import unit_count

    split = {}
    for source in todo:
        if not is_remote(source):
            n = unit_count(source, cfg)
            if n > 1:
                split[source] = n
    return split


def _finish_split(run: RunDir, source: str, cfg: CurateConfig, n: int, results: list[dict]) -> dict | None:
    """One summary for a split source from its units' (None: curate it whole)."""
    from curation.units import discard_split, finish_split, remove_unit_parts

    chash = config_hash(cfg)
    bad = [r for r in results if r["status"] in (QUARANTINED, FAILED)]
    if any(r["status"] == QUARANTINED for r in bad) or run.quarantine_part(source_key(source), chash).exists():
        discard_split(run, source, chash, n)
        error = next((r["error"] for r in bad if r["status"] == QUARANTINED), None)
        return {"source": source, "status": QUARANTINED, "detected": 0, "kept": 0, "error": error, "node": None}
    if bad:  # the parts written stay: the next run redoes only the units that failed
        return {"source": source, "status": FAILED, "detected": 0, "kept": 0, "error": bad[0]["error"],
                "node": bad[0]["node"]}
    stitched = finish_split(run, source, cfg, chash, n)
    if "whole" in stitched:
        return None
    if "error" in stitched:
        return {"source": source, "status": FAILED, "detected": 0, "kept": 0, "error": stitched["error"], "node": None}
    summary = record_split(run, source, chash, stitched["rows"], stitched["failures"])
    remove_unit_parts(run, source)  # after the manifest part: a kill in between redoes nothing
    return summary


def _not_our_outputs(sources: list[str], run: RunDir, console) -> list[str]:
    """Drop the run's own clips (an input directory that contains OUT would feed them back in)."""
    ours = [Path(os.path.realpath(d)) for d in (run.clips, run.thumbs, run.input_cache)]
    # realpath, not resolve(): a link that became a loop since it was found must not raise here
    kept = [s for s in sources if is_remote(s) or not any(Path(os.path.realpath(s)).is_relative_to(d) for d in ours)]
    if len(kept) < len(sources):
        console.print(f"curate: left out {len(sources) - len(kept)} inputs that are this run's own clips")
    if not kept:
        raise InputError(f"every input is one of this run's own clips (under {run.root}); name the footage")
    return kept


def _check_models(cfg: CurateConfig) -> None:
    """A model the config needs but this machine lacks stops the run here, before any work."""
    from curation.scores import TextDetectorUnavailable, get_text_detector

    try:
        get_text_detector(cfg.analysis)
    except TextDetectorUnavailable as e:
        raise ConfigError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# `rushes run` step


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
