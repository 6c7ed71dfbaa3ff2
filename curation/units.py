"""Work units: a long source split into time ranges that workers share, stitched into exactly the
clips a one-worker run finds.

Why a plain split is not exact: cuts depend on history (PySceneDetect's previous frame, the last cut
for the minimum shot length, the adaptive detector's rolling window, the open shot's samples thinned
as it grows), and so do frame positions (`FrameClock` counts steps from the frame before). So:

- positions: one pass over the packets' timestamps (demux, no decode) numbers every frame by
  FrameClock's own rule. A source splits only where that is certain: a constant rate, every step
  one frame, no gap at the start, not an AVI (its index rewrites timestamps), scene mode
  (`shots.mode: stride` stays whole), and every packet decoding (a unit that meets a decode error
  gives the source back to one worker: `NotSplittable`);
- unit k covers positions [bounds[k], bounds[k+1]). Its worker seeks to the key frame at least
  `units.warmup_seconds` before that, runs the normal analysis (`curation.analysis.feed_frame`)
  from there, and records after every shot close at or past its start an *event*: the frame it was
  fed, the cut, and a digest of the whole analysis state (the tracker's open shot, pending cuts,
  sample and picture strides, every detector's attributes). Unit k-1 runs past its end until
  `CONFIRM` such events;
- `stitch`: the first event of unit k-1 (cut at or past bounds[k]) that unit k recorded with the
  same digest is a moment both were in the same state, fed the same frames since: from there unit
  k's clips are the one-worker run's. Unit k-1 gives its clips up to that event, unit k the rest.
  No such event (a shot longer than the overlap, states that never agree) returns None: the source
  is curated whole, by one worker, as before. Correctness first.

Each unit writes its rows (scored, filtered, its kept clips extracted) as one part,
`OUT/_units/<source key>-<config hash>/<k>.json`, so a `kill -9` redoes only the units in flight;
the driver writes the source's manifest part from the stitched parts (`finish_split`), which stays
the one proof that a source is done.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from curation.config import CurateConfig
from curation.core import schema
from curation.core.rundir import RunDir, atomic_write_bytes, now_utc

M = schema.M
CONFIRM = 3  # events a unit records past its end, for the next unit to agree with one of them


class NotSplittable(Exception):
    """This source cannot be split exactly (found while planning or decoding a unit): curate it whole."""


# ---------------------------------------------------------------------------------------------
# Planning


def unit_count(path: Path | str, cfg: CurateConfig) -> int:
    """How many work units a source gets: 1 unless units are on, the run extracts clips, the mode is
    scenes and the stream lasts at least two units (from the container header: no decoding)."""
    u = cfg.units
    if not u.enabled or cfg.shots.mode != "scenes" or not cfg.extract.enabled:
        return 1
    import av

    try:
        with av.open(str(path)) as container:
            if container.format.name == "avi" or not container.streams.video:
                return 1
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / 1e6
    except (OSError, av.error.FFmpegError):
        return 1  # the worker finds out what is wrong with it, as for any source
    return max(1, int(duration // u.seconds)) if duration >= 2 * u.seconds else 1


@dataclass
class UnitPlan:
    """Every frame of a splittable source by position: `pts[p]` is frame p's timestamp."""

    pts: list[int]
    bounds: list[int]  # unit k covers positions [bounds[k], bounds[k + 1])
    origin: float  # FrameClock's origin: the timestamp (s) counted as 0 s

    def position(self, pts: int) -> int | None:
        p = bisect.bisect_left(self.pts, pts)
        return p if p < len(self.pts) and self.pts[p] == pts else None


def plan_units(path: Path | str, info, units: int) -> UnitPlan:
    """Number every frame from the packets' timestamps; NotSplittable when that could be wrong."""
    from curation.decode import FrameClock, decode_frames
    from curation.probe import open_video

    if info.variable_frame_rate:
        raise NotSplittable("variable frame rate")
    container, stream = open_video(path)
    try:
        if container.format.name == "avi":
            raise NotSplittable("AVI timestamps come from its index")
        time_base = stream.time_base
        pts = []
        for packet in container.demux(stream):
            if packet.size:
                if packet.pts is None:
                    raise NotSplittable("a packet without a timestamp")
                pts.append(int(packet.pts))
    finally:
        container.close()
    pts.sort()
    step = FrameClock(info).step_s
    times = [float(p * time_base) for p in pts]
    for a, b in zip(times, times[1:], strict=False):
        if abs((b - a) / step - 1) > 0.25:  # a gap or a doubled stamp: FrameClock would jump
            raise NotSplittable("timestamps are not one frame apart")
    clock = FrameClock(info)
    frames = decode_frames(path)
    try:
        first = next(iter(frames), None)
        if first is None or first.pts != pts[0] or clock.place(first)[0] != 0:
            raise NotSplittable("the stream does not start at its first frame")
    finally:
        frames.close()
    n = len(pts)
    return UnitPlan(pts, [round(k * n / units) for k in range(units + 1)], clock.origin)


