"""Probe: what a video file is (codec, rate, frames, size, rotation) and a content fingerprint.

`probe(path)` opens the container, reads the stream facts and decodes the first frame, so a file
that cannot give a single picture is caught here and quarantined (`PermanentError`) before any
analysis. Broken inputs and their messages:

- missing or zero-byte file; a file that is not a media container (text, random bytes);
- a container with no video stream (audio only);
- a truncated or corrupt file whose first frame does not decode.

Time limit: probing is cooperative. `Deadline` is checked between packets in every demux/decode
loop here and in analysis, so a file that makes the decoder crawl is stopped at the next packet
after `timeout_s`; its `TimeLimitError` names the stage that ran out of time ("probe" here,
"analysis" there) for the quarantine table. A single call that blocks inside FFmpeg is not
interrupted; local files do not block like that, and the workflow's per-task timeout is the
backstop for anything that does.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# the clock's rules (a stream's start, its frame step) live with the kernel's frame reader, which reads ranges by them
from curation.core.frames import frame_step
from curation.core.frames import stream_start as _stream_start
from curation.core.frames import variable_rate as _variable_rate
from curation.core.stage import PermanentError


class UnreadableInput(OSError):
    """No permission to read an input: transient (not quarantined), so the next run tries it again."""

    def __init__(self, path: Path | str):
        super().__init__(f"{path} cannot be read: no read permission for this user; grant it (chmod a+r) "
                         "and run again, the file is curated then")


class ProbeError(PermanentError):
    """An input that cannot be read as a video; reported as stage "probe" even when analysis opens it."""

    stage = "probe"


_CHUNK = 64 * 1024
_MIDDLE_CHUNKS = 8
_VFR_PACKETS = 240
# FFmpeg renders some non-video files as "video" (a text file through its tty demuxer)
_NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf"}  # packets looked at to tell a variable frame rate


@dataclass(frozen=True)
class ProbeInfo:
    """Container and stream facts of one video file."""

    path: str
    codec: str
    fps: float  # average frames per second
    num_frames: int  # from the container, or estimated from duration * fps when it lacks a count
    num_frames_estimated: bool
    duration: float  # seconds
    width: int  # display size: rotation applied
    height: int
    rotation: int  # degrees counter-clockwise to turn decoded frames upright (0, 90, 180, 270)
    variable_frame_rate: bool
    fingerprint: str
    size_bytes: int
    # where the video stream's clock starts (seconds): frame times count from here, so frames lost at
    # the very start (damage, a stream cut mid-GOP) leave a gap; None: from the first decoded frame
    start_time: float | None = None
    # seconds between frames by the timestamps (median), where the reported rate is too high for
    # them (e.g. reported 50 for frames 40 ms apart): frames step by this, not 1 / fps; None: 1 / fps
    frame_duration: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class TimeLimitError(PermanentError):
    """A step ran past its time limit on this input; `stage` names the step (probe, analysis)."""

    def __init__(self, message: str, stage: str | None = None):
        super().__init__(message)
        self.stage = stage  # an instance attribute: pickling keeps it (exceptions pickle their __dict__)


class Deadline:
    """A cooperative time limit: `check()` raises TimeLimitError once `seconds` have passed.

    `what` is said in the message; `stage` is where the quarantine table files the input."""

    def __init__(self, seconds: float | None, path: Path | str, what: str = "probing", stage: str = "probe"):
        self.expires = None if not seconds else time.monotonic() + seconds
        self.seconds, self.path, self.what, self.stage = seconds, path, what, stage

    def check(self) -> None:
        if self.expires is not None and time.monotonic() > self.expires:
            raise TimeLimitError(
                f"{self.path}: {self.what} took longer than the {self.seconds:g} s limit; the file is "
                "pathological or far too long: raise probe.timeout_s (or probe.timeout_per_video_second) "
                "or check the file",
                self.stage,
            )


def fingerprint(path: Path | str) -> str:
    """Content hash of a file: its size, first and last 64 KiB, and 8 chunks spread between.

    Reads at most ~640 KiB however large the file, and does not depend on the file's name, so a
    renamed or moved source keeps its clip ids.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _CHUNK * (_MIDDLE_CHUNKS + 2):
            h.update(f.read())
        else:
            offsets = [0] + [int(size * (i + 1) / (_MIDDLE_CHUNKS + 1)) for i in range(_MIDDLE_CHUNKS)]
            offsets.append(size - _CHUNK)
            for off in offsets:
                f.seek(off)
                h.update(f.read(_CHUNK))
    return h.hexdigest()[:32]


