"""Video reading and writing every package shares: frames out of a clip, frames into an h264 file.

Reading: a few frames of a clip (`read_frames`, `sample_frames`), or every frame of a source once,
skipping damage (`decodable_frames`, what analysis and extraction decode with). Writing: the one
encoder set-up (`VideoWriter`, `write_video`).

PyAV is imported inside the functions, so importing this module costs numpy only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from curation.core.stage import PermanentError


def spread_indices(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over a clip of `num_frames`, centred in equal segments.

    Sampling is relative to the clip's length: a 2 s clip and a 20 s clip both give frames from
    their beginning, middle and end.
    """
    if num_frames <= 0:
        return []
    count = max(1, min(count, num_frames))
    return sorted({int((i + 0.5) * num_frames / count) for i in range(count)})


def _resize_max_side(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    if not max_side:
        return frame
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    import cv2

    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def read_frames(path: Path | str, indices: list[int] | None = None, max_side: int | None = None) -> list[np.ndarray]:
    """Decode a video file to RGB uint8 frames (H, W, 3); only `indices` if given, in order."""
    import av

    wanted = None if indices is None else set(indices)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if wanted is not None and i not in wanted:
                    continue
                frames.append(_resize_max_side(frame.to_ndarray(format="rgb24"), max_side))
                if wanted is not None and len(frames) == len(wanted):
                    break
    except (av.error.FFmpegError, IndexError) as e:
        raise PermanentError(f"cannot decode {path}: {e}; re-extract the clip or quarantine its source") from e
    if not frames:
        raise PermanentError(f"{path} has no decodable video frames")
    return frames


def count_frames(path: Path | str) -> int:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, IndexError) as e:
        raise PermanentError(f"cannot read {path} as a video: {e}; re-extract the clip or quarantine its source") from e


def sample_frames(path: Path | str, count: int, max_side: int | None = None) -> list[np.ndarray]:
    """`count` RGB frames spread across the clip at `path` (see `spread_indices`)."""
    return read_frames(path, spread_indices(count_frames(path), count), max_side)


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


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded picture (H, W, ...) turned `rotation` degrees counter-clockwise, as it is displayed."""
    turns = round((rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(img, k=turns)) if turns else img


# ---------------------------------------------------------------------------------------------
# Writing: the one h264 (or mjpeg) encoder set-up every package uses


class VideoWriter:
    """Encode frames one by one into `path`; h264 (yuv420p, even sides) unless `codec="mjpeg"`.

    The stream opens on the first frame, so its size is the first frame's (h264 makes odd sides even
    by repeating the last row or column). `write` takes RGB uint8 arrays (H, W, 3) or PyAV frames; `close` (or
    leaving the `with` block) flushes the encoder. `rate` may be a Fraction for exact NTSC rates.
    """

    def __init__(self, path: Path | str, fps, codec: str = "h264", crf: int = 18, preset: str = "veryfast",
                 threads: int | None = None, size: tuple[int, int] | None = None, container_format: str | None = None):
        import av

        if codec not in ("h264", "mjpeg"):
            raise ValueError(f"VideoWriter codec={codec!r}: use 'h264' or 'mjpeg'")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.codec, self.crf, self.preset, self.threads, self.size = codec, crf, preset, threads, size
        self.rate = video_rate(fps)
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
