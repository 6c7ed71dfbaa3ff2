"""Clip extraction: kept clips as h264 mp4 at frame-exact boundaries, and a JPEG thumbnail per clip.

A source is decoded once for all of its clips, by analysis' own decoder (`curation.decode`), and each
frame is placed by its timestamp with analysis' own `FrameClock`, so a manifest row's
[start_frame, end_frame) is exactly the frames its clip file holds, after an undecodable stretch too. Clips are encoded by the
kernel's one h264 set-up (`curation.core.video.VideoWriter`). Every file is written to a hidden
temporary name and renamed into place, so a killed run never leaves a half-written clip.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from curation.config import ExtractConfig
from curation.core import schema
from curation.core.clips import even_size, output_frame_plan  # the rules range clips are read by, too
from curation.core.rundir import RunDir, atomic_write_bytes, now_utc, temp_path
from curation.core.stage import PermanentError
from curation.core.video import VideoWriter, upright, video_rate
from curation.decode import FrameClock, decode_frames

M = schema.M
EXTRACT_FAILED = "extract_failed"  # filter reason of a kept clip whose frames could not be written


def thumb_size(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def rate_fraction(fps: float) -> Fraction:
    """A frame rate as the exact fraction codecs want (29.97 -> 30000/1001); a bad rate is the input's fault."""
    if fps <= 0 or not math.isfinite(fps):
        raise PermanentError(f"frame rate {fps!r} is not usable for encoding")
    return video_rate(fps)


@dataclass
class _ClipJob:
    """One clip being written while the source decodes."""

    row: dict
    start: int
    end: int
    write_clip: bool
    plan: list[int] = field(default_factory=list)  # clip-local source index per output frame
    next_out: int = 0
    writer: VideoWriter | None = None
    tmp_path: Path | None = None
    final_path: Path | None = None
    thumb_done: bool = False
    error: str | None = None


class _SourceExtractor:
    """Streams a source's frames into every clip that covers them."""

    def __init__(self, source_path: Path, rows: list[dict], run: RunDir, cfg: ExtractConfig, clock: FrameClock,
                 frames=None):
        self.source_path = Path(source_path)
        self.clock = clock
        self.frames = frames  # () -> decoded frames; default: the whole source from its start
        self.run = run
        self.cfg = cfg
        self.jobs = sorted(
            (
                _ClipJob(
                    row=row,
                    start=int(row[M.start_frame]),
                    end=int(row[M.end_frame]),
                    write_clip=cfg.enabled and row[M.status] == schema.STATUS_KEPT,
                )
                for row in rows
            ),
            key=lambda j: j.start,
        )
        for job in self.jobs:
            if job.end <= job.start:
                raise ValueError(
                    f"clip {job.row[M.clip_id]} of {source_path} has no frames "
                    f"[{job.start}, {job.end}); analysis produced an empty clip"
                )

    # -- per-clip output --------------------------------------------------------------------------
    def _open(self, job: _ClipJob, frame) -> None:
        fps = float(job.row[M.fps])
        out_fps = self.cfg.fps or fps
        job.plan = output_frame_plan(job.end - job.start, fps, self.cfg.fps)
        width, height = self._display_size(frame)
        job.final_path = self.run.clips / f"{job.row[M.clip_id]}.mp4"
        job.tmp_path = temp_path(job.final_path)  # names its writer: a later run keeps a live one's
        # one encoder thread per clip: a source's clips are written side by side, workers run in parallel
        job.writer = VideoWriter(
            job.tmp_path, rate_fraction(out_fps), crf=self.cfg.crf, threads=1,
            size=even_size(width, height, self.cfg.max_side), container_format="mp4",
            keyframe_seconds=self.cfg.keyframe_seconds,
        )

    @staticmethod
    def _display_size(frame) -> tuple[int, int]:
        if (frame.rotation or 0) % 180:
            return frame.height, frame.width
        return frame.width, frame.height

    @staticmethod
    def _upright(frame):
        """The frame as displayed: a rotation flag in the container is applied to the pixels."""
        import av

        if not round((frame.rotation or 0) / 90) % 4:
            return frame
        return av.VideoFrame.from_ndarray(upright(frame.to_ndarray(format="rgb24"), frame.rotation), format="rgb24")

    def _encode(self, job: _ClipJob, frame, local_index: int) -> None:
        if job.writer is None:
            self._open(job, frame)
        out = None
        # output frame j shows plan[j]: a source frame is written once, dropped, or repeated
        while job.next_out < len(job.plan) and job.plan[job.next_out] == local_index:
            if out is None:  # scaled and converted in one step; the writer numbers the frames (pts)
                w, h = job.writer.size
                out = self._upright(frame).reformat(width=w, height=h, format="yuv420p")
            job.writer.write(out)
            job.next_out += 1

    def _thumbnail(self, job: _ClipJob, frame) -> None:
        upright = self._upright(frame)
        w, h = thumb_size(*self._display_size(upright), self.cfg.thumb_side)
        image = upright.reformat(width=w, height=h, format="rgb24").to_image()
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=85)
        path = self.run.thumbs / f"{job.row[M.clip_id]}.jpg"
        atomic_write_bytes(path, buf.getvalue())
        job.row[M.thumb_path] = self.run.rel(path)
        job.thumb_done = True

    def _finish(self, job: _ClipJob) -> None:
        if job.writer is None:
            return
        writer, job.writer = job.writer, None
        writer.close()
        if job.next_out == len(job.plan):
            os.replace(job.tmp_path, job.final_path)
            job.row[M.clip_path] = self.run.rel(job.final_path)

    def _abandon(self, job: _ClipJob) -> None:
        if job.writer is not None:
            job.writer.abandon()
            job.writer = None
        if job.tmp_path is not None and job.tmp_path.exists():
            job.tmp_path.unlink()

    # -- the one decode pass ----------------------------------------------------------------------
    def extract(self) -> None:
        import av

        if not self.jobs:
            return
        last_needed = max(job.end for job in self.jobs)
        pending = list(self.jobs)  # sorted by start; a job leaves when its last frame is written
        active: list[_ClipJob] = []
        index = 0
        # no time limit: the source was analysed already
        frames = self.frames() if self.frames else decode_frames(self.source_path)
        try:
            for frame in frames:
                # frames are placed by their timestamps, as analysis placed them (FrameClock)
                index, _time = self.clock.place(frame)
                while pending and pending[0].start <= index:
                    active.append(pending.pop(0))
                for job in active:
                    local = index - job.start
                    if job.write_clip:
                        self._encode(job, frame, local)
                    if not job.thumb_done and local == (job.end - job.start) // 2:
                        self._thumbnail(job, frame)
                for job in [j for j in active if index + 1 >= j.end]:
                    if job.write_clip:
                        self._finish(job)
                    active.remove(job)
                if index + 1 >= last_needed:
                    break
        except av.error.FFmpegError as e:
            raise PermanentError(f"extracting clips of {self.source_path} failed: {e}") from e
        finally:
            frames.close()  # closes the container now, not when the generator is collected
            for job in self.jobs:
                self._abandon(job)
        for job in self.jobs:
            if job.write_clip and job.row.get(M.clip_path) is None:
                job.error = (
                    f"source ended (or skipped) at frame {index}, before clip frames [{job.start}, {job.end}) "
                    f"were all decoded (truncated or corrupt source)"
                )


