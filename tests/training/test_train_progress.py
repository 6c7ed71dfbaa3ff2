"""`rushes train-vae` / `rushes train` show a progress bar with steps, loss and ETA (and nothing off a terminal)."""

import io
import json
import math

from rich.console import Console
from training_testkit import TINY_VAE
from typer.testing import CliRunner

from training.train import TrainConfig, train
from workflows.cli import app
from workflows.commands.train import step_progress
from workflows.progress import ProgressBar


def test_train_reports_each_step_from_where_a_resumed_run_starts(tiny_shards, tmp_path):
    shards, _ = tiny_shards
    cfg = dict(TINY_VAE, max_steps=4)
    train(TrainConfig.from_dict(cfg), shards, tmp_path / "vae", max_steps=2, quiet=True)
    calls = []
    train(TrainConfig.from_dict(cfg), shards, tmp_path / "vae", resume=True, quiet=True,
          progress=lambda *args: calls.append(args))
    assert [c[:2] for c in calls] == [(2, 4), (3, 4), (4, 4)]  # placed at the resumed step, then one a step
    assert math.isnan(calls[0][2]) and all(math.isfinite(c[2]) for c in calls[1:]) and calls[-1][3] == 0


def test_the_bar_shows_steps_loss_and_eta_on_a_terminal():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=150)
    with ProgressBar("training the DiT", 10, console=console, eta=True, transient=False) as bar:
        on_step = step_progress(bar)
        on_step(6, 10, float("nan"), 0)  # a run resumed at step 6
        on_step(7, 10, 0.25, 1)
    shown = screen.getvalue()
    assert "training the DiT" in shown and "7/10" in shown and "loss 0.2500" in shown and "1 skipped" in shown
    assert "eta" in shown


def test_the_cli_trains_with_no_bar_off_a_terminal(tiny_shards, tmp_path):
    shards, _ = tiny_shards
    config = tmp_path / "vae.yaml"
    config.write_text(json.dumps({**TINY_VAE, "max_steps": 2}))
    result = CliRunner().invoke(app, ["train-vae", "--shards", str(shards), "--run", str(tmp_path / "v"),
                                      "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "steps 0 -> 2" in result.output and "training the autoencoder" not in result.output
