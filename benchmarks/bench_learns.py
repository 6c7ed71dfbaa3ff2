"""Does it learn? Train the autoencoder and the DiT on a world of coloured shapes, then test held-out prompts.

    OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/bench_learns.py --random-starts [--out /tmp/rushes-learns]
        [--vae-steps 1200] [--dit-steps 5500] [--textured] (see --help for the model sizes)

The world: 3 shapes x 4 colours x 4 directions over 3 plain backgrounds (the footage generator's
shapes and trajectories; `--textured` keeps its textured backgrounds), captioned with the truth
("a red circle moving left on a gray background"). Some colour x shape x direction combinations are
never shown in training (every colour, shape and direction on its own is); the shards are checked
for them. With `--random-starts` a shape starts anywhere its path fits, so only how it moves tells
its direction, not where it is. After training on the CPU, the DiT samples the held-out prompts and
every video is measured by frame analysis: the shape's colour (pixels nearest a palette colour other
than the background) and its motion (centroid displacement from first to last frame). The analyser
is first checked on the ground-truth clips, then on the autoencoder's reconstructions of them (the
ceiling for the DiT). Targets: 95% colour and 90% direction on the held-out combinations.
Everything runs through the real pipeline: run directory -> shards -> autoencoder -> encode -> DiT.

The DiT also trains with frame and region conditioning (`--condition-prob`, `--condition-mode`; by
default first frames, boxes, and all but the cells around the shape, the holes a region edit makes), and
one run scores every mode on held-out clips, each against an untrained DiT (same config, fresh
weights) scored the same way: text-to-video, image-to-video (a clip's first frame given), editing
(a red circle's clip under "a blue circle ...": blue, and its path within `--path-tolerance` px; as a
region edit given the source caption, and as plain SDEdit at `--edit-strength`),
inpainting (the box around a clip's path regenerated in another colour; the rest must stay the
reconstruction, PSNR >= 30 dB) and backward extension (the clip's last two frames given; the frames
before them must move in the prompt's direction).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from workflows.synthetic import shape_reading

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
DIRECTIONS = ("left", "right", "up", "down")
BACKGROUNDS = ("gray", "white", "brown")
SPEED = 0.06  # of the frame width per frame: a 32 px shape travels about 8 px over 5 frames
SHAPE_SIZE = 0.3  # of the frame height (the generator's default): about 10 px at 32x32
HELD_OUT = [  # every colour, shape and direction still appears in training with other partners
    ("circle", "red", "up"), ("circle", "green", "left"), ("square", "blue", "right"), ("square", "yellow", "down"),
    ("triangle", "red", "right"), ("triangle", "green", "down"), ("circle", "blue", "down"), ("square", "red", "left"),
]


TRAINED_PROBES = [("circle", "red", "left"), ("square", "green", "up"), ("triangle", "blue", "right"), ("circle", "yellow", "down")]


def random_start(direction: str, frames: int, rng: np.random.Generator) -> tuple[float, float]:
    """A frame-0 centre (fractions of the frame) anywhere the whole path stays inside the frame."""
    from workflows.synthetic.footage import DIRECTION_VECTORS

    margin, travel = SHAPE_SIZE / 2 + 0.03, SPEED * (frames - 1)
    dx, dy = DIRECTION_VECTORS[direction]

    def along(d):
        if d > 0:
            return rng.uniform(margin, 1 - margin - travel)
        if d < 0:
            return rng.uniform(margin + travel, 1 - margin)
        return rng.uniform(margin, 1 - margin)

    return along(dx), along(dy)


def render(shape, colour, direction, background, frames, size, seed, textured=False, start=None):
    """(frames, size, size, 3) uint8: the footage generator's shape and trajectory, on a plain background by default.

    The generator's own backgrounds carry a texture (blobs of about size/12 px) so that camera motion
    is measurable; at 32x32 those blobs are as large as the detail a tiny autoencoder can keep and
    swamp the shape. The issue's world is "coloured shapes over coloured backgrounds", so the
    benchmark flattens the background to its colour and draws the generator's shape on it.
    """
    from workflows.synthetic.footage import render_shape_clip

    return render_shape_clip(shape, colour, direction, background, frames, size, size, seed=seed, speed=SPEED,
                             shape_size=SHAPE_SIZE, textured=textured, start=start)


def caption(shape, colour, direction, background):
    from workflows.synthetic.footage import shape_caption

    return shape_caption(shape, colour, direction, background)


def make_world(root: Path, frames: int, size: int, seeds: int, textured: bool = False, random_starts: bool = False):
    """A curated run directory: one kept clip per training combination x background x seed, with captions."""
    from curation.core import schema
    from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
    from workflows.synthetic.footage import write_video

    run = RunDir(root)
    manifest, captions = [], []
    combos = [c for c in itertools.product(SHAPES, COLOURS, DIRECTIONS) if c not in HELD_OUT]
    for i, ((shape, colour, direction), background, seed) in enumerate(itertools.product(combos, BACKGROUNDS, range(seeds))):
        clip_id = schema.clip_id_for("learns", i, i + frames)
        path = run.clips / f"{clip_id}.mp4"
        start = random_start(direction, frames, np.random.default_rng([1, i])) if random_starts else None
        write_video(path, render(shape, colour, direction, background, frames, size, seed, textured, start), fps=12, crf=12)
        manifest.append({schema.M.clip_id: clip_id, schema.M.source: "world", schema.M.fps: 12.0, schema.M.width: size,
                         schema.M.height: size, schema.M.status: schema.STATUS_KEPT, schema.M.filter_reasons: [],
                         schema.M.clip_path: run.rel(path)})
        captions.append({schema.CAP.clip_id: clip_id, schema.CAP.caption_dense: caption(shape, colour, direction, background),
                         schema.CAP.caption_short: f"a {colour} {shape} moving {direction}", schema.CAP.captioner: "truth",
                         schema.CAP.created_at: now_utc()})
    atomic_write_table(rows_to_table(manifest, schema.MANIFEST), run.manifest / "part-0.parquet")
    atomic_write_table(rows_to_table(captions, schema.CAPTIONS), run.captions / "part-0.parquet")
    return run, len(manifest), len(combos)


def palette_labels(video: np.ndarray) -> np.ndarray:
    """(T, H, W) index of the nearest palette colour (0-3: COLOURS, 4: the background, read off the border)."""
    return shape_reading.palette_labels(video, COLOURS)


def path_of(video: np.ndarray) -> np.ndarray:
    """(T, 2) centroid (x, y) of the shape's pixels in each frame; NaN where a frame shows none."""
    return shape_reading.path_of(video, COLOURS)


