"""One source through the whole of curation: analyse, extract, record. The stage the workflow maps.

`CurateSource` is a stateless stage over batches of `{"source": ...}` rows. For each source a worker
analyses it (`curation.process.analyze_source`), extracts its kept clips and thumbnails
(`curation.extract.extract_source`; with `extract.enabled: false` only thumbnails, from analysis
pictures: a clip-free run, whose kept clips later stages read from the source through
`curation.core.clips`) and writes the source's manifest part atomically as
`OUT/manifest/<source key>-<config hash>.parquet`. That file is the proof the source is done: a
re-run skips every source whose part exists for the same config, so a run killed at any point (even
`kill -9`) resumes where it stopped, and a finished run re-run does nothing.

Failures: a `PermanentError` (bad input) is written as a quarantine part under `OUT/_quarantine/`
(which also marks the source done) and folded into `OUT/quarantine.parquet` by the driver; any other
exception is transient: nothing is written, the run reports it and the next run retries the source.
"""

from __future__ import annotations

import faulthandler
import shutil
import uuid
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
    read_table,
    remove_stale_temps,
    rows_to_table,
)
from curation.core.stage import PermanentError, Stage
from curation.inputs import local_path, source_key

M, Q = schema.M, schema.Q
PROCESSED, QUARANTINED, FAILED, DONE_EARLIER = "processed", "quarantined", "failed", "done earlier"
RESULT_KEYS = ("source", "status", "detected", "kept", "error", "node")
MAX_ATTEMPTS = 3  # a source whose processing killed its worker this many times is quarantined


class CurateSource(Stage):
    """Curate whole sources: one `{"source"}` row in, one summary row (RESULT_KEYS) out. Never raises."""

    name = "curate"
    num_cpus = 1
    batch_size = 1
    stateful = False  # the text detector is cached per process; nothing else is held

    def __init__(self, out: Path | str, cfg: CurateConfig, time_limit_s: float | None = None):
        self.out, self.cfg, self.chash = str(out), cfg, config_hash(cfg)
        self.time_limit_s = time_limit_s

    def setup(self) -> None:
        import os

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import cv2

        cv2.setNumThreads(1)  # one CPU per source: no thread pools fighting over the cores

    def __call__(self, batch: list[dict]) -> list[dict]:
        # a row naming a unit is one time range of a long source (`curation.units`), not the whole of it
        return [run_unit(row["source"], row["unit"], row["units"], self.out, self.cfg, self.chash, self.time_limit_s)
                if "unit" in row else process_source(row["source"], self.out, self.cfg, self.chash, self.time_limit_s)
                for row in batch]


# ---------------------------------------------------------------------------------------------
# Which sources are done


def is_done(run: RunDir, source: str, chash: str) -> bool:
    key = source_key(source)
    return run.manifest_part(key, chash).exists() or run.quarantine_part(key, chash).exists()


def recorded_sources(run: RunDir) -> dict[str, str]:
    """{content fingerprint: source} of the sources the run's manifest holds clips of (any config)."""
    found: dict[str, str] = {}
    parts = sorted(p for p in run.manifest.glob("*.parquet") if not p.name.startswith(".")) \
        if run.manifest.exists() else []
    for part in parts:
        try:
            table = pq.read_table(part, columns=[M.source, M.source_fingerprint])
        except Exception:  # noqa: BLE001 - an unreadable part hides nothing worth stopping for
            continue
        for source, print_ in zip(table[M.source].to_pylist(), table[M.source_fingerprint].to_pylist(), strict=True):
            if print_ and source:
                found.setdefault(print_, source)
    return found


def hard_limit_s(cfg: CurateConfig) -> float:
    """Backstop per source: probe and analysis each stop themselves at probe.timeout_s (cooperatively);
    this catches a call that blocks inside FFmpeg, with room left for extraction."""
    return 4 * cfg.probe.timeout_s + 60


# ---------------------------------------------------------------------------------------------
# One source


def process_source(source: str, out: str | Path, cfg: CurateConfig, chash: str,
                   time_limit_s: float | None = None) -> dict:
    """Analyse, extract and record one source; returns a summary (see RESULT_KEYS). Never raises.

    Each attempt leaves a marker file while it runs. A worker that dies mid-source (a decoder crash, a
    lost node, the `time_limit_s` watchdog) leaves its marker behind; after MAX_ATTEMPTS such deaths the
    source is quarantined instead of tried again, so one pathological file cannot stall a run forever.
    """
    run = RunDir(out)
    result = {"source": source, "status": PROCESSED, "detected": 0, "kept": 0, "error": None, "node": None}
    if is_done(run, source, chash):  # e.g. a retry of a task whose first attempt finished
        return {**result, "status": DONE_EARLIER}
    attempts = run.attempts(source_key(source), chash)
    marker, quarantined = _start_attempt(run, source, chash, cfg, "attempt-")
    if quarantined:
        return {**result, **quarantined}
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


