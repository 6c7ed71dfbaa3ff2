"""A clip's frames, whichever kind of run made it: its clip file, or its source's frame range.

An extracting run writes every kept clip as an h264 file (`clip_path`, under OUT/clips/). A clip-free
run (`extract.enabled: false`) writes none: a kept clip is its source plus a frame range, and every
stage that needs its frames (captioning, embedding, sharding, the search page's player) reads them
here, from the source. So that both kinds give the same frames for the same row (within what h264
changes), a range is read as extraction would have written it, by the settings saved with the run
(OUT/configs/curate-<config hash>.yaml, its `extract` section):

- frame i of the clip is output frame i of extraction's plan (`output_frame_plan`: with `fps` set,
  source frames dropped or repeated), so `spread_indices` over the frame count picks the same frames;
- each frame is resized to extraction's size (`even_size`: longest side at most `max_side`, even sides),
  then to the caller's `max_side` as a clip file's frames would be.

A range clip's source must still be where curation found it (a remote input: its copy in
OUT/_cache/inputs/); one that moved or vanished is a `PermanentError` naming it.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation.core import frames as reader_mod
from curation.core.rundir import RunDir, cache_path_for, is_remote, local_file, temp_path
from curation.core.schema import STATUS_KEPT, M
from curation.core.stage import PermanentError
from curation.core.tables import as_run

EXTRACTING, CLIP_FREE, MIXED = "extracting", "clip-free", "clip-free, partly extracted"


# ---------------------------------------------------------------------------------------------
# What extraction does to a clip's frames (curation/extract.py writes files by these rules)


def even_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Output size: longest side at most `max_side`, aspect kept, both sides even (yuv420p needs it)."""
    scale = 1.0
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def output_frame_plan(num_frames: int, src_fps: float, out_fps: float | None) -> list[int]:
    """For each output frame, the clip-local index of the source frame it shows.

    Without resampling this is 0..num_frames-1. With `out_fps`, output frame j shows source frame
    floor(j * src_fps / out_fps): frames are dropped (lower rate) or repeated (higher rate), the
    clip's duration stays the same.
    """
    if not out_fps or not src_fps or abs(out_fps - src_fps) < 1e-6:
        return list(range(num_frames))
    ratio = src_fps / out_fps
    count = max(1, round(num_frames / ratio))
    return [min(num_frames - 1, int(j * ratio + 1e-9)) for j in range(count)]


@dataclass(frozen=True)
class ClipShape:
    """The `extract` settings a clip's frames follow (extraction's, or the run's saved ones for a range)."""

    max_side: int | None = None
    fps: float | None = None
    crf: int = 20
    thumb_side: int = 256
    keyframe_seconds: float | None = None


def clip_shape(run: RunDir | Path | str, row: dict) -> ClipShape:
    """The extract settings of the config that curated `row`; the source's own size and rate (no resize,
    no resampling) when that config was not saved (a run made without `rushes curate`)."""
    return _saved_shape(str(as_run(run).configs / f"curate-{row.get(M.config_hash)}.yaml"))


@functools.lru_cache(maxsize=64)
def _saved_shape(path: str) -> ClipShape:
    from curation.core.yamlfile import read_yaml_mapping

    if not os.path.isfile(path):
        return ClipShape()
    extract = read_yaml_mapping(path).get("extract") or {}
    return ClipShape(max_side=extract.get("max_side"), fps=extract.get("fps"), crf=int(extract.get("crf", 20)),
                     thumb_side=int(extract.get("thumb_side", 256)), keyframe_seconds=extract.get("keyframe_seconds"))


# ---------------------------------------------------------------------------------------------
# Which kind a clip and a run are


def has_clip_file(row: dict) -> bool:
    return bool(row.get(M.clip_path))


def run_kind(rows: list[dict]) -> str | None:
    """"extracting" (every kept clip has a file), "clip-free" (none has), or MIXED (a clip-free run some
    of whose clips `rushes extract` wrote since); None when nothing is kept."""
    kept = [r for r in rows if r.get(M.status) == STATUS_KEPT]
    if not kept:
        return None
    with_file = sum(1 for r in kept if has_clip_file(r))
    return EXTRACTING if with_file == len(kept) else CLIP_FREE if with_file == 0 else MIXED


def cached_copy(run: RunDir | Path | str, source: str) -> Path:
    """Where curation keeps its copy of a remote input."""
    return cache_path_for(source, as_run(run).input_cache)


def source_file(run: RunDir | Path | str, row: dict) -> Path:
    """The local file holding the row's source; PermanentError naming it when it moved or vanished."""
    run, source = as_run(run), str(row.get(M.source) or "")
    if not source:
        raise PermanentError(f"clip {row.get(M.clip_id)} names no source in the manifest; re-curate its source")
    if is_remote(source):
        path = cached_copy(run, source)
        if not path.is_file():
            raise PermanentError(f"source {source} of clip {row.get(M.clip_id)}: its copy {path} is gone, and a "
                                 f"clip-free run reads frames from it; re-run `rushes curate` on it to fetch it again")
        return path
    path = local_file(source)
    if not path.is_file():
        raise PermanentError(f"source {source} of clip {row.get(M.clip_id)} is gone (moved or deleted since "
                             "curation), and a clip-free run reads the clip's frames from it: put it back at that "
                             "path, or re-curate it from where it is now")
    return path