def analyse(video: np.ndarray) -> tuple[str | None, str | None]:
    """(shape colour, motion direction) of a (T, H, W, 3) uint8 video, by nearest-palette pixel labels."""
    return shape_reading.analyse(video, COLOURS)


def score(videos_and_truth) -> tuple[float, float]:
    colour_ok = direction_ok = 0
    for video, (_, colour, direction) in videos_and_truth:
        c, d = analyse(video)
        colour_ok += c == colour
        direction_ok += d == direction
    n = max(1, len(videos_and_truth))
    return colour_ok / n, direction_ok / n


def path_box(video: np.ndarray, pad: int, multiple: int) -> np.ndarray:
    """(H, W) bool: the box around every shape pixel of the clip, grown by `pad` and out to whole
    `multiple`-pixel cells (only wholly known latent cells are kept, so the box follows their grid)."""
    ys, xs = np.nonzero((palette_labels(video) < 4).any(axis=0))
    h, w = video.shape[1:3]
    y0, x0 = max(0, (ys.min() - pad) // multiple * multiple), max(0, (xs.min() - pad) // multiple * multiple)
    y1, x1 = min(h, -(-(ys.max() + 1 + pad) // multiple) * multiple), min(w, -(-(xs.max() + 1 + pad) // multiple) * multiple)
    box = np.zeros((h, w), dtype=bool)
    box[y0:y1, x0:x1] = True
    return box


def masked_psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR (dB) of two uint8 videos over the pixels `where` (T, H, W) is True; 99 when identical."""
    diff = (a.astype(np.float64) - b.astype(np.float64))[where]
    mse = float((diff ** 2).mean())
    return 99.0 if mse == 0 else min(99.0, 10 * np.log10(255.0 ** 2 / mse))


def mode_clips(frames: int, size: int, random_starts: bool, seed: int = 11, edit_clips: int = 1):
    """Held-out clips the modes start from: (video, (shape, colour, direction), background), one per
    held-out combination and background, and the red circles that editing turns blue (`edit_clips`
    per direction and background)."""
    starts = np.random.default_rng(seed)

    def clip(shape, colour, direction, background):
        start = random_start(direction, frames, starts) if random_starts else None
        return render(shape, colour, direction, background, frames, size, seed, start=start)

    held = [(clip(*combo, b), combo, b) for combo in HELD_OUT for b in BACKGROUNDS]
    red_circles = [(clip("circle", "red", d, b), ("circle", "red", d), b)
                   for _ in range(edit_clips) for d in DIRECTIONS for b in BACKGROUNDS]
    return held, red_circles


def score_modes(model, meta, frames: int, size: int, random_starts: bool, steps: int, cfg: float, seed: int,
                edit_strength: float, path_tolerance: float, edit_clips: int = 1) -> dict:
    """Each sampling mode on held-out clips, scored by frame analysis (training/modes.py does the work):

    - editing: a red circle's clip under "a blue circle ..." turns blue, and its centroid path stays
      within `path_tolerance` px of the original's in every frame: as a region edit (the source
      caption given, so only where the two captions disagree is regenerated) and as plain SDEdit of
      the whole clip at `edit_strength`;
    - inpainting: the box around a clip's path is regenerated under the prompt of another colour; the
      rest must stay the reconstruction (PSNR) and the shape must come back in the prompt's colour;
    - backward extension: the clip's last two frames are given as the sample's last; the frames made
      before them must move in the prompt's direction into the first given one."""
    from training.checkpoint import load_trained
    from training.modes import Start, given_ends, given_inpaint
    from training.sample import encode_video, generate

    vae, _ = load_trained(Path(meta.vae))

    def reconstruction(video):
        import torch

        with torch.no_grad():
            z = encode_video(vae, video, meta.temporal_factor, "cpu")
            x = vae.decode(z)[0, :, :frames, :size, :size].clamp(-1, 1)
        return ((x.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8)

    def one(prompt, **kw):
        return generate(model, meta, [prompt], frames, size, size, steps, cfg, seed, "cpu", **kw)[0]

    held, red_circles = mode_clips(frames, size, random_starts, edit_clips=edit_clips)
    out = {}
    for name, strength, with_source in (("edit", 1.0, True), ("sdedit", edit_strength, False)):
        blue = path_ok = 0
        errors = []
        for video, (shape, _, direction), background in red_circles:
            source = caption(shape, "red", direction, background) if with_source else None
            try:
                edited = one(caption(shape, "blue", direction, background), start=Start([video], [1.0], strength, source))
            except ValueError:  # a DiT that ignores its captions (the untrained one) finds nothing to edit
                edited = reconstruction(video)
            colour, _ = analyse(edited)
            gaps = np.linalg.norm(path_of(edited) - path_of(video), axis=1)  # NaN where a frame lost the shape
            error = float(np.nan_to_num(gaps, nan=np.inf).max())
            blue += colour == "blue"
            path_ok += bool(error <= path_tolerance)
            errors.append(error)
        n = len(red_circles)
        out[name] = {"blue": blue / n, "path_within_tolerance": path_ok / n,
                     "median_path_error_px": float(np.median(errors)), "strength": strength,
                     "tolerance_px": path_tolerance, "source_caption": with_source}
    coloured = kept = 0
    psnrs = []
    for i, (video, (shape, colour, direction), background) in enumerate(held):
        other = COLOURS[(COLOURS.index(colour) + 1 + i % 3) % len(COLOURS)]
        box = path_box(video, 1, meta.spatial_factor)
        given = given_inpaint(video, box, frames, size, size)
        result = one(caption(shape, other, direction, background), given=given)
        psnrs.append(masked_psnr(result, reconstruction(video), given.known))
        coloured += analyse(result)[0] == other
        kept += psnrs[-1] >= 30
    n = len(held)
    out["inpaint"] = {"prompt_colour": coloured / n, "unmasked_psnr_db_min": float(min(psnrs)),
                      "unmasked_psnr_ok": kept / n}
    moved = 0
    end_psnrs = []
    for video, (shape, colour, direction), background in held:
        given = given_ends(frames, size, size, last=video[-2:], temporal_factor=meta.temporal_factor)
        result = one(caption(shape, colour, direction, background), given=given)
        first_given = int(np.argmax(given.known.any(axis=(1, 2))))
        # the end is the autoencoder's reconstruction of the given frames: PSNR against the clip itself
        end_psnrs.append(masked_psnr(result, video, given.known))
        moved += analyse(result[: first_given + 1])[1] == direction
    out["backward"] = {"direction": moved / n, "given_frames_psnr_db_mean": float(np.mean(end_psnrs))}
    return out


def check_held_out_unseen(shards: Path) -> int:
    """Raise if any shard caption names a held-out combination; returns how many captions were checked."""
    import pyarrow.parquet as pq

    from curation.core.schema import SH

    held = {f"a {c} {s} moving {d}" for s, c, d in HELD_OUT}
    checked = 0
    for part in shards.rglob("*.parquet"):
        table = pq.read_table(part, columns=[SH.caption_dense, SH.caption_short, SH.caption_original])
        for column in table.columns:
            for text in column.to_pylist():
                if text and any(text.startswith(h) for h in held):
                    raise AssertionError(f"held-out combination leaked into training: {text!r} in {part}")
                checked += bool(text)
    return checked


def main() -> None:
    from training.train import CONDITION_MODES  # the trainer's list: a mode it gains is offered here too

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/rushes-learns"))
    parser.add_argument("--frames", type=int, default=5, help="1 + 4k frames per clip")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=8, help="clips per training combination and background")
    parser.add_argument("--textured", action="store_true", help="the generator's textured backgrounds instead of plain ones")
    parser.add_argument("--random-starts", action="store_true",
                        help="shapes start anywhere their path fits, not on the side they move away from: where a "
                             "shape is no longer tells its direction, only how it moves does")
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-width", type=int, default=8, help="autoencoder base channels")
    parser.add_argument("--vae-mult", default="1,2", help="autoencoder channel multiplier per level")
    parser.add_argument("--vae-spatial", type=int, default=2, help="autoencoder spatial compression")
    parser.add_argument("--vae-temporal", type=int, default=1,
                        help="autoencoder temporal compression (<= spatial); 1 keeps every frame's motion")
    parser.add_argument("--vae-z", type=int, default=8, help="autoencoder latent channels")
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--vae-lr", type=float, default=4e-3)
    parser.add_argument("--vae-gradient-weight", type=float, default=0.1,
                        help="weight of the autoencoder's edge/motion (spatial and temporal difference) loss")
    parser.add_argument("--vae-adv-weight", type=float, default=0.0,
                        help="> 0: the autoencoder's adversarial term, from half-way through its steps")
    parser.add_argument("--dit-steps", type=int, default=5500)
    parser.add_argument("--dit-width", type=int, default=128)
    parser.add_argument("--dit-depth", type=int, default=4)
    parser.add_argument("--dit-batch", type=int, default=16)
    parser.add_argument("--dit-lr", type=float, default=2e-3)
    parser.add_argument("--dit-patch", type=int, default=2, help="DiT patch height and width in latent cells")
    parser.add_argument("--dit-patch-frames", type=int, default=5,
                        help="DiT patch length in latent frames; the default, all 5, makes each token a tube "
                             "through the whole clip, so a shape's path is inside one token (1: a token per frame)")
    parser.add_argument("--dit-timestep-mean", type=float, default=1.5,
                        help="mean of the logit-normal training timesteps (> 0: more training near noise, where a "
                             "random-start shape's path and so its direction is decided; 0 is the trainer's default)")
    parser.add_argument("--dit-frame-noise", type=float, default=0.0,
                        help="frame_noise_prob: share of clips whose latent frames get their own noise levels")
    parser.add_argument("--dit-frame-pos", type=int, default=8,
                        help="DiT frame_pos_freqs: Fourier features of where a token sits in the frame (0: RoPE only)")
    parser.add_argument("--dit-rope-theta", type=float, default=10000.0,
                        help="DiT rope_theta: base of the rotary frequencies (small grids use only the fastest "
                             "pairs at 10000; 100 spreads them over offsets of a few tokens)")
    parser.add_argument("--dit-prediction", default="velocity", choices=("velocity", "data"),
                        help="what the DiT's last layer predicts (data: x0, turned into the velocity)")
    parser.add_argument("--dit-text-pool", default="mean", choices=("mean", "attention"),
                        help="DiT text_pool: how the caption's token states become the adaLN signal")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both models")
    parser.add_argument("--condition-prob", type=float, default=0.5,
                        help="share of clips the DiT is given frames or a region of in training (frame "
                             "conditioning, and the image-to-video score); 0: text-to-video training only")
    parser.add_argument("--condition-mode", default="all", choices=CONDITION_MODES,
                        help="what frame-conditioned training gives: first frames, a box, all but the cells around "
                             "the shape (what a region edit gives), or any of them (all; both: frames or a box)")
    parser.add_argument("--no-modes", dest="modes", action="store_false",
                        help="skip the per-mode cases (editing, inpainting, backward extension)")
    parser.add_argument("--edit-strength", type=float, default=0.7,
                        help="start time of the plain SDEdit editing case (the region edit starts at 1)")
    parser.add_argument("--modes-of", type=Path, default=None,
                        help="score only the modes of a DiT this benchmark trained before (its --out), again")
    parser.add_argument("--edit-clips", type=int, default=3,
                        help="red circles edited per direction and background (4 x 3 of them; default 3: 36 clips)")
    parser.add_argument("--path-tolerance", type=float, default=3.0,
                        help="px an edited shape's centroid may stray from the original's in any frame")
    parser.add_argument("--samples-per-prompt", type=int, default=2)
    parser.add_argument("--sample-steps", type=int, default=30)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import shutil

    import torch

    from training.checkpoint import load_trained
    from training.encode import encode_shards
    from training.sample import generate
    from training.train import TrainConfig, train
    from training.vae import psnr
    from workflows.shard import ShardSettings, write_shards

    torch.set_num_threads(args.threads)
    if args.modes_of:
        rescore_modes(args)
        return
    if args.out.exists():
        shutil.rmtree(args.out)
    started = time.time()
    run, clips, combos = make_world(args.out / "world", args.frames, args.size, args.seeds, args.textured,
                                    args.random_starts)
    starts = np.random.default_rng(2)
    truth_check = [(render(s, c, d, b, args.frames, args.size, 7, args.textured,
                           random_start(d, args.frames, starts) if args.random_starts else None), (s, c, d))
                   for (s, c, d) in HELD_OUT for b in BACKGROUNDS]
    analyser_colour, analyser_direction = score(truth_check)
    print(f"world: {clips} training clips ({combos} of {len(SHAPES) * len(COLOURS) * len(DIRECTIONS)} combinations), "
          f"{len(HELD_OUT)} held out; analyser on ground truth: colour {analyser_colour:.0%}, direction {analyser_direction:.0%}")
    counts = write_shards(run.root, ShardSettings(buckets=[f"{args.frames}x{args.size}x{args.size}"], max_frame_stride=1,
                                                            video_reader="pyav"))  # decord fails on 32x32 frames
    checked = check_held_out_unseen(run.shards)
    print(f"sharded {counts['sharded']} clips; none of {checked} training captions names a held-out combination "
          f"({time.time() - started:.0f}s)")

    vae_cfg = TrainConfig.from_dict({
        "kind": "vae", "model": "VAE-tiny", "batch_size": args.vae_batch, "max_steps": args.vae_steps, "lr": args.vae_lr,
        "warmup_steps": 50, "ema_decay": 0.99, "log_every": 100, "ckpt_every": args.vae_steps, "seed": args.seed,
        "gradient_weight": args.vae_gradient_weight, "adv_weight": args.vae_adv_weight,
        "adv_start_step": args.vae_steps // 2, "disc_channels": 16,
        "model_args": {"base_channels": args.vae_width, "channel_mult": [int(m) for m in args.vae_mult.split(",")],
                       "spatial_factor": args.vae_spatial, "temporal_factor": args.vae_temporal, "z_channels": args.vae_z}})
    t0, c0 = time.time(), time.process_time()
    train(vae_cfg, run.shards, args.out / "vae", quiet=False)
    vae_seconds, vae_cpu = time.time() - t0, time.process_time() - c0
    vae, _ = load_trained(args.out / "vae")
    with torch.no_grad():
        held = torch.from_numpy(np.stack([v for v, _ in truth_check])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        recon = vae.decode(vae.encode(held)[0])
    held_psnr = psnr(recon, held)
    recon_videos = [((v.clamp(-1, 1).permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8) for v in recon]
    recon_colour, recon_direction = score(list(zip(recon_videos, [t for _, t in truth_check], strict=True)))
    print(f"autoencoder: {vae_seconds:.0f}s, PSNR on held-out clips {held_psnr:.2f} dB; analyser on its reconstructions: "
          f"colour {recon_colour:.0%}, direction {recon_direction:.0%}")

    t0 = time.time()
    encode_shards(run.shards, args.out / "vae", batch_size=16, device="cpu")
    encode_seconds = time.time() - t0
    dit_cfg = TrainConfig.from_dict({
        "kind": "dit", "model": "DiT-S", "batch_size": args.dit_batch, "max_steps": args.dit_steps, "lr": args.dit_lr,
        "warmup_steps": 100, "ema_decay": 0.995, "log_every": 100, "ckpt_every": args.dit_steps, "caption_dropout": 0.1,
        "caption_blend": 0.9, "shift_base_tokens": 48,
        "seed": args.seed, "condition_prob": args.condition_prob, "condition_mode": args.condition_mode,
        "timestep_mean": args.dit_timestep_mean, "frame_noise_prob": args.dit_frame_noise,
        "model_args": {"hidden_size": args.dit_width, "depth": args.dit_depth, "num_heads": 4,
                       "patch_size": [args.dit_patch_frames, args.dit_patch, args.dit_patch], "frame_pos_freqs": args.dit_frame_pos,
                       "rope_theta": args.dit_rope_theta, "prediction": args.dit_prediction, "text_pool": args.dit_text_pool,
                       "frame_conditioning": args.condition_prob > 0}})
    t0, c0 = time.time(), time.process_time()
    train(dit_cfg, run.shards, args.out / "dit", args.out / "vae", quiet=False)
    dit_seconds, dit_cpu = time.time() - t0, time.process_time() - c0
    dit, meta = load_trained(args.out / "dit")

    t0 = time.time()
    from training.dit import DiTConfig, VideoDiT

    torch.manual_seed(args.seed)
    untrained = VideoDiT(DiTConfig(**meta.model_config))  # same config, fresh weights: the baseline
    results, modes = {}, {}
    for label, model in (("", dit), (", untrained DiT", untrained)):
        for name, combos_to_test in (("held-out", HELD_OUT), ("trained", TRAINED_PROBES)):
            prompts, truths = [], []
            for combo in combos_to_test:
                for background in BACKGROUNDS:
                    prompts.append(caption(*combo, background))
                    truths.append(combo)
            videos = []
            for seed in range(args.samples_per_prompt):
                videos += generate(model, meta, prompts, args.frames, args.size, args.size, args.sample_steps, args.cfg,
                                   1000 * args.seed + seed, "cpu")
            results[name + label] = score(list(zip(videos, truths * args.samples_per_prompt, strict=True)))
            if not label:
                from curation.core.video import write_video

                for i, v in enumerate(videos[: len(prompts)]):
                    write_video(args.out / "samples" / f"{name}-{i:02d}.mp4", v, fps=8)
        if meta.model_config.get("frame_conditioning"):
            # image-to-video: each held-out prompt starts from its own clip's first frame, and only the generated
            # frames are scored. The given frame leaks into the next ones through the causal decoder, so the
            # untrained DiT scored the same way is the baseline to beat.
            truths = [t for _, t in truth_check] * args.samples_per_prompt
            videos = [generate(model, meta, [caption(*combo, background)], args.frames, args.size, args.size,
                               args.sample_steps, args.cfg, 1000 * args.seed + seed, "cpu", first_frames=clip[:1])[0][1:]
                      for seed in range(args.samples_per_prompt)
                      for (clip, combo), background in zip(truth_check, BACKGROUNDS * len(HELD_OUT), strict=True)]
            results["image-to-video" + label] = score(list(zip(videos, truths, strict=True)))
        if args.modes:
            modes[label or "trained"] = score_modes(model, meta, args.frames, args.size, args.random_starts,
                                                    args.sample_steps, args.cfg, 1000 * args.seed,
                                                    args.edit_strength, args.path_tolerance, args.edit_clips)
    sample_seconds = time.time() - t0
    total = time.time() - started
    summary = {
        "autoencoder_psnr_db": round(held_psnr, 2), "heldout_colour_accuracy": results["held-out"][0],
        "heldout_direction_accuracy": results["held-out"][1], "trained_colour_accuracy": results["trained"][0],
        "trained_direction_accuracy": results["trained"][1],
        "untrained_heldout_colour_accuracy": results["held-out, untrained DiT"][0],
        "untrained_heldout_direction_accuracy": results["held-out, untrained DiT"][1],
        "analyser_colour": analyser_colour,
        "analyser_direction": analyser_direction, "analyser_colour_on_reconstructions": recon_colour,
        "analyser_direction_on_reconstructions": recon_direction, "textured": args.textured,
        "random_starts": args.random_starts, "seeds": args.seeds, "training_clips": clips,
        "vae_train_seconds": round(vae_seconds), "encode_seconds": round(encode_seconds),
        "dit_train_seconds": round(dit_seconds), "sample_seconds": round(sample_seconds),
        "vae_cpu_seconds": round(vae_cpu), "dit_cpu_seconds": round(dit_cpu), "threads": args.threads,
        "vae_steps": args.vae_steps, "vae_adv_weight": args.vae_adv_weight, "dit_steps": args.dit_steps, "dit_lr": args.dit_lr,
        "dit_patch": meta.model_config["patch_size"], "dit_frame_pos_freqs": args.dit_frame_pos,
        "dit_rope_theta": args.dit_rope_theta, "dit_prediction": args.dit_prediction, "dit_text_pool": args.dit_text_pool,
        "condition_prob": args.condition_prob, "condition_mode": args.condition_mode, "seed": args.seed,
        "dit_timestep_mean": args.dit_timestep_mean, "dit_frame_noise": args.dit_frame_noise,
        "total_seconds": round(total),
    }
    if "image-to-video" in results:
        summary.update(image_to_video_colour_accuracy=results["image-to-video"][0],
                       image_to_video_direction_accuracy=results["image-to-video"][1],
                       image_to_video_untrained_dit_direction_accuracy=results["image-to-video, untrained DiT"][1])
    if modes:
        summary["modes"] = modes
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    world = "random-start world" if args.random_starts else "world"
    print(f"{world}, text-to-video, held-out: colour {results['held-out'][0]:.0%} (target 95%), direction "
          f"{results['held-out'][1]:.0%} (target 90%); untrained DiT: colour "
          f"{results['held-out, untrained DiT'][0]:.0%}, direction {results['held-out, untrained DiT'][1]:.0%}")
    print(f"training took {(vae_seconds + dit_seconds) / 60:.1f} min of wall time on the CPU (budget 20), "
          f"{(vae_cpu + dit_cpu) / 60:.1f} CPU-minutes over {args.threads} threads")
    if "image-to-video" in results:
        print(f"image-to-video (held-out prompts, first frame given): colour {results['image-to-video'][0]:.0%}, "
              f"direction {results['image-to-video'][1]:.0%} (untrained DiT: "
              f"{results['image-to-video, untrained DiT'][1]:.0%})")
    if modes:
        print_modes(modes, args)


def rescore_modes(args) -> None:
    """`--modes-of DIR`: the per-mode cases of DIR's trained DiT and of an untrained one, printed and
    written to DIR/modes.json (the world's settings come from DIR/summary.json)."""
    import torch

    from training.checkpoint import load_trained
    from training.dit import DiTConfig, VideoDiT

    summary_path = args.modes_of / "summary.json"
    if not summary_path.exists():
        raise SystemExit(f"--modes-of {args.modes_of}: no summary.json there; give the --out of a finished run")
    trained = json.loads(summary_path.read_text())
    dit, meta = load_trained(args.modes_of / "dit")
    torch.manual_seed(trained["seed"])
    untrained = VideoDiT(DiTConfig(**meta.model_config))
    modes = {label: score_modes(model, meta, args.frames, args.size, trained["random_starts"], args.sample_steps,
                                args.cfg, 1000 * trained["seed"], args.edit_strength, args.path_tolerance,
                                args.edit_clips)
             for label, model in (("trained", dit), (", untrained DiT", untrained))}
    (args.modes_of / "modes.json").write_text(json.dumps(modes, indent=1))
    print_modes(modes, args)


def print_modes(modes: dict, args) -> None:
    ours, base = modes["trained"], modes[", untrained DiT"]
    for name, what in (("edit", "region edit, source caption given"), ("sdedit", f"SDEdit at {args.edit_strength}")):
        print(f"editing red circles to blue ({what}): blue {ours[name]['blue']:.0%} (target 90%), "
              f"path within {args.path_tolerance:g} px {ours[name]['path_within_tolerance']:.0%}, median path error "
              f"{ours[name]['median_path_error_px']:.1f} px (untrained DiT: blue {base[name]['blue']:.0%}, "
              f"path {base[name]['path_within_tolerance']:.0%})")
    print(f"inpainting the path's box in another colour: prompt colour {ours['inpaint']['prompt_colour']:.0%}, "
          f"unmasked PSNR >= 30 dB {ours['inpaint']['unmasked_psnr_ok']:.0%} (lowest "
          f"{ours['inpaint']['unmasked_psnr_db_min']:.1f} dB) (untrained DiT: prompt colour "
          f"{base['inpaint']['prompt_colour']:.0%})")
    print(f"backward extension (last 2 frames given): direction before them {ours['backward']['direction']:.0%}, "
          f"given frames' PSNR against the clip {ours['backward']['given_frames_psnr_db_mean']:.1f} dB "
          f"(untrained DiT: direction {base['backward']['direction']:.0%})")


if __name__ == "__main__":
    main()
