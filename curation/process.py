"""`analyze_source`: one source file in, its manifest rows out. The entry point workflows/ maps.

Contract:

    analyze_source(source: str, path: Path, cfg: CurateConfig) -> list[dict]

- `source` is the input as the user named it (path or URL) and goes into the `source` column;
  `path` is a local file holding its bytes (workflows/ fetches remote inputs first).
- The file is probed, decoded once (`curation.analysis`), split into shots, every clip scored
  (`curation.scores`) and filtered (`curation.filters`). One row per detected clip, in order, kept
  or filtered, with every `schema.MANIFEST` column except `clip_path`, `thumb_path` and
  `created_at`, which the workflow sets when it extracts clips and writes the table.
- `clip_id` is `schema.clip_id_for(fingerprint, start_frame, end_frame)`: the content fingerprint,
  not the path, so a renamed source keeps its ids. `config_hash` is `rundir.config_hash(cfg)`.
- Frame positions and times come from presentation timestamps (`curation.decode.FrameClock`): a
  constant-rate source's frame is as many positions after the one before as frame durations passed
  between their timestamps, so after frames that did not decode the positions jump, and a clip never spans such a gap (each gap is in `source_gaps`); a
  variable-rate source's frames are numbered in order. `end_frame` is exclusive. Times are seconds
  from the first frame, each frame's own timestamp.
- A bad input raises `PermanentError` (quarantine it, never retry) naming the file and the problem.
  A missing text model raises `TextDetectorUnavailable` before any decoding: a setup problem that
  stops the run, not a property of the input.
- The text detector is loaded once per process and reused, so a worker calling this for many files
  pays its start-up once.
"""

from __future__ import annotations

import math
from pathlib import Path

from curation.analysis import analyze
from curation.config import CurateConfig
from curation.core import schema
from curation.core.rundir import config_hash
from curation.filters import apply_filters
from curation.probe import probe
from curation.scores import get_text_detector, score_clip
from curation.signals import AnalysisStats

M = schema.M


def analyze_source(source: str, path: Path, cfg: CurateConfig, on_clip=None) -> list[dict]:
    """Manifest rows of every clip detected in the video at `path` (see module doc).

    `on_clip(row, signals)`, if given, sees each clip's row with the signals it was scored from (a
    clip-free run keeps an analysis picture as its thumbnail: no second decode)."""
    text_detector = get_text_detector(cfg.analysis)
    info = probe(path, cfg.probe.timeout_s)
    chash = config_hash(cfg)
    rows = []
    stats = AnalysisStats()
    for index, clip in enumerate(analyze(path, info, cfg, stats)):
        row = clip_row(source, info, cfg, chash, index, clip, text_detector)
        if on_clip is not None:
            on_clip(row, clip)
        rows.append(row)
    gaps = [{M.start_frame: g.start, M.end_frame: g.end, M.start_time: g.start_time, M.end_time: g.end_time}
            for g in stats.gaps]
    for row in rows:  # known once the whole source has decoded
        row[M.variable_frame_rate] = info.variable_frame_rate
        row[M.source_frames_lost] = stats.frames_lost
        row[M.source_gaps] = gaps
    return rows


def clip_row(source: str, info, cfg: CurateConfig, chash: str, index: int, clip, text_detector) -> dict:
    """The manifest row of one clip: placed, scored and filtered (not the source-wide gap columns)."""
    shot = clip.shot
    row = {
        M.clip_id: schema.clip_id_for(info.fingerprint, shot.start, shot.end),
        M.source: source,
        M.source_fingerprint: info.fingerprint,
        M.clip_index: index,
        M.start_frame: shot.start,
        M.end_frame: shot.end,
        M.start_time: clip.start_time,
        M.end_time: clip.end_time,
        M.duration: round(clip.end_time - clip.start_time, 6),
        M.fps: info.fps,
        M.width: info.width,
        M.height: info.height,
        M.codec: info.codec,
        M.shot_detector: shot.closed_by,
        M.transition_in: shot.transition_in,
        M.aesthetic_score: None,
        M.aesthetic_model: None,
        M.config_hash: chash,
    }
    row.update(score_clip(clip, cfg.analysis, text_detector))
    for key, value in row.items():  # parquet float32 columns: no NaN from an empty measurement
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
    apply_filters(row, cfg.filters)
    return row