def extract_source(
    source_path: Path | str, rows: list[dict], run: RunDir, cfg: ExtractConfig, info=None, clock=None, frames=None
) -> tuple[list[dict], list[dict]]:
    """Write the clips (kept rows) and thumbnails (every row) of one source.

    `frames` and `clock` (default: the source from its start, placed by `FrameClock`) let a work unit
    (`curation.units`) decode only its time range.

    Returns the rows with `clip_path`/`thumb_path` set, and quarantine rows for clips that could not
    be written; such a clip is marked filtered with reason `extract_failed` so counts still add up.
    """
    rows = [dict(row) for row in rows]
    for row in rows:
        row.setdefault(M.clip_path, None)
        row.setdefault(M.thumb_path, None)
    if info is None:  # the probe analysis made, when the caller has it
        from curation.probe import probe

        info = probe(source_path)
    extractor = _SourceExtractor(Path(source_path), rows, run, cfg, clock or FrameClock(info), frames)
    extractor.extract()
    quarantine = []
    for job in extractor.jobs:
        if job.error:
            job.row[M.status] = schema.STATUS_FILTERED
            job.row[M.filter_reasons] = list(job.row.get(M.filter_reasons) or []) + [EXTRACT_FAILED]
            job.row[M.clip_path] = None
            quarantine.append(
                {
                    schema.Q.source: job.row[M.source],
                    schema.Q.stage: "extract",
                    schema.Q.error: job.error,
                    schema.Q.clip_id: job.row[M.clip_id],
                    schema.Q.created_at: now_utc(),
                }
            )
    return rows, quarantine


# ---------------------------------------------------------------------------------------------
# A clip-free run's thumbnails: analysis pictures, no second decode


def cheap_thumbnails(cfg) -> bool:
    """Whether a curation config's thumbnails can come from analysis pictures: a clip-free run whose
    thumbnails are no larger than those pictures (else the source is decoded again, as extraction does)."""
    return not cfg.extract.enabled and cfg.extract.thumb_side <= cfg.analysis.max_side


def middle_picture(signals):
    """The analysis picture (BGR, analysis size) nearest the clip's middle frame; None when it has none."""
    if not signals.pictures:
        return None
    middle = (signals.shot.start + signals.shot.end) // 2
    return min(signals.pictures, key=lambda p: abs(p[0] - middle))[1]


