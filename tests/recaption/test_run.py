"""The caption stage over a run directory: parts, resume, coexisting captioners, the CLI and Ray."""

import json

import pytest
from typer.testing import CliRunner

from curation.core.rundir import read_manifest
from curation.core.schema import CAP, M
from curation.core.tables import latest_captions, read_captions
from recaption.config import CaptionConfig
from recaption.enhance import Enhancer, upsample_prompt
from recaption.run import caption_run

SMALL = dict(frames=4, frame_max_side=64, max_new_tokens=12, short_max_new_tokens=6)


def kept_ids(run):
    return {r[M.clip_id] for r in read_manifest(run).to_pylist() if r[M.status] == "kept"}


def test_metadata_run_captions_every_kept_clip_and_resumes(make_run):
    run = make_run(3)
    first = caption_run(run.root)
    assert (first.kept, first.captioned, first.failed, first.skipped) == (3, 3, 0, 0)
    table = read_captions(run)
    assert set(table[CAP.clip_id].to_pylist()) == kept_ids(run)  # the filtered clip is not captioned
    assert set(table[CAP.captioner].to_pylist()) == {"metadata"}
    assert not list(run.captions.glob(".*"))  # no temp files left behind
    again = caption_run(run.root)
    assert (again.captioned, again.failed, again.skipped) == (0, 0, 3)
    assert read_captions(run).num_rows == 3
    assert "3 kept clips -> 0 captioned, 0 failed, 3 skipped" in again.line()


def test_failed_captions_are_kept_with_their_error_and_retried(make_run, tiny_qwen):
    run = make_run(2)
    config = CaptionConfig(captioner=f"hf:{tiny_qwen}", batch_size=2, **SMALL)
    first = caption_run(run.root, config)
    assert (first.captioned, first.failed) == (0, 2)  # random weights: every caption fails its checks
    rows = read_captions(run).to_pylist()
    assert all(r[CAP.error] and r[CAP.caption_dense] is None for r in rows)
    assert latest_captions(run).num_rows == 0  # a failure is never served as a caption
    again = caption_run(run.root, config)
    assert (again.skipped, again.failed) == (0, 2)  # failures are retried
    assert read_captions(run).num_rows == 4


def test_unchecked_vlm_captions_resume_and_coexist_with_metadata(make_run, tiny_qwen):
    run = make_run(3)
    caption_run(run.root)  # metadata first
    config = CaptionConfig(captioner=f"hf:{tiny_qwen}", batch_size=2, checks=False, **SMALL)
    first = caption_run(run.root, config)
    assert (first.captioned, first.failed) == (3, 0)
    assert "[untrained random weights]" in first.captioner and first.captioner.endswith("[unchecked]")
    again = caption_run(run.root, config)
    assert (again.captioned, again.skipped) == (0, 3)
    # both captioners' rows coexist; the newest good one wins unless one is named
    assert set(read_captions(run)[CAP.captioner].to_pylist()) == {"metadata", first.captioner}
    newest = latest_captions(run)
    assert newest.num_rows == 3 and set(newest[CAP.captioner].to_pylist()) == {first.captioner}
    named = latest_captions(run, captioner="metadata")
    assert named.num_rows == 3 and all("pans left" in t or "static" in t or "zooms" in t
                                       for t in named[CAP.caption_dense].to_pylist())


def test_missing_or_corrupt_clip_files_are_permanent_failures(make_run):
    from recaption.run import CaptionWorker

    run = make_run(3)
    (run.root / "clips/clip1.mp4").unlink()
    (run.root / "clips/clip2.mp4").write_bytes(b"not a video at all" * 10)
    worker = CaptionWorker(run.root, CaptionConfig())
    worker.captioner.needs_frames = True  # read frames as a VLM would, with the weight-free captioner
    rows = worker([r for r in read_manifest(run).to_pylist() if r[M.clip_path]])
    errors = sorted(r[CAP.error] or "" for r in rows)
    assert errors[0] == ""  # the readable clip is captioned
    assert errors[1].startswith("permanent: cannot") and errors[2].startswith("permanent: clip file")
    assert caption_run(run.root).skipped == 3  # permanent failures are not retried


