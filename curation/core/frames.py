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

import atexit
import heapq
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    of `indices` (sorted, duplicates once); every frame when `indices` is None (always PyAV: a
    sequential decode is what it does best).

    Indices past the frames the file holds are left out; a file none of whose asked frames decode
    raises PermanentError. With decord chosen, a file it cannot be trusted with, or a read of it
    that fails or runs past its time limit, is read with PyAV and `on_fallback(reason)` is told."""
    _check_reader(reader)
    path = Path(path)
    _check_file(path)
    if indices is not None and reader != "pyav" and _wants_decord(reader):
        facts = file_facts(path)
        valid = sorted({int(i) for i in indices if 0 <= int(i) < facts.frames})
        reason = facts.refusal(for_range=False)
        if valid and reason is None:
            try:
                got = _worker().call(_decord_clip, (str(path), valid, facts.frames),
                                     _time_limit(len(valid), facts.width * facts.height))
                return [resize_max_side(frame, max_side) for frame in got]
            except DecordFailed as e:
                reason = str(e)
        if valid:
            _fell_back(path, reason, on_fallback)
    return _pyav_clip(path, indices, max_side)


def read_range_frames(path, start_time: float, num_frames: int, indices: list[int], *,
                      max_side: int | None = None, reader: str = "auto", on_fallback: Fallback = None) -> list[np.ndarray]:
    """Frames `indices` (clip-local, 0..num_frames-1) of the clip of the source at `path` whose first
    frame is at `start_time` seconds (curation's clock: from the video stream's start), in sorted
    order; fewer when the source ends first.

    A clip never spans an undecodable stretch (curation cuts there), so its frame k is the k-th
    frame decoded at or after start_time (within half a frame step). decord finds that frame by its
    timestamps, never by assuming index == position; where its index cannot be trusted (variable
    frame rate, webm/VP8, AVI, edit lists...) PyAV reads and `on_fallback(reason)` is told."""
    _check_reader(reader)
    path = Path(path)
    _check_file(path)
    wanted = _range_indices(path, num_frames, indices)
    start_time = float(start_time)
    if reader != "pyav" and _wants_decord(reader):
        facts = file_facts(path)
        reason = facts.refusal(for_range=True)
        if reason is None:
            origin, step = _clock(path)
            target = origin + start_time - facts.raw_start  # decord's times count from the stream's start_time
            try:
                got = _worker().call(_decord_range, (str(path), target, step, wanted, facts.frames),
                                     _time_limit(len(wanted), facts.width * facts.height))
                return [resize_max_side(frame, max_side) for frame in got]
            except DecordFailed as e:
                reason = str(e)
        _fell_back(path, reason, on_fallback)
    return _pyav_range(path, start_time, wanted, max_side)


def frame_count(path, *, reader: str = "auto") -> int:
    """Frames the video file at `path` shows: its packets counted (not the header's claim, which can
    be wrong; not packets an edit list hides), so every index below it exists in both backends."""
    _check_reader(reader)
    path = Path(path)
    _check_file(path)
    return file_facts(path).frames


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


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded picture (H, W, ...) turned `rotation` degrees counter-clockwise, as it is displayed."""
    turns = round((rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(img, k=turns)) if turns else img


def _rgb(frame, max_side: int | None) -> np.ndarray:
    # as displayed: a phone's portrait source reads upright, like its extracted clip
    return resize_max_side(upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0) or 0), max_side)


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


def _remembered(cache: dict, path: Path, read, limit: int):
    """`read(path)`, remembered per file (path, size and modification time): every clip of a source asks."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in cache:
        if len(cache) > limit:
            cache.clear()
        cache[key] = read(path)
    return cache[key]


def _clock(path: Path) -> tuple[float, float]:
    """(origin, step) of the source's clock in seconds, from its first packets and first frame."""
    return _remembered(_CLOCKS, path, _read_clock, 64)


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
    """The `wanted` clip-local frames of the range at `start_time` (one seek, then decoding forward)."""
    keep = set(wanted)
    out: list[np.ndarray] = []
    frames = iter_range_frames(path, start_time, wanted[-1] + 1, max_side=max_side, keep=keep)
    try:
        for frame in frames:
            out.append(frame)
            if len(out) == len(keep):
                break
    finally:
        frames.close()
    return out


