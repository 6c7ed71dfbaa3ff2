"""The loss guard on a real run: a finite loss with a nan gradient is skipped, the run survives and says so."""

import json
import math

import pytest
import torch
from training_testkit import TINY_DIT, TINY_VAE

import training.train as trainer
from training.checkpoint import list_checkpoints, load_checkpoint
from training.train import LossGuard, TrainConfig, TrainingDiverged, train


def nan_gradient_at(monkeypatch, backward_calls: set[int]):
    """Make the model's first parameter get a nan gradient in these backward passes (0-based)."""
    build = trainer.build_learner
    calls = [0]

    def poison(grad):
        calls[0] += 1
        return grad * float("nan") if calls[0] - 1 in backward_calls else grad

    def build_and_hook(cfg, device):
        learner = build(cfg, device)
        next(learner.model.parameters()).register_hook(poison)
        return learner

    monkeypatch.setattr(trainer, "build_learner", build_and_hook)


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("kind", ["dit", "vae"])
def test_a_nan_gradient_is_skipped_and_the_run_survives(kind, tiny_latents, tmp_path, monkeypatch, capsys):
    shards, vae_run, _ = tiny_latents
    nan_gradient_at(monkeypatch, {1})  # the second step: its loss is finite, one gradient is not
    cfg = dict(TINY_DIT if kind == "dit" else TINY_VAE, max_steps=4, log_every=4)
    run = tmp_path / "run"
    result = train(TrainConfig.from_dict(cfg), shards, run, vae_run if kind == "dit" else None)
    assert result["skipped"] == 1 and math.isfinite(result["loss"])
    state = load_checkpoint(list_checkpoints(run)[-1])
    assert state["state"]["step"] == 4 and all_finite(state["model"]) and all_finite(state["ema"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    [skip] = [r for r in records if "skip" in r]
    assert skip["step"] == 2 and skip["skip"] == "non-finite gradients" and math.isfinite(skip["loss"])
    assert "(skipped: non-finite gradients)" in capsys.readouterr().out


def test_nan_gradients_step_after_step_stop_the_run_with_a_clear_error(tiny_latents, tmp_path, monkeypatch):
    shards, vae_run, _ = tiny_latents
    nan_gradient_at(monkeypatch, {1, 2, 3})
    cfg = TrainConfig.from_dict(dict(TINY_DIT, max_steps=5, max_bad_steps=2))
    with pytest.raises(TrainingDiverged, match="3 steps had non-finite .* one after another"):
        train(cfg, shards, tmp_path / "run", vae_run, quiet=True)


def test_the_guard_gives_up_only_on_bad_steps_in_a_row_and_resumes_its_count():
    guard = LossGuard(spike_factor=5.0, max_bad=2)
    for bad in (True, True, False, True, True, False):  # never more than 2 in a row: no stop
        guard.record(1.0, bad)
    assert guard.skipped == 4 and guard.in_a_row == 0
    guard.record(float("nan"), True)
    again = LossGuard(spike_factor=5.0, max_bad=2)
    again.load(guard.state())  # a resumed run counts on from where it was
    again.record(float("nan"), True)
    with pytest.raises(TrainingDiverged):
        again.record(float("nan"), True)
    old = LossGuard(5.0, 2)
    old.load({"recent": [1.0], "skipped": 3})  # a checkpoint of an earlier version
    assert old.in_a_row == 0 and old.skipped == 3


def test_the_cli_names_a_run_that_stopped_on_bad_steps(tiny_latents, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from workflows.cli import app

    shards, _, _ = tiny_latents
    nan_gradient_at(monkeypatch, {0, 1})
    config = tmp_path / "vae.yaml"
    config.write_text(json.dumps({**TINY_VAE, "max_steps": 3, "max_bad_steps": 1}))
    result = CliRunner().invoke(app, ["train-vae", "--shards", str(shards), "--run", str(tmp_path / "v"),
                                      "--config", str(config)])
    assert result.exit_code == 2 and "error: stopped: 2 steps had non-finite" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
