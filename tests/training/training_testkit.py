"""Tiny data for the training tests: a curated run directory of generated clips, and tiny configs."""

from __future__ import annotations

from curation.core import schema
from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table

CLIPS = [  # shape, colour, direction, background, frames, height, width
    ("circle", "red", "right", "blue", 12, 40, 40),
    ("square", "yellow", "left", "green", 12, 40, 60),
    ("triangle", "white", "up", "purple", 12, 60, 40),
    ("circle", "cyan", "down", "brown", 9, 40, 40),
    ("square", "red", "left", "blue", 12, 40, 60),
    ("circle", "green", "right", "gray", 3, 40, 40),  # too short for a video bucket: becomes an image
]


def make_run(root, clips=CLIPS, captions=True):
    from workflows.synthetic.footage import render_shape_clip, shape_caption, write_video

    run = RunDir(root)
    manifest, caption_rows = [], []
    for i, (shape, colour, direction, background, n, h, w) in enumerate(clips):
        clip_id = schema.clip_id_for("tiny", i, i + n)
        path = run.clips / f"{clip_id}.mp4"
        write_video(path, render_shape_clip(shape, colour, direction, background, n, h, w, seed=i), fps=12)
        manifest.append({
            schema.M.clip_id: clip_id, schema.M.source: "tiny.mp4", schema.M.start_frame: i, schema.M.end_frame: i + n,
            schema.M.fps: 12.0, schema.M.width: w, schema.M.height: h, schema.M.status: schema.STATUS_KEPT,
            schema.M.filter_reasons: [], schema.M.clip_path: run.rel(path), schema.M.camera_motion: "static",
            schema.M.dominant_colors: [background, colour],
        })
        if captions and i % 3 != 2:  # every third clip has no caption row: metadata fallback
            caption_rows.append({
                schema.CAP.clip_id: clip_id, schema.CAP.caption_dense: shape_caption(shape, colour, direction, background),
                schema.CAP.caption_short: f"a {colour} {shape}", schema.CAP.captioner: "test",
                schema.CAP.created_at: now_utc(),
            })
    manifest.append({schema.M.clip_id: "filtered", schema.M.status: schema.STATUS_FILTERED,
                     schema.M.filter_reasons: ["too_dark"]})
    atomic_write_table(rows_to_table(manifest, schema.MANIFEST), run.manifest / "part-0.parquet")
    if caption_rows:
        atomic_write_table(rows_to_table(caption_rows, schema.CAPTIONS), run.captions / "part-0.parquet")
    return run


TINY_BUCKETS = ["9x32x32", "9x32x48", "9x48x32", "1x32x32"]


TINY_VAE = {"kind": "vae", "model": "VAE-tiny", "batch_size": 1, "max_steps": 4, "warmup_steps": 1, "log_every": 2,
            "ckpt_every": 2, "model_args": {"base_channels": 8, "channel_mult": [1, 2, 2, 2]}}
TINY_DIT = {"kind": "dit", "model": "DiT-tiny", "batch_size": 2, "max_steps": 4, "warmup_steps": 1, "log_every": 2,
            "ckpt_every": 2, "model_args": {"hidden_size": 48, "num_heads": 4, "depth": 2}, "shift_base_tokens": 32}
