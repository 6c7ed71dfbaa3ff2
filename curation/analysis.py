"""Analysis: one decode pass per source, feeding shot detection and every per-clip signal.

Each frame is decoded once (PyAV, frame threads) and shrunk straight from its YUV planes by
OpenCV, which costs a fraction of a full-size RGB conversion:

- every frame, at flow size (`analysis.flow_max_side`, 128 px): a colour frame fed to
  PySceneDetect's detectors (`ContentDetector`, `AdaptiveDetector`; thresholds and minimum shot
  length from `ShotConfig`) through `process_frame(FrameTimecode, bgr)`, and its gray image, from
  which the per-frame signals are kept for the whole source (mean luma, share of pixels changed
  since the previous frame: a few floats a frame, so a 20-minute file costs kilobytes);
- a few frames per shot, at analysis size (`analysis.max_side`, 256 px): pictures for sharpness,
  colours and text.

Only the shot still open holds frames: at most `_MAX_SAMPLES` flow-size frames (each with the next
frame, for optical flow) and `_MAX_PICTURES` pictures, thinned evenly by half whenever a buffer
fills. Memory is bounded whatever the length of the source or of the shot.

When a shot closes it is cleaned up (black runs of `min_shot_frames` or more become shots of their
own, shorter black and frozen lead-in/tail frames are trimmed, shots longer than `max_shot_seconds`
are split evenly) and handed on as `ClipSignals`: what `curation.scores` reads.

Frame numbers are positions in decode order, from 0, and shots are half-open: [start, end).
Rotated sources are turned upright. Corrupt packets are skipped (the frames that decode are
salvaged); a stream where nothing decodes raises `PermanentError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curation.config import CurateConfig
from curation.probe import Deadline, ProbeInfo, open_video
from curation.stage import PermanentError

_MAX_SAMPLES = 64  # flow frames kept for the open shot; thinned by half when full
_MAX_PICTURES = 16  # analysis-size pictures kept for the open shot; thinned likewise
_PICTURE_STRIDE = 8  # a shot starts with a picture every 8th frame
_FROZEN_MIN_RUN = 3  # frozen lead-in/tail shorter than this is left alone (duplicated frames are common)


@dataclass
class Shot:
    start: int  # first frame, inclusive
    end: int  # exclusive
    closed_by: str  # content | adaptive | black | max_duration | end: what ended the shot
    transition_in: str  # start | cut | fade | split: how it began


@dataclass
class Sample:
    """A frame kept for optical flow: gray at flow size, with the frame after it."""

    index: int
    flow_gray: np.ndarray
    small_bgr: np.ndarray  # the same frame in colour at flow size (a stand-in picture)
    next_flow_gray: np.ndarray | None = None  # frame index+1


@dataclass
class ClipSignals:
    """What the scores of one clip are computed from."""

    shot: Shot
    start_time: float
    end_time: float
    luma: np.ndarray  # mean luma (0..255) of every frame of the clip
    samples: list[Sample]  # spread over the clip, each with its next frame where that is in the clip
    pictures: list[tuple[int, np.ndarray]]  # (frame index, BGR at analysis size), spread over the clip
    flow_to_analysis: float  # multiply flow-size pixels by this to get analysis-size pixels


@dataclass
class AnalysisStats:
    frames_decoded: int = 0
    decode_errors: int = 0
    cuts: dict[str, int] = field(default_factory=dict)  # cuts reported per detector


def analysis_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale)), max(2, round(height * scale))


def _plane(plane) -> np.ndarray:
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


_YUV_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p"}
_LIMITED_LUT = np.clip((np.arange(256) - 16) * 255 / 219 + 0.5, 0, 255).astype(np.uint8)
_LIMITED_CHROMA_LUT = np.clip((np.arange(256) - 128) * 255 / 224 + 128.5, 0, 255).astype(np.uint8)


def _resize_down(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink to `size` (w, h): bilinear to twice the size, then 2x2 area averaging.

    Close to a full area average (little aliasing) at a fraction of its cost for odd factors.
    """
    import cv2

    w, h = size
    if img.shape[1] <= 2 * w or img.shape[0] <= 2 * h:
        interp = cv2.INTER_AREA if img.shape[1] >= w else cv2.INTER_LINEAR
        return cv2.resize(img, (w, h), interpolation=interp)
    double = cv2.resize(img, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(double, (w, h), interpolation=cv2.INTER_AREA)


def shrink_frame(frame, size: tuple[int, int], rotation: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A decoded PyAV frame as (BGR, gray) uint8 at `size` (w, h), turned upright.

    YUV frames are read from their planes, shrunk by OpenCV and converted at the small size:
    several times cheaper than asking FFmpeg for a full-size RGB picture first. Chroma, smooth by
    nature, is shrunk with one bilinear step.
    """
    import cv2

    w, h = size
    rw, rh = (h, w) if rotation in (90, 270) else (w, h)  # size before turning upright
    fmt = frame.format.name
    if fmt in _YUV_FORMATS:
        full_range = fmt.startswith("yuvj") or getattr(frame, "color_range", 0) == 2
        y = _resize_down(_plane(frame.planes[0]), (rw, rh))
        u = cv2.resize(_plane(frame.planes[1]), (rw, rh), interpolation=cv2.INTER_LINEAR)
        v = cv2.resize(_plane(frame.planes[2]), (rw, rh), interpolation=cv2.INTER_LINEAR)
        if not full_range:
            y = cv2.LUT(y, _LIMITED_LUT)
            u = cv2.LUT(u, _LIMITED_CHROMA_LUT)
            v = cv2.LUT(v, _LIMITED_CHROMA_LUT)
        bgr = cv2.cvtColor(cv2.merge([y, v, u]), cv2.COLOR_YCrCb2BGR)
    else:
        bgr = frame.reformat(width=rw, height=rh, format="bgr24").to_ndarray()
        y = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if rotation:
        bgr = np.ascontiguousarray(np.rot90(bgr, k=rotation // 90))
        y = np.ascontiguousarray(np.rot90(y, k=rotation // 90))
    return bgr, y


def _make_detectors(cfg: CurateConfig) -> dict:
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    shots = cfg.shots
    made = {}
    content = None
    for name in shots.detectors:
        if name == "content":
            made[name] = content = ContentDetector(
                threshold=shots.content_threshold, min_scene_len=shots.min_shot_frames
            )
    for name in shots.detectors:
        if name == "adaptive":
            kind = _adaptive_reusing(content) if content is not None else AdaptiveDetector
            made[name] = kind(
                adaptive_threshold=shots.adaptive_threshold, min_scene_len=shots.min_shot_frames
            )
    return dict(sorted(made.items(), key=lambda kv: kv[0] != "content"))  # content first: adaptive reuses it


def _adaptive_reusing(content):
    """An AdaptiveDetector that takes each frame's content score from `content` (fed the same frame
    just before) instead of computing the same HSV differences a second time. Falls back to its
    own computation if PySceneDetect's internals ever change shape."""
    from scenedetect.detectors import AdaptiveDetector

    class ReusingAdaptiveDetector(AdaptiveDetector):
        def _calculate_frame_score(self, timecode, frame_img):
            score = getattr(content, "_frame_score", None)
            if score is None or getattr(content, "_last_frame", None) is None:
                return super()._calculate_frame_score(timecode, frame_img)
            return score

    return ReusingAdaptiveDetector


def decode_frames(path: Path | str, deadline: Deadline, stats: AnalysisStats) -> Iterator:
    """Every decodable frame of the first video stream, in order; corrupt packets are skipped."""
    import av

    container, stream = open_video(path)
    packets = container.demux(stream)
    try:
        while True:
            deadline.check()
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:  # the container breaks off here: keep what decoded so far
                stats.decode_errors += 1
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                stats.decode_errors += 1
                continue
            yield from frames
    finally:
        container.close()


class _ShotTracker:
    """Follows the open shot: its sample buffer, and cuts waiting for every detector to report."""

    def __init__(self, cfg: CurateConfig, info: ProbeInfo, flow_to_analysis: float):
        self.cfg, self.info = cfg, info
        self.flow_to_analysis = flow_to_analysis
        self.luma: list[float] = []
        self.diff: list[float] = []
        self.times: list[float] = []
        self.samples: list[Sample] = []  # flow samples of the open shot, thinned as it grows
        self.stride = 1
        self.pictures: list[tuple[int, np.ndarray]] = []  # analysis-size pictures, thinned likewise
        self.picture_stride = _PICTURE_STRIDE
        self.open_start = 0
        self.open_transition = "start"
        self.pending: list[tuple[int, str]] = []  # (cut frame, detector), not yet final

    def wants_picture(self, index: int) -> bool:
        return index % self.picture_stride == 0

    def add_frame(
        self, index: int, t: float, small_bgr: np.ndarray, flow_gray: np.ndarray, diff: float, picture
    ):
        self.luma.append(float(flow_gray.mean()))
        self.diff.append(diff)
        self.times.append(t)
        if self.samples and self.samples[-1].index == index - 1 and self.samples[-1].next_flow_gray is None:
            self.samples[-1].next_flow_gray = flow_gray
        if index % self.stride == 0:
            self.samples.append(Sample(index, flow_gray, small_bgr))
            if len(self.samples) > _MAX_SAMPLES:
                self.stride *= 2
                self.samples = [s for s in self.samples if s.index % self.stride == 0]
        if picture is not None:
            self.pictures.append((index, picture))
            if len(self.pictures) > _MAX_PICTURES:
                self.picture_stride *= 2
                self.pictures = [p for p in self.pictures if p[0] % self.picture_stride == 0]

    def close(self, end: int, closed_by: str, next_transition: str) -> list[ClipSignals]:
        """Close the open shot at `end` (exclusive) and turn it into clips."""
        start, transition = self.open_start, self.open_transition
        taken = [s for s in self.samples if s.index < end]
        self.samples = [s for s in self.samples if s.index >= end]
        pictures = [p for p in self.pictures if p[0] < end]
        self.pictures = [p for p in self.pictures if p[0] >= end]
        self.open_start, self.open_transition = end, next_transition
        # the next shot is sampled densely again, then thinned as it grows
        self.stride, self.picture_stride = 1, _PICTURE_STRIDE
        if end <= start:
            return []
        shots = self._clean(Shot(start, end, closed_by, transition))
        return [self._signals(shot, taken, pictures) for shot in shots]

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
        for s in inside:
            if s.index + 1 >= shot.end:  # its next frame belongs to another clip
                s.next_flow_gray = None
        pics = [p for p in pictures if shot.start <= p[0] < shot.end]
        if not pics and inside:  # a clip shorter than the picture stride: upscale a small frame
            import cv2

            h, w = inside[0].small_bgr.shape[:2]
            size = (round(w * self.flow_to_analysis), round(h * self.flow_to_analysis))
            pics = [(inside[0].index, cv2.resize(inside[0].small_bgr, size, interpolation=cv2.INTER_LINEAR))]
        t0 = self.times[0] if self.times else 0.0
        start_time = self.times[shot.start] - t0
        if shot.end < len(self.times):
            end_time = self.times[shot.end] - t0
        else:
            end_time = self.times[shot.end - 1] - t0 + 1.0 / self.info.fps
        return ClipSignals(
            shot=shot,
            start_time=round(start_time, 6),
            end_time=round(end_time, 6),
            luma=np.asarray(self.luma[shot.start : shot.end], np.float32),
            samples=inside,
            pictures=pics,
            flow_to_analysis=self.flow_to_analysis,
        )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def analyze(
    path: Path | str, info: ProbeInfo, cfg: CurateConfig, stats: AnalysisStats | None = None
) -> Iterator[ClipSignals]:
    """Decode `path` once and yield its clips' signals as their shots close (see module doc)."""
    import cv2
    from scenedetect import FrameTimecode

    stats = stats if stats is not None else AnalysisStats()
    a = cfg.analysis
    size = analysis_size(info.width, info.height, a.max_side)
    flow_size = analysis_size(size[0], size[1], a.flow_max_side)
    tracker = _ShotTracker(cfg, info, size[0] / flow_size[0])
    detectors = _make_detectors(cfg)
    # a detector may report a cut up to this many frames after it happened
    latency = max([d.event_buffer_length for d in detectors.values()] + [0]) + 2
    # a long source may take long: the limit grows with its duration
    limit = cfg.probe.timeout_s + cfg.probe.timeout_per_video_second * info.duration
    deadline = Deadline(limit, path, "analysis")
    prev_flow = None
    index = -1
    for index, frame in enumerate(decode_frames(path, deadline, stats)):
        # every frame: a small colour frame for the detectors, its gray for flow and frame change
        small_bgr, flow_gray = shrink_frame(frame, flow_size, info.rotation)
        diff = 1.0
        if prev_flow is not None:  # fraction of pixels that changed visibly since the previous frame
            changed = cv2.threshold(cv2.absdiff(flow_gray, prev_flow), 10, 1, cv2.THRESH_BINARY)[1]
            diff = cv2.countNonZero(changed) / changed.size
        prev_flow = flow_gray
        # a few frames per shot: a larger picture for sharpness, colours and text
        picture = shrink_frame(frame, size, info.rotation)[0] if tracker.wants_picture(index) else None
        t = frame.time if frame.time is not None else index / info.fps
        tracker.add_frame(index, float(t), small_bgr, flow_gray, diff, picture)
        timecode = FrameTimecode(index, info.fps)
        for name, det in detectors.items():
            for cut in det.process_frame(timecode, small_bgr):
                tracker.pending.append((int(cut.frame_num), name))
                stats.cuts[name] = stats.cuts.get(name, 0) + 1
        yield from _close_ready(tracker, index - latency)
    stats.frames_decoded = index + 1
    if index < 0:
        raise PermanentError(
            f"{path}: no frame of the video stream decodes; the file is corrupt, re-export it"
        )
    end_tc = FrameTimecode(index + 1, info.fps)
    for name, det in detectors.items():
        for cut in det.post_process(end_tc):
            tracker.pending.append((int(cut.frame_num), name))
            stats.cuts[name] = stats.cuts.get(name, 0) + 1
    yield from _close_ready(tracker, index + 1)
    yield from tracker.close(index + 1, "end", "cut")


def _close_ready(tracker: _ShotTracker, up_to: int) -> Iterator[ClipSignals]:
    """Close the shots whose cuts every detector has had its chance to report (cut <= up_to)."""
    if not tracker.pending:
        return
    order = {name: i for i, name in enumerate(tracker.cfg.shots.detectors)}
    tracker.pending.sort(key=lambda cut: (cut[0], order.get(cut[1], 99)))
    min_gap = tracker.cfg.shots.min_shot_frames
    while tracker.pending and tracker.pending[0][0] <= up_to:
        cut, name = tracker.pending.pop(0)
        if cut - tracker.open_start < min_gap:
            continue  # the same cut reported by another detector, a frame off, or too close to the last
        yield from tracker.close(cut, name, "cut")
