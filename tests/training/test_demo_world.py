"""The demo's training data and report: the generated shape world, the sample animation, the report section."""

from __future__ import annotations

import json

import numpy as np
import pytest
from training_testkit import TINY_DIT, TINY_VAE


def test_world_clips_carry_their_truth_and_shard(tmp_path):
    import pyarrow.parquet as pq

    from curation.core.schema import SH
    from workflows.train_steps import WorldConfig, write_world

    world = WorldConfig(shapes=["circle"], colors=["red", "blue"], directions=["left", "right"],
                        backgrounds=["blue"], frames=5, size=16)
    shards = write_world(tmp_path / "world", world)
    captions = sorted(c for part in shards.rglob("*.parquet")
                      for c in pq.read_table(part, columns=[SH.caption_dense]).column(0).to_pylist())
    # red on blue in two directions; blue on blue is no clip (the shape would be invisible)
    assert captions == ["a red circle moving left on a blue background", "a red circle moving right on a blue background"]
    assert write_world(tmp_path / "world", world) == shards  # a re-run keeps the data it trained on
    with pytest.raises(ValueError, match="unknown colour"):
        write_world(tmp_path / "w2", WorldConfig(colors=["mauve"]))


def test_random_starts_differ_and_keep_the_path_inside():
    from workflows.train_steps import _random_start

    rng = np.random.default_rng(0)
    starts = [_random_start("left", 0.18, 0.24, rng) for _ in range(50)]
    xs = [x for x, _ in starts]
    assert len(set(xs)) == 50 and min(xs) >= 0.18 + 0.24 and max(xs) <= 1 - 0.18


def test_train_step_on_the_world_writes_samples_the_report_shows(tmp_path):
    from curation.core.config import validate
    from curation.core.rundir import RunDir
    from workflows.report import write_report
    from workflows.workflow import WorkflowConfig, run_workflow

    vae_cfg, dit_cfg = tmp_path / "vae.yaml", tmp_path / "dit.yaml"
    vae_cfg.write_text(json.dumps({**TINY_VAE, "model_args": {"base_channels": 8, "channel_mult": [1, 2], "spatial_factor": 2,
                                                              "temporal_factor": 1, "z_channels": 4}}))
    dit_cfg.write_text(json.dumps(TINY_DIT))
    out = tmp_path / "out"
    wf = validate({"out": str(out), "train": {
        "vae_config": str(vae_cfg), "dit_config": str(dit_cfg), "vae_steps": 2, "dit_steps": 2,
        "world": {"shapes": ["square"], "colors": ["red"], "directions": ["left", "up"], "backgrounds": ["gray"],
                  "frames": 5, "size": 16},
        "sample_prompts": ["a red square moving left on a gray background"],
        "sample_frames": 5, "sample_height": 16, "sample_width": 16, "sample_steps": 2}}, WorkflowConfig)
    run_workflow(wf)
    listing = json.loads((out / "samples" / "samples.json").read_text())
    assert listing["samples"][0]["prompt"] == "a red square moving left on a gray background"
    assert listing["samples"][0]["frames"] == [f"sample-0-frame-{i:03d}.png" for i in range(5)]  # all 5, last included
    reading = listing["samples"][0]["reading"]  # 2 steps of training: whatever it shows, it is read and said
    assert (reading["asked_colour"], reading["asked_direction"]) == ("red", "left") and reading["says"].startswith("shows ")
    from PIL import Image

    with Image.open(out / "samples" / "sample-0.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (16, 16)
    html = write_report(RunDir(out)).read_text()
    assert "Training samples" in html and "data:image/gif;base64," in html and html.count("data:image/png;base64,") >= 5
    assert "generated shape clips" in html
    assert "read back by pixels, it shows" in html


def test_a_sample_is_read_back_against_its_prompt():
    from workflows.synthetic.footage import render_shape_clip
    from workflows.train_steps import read_sample

    clip = render_shape_clip("circle", "yellow", "up", "gray", 5, 32, 32, speed=0.06, textured=False)
    colours = ("red", "green", "yellow")
    good = read_sample("a yellow circle moving up on a gray background", clip, colours)
    assert good["agrees"] and (good["colour"], good["direction"]) == ("yellow", "up")
    assert good["says"] == "shows a yellow shape moving up: as the prompt asks"
    wrong = read_sample("a red circle moving left on a gray background", clip, colours)
    assert not wrong["agrees"] and wrong["says"].endswith("the prompt asks for red moving left")
    still = read_sample("a yellow circle moving up on a gray background", np.repeat(clip[:1], 5, axis=0), colours)
    assert not still["agrees"] and "not clearly moving" in still["says"]


def test_training_section_is_absent_without_samples(tmp_path):
    from types import SimpleNamespace

    from training.report_section import training_section

    assert training_section(SimpleNamespace(run=SimpleNamespace(root=tmp_path))) is None
