"""Analysis: one decode pass per source, feeding shot detection and every per-clip signal.

Each frame is decoded once (PyAV) and shrunk straight from its YUV planes by OpenCV with 2x2 area
halvings only (its fastest resize), which costs a fraction of a full-size RGB conversion
(`reduce_frame`). Decoding and shrinking run in a second thread a few frames ahead of the rest
(`in_background`), so on a machine with a free core they overlap with shot detection and with the
caller's per-clip scoring. Per frame:

- gray at *flow level* (the smallest halving still at least `analysis.flow_max_side`, 128 px):
  the per-frame signals kept for the whole source (mean luma, share of pixels changed since the
  previous frame: a few floats a frame, so a 20-minute file costs kilobytes), and the frames
  optical flow may later read (resized to flow size then, only for the pairs it uses);
- colour at *detector level* (the flow level halved once more, e.g. 80x45): its HSV difference
  from the previous frame, measured once, is what PySceneDetect's `ContentDetector` and
  `AdaptiveDetector` weigh (`process_frame`); their own code decides the cuts (thresholds,
  adaptive ratio, flash filter, minimum shot length from `ShotConfig`);
- every 8th frame, a picture at analysis size (`analysis.max_side`, 256 px) for sharpness,
  colours and text.

Only the shot still open holds frames: at most `_MAX_SAMPLES` flow-level frames (each with the next
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
from curation.core.stage import PermanentError
from curation.probe import Deadline, ProbeInfo, open_video

_MAX_SAMPLES = 64  # flow frames kept for the open shot; thinned by half when full
_MAX_PICTURES = 16  # analysis-size pictures kept for the open shot; thinned likewise
_PICTURE_STRIDE = 8  # a picture every 8th frame, so any clip of 8+ frames has one (thinned in long shots)
# FFmpeg's decoder threads pay off from about 720p; below, their hand-offs cost more CPU than they
# save (640x360 h264: 0.40 s single-threaded, 0.52 s threaded) and the analysis' own decode thread
# already overlaps decoding with the rest of the work
_THREADED_DECODE_PIXELS = 1280 * 720
_FROZEN_MIN_RUN = 3  # frozen lead-in/tail shorter than this is left alone (duplicated frames are common)


@dataclass
class Shot:
    start: int  # first frame, inclusive
    end: int  # exclusive
    closed_by: str  # content | adaptive | black | max_duration | end: what ended the shot
    transition_in: str  # start | cut | fade | split: how it began


@dataclass
class Sample:
    """A frame kept for optical flow: gray at flow level (see `reduce_frame`), with the frame after it."""

    index: int
    flow_gray: np.ndarray
    small_bgr: np.ndarray  # the same frame in colour, smaller (a stand-in picture)
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
    flow_size: tuple[int, int] | None = None  # (w, h) flow runs at; None: the samples' own size


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


def _halve_while(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """2x2 area averages (OpenCV's fast path) while `img` is at least twice (w, h)."""
    import cv2

    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h:
        half_h, half_w = img.shape[0] // 2, img.shape[1] // 2
        img = cv2.resize(img[: 2 * half_h, : 2 * half_w], (half_w, half_h), interpolation=cv2.INTER_AREA)
    return img


def _to_size(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """`img` at exactly (w, h), from at most twice that size: one bilinear step (if any)."""
    import cv2

    if img.shape[1] == w and img.shape[0] == h:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def _shrink_plane(img: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """One 8-bit plane shrunk to each of `sizes` (w, h), largest first.

    2x2 area averaging while the image is still at least twice too large, then one bilinear
    step: close to a full area average (little aliasing) at a fraction of its cost, and the
    halvings are shared between the sizes.
    """
    out = []
    for w, h in sizes:
        img = _halve_while(img, w, h)
        out.append(_to_size(img, w, h))
    return out


@dataclass
class ReducedFrame:
    """What the per-frame analysis reads of one decoded frame, upright and full-range."""

    gray: np.ndarray  # luma at flow level: flow size up to twice it (halvings only; flow resizes)
    small_bgr: np.ndarray  # colour at detector level: the flow level halved once more
    picture: np.ndarray | None  # BGR at exactly the analysis size, when asked for


def reduce_frame(
    frame, flow_size: tuple[int, int], picture_size: tuple[int, int] | None, rotation: int = 0
) -> ReducedFrame:
    """Shrink a decoded PyAV frame for the analysis, touching the full-size planes once.

    Every frame pays only 2x2 area halvings (OpenCV's fastest resize) down to the *flow level*,
    the smallest halving still at least `flow_size`, and one more to the *detector level*, where
    colour is converted; optical flow later resizes the few frame pairs it reads to `flow_size`.
    A picture at exactly `picture_size` is made on the way down when asked for.
    """
    import cv2

    def turned(size):  # sizes before turning upright
        return (size[1], size[0]) if rotation in (90, 270) else size

    fw, fh = turned(flow_size)
    fmt = frame.format.name
    picture = None
    if fmt in _YUV_FORMATS:
        full_range = fmt.startswith("yuvj") or getattr(frame, "color_range", 0) == 2
        y, u, v = (_plane(p) for p in frame.planes[:3])
        if picture_size is not None:
            pw, ph = turned(picture_size)
            y, u, v = (_halve_while(p, pw, ph) for p in (y, u, v))
            picture = _yuv_to_bgr(*(_to_size(p, pw, ph) for p in (y, u, v)), full_range)
        gray = _halve_while(y, fw, fh)
        if not full_range:
            gray = cv2.LUT(gray, _LIMITED_LUT)
        elif not gray.flags.owndata:  # a source no larger than flow size: never keep the decoder's buffer
            gray = gray.copy()
        det_y = _halve_while(gray, gray.shape[1] // 2, gray.shape[0] // 2) if min(gray.shape) >= 32 else gray
        dh, dw = det_y.shape
        det_u, det_v = (_to_size(_halve_while(p, dw, dh), dw, dh) for p in (u, v))
        small_bgr = _yuv_to_bgr(det_y, det_u, det_v, full_range, luma_done=True)
    else:
        if picture_size is not None:
            pw, ph = turned(picture_size)
            picture = frame.reformat(width=pw, height=ph, format="bgr24").to_ndarray()
        bgr = frame.reformat(width=fw, height=fh, format="bgr24").to_ndarray()
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        small_bgr = _halve_while(bgr, fw // 2, fh // 2) if min(gray.shape) >= 32 else bgr
    return ReducedFrame(
        _upright(gray, rotation),
        _upright(small_bgr, rotation),
        None if picture is None else _upright(picture, rotation),
    )


def _yuv_to_bgr(y, u, v, full_range: bool, luma_done: bool = False) -> np.ndarray:
    import cv2

    if not full_range:
        if not luma_done:
            y = cv2.LUT(y, _LIMITED_LUT)
        u = cv2.LUT(u, _LIMITED_CHROMA_LUT)
        v = cv2.LUT(v, _LIMITED_CHROMA_LUT)
    return cv2.cvtColor(cv2.merge([y, v, u]), cv2.COLOR_YCrCb2BGR)


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(img, k=rotation // 90)) if rotation else img


def shrink_frame(frame, size: tuple[int, int], rotation: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A decoded PyAV frame as (BGR, gray) uint8 at exactly `size` (w, h), turned upright.

    Halvings then one bilinear step per plane, converted at the small size (the analysis itself
    uses `reduce_frame`, which skips the bilinear step on every frame).
    """
    import cv2

    w, h = (size[1], size[0]) if rotation in (90, 270) else size  # before turning upright
    if frame.format.name in _YUV_FORMATS:
        full_range = frame.format.name.startswith("yuvj") or getattr(frame, "color_range", 0) == 2
        y, u, v = (_shrink_plane(_plane(p), [(w, h)])[0] for p in frame.planes[:3])
        gray = y if full_range else cv2.LUT(y, _LIMITED_LUT)
        bgr = _yuv_to_bgr(gray, u, v, full_range, luma_done=True)
    else:
        bgr = frame.reformat(width=w, height=h, format="bgr24").to_ndarray()
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return _upright(bgr, rotation), _upright(gray, rotation)


def _make_detectors(cfg: CurateConfig) -> dict:
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


@dataclass(frozen=True)
class HsvDelta:
    """Mean absolute difference (0..255) of each HSV channel between a frame and the one before."""

    hue: float
    sat: float
    lum: float


def hsv_delta(hsv: np.ndarray, previous: np.ndarray) -> HsvDelta:
    """ContentDetector's score components: per channel, sum |a - b| / pixels (uint8 HSV frames)."""
    import cv2

    sums = cv2.sumElems(cv2.absdiff(hsv, previous))
    pixels = float(hsv.shape[0] * hsv.shape[1])
    return HsvDelta(sums[0] / pixels, sums[1] / pixels, sums[2] / pixels)


def decode_frames(
    path: Path | str, deadline: Deadline, stats: AnalysisStats, frame_threads: bool = True
) -> Iterator:
    """Every decodable frame of the first video stream, in order; corrupt packets are skipped.

    `frame_threads=False` decodes on the calling thread only (see `_THREADED_DECODE_PIXELS`)."""
    import av

    container, stream = open_video(path)
    if not frame_threads:
        stream.thread_type = "NONE"
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

    def __init__(self, cfg: CurateConfig, info: ProbeInfo, size: tuple[int, int], flow_size: tuple[int, int]):
        self.cfg, self.info = cfg, info
        self.size, self.flow_size = size, flow_size
        self.flow_to_analysis = size[0] / flow_size[0]
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

    def add_frame(self, frame: PreparedFrame):
        index = frame.index
        self.luma.append(frame.luma)
        self.diff.append(frame.diff)
        self.times.append(frame.time)
        flow_gray = frame.flow_gray
        if self.samples and self.samples[-1].index == index - 1 and self.samples[-1].next_flow_gray is None:
            self.samples[-1].next_flow_gray = flow_gray
        if index % self.stride == 0:
            self.samples.append(Sample(index, flow_gray, frame.small_bgr))
            if len(self.samples) > _MAX_SAMPLES:
                self.stride *= 2
                self.samples = [s for s in self.samples if s.index % self.stride == 0]
        # pictures come every _PICTURE_STRIDE frames; a long shot keeps only every picture_stride-th
        if frame.picture is not None and index % self.picture_stride == 0:
            self.pictures.append((index, frame.picture))
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

            pics = [
                (inside[0].index, cv2.resize(inside[0].small_bgr, self.size, interpolation=cv2.INTER_LINEAR))
            ]
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
            flow_size=self.flow_size,
        )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in a 1-D boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


@dataclass
class PreparedFrame:
    """One decoded frame, reduced (in the decode thread) to what the analysis reads."""

    index: int
    time: float  # seconds, from the frame's timestamp
    small_bgr: np.ndarray  # colour at detector level (half the flow level)
    flow_gray: np.ndarray  # full-range luma at flow level
    luma: float  # mean of flow_gray
    diff: float  # share of pixels that changed by more than 10 levels since the previous frame
    hsv_delta: HsvDelta | None  # the detectors' score components (None for the first frame)
    picture: np.ndarray | None  # BGR at analysis size, every _PICTURE_STRIDE-th frame


class _FramePreparer:
    """Turns decoded frames into `PreparedFrame`s; runs in the decode thread (OpenCV frees the GIL)."""

    def __init__(self, info: ProbeInfo, size: tuple[int, int], flow_size: tuple[int, int]):
        self.info, self.size, self.flow_size = info, size, flow_size
        self.prev_gray: np.ndarray | None = None
        self.prev_hsv: np.ndarray | None = None
        self.index = -1

    def __call__(self, frame) -> PreparedFrame:
        import cv2

        self.index += 1
        index = self.index
        wants_picture = index % _PICTURE_STRIDE == 0
        reduced = reduce_frame(
            frame, self.flow_size, self.size if wants_picture else None, self.info.rotation
        )
        gray = reduced.gray
        diff, delta = 1.0, None
        hsv = cv2.cvtColor(reduced.small_bgr, cv2.COLOR_BGR2HSV)
        if self.prev_gray is not None:  # fraction of pixels that changed visibly since the previous frame
            changed = cv2.threshold(cv2.absdiff(gray, self.prev_gray), 10, 1, cv2.THRESH_BINARY)[1]
            diff = cv2.countNonZero(changed) / changed.size
            delta = hsv_delta(hsv, self.prev_hsv)
        self.prev_gray, self.prev_hsv = gray, hsv
        t = frame.time if frame.time is not None else index / self.info.fps
        return PreparedFrame(
            index, float(t), reduced.small_bgr, gray, cv2.mean(gray)[0], diff, delta, reduced.picture
        )


def analyze(
    path: Path | str, info: ProbeInfo, cfg: CurateConfig, stats: AnalysisStats | None = None
) -> Iterator[ClipSignals]:
    """Decode `path` once and yield its clips' signals as their shots close (see module doc)."""
    from scenedetect import FrameTimecode

    stats = stats if stats is not None else AnalysisStats()
    a = cfg.analysis
    size = analysis_size(info.width, info.height, a.max_side)
    flow_size = analysis_size(size[0], size[1], a.flow_max_side)
    tracker = _ShotTracker(cfg, info, size, flow_size)
    detectors = _make_detectors(cfg)
    # a detector may report a cut up to this many frames after it happened
    latency = max([d.event_buffer_length for d in detectors.values()] + [0]) + 2
    # a long source may take long: the limit grows with its duration
    limit = cfg.probe.timeout_s + cfg.probe.timeout_per_video_second * info.duration
    deadline = Deadline(limit, path, "analysis")
    decoded = decode_frames(path, deadline, stats, info.width * info.height >= _THREADED_DECODE_PIXELS)
    index = -1
    # decoding and shrinking run one frame batch ahead in a second thread, overlapping this loop
    # (detectors, shot tracking) and whatever the caller does with each clip (scoring)
    for frame in in_background(decoded, _FramePreparer(info, size, flow_size)):
        index = frame.index
        tracker.add_frame(frame)
        timecode = FrameTimecode(index, info.fps)
        for name, det in detectors.items():
            for cut in det.process_frame(timecode, frame.hsv_delta):
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


_BATCH = 4  # frames handed over at a time: fewer queue operations
_QUEUE_BATCHES = 16  # how far the decode thread may run ahead (64 small frames: a few MB)
_END = object()


def in_background(items: Iterator, transform, batch: int = _BATCH, depth: int = _QUEUE_BATCHES) -> Iterator:
    """`transform(item)` for each of `items`, computed in a second thread running ahead of the
    consumer. An exception there (a decode error, the deadline) is raised here; closing this
    generator early stops the thread and closes `items` (in that thread, where it runs)."""
    import queue
    import threading

    handover: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        while not stop.is_set():
            try:
                handover.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            done: list = []
            for item in items:
                done.append(transform(item))
                if len(done) >= batch:
                    if not put(done):
                        return
                    done = []
            if done and not put(done):
                return
            put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="rushes-decode", daemon=True)
    worker.start()
    try:
        while True:
            got = handover.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            yield from got
    finally:
        stop.set()
        while worker.is_alive():  # unblock a worker waiting to put, then let it finish
            try:
                handover.get(timeout=0.01)
            except queue.Empty:
                pass
        worker.join()


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