def clip_file(run: RunDir | Path | str, row: dict) -> Path:
    """The row's clip file; PermanentError when it has none or the file is missing."""
    if not has_clip_file(row):
        raise PermanentError(f"clip {row.get(M.clip_id)} has no clip file (a clip-free run); read it with clip_frames")
    run = as_run(run)
    path = run.root / row[M.clip_path]
    if not path.is_file():
        raise PermanentError(f"clip file {path} is missing; run `rushes extract --out {run.root} "
                             f"--clip-id {row.get(M.clip_id)}` to write it again")
    return path


# ---------------------------------------------------------------------------------------------
# Frames


def _range_length(row: dict) -> int:
    start, end = row.get(M.start_frame), row.get(M.end_frame)
    if start is None or end is None or int(end) <= int(start) or row.get(M.start_time) is None:
        raise PermanentError(f"clip {row.get(M.clip_id)} has no frame range in the manifest "
                             f"([{start}, {end}) from {row.get(M.start_time)} s); re-curate its source")
    return int(end) - int(start)


def _plan(run: RunDir, row: dict) -> list[int]:
    fps = float(row.get(M.fps) or 0)
    if fps and not math.isfinite(fps):
        fps = 0.0
    return output_frame_plan(_range_length(row), fps, clip_shape(run, row).fps)


def clip_frame_count(run: RunDir | Path | str, row: dict, *, reader: str = "auto") -> int:
    """How many frames the clip has: its file's, or (a range) as many as extraction would write."""
    if has_clip_file(row):
        return reader_mod.frame_count(clip_file(run, row), reader=reader)
    source_file(run, row)  # a missing source fails here, not later in a worker's batch
    return len(_plan(run, row))


def clip_frames(run: RunDir | Path | str, row: dict, indices: list[int] | None = None, *, count: int | None = None,
                max_side: int | None = None, reader: str = "auto", on_fallback=None) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of the clip `row` describes, by clip frame index, in sorted order.

    `indices` picks frames (0..clip_frame_count-1); `count` instead spreads that many over the clip
    (`video.spread_indices`); neither reads every frame. `max_side` shrinks frames after reading."""
    from curation.core.video import spread_indices

    run = as_run(run)
    if indices is None and count is not None:
        indices = spread_indices(clip_frame_count(run, row, reader=reader), count)
    if has_clip_file(row):
        return reader_mod.read_clip_frames(clip_file(run, row), indices, max_side=max_side, reader=reader,
                                           on_fallback=on_fallback)
    path = source_file(run, row)
    plan = _plan(run, row)
    wanted = sorted(set(range(len(plan)) if indices is None else (int(i) for i in indices)))
    wanted = [i for i in wanted if 0 <= i < len(plan)]  # as a clip file leaves out frames past its end
    if not wanted:
        raise PermanentError(f"clip {row.get(M.clip_id)}: frames {indices} fall outside its {len(plan)} frames")
    local = sorted({plan[i] for i in wanted})
    decoded = reader_mod.read_range_frames(path, float(row[M.start_time]), _range_length(row), local,
                                           reader=reader, on_fallback=on_fallback)
    by_local = dict(zip(local, decoded, strict=False))
    shape = clip_shape(run, row)
    out = []
    for i in wanted:
        frame = by_local.get(plan[i])
        if frame is None:  # the source ended early: as a short clip file would, it has fewer frames
            continue
        out.append(reader_mod.resize_max_side(as_extracted(frame, shape.max_side), max_side))
    if not out:
        raise PermanentError(f"source {row.get(M.source)}: no frame of clip {row.get(M.clip_id)} decodes")
    return out


def as_extracted(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """A source frame at the size extraction writes it (`even_size`)."""
    h, w = frame.shape[:2]
    width, height = even_size(w, h, max_side)
    if (width, height) == (w, h):
        return frame
    import cv2

    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------
# A range cut into a file on demand (the search page's player)


def cut_range(run: RunDir | Path | str, row: dict, dest: Path | str) -> Path:
    """Write the range clip `row` describes to `dest` (h264 mp4, the run's extract settings), atomically:
    what the search page plays for a clip nobody extracted.

    The range is decoded once, front to back, and each frame goes to the encoder as it comes, so memory
    stays small and a long range costs one pass (reads of it in chunks would each decode again from
    the range's start). PyAV decodes it: the frames are those `clip_frames` reads (decord reads 8-bit
    sources bit for bit alike)."""
    from curation.core.video import VideoWriter

    if has_clip_file(row):
        raise ValueError(f"clip {row.get(M.clip_id)} has a file ({row[M.clip_path]}): play that, there is nothing to cut")
    run, dest = as_run(run), Path(dest)
    shape = clip_shape(run, row)
    path = source_file(run, row)
    plan = _plan(run, row)  # the source frame each output frame shows, in order (resampling repeats or skips)
    rate = shape.fps or float(row.get(M.fps) or 0) or 25.0
    tmp = temp_path(dest)
    writer = VideoWriter(tmp, rate, crf=shape.crf, container_format="mp4", keyframe_seconds=shape.keyframe_seconds)
    decoded = reader_mod.iter_range_frames(path, float(row[M.start_time]), _range_length(row))
    try:
        local, frame = -1, None
        for wanted in plan:
            while local < wanted:
                frame = next(decoded, None)
                if frame is None:  # the source ended early: a short clip, as clip_frames reads it
                    break
                local += 1
            if frame is None:
                break
            writer.write(as_extracted(frame, shape.max_side))
        writer.close()
        os.replace(tmp, dest)
    except BaseException:
        writer.abandon()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        decoded.close()
    return dest