def iter_range_frames(path, start_time: float, num_frames: int, *, max_side: int | None = None,
                      keep: set[int] | None = None) -> Iterator[np.ndarray]:
    """Clip-local frames 0..num_frames-1 (or only those in `keep`) of the range whose first frame is at
    `start_time` seconds, in order, decoded by PyAV in one pass: seek to the key frame before the
    range, decode forward, count frames from start_time. Fewer when the source ends first.

    For a whole range (a player's cut): one decode of the range, where reads of it in chunks would
    each decode again from its start."""
    import av

    path = Path(path)
    _check_file(path)
    if num_frames <= 0:
        return
    container, stream = _open(path)
    counted = _counted_after_seek(path, container, stream, float(start_time))
    yielded = 0
    try:
        for k, frame in counted:
            if keep is None or k in keep:
                yielded += 1
                yield _rgb(frame, max_side)
            if k + 1 >= num_frames:
                break
    except av.error.FFmpegError as e:
        raise PermanentError(f"cannot decode {path}: {e}; quarantine the source") from e
    finally:
        counted.close()  # its decoder first, then the file
        container.close()
    if not yielded:
        raise PermanentError(f"{path}: no frame decodes at {start_time:.3f} s or after; the manifest row "
                             "does not match this source (re-curate it) or the file is damaged")


class _LandedLate(Exception):
    """A seek landed past the range's start: frames before the first one decoded may be missed."""


def _counted_after_seek(path: Path, container, stream, start_time: float) -> Iterator[tuple]:
    """(k, frame) for clip-local frame k = 0, 1, ... of the range at `start_time`, seeking back further
    while a seek lands past the range's start."""
    origin, step = _clock(path)
    target = origin + start_time - step / 2  # the first frame at or after this is clip frame 0
    # an AVI's timestamps are its demuxer's packet count (made right from the index while decoding
    # from the start, `avi_frame_slots`); seeking there lands off the key frames after damage
    counted = container.format.name == "avi"
    back = 0.0
    while True:
        seek_to = target - back
        from_start = counted or seek_to <= origin or back > 60
        if from_start:
            _seek_start(container, stream)
        else:
            container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
        frames = _counted(_frames_from(path, container, stream), target, step, from_start)
        try:
            first = next(frames, None)
        except _LandedLate:
            back = max(1.0, back * 4)  # landed past the range's start: seek further back
            continue
        try:
            if first is not None:
                yield first
                yield from frames
        finally:
            frames.close()
        return


def _counted(frames: Iterator, target: float, step: float, from_start: bool) -> Iterator[tuple]:
    """(k, frame): frames counted from the first at or after `target`. Raises _LandedLate before the
    first when the first frame decoded after a seek is a step or more past `target`."""
    k = -1
    first = True
    try:
        for frame in frames:
            t = None if frame.time is None else float(frame.time)
            if k < 0:
                if t is None or t < target:
                    first = False
                    continue
                if first and not from_start and t >= target + step:
                    raise _LandedLate
            k += 1
            yield k, frame
    finally:
        frames.close()



# ---------------------------------------------------------------------------------------------
# What a file is, as the guards need it (PyAV; packets only, no decoding)

# 8-bit YUV: decord and PyAV convert these to RGB alike (swscale's unscaled path, bit for bit).
# Others (10-bit, RGB codecs) go through swscale's scaler, where decord's graph and PyAV's reformat
# use other settings (10-bit h264: up to 45 levels apart on colour edges, 0.4 on average)
_DECORD_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"}
_VFR_PACKETS = 240


