"""`rushes train-captioner` on tiny random-weight models: it learns, resumes exactly, LoRA merges, and
its output captions like any model."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curation.core.schema import CAP, clip_id_for
from curation.core.tables import read_captions
from recaption.config import CaptionConfig
from recaption.finetune import CaptionerTrainConfig, checkpoints, train_captioner
from recaption.run import caption_run

DENSES = [
    "A red circle slides to the right across a plain blue background, flat colours, even light, a wide shot.",
    "A yellow square rises slowly over a plain green background, flat colours, dim light, a wide shot here.",
    "A white triangle drifts to the left over a plain purple background, flat colours, bright, a wide shot.",
]


@pytest.fixture
def annotated(make_run, tmp_path):
    run = make_run(3)
    path = tmp_path / "annotations.jsonl"
    path.write_text("".join(json.dumps({CAP.clip_id: clip_id_for(f"source{i}", 0, 12), CAP.caption_dense: d,
                                        CAP.caption_short: d.split(",")[0] + "."}) + "\n"
                            for i, d in enumerate(DENSES)))
    return run, f"file:{path}"


def tiny(base, source, **kw) -> CaptionerTrainConfig:
    settings = dict(source=source, base=f"hf:{base}", lora_rank=0, max_steps=12, batch_size=2, learning_rate=1e-2,
                    warmup_steps=1, eval_fraction=0.34, eval_every=100, save_every=100, samples=1, frames=4,
                    frame_max_side=64, max_new_tokens=12, device="cpu")
    return CaptionerTrainConfig(**{**settings, **kw})


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_it_learns_and_its_output_captions_like_any_model(annotated, tiny_qwen, tmp_path):
    run, source = annotated
    run_dir = tmp_path / "cap"
    summary = train_captioner(run.root, run_dir, tiny(tiny_qwen, source), log=lambda *_: None)
    assert (summary["train_clips"], summary["eval_clips"], summary["samples"]) == (2, 1, 1)
    losses = [m["train_loss"] for m in metrics(run_dir) if "train_loss" in m]
    assert len(losses) == 12 and sum(losses[-3:]) < 0.7 * sum(losses[:3])  # it fits its training captions
    assert metrics(run_dir)[0]["step"] == 0 and metrics(run_dir)[-1]["eval_loss"] is not None
    final = run_dir / "final"
    card = (final / "README.md").read_text()
    assert f"hf:{tiny_qwen}" in card and "full fine-tuning" in card and "12 x 2 examples" in card
    assert "2 clips trained, 1 held out" in card
    sample = json.loads((run_dir / "samples.jsonl").read_text())
    assert sample["target_dense"] in DENSES and isinstance(sample["dense"], str)
    # the trained model is a model directory `rushes caption` loads as it loads any
    done = caption_run(run.root, CaptionConfig(captioner=f"hf:{final}", checks=False, frames=4, frame_max_side=64,
                                               max_new_tokens=8, short_max_new_tokens=4))
    assert done.captioned == 3 and done.captioner.startswith(f"hf:{final}")
    assert "untrained" not in done.captioner
    assert len(read_captions(run).to_pylist()) == 6  # 3 imported + 3 by the trained model


def test_a_paused_run_resumed_ends_where_a_straight_run_ends(annotated, tiny_qwen, tmp_path):
    from safetensors.torch import load_file

    run, source = annotated
    cfg = tiny(tiny_qwen, source, max_steps=4, save_every=2, samples=0)
    train_captioner(run.root, tmp_path / "straight", cfg, log=lambda *_: None)
    train_captioner(run.root, tmp_path / "paused", cfg, log=lambda *_: None, stop_at=2)
    assert [p.name for p in checkpoints(tmp_path / "paused")] == ["step-000002.pt"]
    with pytest.raises(FileExistsError, match="pass --resume"):
        train_captioner(run.root, tmp_path / "paused", cfg, log=lambda *_: None)
    with pytest.raises(ValueError, match=r"other settings \(batch_size 2 -> 3\)"):
        train_captioner(run.root, tmp_path / "paused", tiny(tiny_qwen, source, max_steps=4, save_every=2, samples=0,
                                                            batch_size=3), resume=True, log=lambda *_: None)
    train_captioner(run.root, tmp_path / "paused", cfg, resume=True, log=lambda *_: None)
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "paused" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert [m["step"] for m in metrics(tmp_path / "paused")] == [0, 1, 2, 3, 4]
    # a finished run resumed trains nothing, and its card keeps the eval loss it ended with
    last_eval = metrics(tmp_path / "paused")[-1]["eval_loss"]
    summary = train_captioner(run.root, tmp_path / "paused", cfg, resume=True, log=lambda *_: None)
    assert summary["eval_loss"] == last_eval and f"{last_eval:.4f} after" in (
        tmp_path / "paused" / "final" / "README.md").read_text()
    with pytest.raises(ValueError, match="at step 4, past --max-steps 3"):
        train_captioner(run.root, tmp_path / "paused", tiny(tiny_qwen, source, max_steps=3, save_every=2, samples=0),
                        resume=True, log=lambda *_: None)


def test_a_resume_on_captions_changed_since_is_refused(annotated, tiny_qwen, tmp_path):
    """The same --from names other examples once its file is edited: a resume would not be exact."""
    run, source = annotated
    cfg = tiny(tiny_qwen, source, max_steps=4, save_every=2, samples=0)
    train_captioner(run.root, tmp_path / "cap", cfg, log=lambda *_: None, stop_at=2)
    path = Path(source.removeprefix("file:"))
    path.write_text(path.read_text().replace("red", "crimson"))
    with pytest.raises(ValueError, match=r"trained on other captions \(file:annotations.jsonl@\w+: 4 examples"):
        train_captioner(run.root, tmp_path / "cap", cfg, resume=True, log=lambda *_: None)


def test_a_checkpoint_of_other_weights_is_refused_with_a_message(annotated, tiny_qwen, tmp_path):
    """A LoRA checkpoint of an earlier version (adapters on the vision encoder too) names what differs."""
    import torch

    run, source = annotated
    cfg = tiny(tiny_qwen, source, lora_rank=4, max_steps=4, save_every=2, samples=0)
    train_captioner(run.root, tmp_path / "cap", cfg, log=lambda *_: None, stop_at=2)
    path = checkpoints(tmp_path / "cap")[-1]
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["trainable"]["base_model.model.model.visual.blocks.0.mlp.gate_proj.lora_A.default.weight"] = torch.zeros(4, 4)
    torch.save(state, path)
    with pytest.raises(ValueError, match="trained other weights than this run would"):
        train_captioner(run.root, tmp_path / "cap", cfg, resume=True, log=lambda *_: None)


def test_a_run_killed_before_its_first_checkpoint_starts_its_metrics_afresh(annotated, tiny_qwen, tmp_path):
    run, source = annotated
    (tmp_path / "cap").mkdir()
    (tmp_path / "cap" / "metrics.jsonl").write_text('{"step": 0, "eval_loss": 9.0}\n{"step": 1, "train_loss": 9.0}\n')
    train_captioner(run.root, tmp_path / "cap", tiny(tiny_qwen, source, max_steps=2, samples=0), log=lambda *_: None)
    assert [m["step"] for m in metrics(tmp_path / "cap")] == [0, 1, 2] and metrics(tmp_path / "cap")[0]["eval_loss"] != 9.0


def test_a_vision_learning_rate_steps_the_vision_encoder_at_its_own_rate(annotated, tiny_qwen, tmp_path):
    import torch
    from safetensors.torch import load_file

    run, source = annotated
    cfg = tiny(tiny_qwen, source, max_steps=3, save_every=3, samples=0, learning_rate=1e-2, vision_learning_rate=1e-4)
    train_captioner(run.root, tmp_path / "cap", cfg, log=lambda *_: None)
    state = torch.load(checkpoints(tmp_path / "cap")[-1], map_location="cpu", weights_only=False)
    language, vision = state["optimizer"]["param_groups"]
    assert vision["lr"] == pytest.approx(language["lr"] / 100) and vision["scale"] == pytest.approx(0.01)
    vision_names = [n for n in state["trainable"] if n.startswith("model.visual.")]
    assert len(vision["params"]) == len(vision_names) > 0
    assert len(language["params"]) == len(state["trainable"]) - len(vision_names)
    # Adam moves each weight by about its learning rate a step: the vision encoder's barely move
    base, tuned = load_file(tiny_qwen / "model.safetensors"), load_file(tmp_path / "cap" / "final" / "model.safetensors")
    moved = {k: float((tuned[k] - base[k]).abs().max()) for k in base}
    assert max(v for k, v in moved.items() if k.startswith("visual.")) < 3 * 3 * 1e-4
    assert max(v for k, v in moved.items() if k.startswith("model.layers.")) > 1e-2
    assert "learning rate 0.01 (vision encoder 0.0001)" in (tmp_path / "cap" / "final" / "README.md").read_text()
    with pytest.raises(ValueError, match=r"other settings \(vision_learning_rate 0.0001 -> None\)"):
        train_captioner(run.root, tmp_path / "cap", tiny(tiny_qwen, source, max_steps=6, samples=0),
                        resume=True, log=lambda *_: None)


def test_a_vision_learning_rate_of_0_freezes_the_vision_encoder(annotated, tiny_qwen, tmp_path):
    import torch
    from safetensors.torch import load_file

    run, source = annotated
    cfg = tiny(tiny_qwen, source, max_steps=3, save_every=3, samples=0, learning_rate=1e-2, vision_learning_rate=0)
    train_captioner(run.root, tmp_path / "cap", cfg, log=lambda *_: None)
    state = torch.load(checkpoints(tmp_path / "cap")[-1], map_location="cpu", weights_only=False)
    assert state["trainable"] and not [n for n in state["trainable"] if ".visual." in f".{n}"]
    assert len(state["optimizer"]["param_groups"]) == 1
    base, tuned = load_file(tiny_qwen / "model.safetensors"), load_file(tmp_path / "cap" / "final" / "model.safetensors")
    vision = [k for k in base if k.startswith("visual.")]
    assert vision and all(torch.equal(tuned[k], base[k]) for k in vision)
    assert max(float((tuned[k] - base[k]).abs().max()) for k in base if k.startswith("model.layers.")) > 1e-2
    assert "vision encoder frozen" in (tmp_path / "cap" / "final" / "README.md").read_text()


def test_lora_trains_adapters_only_and_merges_them(annotated, tiny_qwen, tmp_path):
    from safetensors.torch import load_file

    run, source = annotated
    run_dir = tmp_path / "lora"
    train_captioner(run.root, run_dir, tiny(tiny_qwen, source, lora_rank=4, max_steps=3, samples=0),
                    log=lambda *_: None)
    final = run_dir / "final"
    assert not (final / "adapter_config.json").exists()  # merged: a plain model directory
    assert "LoRA rank 4 (alpha 8), merged" in (final / "README.md").read_text()
    base, tuned = load_file(tiny_qwen / "model.safetensors"), load_file(final / "model.safetensors")
    assert set(tuned) == set(base)
    changed = {k for k in base if not (base[k] == tuned[k]).all()}
    assert changed and all(k.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj") for k in changed)
    assert not [k for k in changed if k.startswith("visual.")]  # adapters on the language model only
    assert "vision encoder frozen" in (final / "README.md").read_text()
    # given a rate of its own, the vision encoder trains whole beside the adapters
    train_captioner(run.root, tmp_path / "lora-vision", tiny(tiny_qwen, source, lora_rank=4, max_steps=3, samples=0,
                                                             vision_learning_rate=1e-2), log=lambda *_: None)
    tuned = load_file(tmp_path / "lora-vision" / "final" / "model.safetensors")
    moved = [k for k in base if k.startswith("visual.") and not (base[k] == tuned[k]).all()]
    assert any(k.endswith(("qkv.weight", "patch_embed.proj.weight")) for k in moved)  # not only LoRA's projections


def test_cli_names_an_unknown_source_captioner_without_a_traceback(annotated, tiny_qwen, tmp_path):
    from workflows.cli import app

    run, _ = annotated
    result = CliRunner().invoke(app, ["train-captioner", "--out", str(run.root), "--from", "nobody",
                                      "--base", f"hf:{tiny_qwen}", "--run", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--from 'nobody': no good caption" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train-captioner", "--out", str(run.root), "--from", "metadata",
                                      "--base", "qwen", "--run", str(tmp_path / "r")])
    assert result.exit_code == 2 and "base must be" in result.output


def test_cli_names_the_rows_of_its_file_that_match_no_clip(annotated, tiny_qwen, tmp_path):
    from workflows.cli import app

    run, source = annotated
    path = Path(source.removeprefix("file:"))
    with open(path, "a") as f:
        f.write(json.dumps({CAP.clip_id: "0123456789abcdef0123", CAP.caption_dense: "A typo'd id."}) + "\n")
    result = CliRunner().invoke(app, ["train-captioner", "--out", str(run.root), "--from", source,
                                      "--base", f"hf:{tiny_qwen}", "--run", str(tmp_path / "r"), "--lora-rank", "0",
                                      "--max-steps", "1", "--batch-size", "1", "--frames", "4",
                                      "--frame-max-side", "64", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "left out: line 4 (clip_id 0123456789abcdef0123): no clip of this run has that id" in result.output
    assert "3 captioned" in result.output and "1 rows of the file left out" in result.output


def test_cli_refuses_an_empty_file_source_with_a_clear_message(annotated, tiny_qwen, tmp_path):
    from workflows.cli import app

    run, _ = annotated
    result = CliRunner().invoke(app, ["train-captioner", "--out", str(run.root), "--from", "file:",
                                      "--base", f"hf:{tiny_qwen}", "--run", str(tmp_path / "r")])
    assert result.exit_code == 2 and "'file:' needs the path of a caption file" in result.output, result.output
    assert "Traceback" not in result.output and "pydantic" not in result.output
    assert "validation error for" not in result.output and "CaptionConfig" not in result.output


def test_cli_skips_a_clip_whose_file_is_missing_naming_it(annotated, tiny_qwen, tmp_path):
    from workflows.cli import app

    run, source = annotated
    missing = next(p for p in sorted((run.root / "clips").glob("*.mp4")))
    missing.unlink()
    result = CliRunner().invoke(app, ["train-captioner", "--out", str(run.root), "--from", source,
                                      "--base", f"hf:{tiny_qwen}", "--run", str(tmp_path / "r"), "--lora-rank", "0",
                                      "--max-steps", "1", "--batch-size", "1", "--frames", "4",
                                      "--frame-max-side", "64", "--device", "cpu", "--vision-learning-rate", "0"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "train-captioner: skipped clip" in result.output and missing.name in result.output
    assert "1 clips (2 examples) to train, 1 held out" in result.output
    assert "vision encoder frozen" in (tmp_path / "r" / "final" / "README.md").read_text()
    result = CliRunner().invoke(app, ["train-captioner", "--out", str(run.root), "--from", source,
                                      "--base", f"hf:{tiny_qwen}", "--run", str(tmp_path / "r2"),
                                      "--vision-learning-rate", "-1"])
    assert result.exit_code == 2 and "vision_learning_rate" in result.output and "Traceback" not in result.output


def test_a_clip_unreadable_during_training_is_a_clear_error_naming_it(annotated, tiny_qwen, tmp_path, monkeypatch):
    from curation.core.stage import PermanentError
    from workflows.cli import app

    run, source = annotated

    def unreadable(run_dir, clip, config):
        raise PermanentError(f"cannot read {clip['clip_path']} as a video")

    monkeypatch.setattr("recaption.run.with_frames", unreadable)
    result = CliRunner().invoke(app, ["train-captioner", "--out", str(run.root), "--from", source,
                                      "--base", f"hf:{tiny_qwen}", "--run", str(tmp_path / "r"), "--lora-rank", "0",
                                      "--max-steps", "1", "--batch-size", "1", "--frames", "4",
                                      "--frame-max-side", "64", "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "error: clip " in result.output and "cannot read" in result.output
    assert not isinstance(result.exception, PermanentError)


def test_the_image_sequence_family_trains_too(annotated, tiny_idefics, tmp_path):
    run, source = annotated
    run_dir = tmp_path / "idefics"
    summary = train_captioner(run.root, run_dir, tiny(tiny_idefics, source, max_steps=2, samples=1),
                              log=lambda *_: None)
    assert summary["samples"] == 1 and summary["eval_loss"] is not None
    done = caption_run(run.root, CaptionConfig(captioner=f"hf:{run_dir / 'final'}", checks=False, frames=4,
                                               frame_max_side=64, max_new_tokens=8, short_max_new_tokens=4))
    assert done.captioned == 3


def test_captioning_with_a_trained_model_samples_frames_as_its_training_did(annotated, tiny_qwen, tmp_path):
    from recaption.config import TRAINED_SETTINGS_FILE, with_trained_settings

    run, source = annotated
    train_captioner(run.root, tmp_path / "cap", tiny(tiny_qwen, source, max_steps=2, still_frames=True, frames=3),
                    log=lambda *_: None)
    final = tmp_path / "cap" / "final"
    saved = json.loads((final / TRAINED_SETTINGS_FILE).read_text())
    assert saved == {"frames": 3, "frames_per_second": None, "frame_max_side": 64, "still_frames": True}
    assert "each given twice" in (final / "README.md").read_text()
    unset = with_trained_settings(CaptionConfig(captioner=f"hf:{final}"))
    assert (unset.frames, unset.frame_max_side, unset.still_frames) == (3, 64, True)
    told = with_trained_settings(CaptionConfig(captioner=f"hf:{final}", frames=2, still_frames=False))
    assert (told.frames, told.frame_max_side, told.still_frames) == (2, 64, False)  # what is set wins
    plain = CaptionConfig(captioner=f"hf:{tiny_qwen}")  # a model not trained here: nothing saved, nothing changed
    assert with_trained_settings(plain) == plain
    done = caption_run(run.root, CaptionConfig(captioner=f"hf:{final}", checks=False, max_new_tokens=8,
                                               short_max_new_tokens=4))
    assert done.captioned == 3


def test_the_three_commands_of_the_issue_end_to_end(annotated, tiny_qwen, tmp_path):
    from workflows.cli import app

    run, source = annotated
    cli = CliRunner()
    result = cli.invoke(app, ["caption", "--out", str(run.root), "--no-ray", "--captioner", source])
    assert result.exit_code == 0 and "3 captioned" in result.output, result.output
    result = cli.invoke(app, ["train-captioner", "--out", str(run.root), "--from", source, "--base", f"hf:{tiny_qwen}",
                              "--run", str(tmp_path / "cap"), "--lora-rank", "0", "--max-steps", "2",
                              "--batch-size", "1", "--frames", "4", "--frame-max-side", "64", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 clips (4 examples) to train, 1 held out" in result.output  # the import was already done: reused
    assert "0 captioned, 0 failed, 3 skipped (already done)" in result.output  # what the import made of the file
    final = tmp_path / "cap" / "final"
    result = cli.invoke(app, ["caption", "--out", str(run.root), "--no-ray", "--no-checks", "--captioner",
                              f"hf:{final}", "--frames", "4", "--frame-max-side", "64", "--max-new-tokens", "8"])
    assert result.exit_code == 0 and "3 kept clips -> 3 captioned" in result.output, result.output


@pytest.mark.slow
def test_two_processes_under_torchrun_take_the_steps_one_would(annotated, tiny_qwen, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    run, source = annotated
    args = ["train-captioner", "--out", str(run.root), "--from", source, "--base", f"hf:{tiny_qwen}",
            "--lora-rank", "0", "--max-steps", "2", "--batch-size", "2", "--learning-rate", "1e-2", "--frames", "4",
            "--frame-max-side", "64", "--device", "cpu"]
    result = subprocess.run(  # first, so that rank 0 imports the file while rank 1 waits
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "workflows.cli",
         *args, "--run-dir", str(tmp_path / "ddp")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).parents[2],
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 processes" in result.stdout and result.stdout.count("train-captioner: wrote") == 1
    assert len(read_captions(run).to_pylist()) == 3  # imported once
    train_captioner(run.root, tmp_path / "one", CaptionerTrainConfig(
        source=source, base=f"hf:{tiny_qwen}", lora_rank=0, max_steps=2, batch_size=2, learning_rate=1e-2,
        frames=4, frame_max_side=64, device="cpu"), log=lambda *_: None)
    two, one = metrics(tmp_path / "ddp"), metrics(tmp_path / "one")
    assert [m["step"] for m in two] == [0, 1, 2]
    for a, b in zip(two, one, strict=True):
        for key in ("train_loss", "eval_loss"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5)
    a, b = load_file(tmp_path / "ddp" / "final" / "model.safetensors"), load_file(tmp_path / "one" / "final" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=2e-3) for k in a)


def test_a_nan_gradient_skips_the_step_and_the_run_survives(annotated, tiny_qwen, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    import recaption.finetune as finetune

    calls = [0]

    def poison(grad):  # the second example's backward (step 1 of 3, batch size 1): a nan in one gradient
        calls[0] += 1
        return grad * float("nan") if calls[0] == 2 else grad

    class Poisoned(finetune.Learner):
        def __init__(self, cfg, run):
            super().__init__(cfg, run)
            next(iter(self.trainable.values())).register_hook(poison)

    monkeypatch.setattr(finetune, "Learner", Poisoned)
    run, source = annotated
    lines = []
    train_captioner(run.root, tmp_path / "cap", tiny(tiny_qwen, source, max_steps=3, batch_size=1, samples=0),
                    log=lines.append)
    skips = [m for m in metrics(tmp_path / "cap") if "skip" in m]
    assert [(m["step"], m["skip"]) for m in skips] == [(2, "non-finite gradients")]
    assert "train-captioner: step 2 skipped: non-finite gradients" in lines
    weights = load_file(tmp_path / "cap" / "final" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


@pytest.mark.parametrize("family", ["tiny_qwen", "tiny_idefics"])
def test_a_batched_pass_gives_each_example_the_loss_it_has_alone(annotated, family, request):
    """Examples of different lengths in one left-padded pass: each one's loss (and its gradient) is the one
    it has in a pass of its own, so examples_per_pass changes speed, not training."""
    import torch

    from curation.core.rundir import RunDir
    from recaption.finetune import Learner, captioned_clips, examples, readable, source_captioner

    run, source = annotated
    learner = Learner(tiny(request.getfixturevalue(family), source), RunDir(run.root))
    pairs = readable(learner.run, captioned_clips(learner.run, source_captioner(run.root, source)), lambda *_: None)
    batch = [(e, learner.frames(e.clip)) for e in examples(pairs)[:4]]
    assert len({len(e.target) for e, _ in batch}) > 1  # dense and short answers: rows of different lengths
    alone = torch.stack([learner.loss(*pair) for pair in batch])
    # alone, the loss is transformers' own over the tokens after the prompt (labels -100 on the prompt)
    from recaption.vlm import FRAMES_KEY

    example, clip = batch[0]
    prompt = learner.vlm.chat_text(example.instruction, len(clip[FRAMES_KEY]))
    full = learner.vlm.chat_text(example.instruction, len(clip[FRAMES_KEY]), answer=example.target)
    inputs = learner.vlm.encode([full], [clip])
    labels = inputs["input_ids"].clone()
    labels[:, :learner.vlm.encode([prompt], [clip])["input_ids"].shape[1]] = -100
    assert torch.allclose(learner.model(**inputs, labels=labels).loss, alone[0], rtol=0, atol=1e-5)
    together = learner.losses(batch)
    assert torch.allclose(together, alone, rtol=0, atol=1e-5), (together, alone)
    weights = [p for p in learner.model.parameters() if p.requires_grad]

    def gradient(loss):
        learner.model.zero_grad()
        loss.backward()
        return torch.cat([w.grad.flatten() for w in weights if w.grad is not None])

    assert torch.allclose(gradient(learner.losses(batch).sum()), gradient(sum(learner.loss(*p) for p in batch)),
                          rtol=1e-4, atol=1e-6)