def open_video(path: Path | str):
    """Open `path` with PyAV and return (container, video stream), or raise PermanentError saying why."""
    import av

    path = Path(path)
    if not path.exists():
        raise ProbeError(f"{path} does not exist; check the input path")
    if path.is_dir():
        raise ProbeError(f"{path} is a directory, not a video file")
    if path.stat().st_size == 0:
        raise ProbeError(f"{path} is empty (0 bytes); re-copy or re-export the file")
    if not os.access(path, os.R_OK):
        raise UnreadableInput(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.PermissionError as e:
        raise UnreadableInput(path) from e
    except av.error.FFmpegError as e:
        raise ProbeError(
            f"{path} is not a readable video container ({_ffmpeg_reason(e)}); it may be truncated, "
            "corrupt or not a video at all: re-export it or leave it out"
        ) from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        detail = f"only {', '.join(kinds)} streams" if kinds else "no streams at all"
        raise ProbeError(f"{path} has no video stream ({detail}); curation needs video")
    stream = container.streams.video[0]
    fmt = container.format.name
    if stream.codec_context.name in _NOT_VIDEO_CODECS or fmt in ("tty",):
        container.close()
        raise ProbeError(f"{path} is a text file, not a video; leave it out of the inputs")
    if fmt == "image2" or fmt.endswith("_pipe"):
        container.close()
        raise ProbeError(f"{path} is a still image ({fmt}), not a video; leave it out of the inputs")
    stream.thread_type = "AUTO"
    return container, stream


def _ffmpeg_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def probe(path: Path | str, timeout_s: float | None = 60.0) -> ProbeInfo:
    """Facts about the video at `path`; PermanentError if it cannot be used (see module doc)."""
    import av

    path = Path(path)
    deadline = Deadline(timeout_s, path)
    container, stream = open_video(path)
    try:
        codec = stream.codec_context.name
        # the guessed (real base) rate is exact for constant-rate files; the average can be off by a frame
        rate = stream.guessed_rate or stream.average_rate or stream.base_rate
        tb = stream.time_base
        duration = float(stream.duration * tb) if stream.duration and tb else 0.0
        if not duration and container.duration:
            duration = container.duration / 1e6
        first, pts = _first_frame_and_timestamps(container, stream, path, deadline)
        vfr = _variable_rate(pts)
        if vfr and len(pts) > 1 and tb:
            # the nominal rate of a VFR file says little: use frames per second of what is there
            span = float((pts[-1] - pts[0]) * tb)
            rate = (len(pts) - 1) / span if span > 0 else rate
        fps = float(rate) if rate else 0.0
        if fps <= 0:
            raise ProbeError(f"{path}: the video stream has no usable frame rate; re-mux the file")
        frame_duration = None if vfr or not tb else frame_step(fps, [float(p * tb) for p in pts])
        if frame_duration:  # the rate the frames really come at
            fps = 1 / frame_duration
        estimated = False
        num_frames = int(stream.frames or 0)
        if vfr or num_frames <= 0:
            # AVI counts dropped-frame slots and VFR streams count time-base ticks: estimate instead
            num_frames = max(1, round(duration * fps)) if duration else len(pts)
            estimated = True
        if not duration:
            duration = num_frames / fps
        rotation = int(getattr(first, "rotation", 0) or 0) % 360
        rotation = (round(rotation / 90) * 90) % 360
        w, h = first.width, first.height
        start_time = _stream_start(path, container, stream)
        if rotation in (90, 270):
            w, h = h, w
        return ProbeInfo(
            path=str(path),
            codec=codec,
            fps=fps,
            num_frames=num_frames,
            num_frames_estimated=estimated,
            duration=duration,
            width=int(w),
            height=int(h),
            rotation=rotation,
            variable_frame_rate=vfr,
            fingerprint=fingerprint(path),
            size_bytes=path.stat().st_size,
            start_time=start_time,
            frame_duration=frame_duration,
        )
    except av.error.FFmpegError as e:
        raise ProbeError(
            f"{path}: cannot read the video stream ({_ffmpeg_reason(e)}); the file is corrupt"
        ) from e
    finally:
        container.close()


def _first_frame_and_timestamps(container, stream, path: Path, deadline: Deadline):
    """Decode until the first picture, and collect packet timestamps of the first packets."""
    import av

    first = None
    pts: list[int] = []
    errors = 0
    for packet in container.demux(stream):
        deadline.check()
        if packet.pts is not None and packet.size:
            pts.append(packet.pts)
        if first is None:
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                errors += 1
                if errors > 25:
                    break
                continue
            if frames:
                first = frames[0]
        if first is not None and len(pts) >= _VFR_PACKETS:
            break
    if first is None:
        try:  # a decoder with delay returns its first frame only when flushed
            frames = stream.codec_context.decode(None)
            first = frames[0] if frames else None
        except av.error.FFmpegError:
            first = None
    if first is None:
        raise ProbeError(
            f"{path}: no frame of the video stream decodes (truncated or corrupt file); re-export it"
        )
    pts.sort()
    if len(pts) >= _VFR_PACKETS:
        # decode order is not display order: the last few timestamps read may leave holes that
        # the packets not yet read would fill, so leave them out
        pts = pts[:-16]
    return first, pts
