"""A small run directory for the indexing tests: generated clips, a manifest, captions.

Clips are real h264 mp4 files of coloured shapes (workflows.synthetic.footage), with truthful captions. Two
clips are near-duplicates of another (the same shot re-encoded with faint noise), one clip has no
caption, one row is filtered (no clip file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curation.core import schema
from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
from curation.core.schema import CAP, M
from indexing.config import DedupConfig, IndexConfig, MilvusConfig, TextConfig, VisualConfig
from workflows.synthetic.footage import render_shape_clip, shape_caption, write_video

# (shape, colour, direction, background, duration seconds, width)
SHOTS = [
    ("circle", "red", "right", "blue", 1.0, 96),
    ("square", "yellow", "up", "green", 1.5, 96),
    ("triangle", "white", "left", "purple", 1.0, 96),
    ("circle", "orange", "down", "cyan", 2.0, 96),
    ("square", "pink", "right", "brown", 1.0, 96),
]
DUPLICATES_OF = {5: 0, 6: 0}  # clip index -> index of the clip it nearly duplicates
UNCAPTIONED = 4
FPS = 12.0


def clip_id(i: int) -> str:
    return schema.clip_id_for("fingerprint-test", i * 100, i * 100 + 12)


def build_run(out: Path, with_captions: bool = True) -> RunDir:
    """Write clips, thumbnails, a manifest part and a captions part under `out`."""
    from PIL import Image

    run = RunDir(out)
    rows, captions = [], []
    created = now_utc()
    shots = list(SHOTS) + [SHOTS[j] for j in DUPLICATES_OF.values()]
    rng = np.random.default_rng(1)
    for i, (shape, color, direction, background, duration, width) in enumerate(shots):
        frames = render_shape_clip(shape, color, direction, background, num_frames=12, height=64, width=width, seed=0)
        if i in DUPLICATES_OF:  # the same shot, re-encoded with faint noise
            frames = np.clip(frames.astype(np.int16) + rng.integers(-3, 4, frames.shape), 0, 255).astype(np.uint8)
        cid = clip_id(i)
        clip_rel, thumb_rel = f"clips/{cid}.mp4", f"thumbs/{cid}.jpg"
        write_video(run.root / clip_rel, frames, fps=FPS)
        (run.root / "thumbs").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[len(frames) // 2]).save(run.root / thumb_rel)
        # duplicates are shorter and smaller, so the original must be the one kept
        dup = i in DUPLICATES_OF
        rows.append({
            M.clip_id: cid, M.source: f"reel{i % 2}.mp4", M.source_fingerprint: "fingerprint-test",
            M.clip_index: i, M.start_frame: i * 100, M.end_frame: i * 100 + 12,
            M.start_time: i * 10.0, M.end_time: i * 10.0 + duration, M.duration: duration - (0.5 if dup else 0),
            M.fps: FPS, M.width: width - (32 if dup else 0), M.height: 64, M.codec: "h264",
            M.camera_motion: "static", M.dominant_colors: [background, color],
            M.status: schema.STATUS_KEPT, M.filter_reasons: [], M.clip_path: clip_rel, M.thumb_path: thumb_rel,
            M.created_at: created,
        })
        if i != UNCAPTIONED:
            captions.append({CAP.clip_id: cid, CAP.caption_dense: shape_caption(shape, color, direction, background),
                             CAP.captioner: "test-truth", CAP.created_at: created})
    # a filtered clip: in the manifest, never indexed
    rows.append({M.clip_id: clip_id(99), M.source: "reel0.mp4", M.status: schema.STATUS_FILTERED,
                 M.filter_reasons: ["too_dark"], M.duration: 1.0, M.created_at: created})
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest / "part-0.parquet")
    if with_captions:
        atomic_write_table(rows_to_table(captions, schema.CAPTIONS), run.captions / "part-0.parquet")
    return run


def tiny_visual(**kw) -> VisualConfig:
    return VisualConfig(clip_model="tiny-random", clip_pretrained=None, frames=3, device="cpu", **kw)


def index_config(**milvus) -> IndexConfig:
    return IndexConfig(visual=tiny_visual(), text=TextConfig(device="cpu"), milvus=MilvusConfig(**milvus))


def dedup_config(threshold: float = 0.95, **milvus) -> DedupConfig:
    return DedupConfig(threshold=threshold, visual=tiny_visual(), milvus=MilvusConfig(**milvus))