def test_enhancer_rewrites_and_its_output_is_checked(make_run, tiny_lm):
    enhancer = Enhancer(f"hf:{tiny_lm}", max_new_tokens=8)
    [(text, problem)] = enhancer.rewrite(["a red circle moves right"])
    assert isinstance(text, str) and problem  # random weights: gibberish, caught
    prompt = enhancer.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                                    tokenize=False)
    assert prompt == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    # prompt upsampling: falls back to the user's prompt when the rewrite fails, or says why
    assert upsample_prompt("a red circle moves right", enhancer) == "a red circle moves right"
    with pytest.raises(ValueError, match="prompt upsampling with .*untrained.* failed"):
        upsample_prompt("a red circle moves right", enhancer, fallback=False)
    run = make_run(1)
    summary = caption_run(run.root, CaptionConfig(enhancer=f"hf:{tiny_lm}", max_new_tokens=8))
    assert summary.failed == 1 and summary.captioner.startswith("metadata + enhancer hf:/")
    [row] = read_captions(run).to_pylist()
    assert row[CAP.error].startswith("enhanced caption") and row[CAP.caption_dense] is None


def test_cli_captions_a_run_in_process(make_run):
    from workflows.cli import app

    run = make_run(2)
    result = CliRunner().invoke(app, ["caption", "--out", str(run.root), "--no-ray"])
    assert result.exit_code == 0, result.output
    assert "2 kept clips -> 2 captioned, 0 failed, 0 skipped" in result.output
    result = CliRunner().invoke(app, ["caption", "--out", str(run.root), "--no-ray", "--captioner", "hf:/nowhere"])
    assert result.exit_code == 2 and "--captioner" in result.output
    result = CliRunner().invoke(app, ["caption", "--out", str(run.root), "--no-ray", "--batch-size", "0"])
    assert result.exit_code != 0 and "batch_size" in result.output


def test_workflow_config_has_a_caption_section(tmp_path):
    from curation.core.config import ConfigError, validate
    from workflows.workflow import STEPS, WorkflowConfig

    wf = validate({"out": str(tmp_path), "caption": {"captioner": "metadata", "batch_size": 8}}, WorkflowConfig)
    assert wf.caption.batch_size == 8
    assert [name for name, _ in STEPS].index("caption") > [name for name, _ in STEPS].index("curate")
    with pytest.raises(ConfigError, match="caption.frame"):
        validate({"out": str(tmp_path), "caption": {"frame": 3}}, WorkflowConfig)


@pytest.mark.slow
def test_ray_actor_pool_captions_and_resumes(make_run, tiny_qwen, capsys):
    from workflows.caption import run_caption
    from workflows.raysession import ray_session

    run = make_run(3)
    with ray_session(num_cpus=2):
        summary = run_caption(run.root, CaptionConfig(batch_size=2), progress=False)
        assert (summary.captioned, summary.failed) == (3, 0)
        assert {json.loads(h)["camera_motion"] for h in read_captions(run)[CAP.hints].to_pylist()} == {
            "pan_left", "static", "zoom_in"}
        assert run_caption(run.root, CaptionConfig(), progress=False).skipped == 3
        # a VLM in the actor pool: loaded once per actor, its rows written by the actors
        vlm = CaptionConfig(captioner=f"hf:{tiny_qwen}", batch_size=2, checks=False, **SMALL)
        summary = run_caption(run.root, vlm, progress=False)
        assert (summary.captioned, summary.failed) == (3, 0)
        # `rushes run` with a caption section: the metadata captions are done, so nothing is redone
        from curation.core.config import validate
        from workflows.workflow import WorkflowConfig, run_workflow

        run_workflow(validate({"out": str(run.root), "caption": {"captioner": "metadata"}}, WorkflowConfig))
        assert "3 kept clips -> 0 captioned, 0 failed, 3 skipped" in capsys.readouterr().out
    assert latest_captions(run, captioner=summary.captioner).num_rows == 3
    # the caption stage asks for GPUs only when it runs a VLM (the pool sizes: tests/workflows/test_executor.py)
    from recaption.run import CaptionWorker

    assert CaptionWorker(run.root, CaptionConfig()).num_gpus == 0
    assert CaptionWorker(run.root, vlm.model_copy(update={"gpus_per_worker": 2.0})).num_gpus == 2.0