def _process(source: str, run: RunDir, cfg: CurateConfig, chash: str) -> dict:
    from curation.extract import cheap_thumbnails, extract_source, middle_picture, write_thumbnails
    from curation.process import analyze_source

    key = source_key(source)
    stage = "input"
    try:
        path = local_path(source, run.input_cache)
        before = _file_state(path)
        stage = "analysis"
        pictures: dict = {}  # clip-free: thumbnails from analysis pictures, the source decoded once

        def keep_picture(row, signals):
            pictures[row[M.clip_id]] = middle_picture(signals)

        rows = analyze_source(source, path, cfg, keep_picture if cheap_thumbnails(cfg) else None)
        _check_unchanged(source, path, before)  # before extraction writes anything
        stage = "extract"
        for row in rows:
            row[M.config_hash] = chash
            row[M.created_at] = now_utc()
        existing = _written_files(run, rows)
        if cheap_thumbnails(cfg):
            rows, clip_failures = write_thumbnails(rows, pictures, run, cfg.extract), []
        else:
            rows, clip_failures = extract_source(path, rows, run, cfg.extract)
        try:
            _check_unchanged(source, path, before)
        except InputChanging:  # what extraction wrote for this half-read source goes with it
            for written in _written_files(run, rows) - existing:
                written.unlink(missing_ok=True)
            raise
    except PermanentError as e:
        stage = e.stage or stage
        _quarantine(run, source, chash, stage, str(e))
        return {"status": QUARANTINED, "error": f"{stage}: {e}"}
    except Exception as e:  # noqa: BLE001 - transient by contract: report it, write nothing, retry next run
        return {"status": FAILED, "error": f"{stage}: {type(e).__name__}: {e}"}
    if clip_failures:  # written before the manifest part: a kill in between is redone on resume
        atomic_write_table(rows_to_table(clip_failures, schema.QUARANTINE), run.clip_quarantine_part(key, chash))
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest_part(key, chash))
    _remove_stale_parts(run, source, chash)
    kept = sum(1 for row in rows if row[M.status] == schema.STATUS_KEPT)
    return {"status": PROCESSED, "detected": len(rows), "kept": kept}


def _start_attempt(run: RunDir, source: str, chash: str, cfg: CurateConfig, prefix: str):
    """(marker of this attempt, None), or (None, a quarantined outcome) when attempts named `prefix`
    have already killed their worker MAX_ATTEMPTS times (their markers were left behind)."""
    attempts = run.attempts(source_key(source), chash)
    died = sorted(attempts.glob(f"{prefix}*")) if attempts.exists() else []
    if len(died) >= MAX_ATTEMPTS:
        error = (f"processing this source stopped its worker {len(died)} times (a crash, or a hang past the "
                 f"{hard_limit_s(cfg):g} s limit); quarantined so the run can finish. Check the file; "
                 f"raise probe.timeout_s if it is just very long")
        _quarantine(run, source, chash, "worker", error)
        shutil.rmtree(attempts, ignore_errors=True)
        return None, {"status": QUARANTINED, "error": f"worker: {error}"}
    marker = attempts / f"{prefix}{uuid.uuid4().hex}"
    attempts.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return marker, None


def run_unit(source: str, k: int, units: int, out, cfg: CurateConfig, chash: str,
             time_limit_s: float | None = None) -> dict:
    """Work unit k of a long source (`curation.units.process_unit`): a summary row (RESULT_KEYS plus
    "unit"), never raises. A bad input (PermanentError) quarantines the whole source, as one worker would."""
    from curation.units import process_unit, unit_part

    run = RunDir(out)
    result = {"source": source, "unit": k, "status": PROCESSED, "detected": 0, "kept": 0, "error": None,
              "node": None}
    if is_done(run, source, chash) or unit_part(run, source, chash, k).exists():
        return {**result, "status": DONE_EARLIER}
    # a unit whose worker dies (a decoder crash, the watchdog) leaves its marker, as a whole source does
    prefix = f"unit{k}-attempt-"
    marker, quarantined = _start_attempt(run, source, chash, cfg, prefix)
    if quarantined:
        return {**result, **quarantined}
    if time_limit_s:
        faulthandler.dump_traceback_later(time_limit_s, exit=True)
    try:
        process_unit(source, k, units, out, cfg, chash)
    except PermanentError as e:
        stage = e.stage or "analysis"
        _quarantine(run, source, chash, stage, str(e))
        return {**result, "status": QUARANTINED, "error": f"{stage}: {e}"}
    except Exception as e:  # noqa: BLE001 - transient: nothing recorded for this unit, the next run redoes it
        return {**result, "status": FAILED, "error": f"analysis: {type(e).__name__}: {e}"}
    finally:
        if time_limit_s:
            faulthandler.cancel_dump_traceback_later()
        marker.unlink(missing_ok=True)  # a normal return (or exception) is not a dead worker
    for died in marker.parent.glob(f"{prefix}*"):  # the unit is done: earlier deaths no longer matter
        died.unlink(missing_ok=True)
    return result  # the folder goes with the stitch (record_split): other units may be using it now


