"""Video reading and writing every package shares: frames out of a clip, frames into an h264 file.

Reading: a few frames of a clip (`read_frames`, `sample_frames`), or every frame of a source once,
skipping damage (`decodable_frames`, what analysis and extraction decode with). Writing: the one
encoder set-up (`VideoWriter`, `write_video`).

PyAV is imported inside the functions, so importing this module costs numpy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# reading lives in the frame reader; these names stay importable from here for their callers
from curation.core.frames import avi_frame_slots, decodable_frames, upright  # noqa: F401


def spread_indices(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over a clip of `num_frames`, centred in equal segments.

    Sampling is relative to the clip's length: a 2 s clip and a 20 s clip both give frames from
    their beginning, middle and end.
    """
    if num_frames <= 0:
        return []
    count = max(1, min(count, num_frames))
    return sorted({int((i + 0.5) * num_frames / count) for i in range(count)})


def read_frames(path: Path | str, indices: list[int] | None = None, max_side: int | None = None,
                reader: str = "auto") -> list[np.ndarray]:
    """Decode a video file to RGB uint8 frames (H, W, 3); only `indices` if given, in order.

    The kernel's frame reader (`curation.core.frames.read_clip_frames`) with `reader` as its backend
    ("auto": decord for a few frames of a file it reads right, else PyAV)."""
    from curation.core.frames import read_clip_frames

    return read_clip_frames(path, indices, max_side=max_side, reader=reader)


def count_frames(path: Path | str, reader: str = "auto") -> int:
    """Frames the file holds, counted (`curation.core.frames.frame_count`), not the header's claim."""
    from curation.core.frames import frame_count

    return frame_count(path, reader=reader)


def sample_frames(path: Path | str, count: int, max_side: int | None = None, reader: str = "auto") -> list[np.ndarray]:
    """`count` RGB frames spread across the clip at `path` (see `spread_indices`)."""
    return read_frames(path, spread_indices(count_frames(path, reader), count), max_side, reader)


# ---------------------------------------------------------------------------------------------
# Writing: the one h264 (or mjpeg) encoder set-up every package uses


class VideoWriter:
    """Encode frames one by one into `path`; h264 (yuv420p, even sides) unless `codec="mjpeg"`.

    The stream opens on the first frame, so its size is the first frame's (h264 makes odd sides even
    by repeating the last row or column). `write` takes RGB uint8 arrays (H, W, 3) or PyAV frames; `close` (or
    leaving the `with` block) flushes the encoder. `rate` may be a Fraction for exact NTSC rates.

    `keyframe_seconds` (h264) puts a key frame at least that often and turns B-frames off: a reader
    sampling a few frames (decord) then seeks to the key frame before each one and decodes a few
    frames from it, with no B-frame reordering delay after each seek; None keeps x264's default
    (a key frame every 250 frames, B-frames on), the smallest files.
    """

    def __init__(self, path: Path | str, fps, codec: str = "h264", crf: int = 18, preset: str = "veryfast",
                 threads: int | None = None, size: tuple[int, int] | None = None, container_format: str | None = None,
                 keyframe_seconds: float | None = None):
        import av

        if codec not in ("h264", "mjpeg"):
            raise ValueError(f"VideoWriter codec={codec!r}: use 'h264' or 'mjpeg'")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.codec, self.crf, self.preset, self.threads, self.size = codec, crf, preset, threads, size
        self.rate = video_rate(fps)
        self.keyint = max(1, round(float(self.rate) * keyframe_seconds)) if keyframe_seconds else None
        self.container = av.open(str(self.path), mode="w", format=container_format)
        self.stream = None
        self.count = 0

    def _open_stream(self, width: int, height: int) -> None:
        stream = self.container.add_stream("libx264" if self.codec == "h264" else "mjpeg", rate=self.rate)
        if self.codec == "h264":
            width, height = width + width % 2, height + height % 2  # yuv420p needs even sides
            options = {"crf": str(self.crf), "preset": self.preset}
            if self.threads:
                options["threads"] = str(self.threads)
            if self.keyint:
                options.update(g=str(self.keyint), bf="0")
            stream.options, stream.pix_fmt = options, "yuv420p"
        else:
            stream.options, stream.pix_fmt = {"q:v": "3"}, "yuvj444p"
        stream.width, stream.height = width, height
        stream.codec_context.time_base = 1 / self.rate
        self.stream = stream

    def write(self, frame) -> None:
        """One frame: an RGB uint8 array (H, W, 3), or a PyAV VideoFrame (reformatted to the stream's size)."""
        import av

        if isinstance(frame, np.ndarray):
            if self.stream is None:
                self._open_stream(*(self.size or (frame.shape[1], frame.shape[0])))
            h, w = frame.shape[:2]
            pad_h, pad_w = self.stream.height - h, self.stream.width - w
            if pad_h > 0 or pad_w > 0:
                frame = np.pad(frame, ((0, max(0, pad_h)), (0, max(0, pad_w)), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        elif self.stream is None:
            self._open_stream(*(self.size or (frame.width, frame.height)))
        if (frame.width, frame.height) != (self.stream.width, self.stream.height):
            frame = frame.reformat(width=self.stream.width, height=self.stream.height)
        frame.pts, frame.time_base = self.count, self.stream.codec_context.time_base
        # a decoded frame keeps its source's I/P/B type, which libx264 would obey: let the encoder choose
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> int:
        """Flush and close; returns the frame count. A writer given no frame is an error."""
        try:
            if self.stream is None:
                raise ValueError(f"no frames were given for {self.path}")
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
        return self.count

    def abandon(self) -> None:
        """Close without flushing (the file is to be deleted)."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - a half-written file is discarded anyway
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def video_rate(fps):
    """A frame rate as the exact Fraction encoders want (29.97 -> 30000/1001)."""
    from fractions import Fraction

    return fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)


def write_video(path: Path | str, frames, fps: float = 24.0, codec: str = "h264", crf: int = 18) -> int:
    """Encode RGB uint8 frames (an iterable of (H, W, 3)) to `path`; returns the frame count."""
    with VideoWriter(path, fps, codec=codec, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.count
