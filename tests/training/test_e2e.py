"""`rushes shard -> train-vae -> encode -> train -> sample` through the CLI on a tiny run directory."""

import json

import av
import pytest
from training_testkit import TINY_BUCKETS, TINY_DIT, TINY_VAE, make_run
from typer.testing import CliRunner

from workflows.cli import app


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_shard_train_encode_train_sample(tmp_path):
    run = make_run(tmp_path / "out")
    vae_cfg, dit_cfg = tmp_path / "vae.yaml", tmp_path / "dit.yaml"
    vae_cfg.write_text(json.dumps({**TINY_VAE, "max_steps": 3}))
    dit_cfg.write_text(json.dumps({**TINY_DIT, "max_steps": 3}))
    shards, runs = run.root / "shards", tmp_path / "runs"

    out = invoke("shard", "--out", run.root, "--buckets", ",".join(TINY_BUCKETS), "--caption-blend", "0.9")
    assert "6 sharded" in out and "f9_h32_w48: 2" in out
    out = invoke("train-vae", "--shards", shards, "--run", runs / "vae", "--config", vae_cfg)
    assert "steps 0 -> 3" in out and (runs / "vae" / "loss_curve.png").exists()
    out = invoke("encode", "--shards", shards, "--vae", runs / "vae")
    assert "6 clips encoded" in out and "384-d" in out
    assert json.loads((shards / "latents" / "info.json").read_text())["caption_blend"] == 0.9
    out = invoke("train", "--shards", shards, "--vae", runs / "vae", "--run", runs / "dit", "--config", dit_cfg)
    assert "steps 0 -> 3" in out
    out = invoke("train", "--shards", shards, "--vae", runs / "vae", "--run", runs / "dit", "--config", dit_cfg,
                 "--max-steps", "4", "--resume")
    assert "steps 3 -> 4" in out
    video = tmp_path / "sample.mp4"
    out = invoke("sample", "--run", runs / "dit", "--prompt", "a red circle moving left on a blue background",
                 "--frames", "6", "--height", "30", "--width", "44", "--steps", "2", "--cfg", "3", "--out", video)
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (30, 44, 3)
    result = CliRunner().invoke(app, ["sample", "--run", str(runs / "dit"), "--prompt", "x", "--first-frame", str(video),
                                      "--steps", "1", "--out", str(tmp_path / "i2v.mp4")])
    # a DiT trained without frame conditioning continues given frames too: the sampler keeps them
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "i2v.mp4")) as container:
        assert len([f for f in container.decode(video=0)]) == 17  # the default --frames


def test_cli_errors_are_clear(tmp_path):
    run = make_run(tmp_path / "out", clips=[("circle", "red", "left", "blue", 9, 32, 32)])
    invoke("shard", "--out", run.root, "--buckets", "9x32x32")
    cfg = tmp_path / "vae.yaml"
    cfg.write_text(json.dumps({**TINY_VAE, "batch_size": 4}))
    result = CliRunner().invoke(app, ["train-vae", "--shards", str(run.root / "shards"), "--run", str(tmp_path / "v"),
                                      "--config", str(cfg)])
    assert result.exit_code == 2 and "f9_h32_w32: 1 clips, batch size 4" in result.output
    result = CliRunner().invoke(app, ["train", "--shards", str(run.root / "shards"), "--vae", str(tmp_path / "v"),
                                      "--run", str(tmp_path / "d")])
    assert result.exit_code == 2 and "rushes encode" in result.output
    result = CliRunner().invoke(app, ["sample", "--run", str(tmp_path / "d"), "--prompt", "x", "--upsample-prompt"])
    assert result.exit_code == 2 and "--enhancer" in result.output


def test_workflow_shard_and_train_sections(tmp_path):
    from curation.core.config import validate
    from workflows.workflow import WorkflowConfig, run_workflow

    run = make_run(tmp_path / "out")
    vae_cfg, dit_cfg = tmp_path / "vae.yaml", tmp_path / "dit.yaml"
    vae_cfg.write_text(json.dumps(TINY_VAE))
    dit_cfg.write_text(json.dumps(TINY_DIT))
    wf = validate({"out": str(run.root),
                   "shard": {"buckets": TINY_BUCKETS},
                   "train": {"vae_config": str(vae_cfg), "dit_config": str(dit_cfg), "vae_steps": 2, "dit_steps": 2,
                             "sample_frames": 5, "sample_height": 32, "sample_width": 32, "sample_steps": 2}},
                  WorkflowConfig)
    run_workflow(wf)
    assert (run.root / "samples" / "sample-0.mp4").stat().st_size > 0
    assert (run.root / "runs" / "dit" / "checkpoints" / "step-0000002").is_dir()
    run_workflow(wf)  # a second run resumes: nothing is trained twice
    assert [p.name for p in (run.root / "runs" / "vae" / "checkpoints").iterdir()] == ["step-0000002"]
    with pytest.raises(Exception, match="unknown key 'train.vae_stepz'"):
        validate({"out": "x", "train": {"vae_stepz": 1}}, WorkflowConfig)
