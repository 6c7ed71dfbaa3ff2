"""`rushes shard`: kept clips of a run directory -> bucketed training shards (OUT/shards/<bucket>/*.parquet).

Each kept clip (its clip file, or in a clip-free run its source's frame range) goes to one bucket (frames, height, width): the longest frame count it fills, then the
aspect ratio closest to its own; its frames are resized to cover the bucket and centre-cropped, and
stored raw (uint8) with every caption variant and its manifest metadata. Raw frames, not h264, because
the training box then reads batches at memory speed with no decoder (see training/data.py).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.core import schema
from curation.core.rundir import RunDir
from curation.core.schema import CAP, SH, M
from curation.core.tables import read_clips
from training.data import list_buckets
from training.shards import DEFAULT_BUCKETS, DEFAULT_CAPTION_BLEND, INDEX, bucket_name, parse_bucket


@dataclass
class ShardSettings:
    buckets: list[str] = field(default_factory=lambda: list(DEFAULT_BUCKETS))
    caption_blend: float = DEFAULT_CAPTION_BLEND  # recorded in index.json for the trainer: p(dense caption)
    target_shard_mb: float = 256.0
    max_frame_stride: int = 2  # take every 1st or 2nd source frame, so a bucket spans more motion
    row_group_size: int = 16  # rows read together by the loader
    video_reader: str = "auto"  # curation.core.frames.READERS; how frames are read, not what is written

    def to_dict(self) -> dict:
        return {"buckets": sorted(bucket_name(*parse_bucket(b)) for b in self.buckets),
                "caption_blend": self.caption_blend, "max_frame_stride": self.max_frame_stride}


def choose_bucket(num_frames: int, width: int, height: int, buckets: list[tuple[int, int, int]]):
    """The bucket with the most frames the clip can fill, then the closest aspect ratio; None if none fits."""
    fitting = [b for b in buckets if b[0] <= num_frames]
    if not fitting:
        return None
    most = max(b[0] for b in fitting)
    aspect = math.log(width / height)
    return min((b for b in fitting if b[0] == most), key=lambda b: (abs(math.log(b[2] / b[1]) - aspect), b))


def frame_indices(num_frames: int, bucket_frames: int, max_stride: int) -> tuple[list[int], int]:
    """`bucket_frames` indices with the largest stride (<= max_stride) that fits, centred in the clip."""
    stride = max(1, min(max_stride, (num_frames - 1) // max(1, bucket_frames - 1))) if bucket_frames > 1 else 1
    span = (bucket_frames - 1) * stride + 1
    start = (num_frames - span) // 2
    return [start + i * stride for i in range(bucket_frames)], stride


def resize_cover(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize so the frame covers height x width, then centre-crop to exactly that."""
    import cv2

    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    frame = cv2.resize(frame, (nw, nh), interpolation=interp)
    top, left = (nh - height) // 2, (nw - width) // 2
    return frame[top : top + height, left : left + width]


def newest_captions(run: RunDir) -> dict[str, dict]:
    """clip_id -> the newest caption row that passed its checks."""
    from curation.core.tables import latest_captions

    return {row[CAP.clip_id]: row for row in latest_captions(run).to_pylist()}


def metadata_caption(row: dict) -> str:
    """A caption made from curation metadata, for clips no captioner has described yet."""
    colours = ", ".join((row.get(M.dominant_colors) or [])[:3])
    camera = (row.get(M.camera_motion) or "static").replace("_", " ")
    parts = ["a video clip"]
    if colours:
        parts.append(f"with mostly {colours} colours")
    parts.append(f"camera {camera}")
    return ", ".join(parts)


