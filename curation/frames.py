"""Reading frames out of a clip: the one helper captioners, embedders and shard writers share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curation.stage import PermanentError


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
