"""Does it learn? Train the autoencoder and the DiT on a world of coloured shapes, then test held-out prompts.

    .venv/bin/python benchmarks/bench_learns.py [--out /tmp/rushes-learns] [--vae-steps 500] [--dit-steps 1500]

The world: 3 shapes x 4 colours x 4 directions over 3 backgrounds, rendered by curation.footage and
captioned with the truth ("a red circle moving left on a gray background"). Some colour x shape x
direction combinations are never shown in training (every colour, shape and direction on its own
is). After training on the CPU, the DiT samples the held-out prompts and every video is measured by
frame analysis: the shape's colour (pixels nearest a palette colour other than the background) and
its motion (centroid displacement from first to last frame). The analyser is first checked on the
ground-truth clips. Targets: 90% colour and 80% direction accuracy on the held-out combinations.
Everything runs through the real pipeline: run directory -> shards -> autoencoder -> encode -> DiT.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
DIRECTIONS = ("left", "right", "up", "down")
BACKGROUNDS = ("gray", "white", "brown")
HELD_OUT = [  # every colour, shape and direction still appears in training with other partners
    ("circle", "red", "up"), ("circle", "green", "left"), ("square", "blue", "right"), ("square", "yellow", "down"),
    ("triangle", "red", "right"), ("triangle", "green", "down"), ("circle", "blue", "down"), ("square", "red", "left"),
]


def render(shape, colour, direction, background, frames, size, seed):
    from curation.footage import render_shape_clip

    return render_shape_clip(shape, colour, direction, background, frames, size, size, seed=seed, speed=0.06)


def caption(shape, colour, direction, background):
    from curation.footage import shape_caption

    return shape_caption(shape, colour, direction, background)


def make_world(root: Path, frames: int, size: int, seeds: int):
    """A curated run directory: one kept clip per training combination x background x seed, with captions."""
    from curation import schema
    from curation.footage import write_video
    from curation.rundir import RunDir, atomic_write_table, now_utc, rows_to_table

    run = RunDir(root)
    manifest, captions = [], []
    combos = [c for c in itertools.product(SHAPES, COLOURS, DIRECTIONS) if c not in HELD_OUT]
    for i, ((shape, colour, direction), background, seed) in enumerate(itertools.product(combos, BACKGROUNDS, range(seeds))):
        clip_id = schema.clip_id_for("learns", i, i + frames)
        path = run.clips / f"{clip_id}.mp4"
        write_video(path, render(shape, colour, direction, background, frames, size, seed), fps=12, crf=12)
        manifest.append({schema.M.clip_id: clip_id, schema.M.source: "world", schema.M.fps: 12.0, schema.M.width: size,
                         schema.M.height: size, schema.M.status: schema.STATUS_KEPT, schema.M.filter_reasons: [],
                         schema.M.clip_path: run.rel(path)})
        captions.append({schema.CAP.clip_id: clip_id, schema.CAP.caption_dense: caption(shape, colour, direction, background),
                         schema.CAP.caption_short: f"a {colour} {shape} moving {direction}", schema.CAP.captioner: "truth",
                         schema.CAP.created_at: now_utc()})
    atomic_write_table(rows_to_table(manifest, schema.MANIFEST), run.manifest / "part-0.parquet")
    atomic_write_table(rows_to_table(captions, schema.CAPTIONS), run.captions / "part-0.parquet")
    return run, len(manifest), len(combos)


def analyse(video: np.ndarray) -> tuple[str | None, str | None]:
    """(shape colour, motion direction) of a (T, H, W, 3) uint8 video, by nearest-palette pixel labels."""
    from curation.footage import COLORS

    v = video.astype(np.float32)
    border = np.concatenate([v[:, 0], v[:, -1], v[:, :, 0], v[:, :, -1]], axis=1).reshape(-1, 3)
    background = np.median(border, axis=0)
    palette = np.array([COLORS[c] for c in COLOURS] + [background], np.float32)
    labels = ((v[..., None, :] - palette) ** 2).sum(-1).argmin(-1)  # (T, H, W), 4 = background
    shape_pixels = labels < 4
    if shape_pixels.sum() < 4 * len(video):
        return None, None
    colour = COLOURS[int(np.bincount(labels[shape_pixels], minlength=4).argmax())]
    centroids = []
    for t in (0, len(video) - 1):
        ys, xs = np.nonzero(shape_pixels[t])
        if len(xs) == 0:
            return colour, None
        centroids.append((xs.mean(), ys.mean()))
    dx, dy = centroids[1][0] - centroids[0][0], centroids[1][1] - centroids[0][1]
    if max(abs(dx), abs(dy)) < 1.5:
        return colour, None
    if abs(dx) >= abs(dy):
        return colour, "right" if dx > 0 else "left"
    return colour, "down" if dy > 0 else "up"


def score(videos_and_truth) -> tuple[float, float]:
    colour_ok = direction_ok = 0
    for video, (_, colour, direction) in videos_and_truth:
        c, d = analyse(video)
        colour_ok += c == colour
        direction_ok += d == direction
    n = max(1, len(videos_and_truth))
    return colour_ok / n, direction_ok / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/rushes-learns"))
    parser.add_argument("--frames", type=int, default=5, help="1 + 4k frames per clip")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2, help="clips per training combination and background")
    parser.add_argument("--vae-steps", type=int, default=500)
    parser.add_argument("--vae-width", type=int, default=16, help="autoencoder base channels")
    parser.add_argument("--vae-batch", type=int, default=4)
    parser.add_argument("--dit-steps", type=int, default=1500)
    parser.add_argument("--dit-width", type=int, default=128)
    parser.add_argument("--dit-depth", type=int, default=4)
    parser.add_argument("--dit-batch", type=int, default=16)
    parser.add_argument("--samples-per-prompt", type=int, default=2)
    parser.add_argument("--sample-steps", type=int, default=30)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import shutil

    import torch

    from training.encode import encode_shards
    from training.sample import generate
    from training.train import TrainConfig, load_trained, train
    from training.vae import psnr
    from workflows.shard import ShardSettings, write_shards

    torch.set_num_threads(args.threads)
    if args.out.exists():
        shutil.rmtree(args.out)
    started = time.time()
    run, clips, combos = make_world(args.out / "world", args.frames, args.size, args.seeds)
    truth_check = [(render(s, c, d, b, args.frames, args.size, 7), (s, c, d)) for (s, c, d) in HELD_OUT for b in BACKGROUNDS]
    analyser_colour, analyser_direction = score(truth_check)
    print(f"world: {clips} training clips ({combos} of {len(SHAPES) * len(COLOURS) * len(DIRECTIONS)} combinations), "
          f"{len(HELD_OUT)} held out; analyser on ground truth: colour {analyser_colour:.0%}, direction {analyser_direction:.0%}")
    counts = write_shards(run.root, ShardSettings(buckets=[f"{args.frames}x{args.size}x{args.size}"], max_frame_stride=1))
    print(f"sharded {counts['sharded']} clips ({time.time() - started:.0f}s)")

    vae_cfg = TrainConfig.from_dict({
        "kind": "vae", "model": "VAE-tiny", "batch_size": args.vae_batch, "max_steps": args.vae_steps, "lr": 2e-3, "warmup_steps": 50,
        "ema_decay": 0.995, "log_every": 100, "ckpt_every": args.vae_steps, "gradient_weight": 0.1,
        "model_args": {"base_channels": args.vae_width, "channel_mult": [1, 2, 2], "spatial_factor": 4, "temporal_factor": 4,
                       "z_channels": 8}})
    t0 = time.time()
    train(vae_cfg, run.shards, args.out / "vae", quiet=False)
    vae_seconds = time.time() - t0
    vae, _ = load_trained(args.out / "vae")
    with torch.no_grad():
        held = torch.from_numpy(np.stack([v for v, _ in truth_check])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        recon = vae.decode(vae.encode(held)[0])
    held_psnr = psnr(recon, held)
    print(f"autoencoder: {vae_seconds:.0f}s, PSNR on held-out clips {held_psnr:.2f} dB")

    encode_shards(run.shards, args.out / "vae", batch_size=16, device="cpu")
    dit_cfg = TrainConfig.from_dict({
        "kind": "dit", "model": "DiT-S", "batch_size": args.dit_batch, "max_steps": args.dit_steps, "lr": 5e-4, "warmup_steps": 100,
        "ema_decay": 0.998, "log_every": 100, "ckpt_every": args.dit_steps, "caption_dropout": 0.1, "caption_blend": 0.9,
        "shift_base_tokens": 48, "model_args": {"hidden_size": args.dit_width, "depth": args.dit_depth, "num_heads": 4, "patch_size": [1, 2, 2]}})
    t0 = time.time()
    train(dit_cfg, run.shards, args.out / "dit", args.out / "vae", quiet=False)
    dit_seconds = time.time() - t0
    dit, meta = load_trained(args.out / "dit")

    results = {}
    for name, combos_to_test in (("held-out", HELD_OUT), ("trained", [("circle", "red", "left"), ("square", "green", "up"),
                                                                       ("triangle", "blue", "right"), ("circle", "yellow", "down")])):
        prompts, truths = [], []
        for combo in combos_to_test:
            for background in BACKGROUNDS:
                prompts.append(caption(*combo, background))
                truths.append(combo)
        videos = []
        for seed in range(args.samples_per_prompt):
            videos += generate(dit, meta, prompts, args.frames, args.size, args.size, args.sample_steps, args.cfg, seed, "cpu")
        results[name] = score(list(zip(videos, truths * args.samples_per_prompt, strict=True)))
        if name == "held-out":
            from training.sample import write_video

            for i, v in enumerate(videos[:6]):
                write_video(args.out / "samples" / f"heldout-{i}.mp4", v, fps=8)
    total = time.time() - started
    summary = {
        "autoencoder_psnr_db": round(held_psnr, 2), "heldout_colour_accuracy": results["held-out"][0],
        "heldout_direction_accuracy": results["held-out"][1], "trained_colour_accuracy": results["trained"][0],
        "trained_direction_accuracy": results["trained"][1], "analyser_colour": analyser_colour,
        "analyser_direction": analyser_direction, "vae_train_seconds": round(vae_seconds), "dit_train_seconds": round(dit_seconds),
        "vae_steps": args.vae_steps, "dit_steps": args.dit_steps, "total_seconds": round(total),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"held-out: colour {results['held-out'][0]:.0%} (target 90%), direction {results['held-out'][1]:.0%} (target 80%); "
          f"training took {(vae_seconds + dit_seconds) / 60:.1f} min on the CPU (budget 20)")


if __name__ == "__main__":
    main()
