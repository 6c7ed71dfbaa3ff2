"""Decoding for analysis: every frame of a source once, shrunk to the few small images analysis reads.

Each frame is decoded once (PyAV, `decode_frames`) and shrunk straight from its YUV planes by
OpenCV with 2x2 area halvings only (its fastest resize), which costs a fraction of a full-size RGB
conversion (`reduce_frame`). `FramePreparer` then measures what every frame contributes, and
`in_background` runs decoding and preparing in a second thread a few frames ahead of the consumer,
so on a machine with a free core they overlap with shot detection and per-clip scoring. Per frame:

- gray at *flow level* (the smallest halving still at least `analysis.flow_max_side`, 128 px):
  mean luma and the share of pixels changed since the previous frame, and the frame optical flow
  may later read (resized to flow size then, only for the pairs it uses);
- colour at *detector level* (the flow level halved once more, e.g. 80x45) and its HSV difference
  from the previous frame (`HsvDelta`), which PySceneDetect's detectors weigh (`curation.shots`);
- every `PICTURE_STRIDE`-th frame, a picture at analysis size (`analysis.max_side`, 256 px) for
  sharpness, colours and text.

Frames come out upright (rotated sources are turned) and full-range; corrupt packets are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation.core.frames import clock_origin, in_pts_order  # the kernel's reader places frames alike
from curation.core.video import avi_frame_slots, decodable_frames, upright
from curation.probe import Deadline, ProbeInfo, open_video
from curation.signals import AnalysisStats

PICTURE_STRIDE = 8  # a picture every 8th frame, so any clip of 8+ frames has one (thinned in long shots)
# FFmpeg's decoder threads pay off from about 720p; below, their hand-offs cost more CPU than they
# save (640x360 h264: 0.40 s single-threaded, 0.52 s threaded) and the analysis' own decode thread
# already overlaps decoding with the rest of the work
THREADED_DECODE_PIXELS = 1280 * 720


def decode_frames(
    path: Path | str, deadline: Deadline | None = None, stats: AnalysisStats | None = None, frame_threads: bool = True,
    seek_pts: int | None = None,
) -> Iterator:
    """Every decodable frame of the first video stream of `path`, in order, with its true
    presentation timestamp (`frame.pts`); corrupt packets are skipped and counted in
    `stats.decode_errors`.

    Analysis and extraction both read sources through this and place frames with `FrameClock`, so
    their frame numbers agree. Timestamps are made right twice: an AVI's from its index (the
    demuxer counts packets, blind to a stretch it skipped), and every source's put in increasing
    order over a few frames (AVIs with packed B-frames hand decoded frames their packets' stamps,
    in decode order). `frame_threads=False` decodes on the calling thread only. With `seek_pts`,
    decoding starts at the key frame at or before that timestamp (a work unit's warm-up point)."""
    container, stream = open_video(path)
    if not frame_threads:
        stream.thread_type = "NONE"

    def count_error(_error: Exception) -> None:
        if stats is not None:
            stats.decode_errors += 1

    try:
        slots = avi_frame_slots(path, stream.index) if container.format.name == "avi" else None
        if seek_pts is not None:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        yield from in_pts_order(decodable_frames(container, stream, deadline.check if deadline else None,
                                                 count_error, slots))
    finally:
        container.close()


class FrameClock:
    """Where each decoded frame of a source sits: its position and its time (seconds from the
    stream's start), both from its timestamp. Analysis and extraction place frames with it alike.

    The origin is the stream's start (`ProbeInfo.start_time`: slot 0 of an AVI's index, else the
    stream's `start_time`), so frames lost before the first that decodes (a damaged start, a stream
    cut mid-GOP) leave a gap at position 0 instead of shifting every later frame. A first frame
    within one frame duration of the start counts from itself: some AVIs stamp their first frame
    one late (Megamind.avi's first packet has pts 1, dts 0). Without a start time, times count from
    the first decoded frame.

    A frame's step is 1 / fps, or the timestamps' median gap (`ProbeInfo.frame_duration`, from the
    probe's first packets) where that is longer: a stream whose reported rate is double the real one
    would otherwise make every frame a gap.

    In a constant-rate source a frame is as many positions after the one before as frame durations
    have passed between their timestamps, so frames that did not decode leave a gap in the positions
    (and a clip never spans one). Counted step by step, not as round(t * fps): a nominal rate a hair
    off the real one (30 for 29.97) would otherwise skip a position every half minute. A
    variable-rate source has no frame grid: its frames are numbered in order, and only their times
    come from timestamps."""

    def __init__(self, info: ProbeInfo):
        self.fps, self.variable_rate = info.fps, info.variable_frame_rate
        # one frame's step: 1 / fps, or the timestamps' median gap where the rate is too high for them
        # (`ProbeInfo.frame_duration`): a rate reported double would make every frame a "gap"
        self.step_s = getattr(info, "frame_duration", None) or 1 / info.fps
        self.start: float | None = getattr(info, "start_time", None)
        self.origin: float | None = None  # the timestamp of position 0 at 0 s
        self.last, self.last_time = -1, None

    def place(self, frame) -> tuple[int, float]:
        """(position, time) of the next decoded frame; positions always increase."""
        if frame.time is None:
            position = self.last + 1
            time = position / self.fps if self.last_time is None else self.last_time + 1 / self.fps
        else:
            if self.origin is None:  # the stream's start, or the first frame (`clock_origin`)
                self.origin = clock_origin(self.start, float(frame.time), self.step_s)
            time = float(frame.time) - self.origin
            if self.last_time is None:  # the first frame: after the frames lost before it
                step = 1 + (0 if self.variable_rate else max(0, round(time / self.step_s)))
            else:
                step = 1
                if not self.variable_rate:
                    step = max(1, round((time - self.last_time) / self.step_s))
            position = self.last + step
        self.last, self.last_time = position, time
        return position, time


# ---------------------------------------------------------------------------------------------
# Shrinking a decoded frame


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


def _yuv_to_bgr(y, u, v, full_range: bool, luma_done: bool = False) -> np.ndarray:
    import cv2

    if not full_range:
        if not luma_done:
            y = cv2.LUT(y, _LIMITED_LUT)
        u = cv2.LUT(u, _LIMITED_CHROMA_LUT)
        v = cv2.LUT(v, _LIMITED_CHROMA_LUT)
    return cv2.cvtColor(cv2.merge([y, v, u]), cv2.COLOR_YCrCb2BGR)


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
        upright(gray, rotation),
        upright(small_bgr, rotation),
        None if picture is None else upright(picture, rotation),
    )


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
    return upright(bgr, rotation), upright(gray, rotation)