def write_thumbnails(rows: list[dict], pictures: dict, run: RunDir, cfg: ExtractConfig) -> list[dict]:
    """Each row with the JPEG thumbnail made from its picture ({clip_id: BGR array}); a row without
    a picture keeps no thumbnail (the report shows "no thumbnail")."""
    import cv2
    from PIL import Image

    rows = [dict(row) for row in rows]
    for row in rows:
        row.setdefault(M.clip_path, None)
        row[M.thumb_path] = None
        picture = pictures.get(row[M.clip_id])
        if picture is None:
            continue
        size = thumb_size(int(row[M.width] or picture.shape[1]), int(row[M.height] or picture.shape[0]), cfg.thumb_side)
        if size != (picture.shape[1], picture.shape[0]):
            picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        buf = io.BytesIO()
        Image.fromarray(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)).save(buf, format="JPEG", quality=85)
        path = run.thumbs / f"{row[M.clip_id]}.jpg"
        atomic_write_bytes(path, buf.getvalue())
        row[M.thumb_path] = run.rel(path)
    return rows


# ---------------------------------------------------------------------------------------------
# Extraction later: clip files for a finished clip-free run (`rushes extract`)


@dataclass
class ExtractSummary:
    asked: int = 0  # kept clips asked for (all of them without --clip-id)
    written: int = 0
    already: int = 0  # had a clip file
    failed: list[str] = field(default_factory=list)  # "clip or source: why"

    def line(self) -> str:
        return (f"extract: {self.asked} kept clips -> {self.written} clip files written, {self.already} had one, "
                f"{len(self.failed)} failed")


def saved_extract_config(run: RunDir, chash: str | None) -> ExtractConfig:
    """The extract settings of the curation config `chash` (saved in OUT/configs/), turned on. When it
    was not saved, the source's own size and rate, as `clips.clip_shape` reads such a range. Files
    written later then match the frames stages read from the range."""
    from curation.config import CurateConfig
    from curation.core.config import load_yaml

    path = run.configs / f"curate-{chash}.yaml"
    cfg = load_yaml(path, CurateConfig).extract if chash and path.exists() else ExtractConfig(max_side=None)
    return cfg.model_copy(update={"enabled": True})


def plan_extraction(run: RunDir, clip_ids: list[str] | None = None) -> tuple[list[dict], ExtractSummary]:
    """The kept clips still without a clip file (those of `clip_ids` only, when given) and the summary that
    counts them. An id that names no clip, or a filtered one, is a ValueError naming it."""
    from curation.core.tables import read_clips

    clips = read_clips(run).to_pylist()
    if not clips:
        raise ValueError(f"{run.manifest} holds no clips; run `rushes curate ... --out {run.root}` first")
    by_id = {r[M.clip_id]: r for r in clips}
    if clip_ids:
        unknown = [c for c in clip_ids if c not in by_id]
        if unknown:
            raise ValueError(f"--clip-id {unknown[0]} names no clip of {run.root} ({len(unknown)} unknown ids); "
                             "`rushes search ... --json` or the report shows clip ids")
        filtered = [c for c in clip_ids if by_id[c][M.status] != schema.STATUS_KEPT]
        if filtered:
            raise ValueError(f"--clip-id {filtered[0]} is a filtered clip ({', '.join(by_id[filtered[0]][M.filter_reasons] or [])}); "
                             "only kept clips are extracted")
        asked = [by_id[c] for c in dict.fromkeys(clip_ids)]
    else:
        asked = [r for r in clips if r[M.status] == schema.STATUS_KEPT]
    todo = [r for r in asked if not r.get(M.clip_path) or not (run.root / r[M.clip_path]).is_file()]
    return todo, ExtractSummary(asked=len(asked), already=len(asked) - len(todo))


def extract_run(out: Path | str, clip_ids: list[str] | None = None, progress=None) -> ExtractSummary:
    """Write clip files (and thumbnails) for kept clips that have none, each source decoded once, and
    record them in OUT/clip_files/ (the manifest stays as curation wrote it). `progress(n)` is called
    with the clips of each source done. A source gone or changed since curation fails its clips
    (named in the summary), not the run."""
    from curation.core.clips import source_file
    from curation.core.tables import add_clip_files
    from curation.probe import probe

    run = RunDir(out)
    todo, summary = plan_extraction(run, clip_ids)
    groups: dict[tuple, list[dict]] = {}
    for row in todo:
        groups.setdefault((row[M.source], row[M.config_hash]), []).append(row)
    for (source, chash), rows in groups.items():
        cfg = saved_extract_config(run, chash)
        try:
            path = source_file(run, rows[0])
            info = probe(path)
            if rows[0].get(M.source_fingerprint) and info.fingerprint != rows[0][M.source_fingerprint]:
                raise PermanentError(f"source {source} changed since it was curated (its content differs): the "
                                     "manifest's frame ranges no longer describe it; re-curate it")
            written, failures = extract_source(path, [{**r, M.clip_path: None} for r in rows], run, cfg, info)
        except PermanentError as e:
            summary.failed += [f"{row[M.clip_id]}: {e}" for row in rows]
            if progress:
                progress(len(rows))
            continue
        summary.failed += [f"{f[schema.Q.clip_id]}: {f[schema.Q.error]}" for f in failures]
        files = {r[M.clip_id]: (r[M.clip_path], r[M.thumb_path]) for r in written if r.get(M.clip_path)}
        summary.written += add_clip_files(run, files, cfg)
        if progress:
            progress(len(rows))
    return summary
