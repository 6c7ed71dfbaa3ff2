"""The frame reader: a few frames of a clip file, or of a frame range of a source, by either backend.

Two backends read the same frames:

- PyAV decodes forward: a clip file from its start (what `video.read_frames` always did), a range
  of a source from the keyframe before it. It reads every file FFmpeg reads, and it is the one that
  decodes whole sources (analysis, extraction).
- decord (`VideoReader.get_batch`) seeks to each frame asked for: much faster when a few frames
  of a long clip are wanted. It is used only with guards (see `read_clip_frames`).

`reader` chooses: "pyav", "decord", or "auto" (decord when it is installed and the file is one it
reads right, else PyAV). Frames are RGB uint8 (H, W, 3), shrunk by `max_side` after decoding with
the same function in both backends, so both give the same arrays.

Frame times follow curation's clock (`clock_origin`, used by `curation.decode.FrameClock`): seconds
from the video stream's start, so a manifest row's `start_time` finds its frames in the source.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from curation.core.stage import PermanentError

log = logging.getLogger(__name__)

READERS = ("auto", "decord", "pyav")

Fallback = Callable[[str], None] | None


# ---------------------------------------------------------------------------------------------
# The clock's origin and step: the one rule, shared with curation.decode.FrameClock


def clock_origin(start: float | None, first: float, step_s: float) -> float:
    """The timestamp (s) that counts as 0 s: the stream's start, or its first decoded frame.

    The stream's start, so frames lost before the first that decodes (a damaged start, a stream cut
    mid-GOP) leave a gap at position 0 instead of shifting every later frame; but a first frame
    within 1.5 frame steps of the start counts from itself (some AVIs stamp their first frame one
    late: Megamind.avi's first packet has pts 1, dts 0). Without a start: the first frame."""
    late = start is not None and first - start > 1.5 * step_s
    return start if late else first


def frame_step(fps: float, times: list[float]) -> float | None:
    """The median gap between `times` (seconds, any order) where it is over 1.25 frame durations
    of `fps` (a reported rate too high for the timestamps); None where the rate agrees. (Only the
    longer case: a step shorter than the rate, such as field-coded packets, makes no false gaps.)"""
    ordered = sorted(set(times))
    gaps = sorted(b - a for a, b in zip(ordered, ordered[1:], strict=False))
    if not gaps or fps <= 0:
        return None
    median = gaps[(len(gaps) - 1) // 2]  # the lower median: a few gaps from lost frames do not move it
    return median if median > 1.25 / fps else None


_REORDER = 4  # frames over which timestamps may come out of order (a B-frame's delay)


def in_pts_order(frames: Iterator, window: int = _REORDER) -> Iterator:
    """`frames` (already in display order) with their timestamps sorted over `window` frames.

    AVIs with packed B-frames hand decoded frames their packets' stamps, in decode order."""
    held: list = []
    stamps: list[int] = []
    for frame in frames:
        held.append(frame)
        if frame.pts is not None:
            heapq.heappush(stamps, frame.pts)
        if len(held) > window:
            yield _stamped(held.pop(0), stamps)
    while held:
        yield _stamped(held.pop(0), stamps)


def _stamped(frame, stamps: list[int]):
    if frame.pts is not None and stamps:
        frame.pts = heapq.heappop(stamps)
    return frame


def avi_frame_slots(path: Path | str, stream_index: int) -> dict[int, int] | None:
    """{file offset of a packet's data: its frame slot} for one stream of an AVI, from the idx1 index.

    FFmpeg's AVI demuxer numbers packets by counting them, so after a damaged stretch (which it
    skips to the next chunk it recognises) every later frame gets the timestamp of a frame too
    early. The index at the end of the file still says which slot each chunk is. None for other
    containers, an AVI without idx1 (OpenDML files over 1 GB), or an unreadable index.
    """
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"AVI ":
                return None
            size = Path(path).stat().st_size
            movi = index = None
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                tag, length = struct.unpack("<4sI", f.read(8))
                if tag == b"LIST" and f.read(4) == b"movi":
                    movi = pos + 8  # offsets in idx1 are relative to the 'movi' tag (or absolute)
                elif tag == b"idx1":
                    index = (pos + 8, length)
                pos += 8 + length + (length & 1)
            if movi is None or index is None:
                return None
            f.seek(index[0])
            data = f.read(index[1] - index[1] % 16)
    except (OSError, struct.error):
        return None
    wanted = b"%02d" % stream_index
    chunks = [(offset, n) for n, (chunk, _flags, offset, _size) in
              enumerate(e for e in struct.iter_unpack("<4sIII", data) if e[0][:2] == wanted and e[0][2:] in (b"dc", b"db"))]
    if not chunks:
        return None
    base = movi if chunks[0][0] < movi else 0
    return {base + offset + 8: n for offset, n in chunks}  # a packet's position is after its 8-byte header


def decodable_frames(container, stream, check: Callable[[], None] | None = None,
                     on_error: Callable[[Exception], None] | None = None,
                     slots: dict[int, int] | None = None) -> Iterator:
    """Every frame of `stream` that decodes, in order: a whole source read once, damage skipped.

    A packet that fails to decode is skipped and the next one tried (the frames that decode are
    salvaged); a container that breaks off ends the frames there. Each failure is handed to
    `on_error`. `check()` runs before every packet, so a deadline can stop a crawling decoder. The
    caller opens and closes `container`; frame i is the i-th frame yielded (presentation order).
    With `slots` (`avi_frame_slots`), each frame's pts is set to its slot in the AVI index, so a
    stretch the demuxer skipped shows as a jump in the timestamps.
    """
    import av

    packets = container.demux(stream)
    true_pts: dict[int, int] = {}  # demuxer's counted pts -> the slot in the index
    shift = 0
    while True:
        if check is not None:
            check()
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as e:  # the container breaks off here: keep what decoded so far
            if on_error is not None:
                on_error(e)
            return
        if slots is not None and packet.pts is not None and packet.pos in slots:
            true_pts[packet.pts] = slots[packet.pos]
            while len(true_pts) > 64:  # frames a decoder never returns: forget them
                del true_pts[next(iter(true_pts))]
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            if on_error is not None:
                on_error(e)
            continue
        if slots is not None:
            for frame in frames:
                if frame.pts is not None:
                    if frame.pts in true_pts:
                        shift = true_pts.pop(frame.pts) - frame.pts
                    frame.pts += shift
        yield from frames


# ---------------------------------------------------------------------------------------------
# The API


def _check_reader(reader: str) -> None:
    if reader not in READERS:
        raise ValueError(f"video_reader={reader!r} is not a frame reader: use one of {', '.join(READERS)}")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise PermanentError(f"{path} does not exist or is not a file; re-extract the clip or check the source path")
    if path.stat().st_size == 0:
        raise PermanentError(f"{path} is empty (0 bytes); re-extract the clip or quarantine its source")


def read_clip_frames(path, indices: list[int] | None = None, *, max_side: int | None = None,
                     reader: str = "auto", on_fallback: Fallback = None) -> list[np.ndarray]:
    """RGB uint8 frames (H, W, 3) of the video file at `path` by decode-order index, in the order
    of `indices` (sorted, duplicates once); every frame when `indices` is None (always PyAV).

    Indices past the frames the file holds are left out; a file none of whose asked frames decode
    raises PermanentError."""
    _check_reader(reader)
    path = Path(path)
    _check_file(path)
    return _pyav_clip(path, indices, max_side)


def read_range_frames(path, start_time: float, num_frames: int, indices: list[int], *,
                      max_side: int | None = None, reader: str = "auto", on_fallback: Fallback = None) -> list[np.ndarray]:
    """Frames `indices` (clip-local, 0..num_frames-1) of the clip of the source at `path` whose first
    frame is at `start_time` seconds (curation's clock: from the video stream's start).

    A clip never spans an undecodable stretch (curation cuts there), so its frame k is the k-th
    frame decoded at or after start_time (within half a frame step)."""
    _check_reader(reader)
    path = Path(path)
    _check_file(path)
    wanted = _range_indices(path, num_frames, indices)
    return _pyav_range(path, float(start_time), wanted, max_side)


def frame_count(path, *, reader: str = "auto") -> int:
    """Frames the video file at `path` holds: its packets counted (not the header's claim, which
    can be wrong), so indices below it exist."""
    _check_reader(reader)
    path = Path(path)
    _check_file(path)
    return _pyav_count(path)


def _range_indices(path: Path, num_frames: int, indices: list[int]) -> list[int]:
    wanted = sorted({int(i) for i in indices})
    if num_frames <= 0 or not wanted:
        raise PermanentError(f"{path}: no frames asked for (num_frames={num_frames}, indices={indices}); "
                             "the manifest row's frame range is empty")
    if wanted[0] < 0 or wanted[-1] >= num_frames:
        raise PermanentError(f"{path}: frame indices {indices} fall outside the clip's {num_frames} frames")
    return wanted


# ---------------------------------------------------------------------------------------------
# PyAV


def resize_max_side(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """`frame` shrunk so its longer side is at most `max_side` (OpenCV area averaging); both backends
    shrink with this, after decoding, so they give the same arrays."""
    if not max_side:
        return frame
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    import cv2

    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _open(path: Path):
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise PermanentError(f"cannot open {path} as a video ({e}); re-extract the clip or quarantine its source") from e
    if not container.streams.video:
        container.close()
        raise PermanentError(f"{path} has no video stream; re-extract the clip or quarantine its source")
    fmt = container.format.name
    if fmt == "tty" or fmt == "image2" or fmt.endswith("_pipe"):  # text or a still image FFmpeg renders
        container.close()
        raise PermanentError(f"{path} is not a video ({fmt}); re-extract the clip or quarantine its source")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _rgb(frame, max_side: int | None) -> np.ndarray:
    return resize_max_side(frame.to_ndarray(format="rgb24"), max_side)


def _pyav_clip(path: Path, indices: list[int] | None, max_side: int | None) -> list[np.ndarray]:
    """Decode from the start, keeping the frames asked for (the dependable way: no seeking)."""
    import av

    wanted = None if indices is None else set(indices)
    frames: list[np.ndarray] = []
    container, stream = _open(path)
    try:
        for i, frame in enumerate(container.decode(stream)):
            if wanted is not None and i not in wanted:
                continue
            frames.append(_rgb(frame, max_side))
            if wanted is not None and len(frames) == len(wanted):
                break
    except (av.error.FFmpegError, IndexError) as e:
        raise PermanentError(f"cannot decode {path}: {e}; re-extract the clip or quarantine its source") from e
    finally:
        container.close()
    if not frames:
        raise PermanentError(f"{path} has no decodable video frames (of {sorted(wanted) if wanted else 'any'}); "
                             "re-extract the clip or quarantine its source")
    return frames


def _pyav_count(path: Path) -> int:
    import av

    container, stream = _open(path)
    try:
        return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as e:
        raise PermanentError(f"cannot read {path} as a video: {e}; re-extract the clip or quarantine its source") from e
    finally:
        container.close()


def stream_start(path: Path | str, container, stream) -> float | None:
    """The video stream's start in seconds, as the probe reads it: slot 0 of an AVI's index (frames
    are stamped with their slots), else the stream's `start_time`; None when the container does not say."""
    if container.format.name == "avi" and avi_frame_slots(path, stream.index):
        return 0.0
    if stream.start_time is None or not stream.time_base:
        return None
    return float(stream.start_time * stream.time_base)


_STEP_PACKETS = 64  # packets whose timestamps tell the frame step


def _frames_from(path: Path, container, stream) -> Iterator:
    """Decodable frames from where the container stands, timestamps made right (AVI slots, order)."""
    slots = avi_frame_slots(path, stream.index) if container.format.name == "avi" else None
    return in_pts_order(decodable_frames(container, stream, slots=slots))


def _clock(path: Path) -> tuple[float, float]:
    """(origin, step) of the source's clock in seconds, from its first packets and first frame
    (remembered per file: every clip of a source asks)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _CLOCKS:
        if len(_CLOCKS) > 64:
            _CLOCKS.clear()
        _CLOCKS[key] = _read_clock(path)
    return _CLOCKS[key]


_CLOCKS: dict[tuple, tuple[float, float]] = {}


def _read_clock(path: Path) -> tuple[float, float]:
    import av

    container, stream = _open(path)
    try:
        tb = stream.time_base
        rate = stream.guessed_rate or stream.average_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        start = stream_start(path, container, stream)
        times = []
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size:
                times.append(float(packet.pts * tb))
            if len(times) >= _STEP_PACKETS:
                break
        _seek_start(container, stream)
        first = None
        frames = _frames_from(path, container, stream)
        for frame in frames:
            if frame.time is not None:
                first = float(frame.time)
                break
        frames.close()
    except av.error.FFmpegError as e:
        raise PermanentError(f"cannot read {path} as a video: {e}; quarantine the source") from e
    finally:
        container.close()
    if first is None:
        raise PermanentError(f"{path}: no frame with a timestamp decodes; quarantine the source")
    step = (frame_step(fps, times) if len(times) > 2 else None) or (1 / fps if fps > 0 else 1 / 25)
    return clock_origin(start, first, step), step


def _seek_start(container, stream) -> None:
    container.seek(stream.start_time or 0, stream=stream, backward=True)


def _pyav_range(path: Path, start_time: float, wanted: list[int], max_side: int | None) -> list[np.ndarray]:
    """Seek to the keyframe before the range, decode forward, count frames from start_time."""
    import av

    container, stream = _open(path)
    try:
        origin, step = _clock(path)
        target = origin + start_time - step / 2  # the first frame at or after this is clip frame 0
        # an AVI's timestamps are its demuxer's packet count (made right from the index while decoding
        # from the start, `avi_frame_slots`); seeking there lands off the key frames after damage
        counted = container.format.name == "avi"
        back = 0.0
        while True:
            seek_to = target - back
            if counted or seek_to <= origin or back > 60:
                _seek_start(container, stream)
                from_start = True
            else:
                container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
                from_start = False
            got = _collect(_frames_from(path, container, stream), target, step, wanted, max_side, from_start)
            if got is not None or from_start:
                break
            back = max(1.0, back * 4)  # landed past the range's start: seek further back
    except av.error.FFmpegError as e:
        raise PermanentError(f"cannot decode {path}: {e}; quarantine the source") from e
    finally:
        container.close()
    if not got:
        raise PermanentError(f"{path}: no frame decodes at {start_time:.3f} s or after; the manifest row "
                             "does not match this source (re-curate it) or the file is damaged")
    return got


def _collect(frames: Iterator, target: float, step: float, wanted: list[int], max_side: int | None,
             from_start: bool) -> list[np.ndarray] | None:
    """The `wanted` clip-local frames counted from the first frame at or after `target`; None when the
    first frame decoded after a seek is a step or more past `target` (frames before it may be
    missed: the seek landed too late)."""
    out: list[np.ndarray] = []
    k = -1
    first = True
    keep = set(wanted)
    try:
        for frame in frames:
            t = None if frame.time is None else float(frame.time)
            if k < 0:
                if t is None or t < target:
                    first = False
                    continue
                if first and not from_start and t >= target + step:
                    return None
            k += 1
            if k in keep:
                out.append(_rgb(frame, max_side))
                if len(out) == len(keep):
                    break
    finally:
        frames.close()
    return out