# ---------------------------------------------------------------------------------------------
# What each frame contributes


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


@dataclass
class PreparedFrame:
    """One decoded frame, reduced (in the decode thread) to what the analysis reads."""

    index: int  # the n-th frame decoded
    position: int  # its place in the source (`FrameClock`): jumps over frames that did not decode
    time: float  # seconds, from the frame's timestamp
    small_bgr: np.ndarray  # colour at detector level (half the flow level)
    flow_gray: np.ndarray  # full-range luma at flow level
    luma: float  # mean of flow_gray
    diff: float  # share of pixels that changed by more than 10 levels since the previous frame
    hsv_delta: HsvDelta | None  # the detectors' score components (None for the first frame)
    picture: np.ndarray | None  # BGR at analysis size, every PICTURE_STRIDE-th frame


class FramePreparer:
    """Turns decoded frames into `PreparedFrame`s; runs in the decode thread (OpenCV frees the GIL)."""

    def __init__(self, info: ProbeInfo, size: tuple[int, int], flow_size: tuple[int, int]):
        self.info, self.size, self.flow_size = info, size, flow_size
        self.clock = FrameClock(info)
        self.prev_gray: np.ndarray | None = None
        self.prev_hsv: np.ndarray | None = None
        self.index = -1

    def __call__(self, frame) -> PreparedFrame:
        import cv2

        self.index += 1
        index = self.index
        wants_picture = index % PICTURE_STRIDE == 0
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
        position, t = self.clock.place(frame)
        return PreparedFrame(
            index, position, float(t), reduced.small_bgr, gray, cv2.mean(gray)[0], diff, delta, reduced.picture
        )


# ---------------------------------------------------------------------------------------------
# Running ahead in a second thread

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