@dataclass(frozen=True)
class FileFacts:
    """A video file's packets, counted: what both backends must agree on before decord reads."""

    container: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int  # packets with data that are shown: the frames a sequential decode gives
    hidden: int  # packets an edit list hides (decoded for reference, never shown)
    header_frames: int  # what the container claims (can be wrong either way)
    raw_start: float  # the stream's start_time in seconds, as decord counts its timestamps from it
    rotation: int  # display rotation (degrees) of the first frame
    variable_rate: bool

    def refusal(self, for_range: bool) -> str | None:
        """Why decord cannot be trusted with this file (PyAV reads it then), or None."""
        if not decord_installed():
            return "decord is not installed (pip install decord2)"
        if self.hidden:
            return (f"an edit list hides {self.hidden} of its {self.frames + self.hidden} packets; decord would "
                    "count and return those frames too")
        if self.container == "avi":
            return "AVI: decord numbers frames by packets, and its demuxer skips damaged stretches unmarked"
        if self.codec in ("vp8", "vp9") or "webm" in self.container:
            return f"{self.codec} in {self.container}: decord's seeks can return wrong frames there"
        if self.rotation:
            return f"display rotation {self.rotation}: decord returns the coded picture, not the displayed one"
        if self.pix_fmt not in _DECORD_FORMATS:
            return f"pixel format {self.pix_fmt}: decord converts it to RGB unlike PyAV (frames would differ)"
        if for_range and self.variable_rate:
            return "variable frame rate: a range is found by decoding forward, not by decord's packet index"
        return None