class _PlacedClock:
    """FrameClock's positions and times for a decode that starts mid-source (from the plan)."""

    def __init__(self, plan: UnitPlan):
        self.plan = plan

    def place(self, frame) -> tuple[int, float]:
        position = self.plan.position(frame.pts) if frame.pts is not None else None
        if position is None:
            raise NotSplittable("a decoded frame's timestamp is not among the packets'")
        return position, float(frame.time) - self.plan.origin


def _frames_from(path, plan: UnitPlan, position: int, deadline=None, stats=None, threads: bool = True):
    """Decoded frames from the key frame at or before `position` on, timestamps as analysis sees them."""
    from curation.decode import decode_frames

    return decode_frames(path, deadline, stats, threads, seek_pts=plan.pts[position] if position > 0 else None)


# ---------------------------------------------------------------------------------------------
# One unit's analysis


def _state(value) -> object:
    """A comparable form of a detector's attributes (numbers by repr, arrays by their bytes)."""
    if value is None or isinstance(value, (bool, int, float, str, Fraction, enum.Enum)):
        return repr(value)
    if callable(value):  # a method or class: its name (a repr would name its address)
        return getattr(value, "__qualname__", type(value).__qualname__)
    if isinstance(value, np.ndarray):
        return hashlib.sha1(value.tobytes()).hexdigest()
    if isinstance(value, (list, tuple)):
        return [_state(v) for v in value]
    if isinstance(value, dict):
        return [[str(k), _state(v)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if k != "stats_manager"]
    if hasattr(value, "__dict__"):
        attributes = dict(vars(value))
        if type(value).__name__ == "FlashFilter" and not attributes.get("_merge_triggered"):
            # PySceneDetect reads its merge start only while a merge runs; set again when one starts
            attributes.pop("_merge_start", None)
        return [type(value).__name__, _state(attributes)]
    return repr(value)


def state_digest(tracker, detectors: dict) -> str:
    """Everything the analysis of later frames depends on, as a digest (per-frame lists excepted:
    later shots read only their own frames' entries)."""
    t = tracker
    state = [t.open_start, t.open_transition, t.stride, t.picture_stride, t.want_sample, sorted(t.pending),
             [(s.index, s.next_index) for s in t.samples], [p[0] for p in t.pictures],
             {name: _state(det) for name, det in detectors.items()}]
    return hashlib.sha1(json.dumps(state, default=repr).encode()).hexdigest()[:20]


def analyze_unit(source: str, path: Path, info, cfg: CurateConfig, chash: str, plan: UnitPlan, k: int,
                 text_detector=None) -> dict:
    """Unit k of a split source: {"rows": scored rows with their emission order, "events": [...]}."""
    from curation.analysis import analysis_size, detector_latency, feed_frame, finish
    from curation.decode import THREADED_DECODE_PIXELS, FramePreparer, in_background
    from curation.probe import Deadline
    from curation.process import clip_row
    from curation.shots import ShotTracker, make_detectors
    from curation.signals import AnalysisStats

    units = len(plan.bounds) - 1
    start, end, last = plan.bounds[k], plan.bounds[k + 1], k == units - 1
    warm = 0 if k == 0 else max(0, start - math.ceil(cfg.units.warmup_seconds * info.fps))
    a = cfg.analysis
    size = analysis_size(info.width, info.height, a.max_side)
    flow_size = analysis_size(size[0], size[1], a.flow_max_side)
    tracker = ShotTracker(cfg, info, size, flow_size)
    detectors = make_detectors(cfg)
    latency = detector_latency(detectors)
    stats = AnalysisStats()
    deadline = Deadline(cfg.probe.timeout_s + cfg.probe.timeout_per_video_second * info.duration, path,
                        "analysis", stage="analysis")
    preparer = FramePreparer(info, size, flow_size)
    preparer.clock = _PlacedClock(plan)
    rows: list[dict] = []
    events: list[list] = []  # [frame fed, cut, state digest, clips emitted by then]
    emitted, scoring, index = 0, k == 0, None

    def take(clips) -> None:
        nonlocal emitted
        for clip in clips:
            if scoring:
                row = clip_row(source, info, cfg, chash, 0, clip, text_detector)
                rows.append({"order": emitted, "row": row})
            emitted += 1

    decoded = _frames_from(path, plan, warm, deadline, stats, info.width * info.height >= THREADED_DECODE_PIXELS)
    frames = in_background(decoded, _Numbered(preparer))
    try:
        for frame in frames:
            if index is None:  # the first frame decoded: the tracker's lists start here
                if frame.index > warm:
                    raise NotSplittable("the seek landed after the unit's warm-up start")
                _start_tracker(tracker, frame.index)
            elif frame.index != index + 1:
                raise NotSplittable("frames missing after a seek or a decode error")
            index = frame.index
            before = tracker.open_start
            take(feed_frame(frame, tracker, detectors, stats, info.fps, latency))
            if tracker.open_start != before and tracker.open_start >= start:
                events.append([index, tracker.open_start, state_digest(tracker, detectors), emitted])
                scoring = True  # unit k's clips count from its first event past its start on
                if not last and sum(e[1] >= end for e in events) >= CONFIRM:
                    break
        else:
            if index is None:
                raise NotSplittable("nothing decoded in the unit")
            if index + 1 != len(plan.pts):
                raise NotSplittable("the source ended before its last packet's frame")
            take(finish(index + 1, tracker, detectors, stats, info.fps))
    finally:
        frames.close()
    if stats.decode_errors:
        raise NotSplittable(f"{stats.decode_errors} packets did not decode")
    for entry in rows:
        entry["row"].update({M.variable_frame_rate: False, M.source_frames_lost: 0, M.source_gaps: []})
    # the clips this unit will most likely give: up to its first close past its end (where the next
    # unit usually agrees); only those are extracted here, the driver extracts any other it gives
    past_end = [e[3] for e in events if e[1] >= end]
    owned = None if last or not past_end else past_end[0]
    return {"rows": rows, "events": events, "owned": owned}


class _Numbered:
    """FramePreparer with its frame count set from the first frame's position (a decode mid-source)."""

    def __init__(self, preparer):
        self.preparer = preparer

    def __call__(self, frame):
        if self.preparer.index < 0:
            self.preparer.index = self.preparer.clock.place(frame)[0] - 1
        return self.preparer(frame)


def _start_tracker(tracker, first: int) -> None:
    """A tracker whose first frame is `first`: its per-frame lists are indexed by position."""
    tracker.luma = [0.0] * first
    tracker.diff = [0.0] * first
    tracker.times = [0.0] * first
    tracker.positions = list(range(first))
    tracker.open_start = first


# ---------------------------------------------------------------------------------------------
# Stitching


def stitch(parts: list[dict], bounds: list[int]) -> list[dict] | None:
    """The source's rows from its units' parts (in order), or None where two units never agree."""
    rows: list[dict] = []
    take_from, trusted_from = 0, 0  # unit k-1 is in the one-worker state from frame trusted_from on
    for k in range(1, len(parts)):
        theirs = {(e[0], e[1], e[2]): e[3] for e in parts[k]["events"]}
        match = next((e for e in parts[k - 1]["events"]
                      if e[1] >= bounds[k] and e[0] >= trusted_from and (e[0], e[1], e[2]) in theirs), None)
        if match is None:
            return None
        rows += [r["row"] for r in parts[k - 1]["rows"] if take_from <= r["order"] < match[3]]
        take_from, trusted_from = theirs[(match[0], match[1], match[2])], match[0]
    rows += [r["row"] for r in parts[-1]["rows"] if r["order"] >= take_from]
    for index, row in enumerate(rows):
        row[M.clip_index] = index
    return rows


# ---------------------------------------------------------------------------------------------
# In the worker and in the driver


def units_dir(run: RunDir, source: str, chash: str) -> Path:
    from curation.inputs import source_key

    return run.root / "_units" / f"{source_key(source)}-{chash}"


def unit_part(run: RunDir, source: str, chash: str, k: int) -> Path:
    return units_dir(run, source, chash) / f"{k}.json"


def read_part(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def process_unit(source: str, k: int, units: int, out, cfg: CurateConfig, chash: str) -> dict:
    """Analyse unit k of `units`, extract its kept clips, write its part. Returns a unit summary;
    raises PermanentError (the caller quarantines the source) or anything transient."""
    from curation.inputs import local_path
    from curation.probe import probe
    from curation.scores import get_text_detector

    run = RunDir(out)
    part = unit_part(run, source, chash, k)
    path = local_path(source, run.input_cache)
    state = _file_state(path)
    info = probe(path, cfg.probe.timeout_s)
    try:
        plan = plan_units(path, info, units)
        found = analyze_unit(source, path, info, cfg, chash, plan, k, get_text_detector(cfg.analysis))
    except NotSplittable as e:
        atomic_write_bytes(part, json.dumps({"whole": str(e), "file_state": state}).encode())
        return {"whole": str(e)}
    owned = [e for e in found["rows"] if found["owned"] is None or e["order"] < found["owned"]]
    for entry in found["rows"]:
        entry["row"].update({M.config_hash: chash, M.clip_path: None, M.thumb_path: None})
    written, failures = _extract(path, [e["row"] for e in owned], run, cfg, info, plan)
    for entry, row in zip(owned, written, strict=True):
        entry["row"] = row
    if _file_state(path) != state:
        raise RuntimeError(f"{source} changed while it was curated (size or modification time): still being "
                           "written? Nothing was recorded; the next run curates it")
    blob = {"rows": found["rows"], "events": found["events"], "bounds": plan.bounds, "file_state": state,
            "units": units,
            "failures": [dict(f, **{schema.Q.created_at: None}) for f in failures]}
    atomic_write_bytes(part, json.dumps(blob).encode())
    return {"rows": len(owned)}


def _extract(path: Path, rows: list[dict], run: RunDir, cfg: CurateConfig, info, plan: UnitPlan):
    """`extract_source` for some clips of a split source, decoding from the key frame before the first."""
    from curation.extract import extract_source

    if not rows:
        return [], []
    first = min(int(r[M.start_frame]) for r in rows)
    return extract_source(path, rows, run, cfg.extract, info, clock=_PlacedClock(plan),
                          frames=lambda: _frames_from(path, plan, first))


def _file_state(path: Path) -> list[int]:
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def finish_split(run: RunDir, source: str, cfg: CurateConfig, chash: str, units: int) -> dict:
    """In the driver, once every unit's part is written: {"rows", "failures"} stitched (the caller
    records them as the source's manifest part, then calls `remove_unit_parts`), {"whole": reason}
    when the source must be curated whole (parts and files removed), or {"error"} (transient)."""
    from curation.inputs import local_path

    parts = [read_part(unit_part(run, source, chash, k)) for k in range(units)]
    if any(p is None for p in parts):
        return {"error": "analysis: a work unit's part is missing or unreadable; the next run redoes it"}
    whole = next((p["whole"] for p in parts if "whole" in p), None)
    if whole is None and len({tuple(p["file_state"]) for p in parts}) > 1:
        whole = "the file changed between units"
    rows = None if whole else stitch(parts, parts[0]["bounds"])
    written = {r["row"][M.clip_id] for p in parts for r in p.get("rows", [])}
    changed = _file_state(local_path(source, run.input_cache)) != parts[0]["file_state"]
    if rows is None or changed:
        _remove_files(run, written, keep=set())
        remove_unit_parts(run, source)
        if changed:
            return {"error": f"analysis: {source} changed while it was curated: still being written? Nothing was "
                             "recorded; the next run curates it"}
        return {"whole": whole or "two units never reached the same state"}
    keep = {r[M.clip_id] for r in rows}
    # files of clips only a unit not yet in agreement found, and clip files of clips the stitched rows filter
    _remove_files(run, written, keep, kept={r[M.clip_id] for r in rows if r[M.status] == schema.STATUS_KEPT})
    failures = [f for p in parts for f in p["failures"] if f[schema.Q.clip_id] in keep]
    missing = [i for i, r in enumerate(rows) if r.get(M.thumb_path) is None]
    if missing:  # clips a unit gave that it did not extract (the stitch came later than usual)
        from curation.probe import probe

        path = local_path(source, run.input_cache)
        info = probe(path, cfg.probe.timeout_s)
        written, more = _extract(path, [rows[i] for i in missing], run, cfg, info, plan_units(path, info, units))
        for i, row in zip(missing, written, strict=True):
            rows[i] = row
        failures += more
    now = now_utc()
    for row in rows:
        row[M.created_at] = now
    failures = [dict(f, **{schema.Q.created_at: now}) for f in failures]
    return {"rows": rows, "failures": list({f[schema.Q.clip_id]: f for f in failures}.values())}


def _remove_files(run: RunDir, clip_ids: set[str], keep: set[str], kept: set[str] | None = None) -> None:
    """Thumbnails of `clip_ids` not in `keep`, and their clip files unless `kept`."""
    for clip_id in clip_ids:
        if clip_id not in (keep if kept is None else kept):
            (run.clips / f"{clip_id}.mp4").unlink(missing_ok=True)
        if clip_id not in keep:
            (run.thumbs / f"{clip_id}.jpg").unlink(missing_ok=True)


def remove_unit_parts(run: RunDir, source: str) -> None:
    """Parts of a source left by runs under any config (it is done, or quarantined, now)."""
    from curation.inputs import source_key

    root = run.root / "_units"
    if root.exists():
        for folder in root.glob(f"{source_key(source)}-*"):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            root.rmdir()  # only when no other source has parts there
        except OSError:
            pass


def discard_split(run: RunDir, source: str, chash: str, units: int) -> None:
    """A source quarantined by one of its units: the clip files its other units wrote, and their parts, go."""
    for k in range(units):
        part = read_part(unit_part(run, source, chash, k)) or {}
        _remove_files(run, {r["row"][M.clip_id] for r in part.get("rows", [])}, keep=set())
    remove_unit_parts(run, source)
