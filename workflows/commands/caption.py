"""`rushes caption`: dense and short captions for the kept clips of a run."""

from __future__ import annotations

from pathlib import Path

import typer

from workflows.commands import examples


def caption(
    out: Path = typer.Option(..., "--out", help="run directory written by `rushes curate`"),
    captioner: str = typer.Option("metadata", help="'metadata' (no weights), 'hf:<hub id>', 'hf:/path/to/model', or "
                                  "'file:<captions.jsonl|.parquet>' to import captions written elsewhere"),
    revision: str = typer.Option(None, help="hub revision (branch, tag or commit) of the captioner"),
    enhancer: str = typer.Option(None, help="'hf:<hub id or dir>' of a text LLM that rewrites captions densely"),
    batch_size: int = typer.Option(None, "--batch-size", help="clips per model call (default 4)"),
    frames: int = typer.Option(None, help="frames per clip, spread over its length (default 8, or as a "
                               "train-captioner model was trained)"),
    frame_max_side: int = typer.Option(None, "--frame-max-side", help="longest frame side given to the model"),
    still_frames: bool = typer.Option(None, "--still-frames/--no-still-frames",
                                      help="each frame given twice, so a video model's two-frame patches are stills "
                                           "(default: as a train-captioner model was trained, else off)"),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", help="dense caption token limit (default 256)"),
    gpus_per_worker: float = typer.Option(None, "--gpus-per-worker", help="GPUs per worker when GPUs exist"),
    workers: int = typer.Option(None, help="caption workers (default one per GPU, else 1)"),
    no_checks: bool = typer.Option(False, "--no-checks", help="write unchecked captions (their captioner name says unchecked)"),
    on_disagreement: str = typer.Option(None, "--on-disagreement",
                                        help="a caption contradicting the clip's measurements: 'flag' (default: keep "
                                             "it, disagreements recorded) or 'fail'"),
    ray: bool = typer.Option(True, "--ray/--no-ray", help="run workers on Ray, or in this process"),
    ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster address (or RAY_ADDRESS)"),
) -> None:
    """Caption every kept clip of OUT that this captioner (and prompt version) has not captioned yet."""
    from curation.core.config import ConfigError, validate
    from recaption.config import CaptionConfig
    from recaption.imported import CaptionFileError
    from recaption.models import ModelNotFound

    given = {"captioner": captioner, "revision": revision, "enhancer": enhancer, "batch_size": batch_size,
             "frames": frames, "frame_max_side": frame_max_side, "still_frames": still_frames,
             "max_new_tokens": max_new_tokens,
             "gpus_per_worker": gpus_per_worker, "workers": workers, "checks": not no_checks,
             "on_disagreement": on_disagreement}
    try:
        config = validate({k: v for k, v in given.items() if v is not None}, CaptionConfig, source="options")
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        if ray:
            from workflows.caption import run_caption

            summary = run_caption(out, config, ray_address=ray_address)
        else:
            from recaption.run import caption_run
            from workflows.executor import local_executor

            summary = caption_run(out, config, mapper=local_executor)
    except (ModelNotFound, FileNotFoundError, CaptionFileError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    from workflows.caption import report_left_out

    report_left_out(summary.left_out)
    typer.echo(summary.line())


def train_captioner(
    out: Path = typer.Option(..., "--out", help="run directory with kept clips (and captions to learn)"),
    source: str = typer.Option(..., "--from", help="the captions to learn: 'file:PATH' (imported first) or a "
                                                   "captioner name of OUT/captions/"),
    base: str = typer.Option(..., help="'hf:<hub id>' or 'hf:/dir' of the VLM to fine-tune (Qwen2-VL, Qwen2.5-VL, "
                                       "Idefics3/SmolVLM)"),
    run_dir: Path = typer.Option(..., "--run", "--run-dir", help="training run directory (checkpoints, metrics, "
                                                               "final/); spell it --run-dir under torchrun"),
    lora_rank: int = typer.Option(None, "--lora-rank", help="LoRA rank; 0 fine-tunes every weight "
                                                            "(default: LoRA 16 above 1B parameters, else full)"),
    max_steps: int = typer.Option(None, "--max-steps", help="optimizer steps (default 200)"),
    batch_size: int = typer.Option(None, "--batch-size", help="examples per step (default 4)"),
    examples_per_pass: int = typer.Option(None, "--examples-per-pass",
                                          help="examples in one forward pass; lower it when memory is short "
                                               "(default 8; the result is the same)"),
    learning_rate: float = typer.Option(None, "--learning-rate", help="peak learning rate (default 1e-4)"),
    vision_learning_rate: float = typer.Option(None, "--vision-learning-rate",
                                               help="peak learning rate of the vision encoder; 0 freezes it "
                                                    "(default: --learning-rate; with LoRA, frozen)"),
    frames: int = typer.Option(None, help="frames per clip, as captioning samples them (default 8)"),
    frame_max_side: int = typer.Option(None, "--frame-max-side", help="longest frame side (default 448)"),
    still_frames: bool = typer.Option(False, "--still-frames",
                                      help="each frame given twice, so a video model's two-frame patches are stills "
                                           "(captioning with the trained model does so too)"),
    eval_fraction: float = typer.Option(None, "--eval-fraction", help="share of clips held out (default 0.1)"),
    seed: int = typer.Option(None, help="split and order seed (default 0)"),
    device: str = typer.Option(None, help="auto | cpu | cuda"),
    resume: bool = typer.Option(False, "--resume", help="continue from the newest checkpoint in --run"),
) -> None:
    """Fine-tune a VLM captioner on a run's captions (DALL-E 3 style); caption with --captioner hf:RUN/final."""
    from curation.core.config import ConfigError, validate
    from curation.core.stage import PermanentError
    from recaption.finetune import CaptionerTrainConfig, TrainingDiverged
    from recaption.finetune import train_captioner as train
    from recaption.imported import CaptionFileError
    from recaption.models import ModelNotFound

    given = {"source": source, "base": base, "lora_rank": lora_rank, "max_steps": max_steps,
             "batch_size": batch_size, "examples_per_pass": examples_per_pass, "learning_rate": learning_rate,
             "vision_learning_rate": vision_learning_rate, "frames": frames,
             "frame_max_side": frame_max_side, "still_frames": still_frames or None, "eval_fraction": eval_fraction,
             "seed": seed, "device": device}
    try:
        cfg = validate({k: v for k, v in given.items() if v is not None}, CaptionerTrainConfig, source="options")
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        train(out, run_dir, cfg, resume=resume, log=typer.echo)
    except (ModelNotFound, FileNotFoundError, FileExistsError, CaptionFileError, PermanentError, ValueError,
            TrainingDiverged) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command(epilog=examples('rushes caption --out demo-out --captioner metadata', 'rushes caption --out OUT --captioner file:annotations.jsonl --on-disagreement fail'))(caption)
    app.command("train-captioner", epilog=examples('rushes train-captioner --out OUT --from file:annotations.jsonl --base hf:/models/Qwen2.5-VL-3B-Instruct --run RUNS/cap --lora-rank 16'))(train_captioner)