def variable_rate(pts: list[int]) -> bool:
    """True when the gaps between presentation timestamps vary (beyond rounding)."""
    if len(pts) < 3:
        return False
    gaps = sorted(b - a for a, b in zip(pts, pts[1:], strict=False) if b > a)
    if not gaps:
        return False
    median = gaps[len(gaps) // 2]
    return gaps[-1] > 1.5 * median + 1 or gaps[0] < 0.5 * median - 1


def file_facts(path: Path | str) -> FileFacts:
    """The facts of the file at `path` (remembered per file, size and modification time)."""
    return _remembered(_FACTS, Path(path), _read_facts, 256)


_FACTS: dict[tuple, FileFacts] = {}


def _read_facts(path: Path) -> FileFacts:
    """One pass over the packets; the first that decode also give the first frame's rotation."""
    import av

    container, stream = _open(path)
    stream.thread_type = "NONE"  # a frame thread pool would hold the first frame back until it fills
    try:
        shown = hidden = 0
        pts: list[int] = []
        rotation = None
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if rotation is None:
                rotation = _rotation_of(packet)
            if packet.is_discard:
                hidden += 1
                continue
            shown += 1
            if packet.pts is not None and len(pts) < _VFR_PACKETS:
                pts.append(packet.pts)
        ctx = stream.codec_context
        tb = stream.time_base
        return FileFacts(
            container=container.format.name, codec=ctx.name, pix_fmt=ctx.pix_fmt or "",
            width=int(ctx.width or 0), height=int(ctx.height or 0), frames=shown, hidden=hidden,
            header_frames=int(stream.frames or 0),
            raw_start=float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0,
            variable_rate=variable_rate(sorted(pts)[:-16] if len(pts) >= _VFR_PACKETS else sorted(pts)),
            rotation=rotation or 0,
        )
    except av.error.FFmpegError as e:
        raise PermanentError(f"cannot read {path} as a video: {e}; re-extract the clip or quarantine its source") from e
    finally:
        container.close()


def _rotation_of(packet) -> int | None:
    """The display rotation of the first frame `packet` decodes to; None while the decoder gives none
    yet (B-frame reordering), 0 when the packet fails to decode (PyAV has no stream-level getter)."""
    import av

    try:
        for frame in packet.decode():
            return int(round((getattr(frame, "rotation", 0) or 0) / 90) * 90) % 360
    except av.error.FFmpegError:
        return 0
    return None


# ---------------------------------------------------------------------------------------------
# decord, in a worker process a time limit can kill

_DECORD_THREADS = 1  # one decoder thread: threads refill after every seek (measured faster), and workers run in parallel
_LIMIT_FLOOR_S = 20.0  # a read's time limit: at least this,
_LIMIT_PER_FRAME_S = 1.0  # or this per frame asked, whichever is longer (x the pixels of 1080p, if more)
_WORKER_START_S = 60.0  # starting the worker (Python, numpy, decord)
_WORKER_MAX_RSS = 2 << 30  # a worker grown past this (decord's memory on long 4K reads) is replaced

_decord_installed: bool | None = None


def decord_installed() -> bool:
    global _decord_installed
    if _decord_installed is None:
        import importlib.util

        _decord_installed = importlib.util.find_spec("decord") is not None
    return _decord_installed


def _wants_decord(reader: str) -> bool:
    return reader == "decord" or (reader == "auto" and decord_installed())


def _time_limit(frames: int, pixels: int) -> float:
    return max(_LIMIT_FLOOR_S, _LIMIT_PER_FRAME_S * frames) * max(1.0, pixels / (1920 * 1080))


class DecordFailed(Exception):
    """decord could not read this file (the reason says why); PyAV reads it instead."""


_warned: set[str] = set()


def _fell_back(path: Path, reason: str, on_fallback: Fallback) -> None:
    if str(path) not in _warned:
        if len(_warned) > 10_000:
            _warned.clear()
        _warned.add(str(path))
        log.warning("%s: read with PyAV, not decord: %s", path, reason)
    if on_fallback is not None:
        on_fallback(reason)


_READERS_KEPT = 4  # decord readers a worker keeps open: a source's ranges are read one after another
_readers: dict[tuple, tuple] = {}  # (path, size, mtime) -> (VideoReader, its frames' start times or None)


def _open_decord(path: str, expected: int):
    """(In the worker) decord's reader of `path`, its frame count checked against the packets PyAV
    counted; kept open for the next read of the same file (decord indexes every packet on open)."""
    import decord

    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _readers:
        vr = decord.VideoReader(path, num_threads=_DECORD_THREADS)
        if len(vr) != expected:
            raise DecordFailed(f"decord counts {len(vr)} frames, the file shows {expected} (an over-reported "
                               "frame count makes decord's get_batch spin forever)")
        while len(_readers) >= _READERS_KEPT:
            _readers.pop(next(iter(_readers)))
        _readers[key] = (vr, None)
    return key


def _forget_readers() -> list:
    """(In the worker) close the readers kept open (benchmarks time a first read)."""
    _readers.clear()
    return []


def _decord_clip(path: str, indices: list[int], expected: int) -> list[np.ndarray]:
    """(In the worker) frames `indices` of a clip file, by decode-order index."""
    vr = _readers[_open_decord(path, expected)][0]
    frames = vr.get_batch(indices).asnumpy()
    vr.seek(0)  # lets decord free what it holds (its memory grows on long reads otherwise)
    return list(frames)


def _decord_range(path: str, target: float, step: float, indices: list[int], expected: int) -> list[np.ndarray]:
    """(In the worker) clip frames `indices` counted from the first frame at `target` seconds of
    decord's clock, found by decord's timestamps; the frames must follow each other a step apart."""
    key = _open_decord(path, expected)
    vr, starts = _readers[key]
    if starts is None:
        starts = vr.get_frame_timestamp(list(range(len(vr))))[:, 0].astype(np.float64)
        _readers[key] = (vr, starts)
    first = int(np.searchsorted(starts, target - step / 2))
    if first >= len(starts) or starts[first] > target + step / 2:
        raise DecordFailed(f"no frame in decord's index at {target:.3f} s of its clock")
    last = min(len(starts), first + indices[-1] + 1)
    gaps = np.diff(starts[first:last])
    if gaps.size and (gaps.max() > 1.5 * step or gaps.min() < 0.5 * step):
        raise DecordFailed("decord's timestamps in the range are not one frame step apart")
    positions = [first + k for k in indices if first + k < len(starts)]
    frames = vr.get_batch(positions).asnumpy()
    vr.seek(0)
    return list(frames)


class _Worker:
    """One long-lived child process that runs a function and hands back its frames as raw bytes.

    A thread cannot stop native code that holds the GIL (decord's get_batch can spin forever), so
    decord reads in a process: past its time limit it is killed, and the next read starts a new one."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.send_conn = self.recv_conn = None
        self.lock = threading.Lock()

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        code = "import sys; from curation.core.frames import _serve; _serve(int(sys.argv[1]), int(sys.argv[2]))"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(down_r), str(up_w)], pass_fds=(down_r, up_w),
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        os.close(down_r)
        os.close(up_w)
        self.send_conn, self.recv_conn = Connection(down_w, readable=False), Connection(up_r, writable=False)
        if not self.recv_conn.poll(_WORKER_START_S):
            self.stop()
            raise DecordFailed(f"decord's worker did not start within {_WORKER_START_S:g} s")
        self.recv_conn.recv()  # "ready"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        for conn in (self.send_conn, self.recv_conn):
            if conn is not None:
                conn.close()
        self.proc = self.send_conn = self.recv_conn = None

    def call(self, fn, args: tuple, limit_s: float) -> list[np.ndarray]:
        """`fn(*args)` in the worker: its frames, or DecordFailed (an error there, a death, the time limit)."""
        with self.lock:
            try:
                if self.proc is None or self.proc.poll() is not None:
                    self.stop()
                    self._start()
                self.send_conn.send((fn, args))
                if not self.recv_conn.poll(limit_s):
                    self.stop()
                    raise DecordFailed(f"decord took longer than its {limit_s:g} s limit (killed)")
                status, detail, rss = self.recv_conn.recv()
                if status != "ok":
                    raise DecordFailed(detail)
                frames = []
                for shape, dtype in detail:
                    frame = np.empty(shape, np.dtype(dtype))
                    self.recv_conn.recv_bytes_into(frame.reshape(-1).view(np.uint8))
                    frames.append(frame)
            except (EOFError, OSError) as e:
                code = None if self.proc is None else self.proc.poll()
                self.stop()
                raise DecordFailed(f"decord's worker died (exit code {code}): {e or type(e).__name__}") from e
            if rss > _WORKER_MAX_RSS:
                self.stop()  # memory decord kept: a fresh worker next time
            return frames


_the_worker: _Worker | None = None


def _worker() -> _Worker:
    global _the_worker
    if _the_worker is None:
        _the_worker = _Worker()
        atexit.register(_the_worker.stop)
    return _the_worker


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _serve(read_fd: int, write_fd: int) -> None:
    """The worker's loop: (function, args) in; ("ok", shapes, rss) and each frame's bytes out."""
    from multiprocessing.connection import Connection

    requests, replies = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    replies.send("ready")
    while True:
        try:
            fn, args = requests.recv()
        except EOFError:  # the parent is gone
            return
        try:
            frames = [np.ascontiguousarray(f) for f in fn(*args)]
        except Exception as e:  # noqa: BLE001 - decord raises its own kinds; all mean "use PyAV"
            _readers.clear()  # a reader that failed once is not trusted again
            text = str(e).strip()
            if not isinstance(e, DecordFailed):
                text = f"decord failed: {text.splitlines()[-1] if text else type(e).__name__}"
            replies.send(("error", text, _rss()))
            continue
        replies.send(("ok", [(f.shape, f.dtype.str) for f in frames], _rss()))
        for frame in frames:
            replies.send_bytes(frame.reshape(-1).view(np.uint8))