def write_shards(out: Path, settings: ShardSettings | None = None, progress=None) -> dict:
    """Shard every kept clip of run directory `out` not yet sharded; returns counts per bucket."""
    from curation.core.clips import clip_frame_count, clip_frames
    from curation.core.stage import PermanentError

    settings = settings or ShardSettings()
    run = RunDir(out)
    shards_dir = run.shards
    index_path = shards_dir / INDEX
    if index_path.exists():
        previous = json.loads(index_path.read_text()).get("settings")
        if previous and previous != settings.to_dict():
            raise ValueError(
                f"shards in {shards_dir} were written with other settings ({previous}); delete {shards_dir} "
                "to re-shard with the new ones"
            )
    buckets = [parse_bucket(b) for b in settings.buckets]
    clips = read_clips(run)  # the manifest with every later decision (dedup, aesthetic) applied
    # a kept clip is a clip file, or in a clip-free run a range of its source: both read by curation.core.clips
    kept = clips.filter(pc.equal(clips[M.status], schema.STATUS_KEPT))
    if kept.num_rows == 0:
        raise ValueError(f"{run.manifest} has no kept clips to shard; run `rushes curate ... --out {out}` first")
    done = set()
    for rows in list_buckets(shards_dir).values():
        for part in {loc[0] for loc in rows.locations}:
            done.update(pq.read_table(part, columns=[SH.clip_id])[SH.clip_id].to_pylist())
    captions = newest_captions(run)

    pending: dict[str, list[dict]] = {}
    pending_bytes: dict[str, int] = {}
    counts = {"clips": kept.num_rows, "sharded": 0, "already": 0, "too_short": 0, "unreadable": 0,
              "metadata_captions": 0, "buckets": {}}

    def flush(bucket: str):
        rows = pending.pop(bucket, [])
        pending_bytes.pop(bucket, None)
        if rows:
            table = pa.Table.from_pylist(rows, schema=schema.SHARDS)
            path = shards_dir / bucket / f"part-{uuid.uuid4().hex[:12]}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_parquet(table, path, settings.row_group_size)

    for row in kept.to_pylist():
        if progress:
            progress()
        clip_id = row[M.clip_id]
        if clip_id in done:
            counts["already"] += 1
            continue
        try:
            n = clip_frame_count(run, row, reader=settings.video_reader)
            bucket = choose_bucket(n, row[M.width] or 1, row[M.height] or 1, buckets)
            if bucket is None:
                counts["too_short"] += 1
                continue
            indices, stride = frame_indices(n, bucket[0], settings.max_frame_stride)
            frames = clip_frames(run, row, indices, reader=settings.video_reader)
        except (PermanentError, OSError, ValueError) as e:
            counts["unreadable"] += 1
            print(f"skipped {clip_id}: {e}")
            continue
        if len(frames) < bucket[0]:  # the header over-counted frames: pad by repeating the last one
            frames += [frames[-1]] * (bucket[0] - len(frames))
        video = np.stack([resize_cover(f, bucket[1], bucket[2]) for f in frames])  # (T, H, W, 3)
        cap = captions.get(clip_id, {})
        dense = cap.get(CAP.caption_dense) or metadata_caption(row)
        counts["metadata_captions"] += 0 if cap.get(CAP.caption_dense) else 1
        name = bucket_name(*bucket)
        record = {
            SH.clip_id: clip_id, SH.source: row[M.source], SH.bucket: name, SH.num_frames: bucket[0],
            SH.height: bucket[1], SH.width: bucket[2], SH.frames: video.tobytes(), SH.frame_stride: stride,
            SH.fps: (row[M.fps] or 0.0) / stride, SH.caption_dense: dense,
            SH.caption_short: cap.get(CAP.caption_short), SH.caption_original: cap.get(CAP.caption_original),
            SH.captioner: cap.get(CAP.captioner) or "metadata",
            SH.metadata: json.dumps({k: row.get(k) for k in (M.start_time, M.end_time, M.fps, M.camera_motion,
                                                              M.motion_score, M.dominant_colors, M.aesthetic_score)}),
        }
        pending.setdefault(name, []).append(record)
        pending_bytes[name] = pending_bytes.get(name, 0) + video.nbytes
        counts["sharded"] += 1
        counts["buckets"][name] = counts["buckets"].get(name, 0) + 1
        if pending_bytes[name] >= settings.target_shard_mb * 1e6:
            flush(name)
    for name in list(pending):
        flush(name)
    totals = {b: len(r) for b, r in list_buckets(shards_dir).items()}
    shards_dir.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps({"settings": settings.to_dict(), "clips_per_bucket": totals}, indent=1))
    counts["total_per_bucket"] = totals
    return counts


def _write_parquet(table: pa.Table, path: Path, row_group_size: int) -> None:
    """Atomic like curation.core.rundir.atomic_write_table, with small row groups: the loader reads one group
    per clip it needs, not a whole file."""
    import os

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
    os.replace(tmp, path)