def record_split(run: RunDir, source: str, chash: str, rows: list[dict], failures: list[dict]) -> dict:
    """A split source's stitched rows (`curation.units.finish_split`) as its manifest part; its summary."""
    key = source_key(source)
    if failures:
        atomic_write_table(rows_to_table(failures, schema.QUARANTINE), run.clip_quarantine_part(key, chash))
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest_part(key, chash))
    _remove_stale_parts(run, source, chash)
    shutil.rmtree(run.attempts(key, chash), ignore_errors=True)  # every unit is done
    kept = sum(1 for row in rows if row[M.status] == schema.STATUS_KEPT)
    return {"source": source, "status": PROCESSED, "detected": len(rows), "kept": kept, "error": None, "node": None}


class InputChanging(RuntimeError):
    """The input changed under the worker: transient, the next run curates the finished file."""


def _check_unchanged(source: str, path: Path, before: tuple[int, int]) -> None:
    if _file_state(path) != before:
        raise InputChanging(f"{source} changed while it was curated (size or modification time): still "
                            "being written? Nothing was recorded; the next run curates it")


def _written_files(run: RunDir, rows: list[dict]) -> set[Path]:
    """The clip files and thumbnails of `rows` that exist now (by clip id, as extraction names them)."""
    paths = set()
    for row in rows:
        for path in (run.clips / f"{row[M.clip_id]}.mp4", run.thumbs / f"{row[M.clip_id]}.jpg"):
            if path.exists():
                paths.add(path)
    return paths


def _file_state(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _quarantine(run: RunDir, source: str, chash: str, stage: str, error: str) -> None:
    row = {Q.source: source, Q.stage: stage, Q.error: error, Q.clip_id: None, Q.created_at: now_utc()}
    atomic_write_table(rows_to_table([row], schema.QUARANTINE), run.quarantine_part(source_key(source), chash))
    _remove_stale_parts(run, source, chash)


def _remove_stale_parts(run: RunDir, source: str, chash: str) -> None:
    """Parts of this source written under another config are replaced by the new ones (all of
    them when `chash` is empty)."""
    key = source_key(source)
    for directory in (run.manifest, run.quarantine_parts):
        if directory.exists():
            for part in directory.glob(f"{key}-*.parquet"):
                if not part.name.startswith(f"{key}-{chash}."):
                    part.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The run directory before and after


def remove_temp_files(run: RunDir) -> int:
    """Delete the hidden temp files killed runs left (never trusted, only in the way); returns how many.
    A live writer's (another run at work in the same directory) is kept: `remove_stale_temps`."""
    folders = [run.root]
    for base in (run.clips, run.thumbs, run.manifest, run.quarantine_parts, run.input_cache, run.configs,
                 run.root / "_units"):  # _units: work units' parts (`curation.units`)
        if base.exists():
            folders += [base, *(p for p in base.rglob("*") if p.is_dir())]
    return sum(remove_stale_temps(folder) for folder in folders)


def save_config(run: RunDir, cfg: CurateConfig) -> Path:
    """The config behind a config hash, kept in OUT so the report (and a person) can read it later."""
    import yaml

    path = run.configs / f"curate-{config_hash(cfg)}.yaml"
    if not path.exists():
        atomic_write_bytes(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode())
    return path


def record_inputs(run: RunDir, skipped: list, copies: dict[str, str]) -> int:
    """Write the inputs this run skipped (`inputs.Skipped`: stage "input") and the copies it curates
    once (`{copy: original}`: stage "duplicate") as one quarantine part, replacing the last run's.
    Nothing here marks a source done: a link fixed or a permission granted is curated by the next run."""
    rows = [{Q.source: s.path, Q.stage: "input", Q.error: s.reason, Q.clip_id: None, Q.created_at: now_utc()}
            for s in skipped]
    unverified = getattr(copies, "unverified", set())
    rows += [{Q.source: copy, Q.stage: schema.STAGE_DUPLICATE, Q.clip_id: None, Q.created_at: now_utc(),
              Q.error: (f"same content fingerprint as {original}, curated into this OUT by an earlier run; that "
                        "file can no longer be read, so the bytes were not compared (fingerprint only): not "
                        "curated again, so clip ids stay unique" if copy in unverified else
                        f"byte-identical to {original}: curated once, under that input")}
             for copy, original in copies.items()]
    if rows:
        atomic_write_table(rows_to_table(rows, schema.QUARANTINE), run.inputs_part)
    else:
        run.inputs_part.unlink(missing_ok=True)
    for copy in copies:  # parts a copy got under another config would list its clips a second time
        _remove_stale_parts(run, copy, chash="")
    return len(rows)


def fold_quarantine(run: RunDir) -> int:
    """Rebuild OUT/quarantine.parquet from the workers' parts; returns its row count."""
    table = read_table(run.quarantine_parts, schema.QUARANTINE)
    if table.num_rows or run.quarantine.exists():
        old = pq.read_table(run.quarantine) if run.quarantine.exists() else None
        if old is None or not old.equals(table):
            atomic_write_table(table, run.quarantine)
    return table.num_rows


def remove_attempts_dir(run: RunDir) -> None:
    try:
        (run.root / "_attempts").rmdir()  # only when empty: no source has a dead worker behind it
    except OSError:
        pass
