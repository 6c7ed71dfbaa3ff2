"""Shot tracking: where the cuts are, and each closed shot cleaned up into clips.

PySceneDetect's `ContentDetector` and `AdaptiveDetector` decide the cuts (thresholds, adaptive
ratio, flash filter, minimum shot length from `ShotConfig`), weighing each frame's HSV difference
that the decode thread measured once (`curation.decode.HsvDelta`) instead of the frame itself.

`ShotTracker` follows the shot still open: it is the only one holding frames, at most
`_MAX_SAMPLES` flow-level frames (each with the next frame, for optical flow) and `_MAX_PICTURES`
pictures, thinned evenly by half whenever a buffer fills, so memory is bounded whatever the length
of the source or of the shot. A detector may report a cut a few frames late; cuts wait in
`pending` until every detector has had its chance (`close_ready`).

When a shot closes it is cleaned up (black runs of `min_shot_frames` or more become shots of their
own, shorter black and frozen lead-in/tail frames are trimmed, shots longer than `max_shot_seconds`
are split evenly) and handed on as `ClipSignals`: what `curation.scores` reads.

With `shots.mode: stride` no detectors run: `stride_step` closes fixed windows on the source's clock
instead, uncleaned. In both modes a stretch that did not decode closes the open shot (`gap`).

Flow samples are paired with the first new picture `MOTION_INTERVAL_S` or more later, so motion
is measured over real time whatever the frame rate (see `curation.scores`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from curation.config import CurateConfig
from curation.decode import PICTURE_STRIDE, HsvDelta, PreparedFrame
from curation.probe import ProbeInfo
from curation.signals import ClipSignals, Sample, Shot

_MAX_SAMPLES = 64  # flow frames kept for the open shot; thinned by half when full
_MAX_PICTURES = 16  # analysis-size pictures kept for the open shot; thinned likewise
_FROZEN_MIN_RUN = 3  # frozen lead-in/tail shorter than this is left alone (duplicated frames are common)
# optical flow compares frames this far apart in time, whatever the frame rate: at 5-10 fps the next
# frame, at 60 fps the 6th, so the flow measures the same motion (and sub-pixel noise matters little)
MOTION_INTERVAL_S = 0.05
_REPEAT_CHANGE = 0.0005  # a frame with under this share of pixels changed repeats the one before


# ---------------------------------------------------------------------------------------------
# Detectors


def make_detectors(cfg: CurateConfig) -> dict:
    """PySceneDetect's detectors, fed each frame's HSV differences instead of the frame itself.

    The decode thread measures, once per frame, the mean absolute difference of hue, saturation and
    value from the previous frame, exactly as `ContentDetector._calculate_frame_score` would (same
    HSV conversion of the same small frame, same sums); the detectors only weigh them. Everything
    that decides a cut (thresholds, the adaptive rolling ratio, the flash filter, minimum shot
    length) is PySceneDetect's own code.
    """
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    shots = cfg.shots
    made = {}
    if shots.mode == "stride":  # fixed windows: no cuts are looked for
        return made
    for name in shots.detectors:
        if name == "content":
            made[name] = _measured(ContentDetector)(
                threshold=shots.content_threshold, min_scene_len=shots.min_shot_frames
            )
        elif name == "adaptive":
            made[name] = _measured(AdaptiveDetector)(
                adaptive_threshold=shots.adaptive_threshold, min_scene_len=shots.min_shot_frames
            )
    return made


_measured_classes: dict[type, type] = {}


def _measured(detector_class: type) -> type:
    """`detector_class` taking `HsvDelta` (or None on the first frame) in place of a frame image."""
    if detector_class not in _measured_classes:

        class Measured(detector_class):
            def _calculate_frame_score(self, timecode, frame_img) -> float:
                delta: HsvDelta | None = frame_img
                if delta is None:  # the first frame: nothing to compare with, scored 0 like upstream
                    return 0.0
                w = self._weights
                if w.delta_edges:
                    raise ValueError("edge weights need the frame itself; rushes uses the default weights")
                return (delta.hue * w.delta_hue + delta.sat * w.delta_sat + delta.lum * w.delta_lum) / sum(
                    abs(x) for x in w
                )

        Measured.__name__ = f"Measured{detector_class.__name__}"
        _measured_classes[detector_class] = Measured
    return _measured_classes[detector_class]


# ---------------------------------------------------------------------------------------------
# The open shot


class ShotTracker:
    """Follows the open shot: its sample buffer, and cuts waiting for every detector to report."""

    def __init__(self, cfg: CurateConfig, info: ProbeInfo, size: tuple[int, int], flow_size: tuple[int, int]):
        self.cfg, self.info = cfg, info
        self.size, self.flow_size = size, flow_size
        self.flow_to_analysis = size[0] / flow_size[0]
        self.luma: list[float] = []
        self.diff: list[float] = []
        self.times: list[float] = []
        self.positions: list[int] = []  # each decoded frame's place in the source (jumps at a gap)
        self.samples: list[Sample] = []  # flow samples of the open shot, thinned as it grows
        self.stride = 1
        self.want_sample = False  # a sample is due, taken at the next new picture
        self.pictures: list[tuple[int, np.ndarray]] = []  # analysis-size pictures, thinned likewise
        self.picture_stride = PICTURE_STRIDE
        self.open_start = 0
        self.open_transition = "start"
        self.pending: list[tuple[int, str]] = []  # (cut frame, detector), not yet final
        self.window, self.window_open = 0, True  # shots.mode stride: the window being filled

    def add_frame(self, frame: PreparedFrame):
        index = frame.index
        self.luma.append(frame.luma)
        self.diff.append(frame.diff)
        self.times.append(frame.time)
        self.positions.append(frame.position)
        flow_gray = frame.flow_gray
        # a repeated picture (frame-doubled footage) shows an earlier moment: flow pairs skip them
        fresh = frame.diff > _REPEAT_CHANGE or index == self.open_start
        for s in reversed(self.samples):  # the samples still waiting for a partner are the last ones
            if s.next_index is not None:
                break
            elapsed = frame.time - s.time
            if (fresh and elapsed >= MOTION_INTERVAL_S - 0.5 / self.info.fps) or elapsed >= 2 * MOTION_INTERVAL_S:
                s.next_flow_gray, s.next_index, s.next_time = flow_gray, index, frame.time
        self.want_sample = self.want_sample or index % self.stride == 0
        if self.want_sample and fresh:
            self.samples.append(Sample(index, flow_gray, frame.small_bgr, frame.time))
            self.want_sample = False
            if len(self.samples) > _MAX_SAMPLES:
                self.stride *= 2
                self.samples = self.samples[::2]
        # pictures come every PICTURE_STRIDE frames; a long shot keeps only every picture_stride-th
        if frame.picture is not None and index % self.picture_stride == 0:
            self.pictures.append((index, frame.picture))
            if len(self.pictures) > _MAX_PICTURES:
                self.picture_stride *= 2
                self.pictures = [p for p in self.pictures if p[0] % self.picture_stride == 0]

    def add_cut(self, frame: int, detector: str) -> None:
        """A cut a detector reported; final once every detector has seen past it (`close_ready`)."""
        self.pending.append((frame, detector))

    def close_ready(self, up_to: int) -> Iterator[ClipSignals]:
        """Close the shots whose cuts every detector has had its chance to report (cut <= up_to)."""
        if not self.pending:
            return
        order = {name: i for i, name in enumerate(self.cfg.shots.detectors)}
        self.pending.sort(key=lambda cut: (cut[0], order.get(cut[1], 99)))
        min_gap = self.cfg.shots.min_shot_frames
        while self.pending and self.pending[0][0] <= up_to:
            cut, name = self.pending.pop(0)
            if cut - self.open_start < min_gap:
                continue  # the same cut reported by another detector, a frame off, or too close to the last
            yield from self.close(cut, name, "cut")

    def close(self, end: int, closed_by: str, next_transition: str, next_start: int | None = None) -> list[ClipSignals]:
        """Close the open shot at `end` (exclusive) and turn it into clips; the next one opens at
        `next_start` (default `end`; earlier when stride windows overlap, later when they leave gaps)."""
        start, transition = self.open_start, self.open_transition
        next_start = end if next_start is None else next_start
        taken = [s for s in self.samples if s.index < end]
        self.samples = [s for s in self.samples if s.index >= next_start]
        pictures = [p for p in self.pictures if p[0] < end]
        self.pictures = [p for p in self.pictures if p[0] >= next_start]
        self.open_start, self.open_transition = next_start, next_transition
        # the next shot is sampled densely again, then thinned as it grows
        self.stride, self.picture_stride = 1, PICTURE_STRIDE
        if end <= start:
            return []
        shot = Shot(start, end, closed_by, transition)
        shots = [shot] if self.cfg.shots.mode == "stride" else self._clean(shot)
        return [self._signals(shot, taken, pictures) for shot in shots]

    # -- fixed-stride windows (shots.mode: stride) --------------------------------------------------
    def stride_step(self, frame: PreparedFrame) -> list[ClipSignals]:
        """Before `add_frame`: close the window this frame is past the end of, and open the next.

        Window k covers the times [k * stride_s, k * stride_s + window_s) of the source; a window
        may overlap the next (stride < window) or leave frames out (stride > window). Edges fall on
        frames: half a frame of slack, so 10 s at 24 fps is exactly 240 frames."""
        sc = self.cfg.shots
        slack = 0.5 / self.info.fps
        out: list[ClipSignals] = []
        # the window holding this frame's time: after a gap, the windows that ended inside it are
        # skipped (one window a frame would cut a cascade of 1-2-frame clips)
        holding = math.floor((frame.time + slack) / sc.stride_s)
        if self.positions:
            after_gap = frame.position > self.positions[-1] + 1 or frame.time - self.times[-1] > sc.stride_s
        else:  # the first frame: after the frames lost before it, if any
            after_gap = frame.position > 0 or frame.time > sc.stride_s
        window_start = self.window * sc.stride_s
        if self.window_open and frame.time >= window_start + sc.window_s - slack:
            self.window += 1
            if after_gap:
                self.window = max(self.window, holding)
                if frame.time >= self.window * sc.stride_s + sc.window_s - slack:
                    self.window += 1  # that window is over too (stride > window): wait for the next
            next_time = self.window * sc.stride_s
            from bisect import bisect_left

            # the next window's first frame: one already seen (overlap), this one, or one to come
            next_start = max(self.open_start, bisect_left(self.times, next_time - slack))
            self.window_open = frame.time >= next_time - slack or next_start < len(self.times)
            out = self.close(frame.index, "stride", "stride", next_start if self.window_open else frame.index)
        if not self.window_open:
            if frame.time >= self.window * sc.stride_s - slack:
                self.window = max(self.window, holding)
                if frame.time < self.window * sc.stride_s + sc.window_s - slack:
                    self.window_open = True
                else:  # between windows (stride > window): wait for the next one
                    self.window += 1
            self.open_start = frame.index  # frames between windows belong to no clip
            self.samples = [s for s in self.samples if s.index >= frame.index]
            self.pictures = [p for p in self.pictures if p[0] >= frame.index]
            if not self.window_open:
                self.open_start = frame.index + 1
        return out

    # -- cleaning a closed shot -------------------------------------------------------------------
    def _clean(self, shot: Shot) -> list[Shot]:
        """Black runs become shots of their own; black/frozen edges are trimmed; long shots split."""
        a = self.cfg.analysis
        sc = self.cfg.shots
        luma = np.asarray(self.luma[shot.start : shot.end])
        black = luma < a.black_luma
        pieces: list[Shot] = []
        if black.all() or not sc.trim_black:
            pieces = [shot]
        else:
            # split off black runs long enough to be shots
            cursor, transition = shot.start, shot.transition_in
            for run_start, run_end in _runs(black):
                s, e = shot.start + run_start, shot.start + run_end
                long_enough = (e - s) >= sc.min_shot_frames
                if not long_enough:
                    continue
                if s > cursor:
                    pieces.append(Shot(cursor, s, "black", transition))
                pieces.append(Shot(s, e, "black" if e < shot.end else shot.closed_by, "fade"))
                cursor, transition = e, "fade"
            if cursor < shot.end:
                pieces.append(Shot(cursor, shot.end, shot.closed_by, transition))
        cleaned: list[Shot] = []
        for piece in pieces:
            piece = self._trim(piece)
            cleaned.extend(self._split_long(piece))
        return cleaned

    def _trim(self, shot: Shot) -> Shot:
        a, sc = self.cfg.analysis, self.cfg.shots
        start, end = shot.start, shot.end
        luma = self.luma
        if sc.trim_black and not all(v < a.black_luma for v in luma[start:end]):
            while start < end and luma[start] < a.black_luma:
                start += 1
            while end > start and luma[end - 1] < a.black_luma:
                end -= 1
        if sc.trim_frozen and end - start > 2:
            moving = [i for i in range(start + 1, end) if self.diff[i] > a.frozen_change]
            if moving:
                first, last = moving[0], moving[-1]
                if first - 1 - start >= _FROZEN_MIN_RUN:
                    start = first - 1
                if end - 1 - last >= _FROZEN_MIN_RUN:
                    end = last + 1
        return Shot(start, end, shot.closed_by, shot.transition_in)

    def _split_long(self, shot: Shot) -> list[Shot]:
        limit = self.cfg.shots.max_shot_seconds
        n = shot.end - shot.start
        if not limit or n / self.info.fps <= limit:
            return [shot]
        parts = math.ceil(n / self.info.fps / limit)
        edges = [shot.start + round(i * n / parts) for i in range(parts + 1)]
        out = []
        for i in range(parts):
            last = i == parts - 1
            out.append(
                Shot(
                    edges[i],
                    edges[i + 1],
                    shot.closed_by if last else "max_duration",
                    shot.transition_in if i == 0 else "split",
                )
            )
        return out

    def _signals(
        self, shot: Shot, taken: list[Sample], pictures: list[tuple[int, np.ndarray]]
    ) -> ClipSignals:
        inside = [s for s in taken if shot.start <= s.index < shot.end]
        # a partner in another clip does not count (a copy: overlapping stride windows share samples)
        inside = [s if s.next_index is not None and s.next_index < shot.end else replace(s, next_flow_gray=None)
                  for s in inside]
        pics = [p for p in pictures if shot.start <= p[0] < shot.end]
        if not pics and inside:  # a clip shorter than the picture stride: upscale a small frame
            import cv2

            pics = [
                (inside[0].index, cv2.resize(inside[0].small_bgr, self.size, interpolation=cv2.INTER_LINEAR))
            ]
        # times are the frames' own (seconds from the stream's start); the clip ends where its next
        # frame begins, or one frame after its last when a gap or the source's end follows
        start_time = self.times[shot.start]
        last = shot.end - 1
        if shot.end < len(self.times) and self.positions[shot.end] == self.positions[last] + 1:
            end_time = self.times[shot.end]
        else:
            end_time = self.times[last] + 1.0 / self.info.fps
        placed = Shot(self.positions[shot.start], self.positions[last] + 1, shot.closed_by, shot.transition_in)
        return ClipSignals(
            shot=placed,
            start_time=round(start_time, 6),
            end_time=round(end_time, 6),
            luma=np.asarray(self.luma[shot.start : shot.end], np.float32),
            samples=inside,
            pictures=pics,
            flow_to_analysis=self.flow_to_analysis,
            flow_size=self.flow_size,
        )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
