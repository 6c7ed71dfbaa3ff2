"""The VLM captioners, end to end on tiny random-weight models of the real classes, loaded via hf:/dir."""

import json

import numpy as np
import pytest

from curation.core.schema import CAP, M
from recaption.config import CaptionConfig
from recaption.models import ModelNotFound
from recaption.prompts import PROMPT_VERSION, dense_prompt, hints_from_row
from recaption.run import CaptionWorker
from recaption.vlm import VLMCaptioner

SMALL = dict(frames=4, frame_max_side=64, max_new_tokens=12, short_max_new_tokens=6)


@pytest.fixture(scope="module")
def qwen(tiny_qwen):
    captioner = VLMCaptioner(CaptionConfig(captioner=f"hf:{tiny_qwen}", **SMALL))
    captioner.setup()
    return captioner


@pytest.fixture(scope="module")
def idefics(tiny_idefics):
    captioner = VLMCaptioner(CaptionConfig(captioner=f"hf:{tiny_idefics}", **SMALL))
    captioner.setup()
    return captioner


@pytest.fixture
def batch(make_run):
    """Three kept clips with frames sampled the way the stage samples them."""
    run = make_run(3)
    worker = CaptionWorker(run.root, CaptionConfig(**SMALL))  # metadata captioner: no model, just frame reading
    from curation.core.rundir import read_manifest

    rows = [r for r in read_manifest(run).to_pylist() if r[M.clip_path]]
    return [worker.with_frames(r) for r in rows]


def test_frames_are_spread_over_the_clip_at_the_configured_size(batch):
    for row in batch:
        assert len(row["frames"]) == 4
        assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in row["frames"])
        # 12 frames at 12 fps, 4 samples centred in equal segments: 1, 4, 7, 10
        assert row["frame_times"] == pytest.approx([1 / 12, 4 / 12, 7 / 12, 10 / 12])


def test_frame_count_and_size_follow_the_config(make_run):
    run = make_run(1)
    worker = CaptionWorker(run.root, CaptionConfig(frames=3, frame_max_side=32))
    row = worker.with_frames({M.clip_id: "c", M.clip_path: "clips/clip0.mp4", M.fps: 12.0})
    assert [f.shape for f in row["frames"]] == [(24, 32, 3)] * 3
    assert row["frame_times"] == pytest.approx([2 / 12, 6 / 12, 10 / 12])
    # frames relative to the clip's length: 2 per second, between 2 and `frames`
    per_second = CaptionWorker(run.root, CaptionConfig(frames=8, frames_per_second=2.0))
    assert [per_second.frame_count({M.duration: d}) for d in (0.2, 1.0, 2.5, 30.0)] == [2, 2, 5, 8]


def test_qwen_chat_template_and_video_tokens(qwen, batch):
    assert qwen.family == "video"
    text = qwen.chat_text(dense_prompt(hints_from_row(batch[0])), 4)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe this video clip")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    inputs = qwen.model_inputs([dense_prompt(hints_from_row(r)) for r in batch], batch)
    video_id = qwen.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    per_clip = (inputs["input_ids"] == video_id).sum(dim=1)
    expected = inputs["video_grid_thw"].prod(dim=1) // 4  # merge_size 2 x 2
    assert per_clip.tolist() == expected.tolist() and all(n > 0 for n in per_clip.tolist())
    # left padding: every row ends at the generation prompt, shorter rows are padded at the front
    mask = inputs["attention_mask"]
    assert mask[:, -1].all()
    assert (mask[:, 0] == 0).any()
    # temporal positions come from the sampled frames' real spacing (4 frames over 0.75 s -> 4 fps)
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_still_frames_give_each_frame_a_patch_of_its_own_at_the_same_frame_spacing(qwen, batch, tiny_qwen):
    import torch

    still = VLMCaptioner(CaptionConfig(captioner=f"hf:{tiny_qwen}", still_frames=True, **SMALL))
    still.processor, still.family = qwen.processor, qwen.family  # only the inputs are compared: no model needed
    prompts = [dense_prompt(hints_from_row(r)) for r in batch]
    plain, stills = qwen.model_inputs(prompts, batch), still.model_inputs(prompts, batch)
    # 4 frames: 2 two-frame patches plain, 4 stills (each frame twice) with their own temporal positions
    assert plain["video_grid_thw"][:, 0].tolist() == [2, 2, 2]
    assert stills["video_grid_thw"][:, 0].tolist() == [4, 4, 4]
    assert stills["second_per_grid_ts"].tolist() == pytest.approx([0.25, 0.25, 0.25])  # a frame's spacing
    # a still patch holds the same frame twice: its two temporal halves are equal
    patch = stills["pixel_values_videos"].view(-1, 3, 2, 14 * 14)
    assert torch.equal(patch[:, :, 0], patch[:, :, 1])
    assert not torch.equal(*plain["pixel_values_videos"].view(-1, 3, 2, 14 * 14).unbind(2))


def test_idefics_takes_the_frames_as_an_image_sequence(idefics, batch):
    assert idefics.family == "images"
    text = idefics.chat_text("Describe.", 4)
    assert text == "<|im_start|>User:<image><image><image><image> Describe.<end_of_utterance>\nAssistant:"
    inputs = idefics.model_inputs(["Describe.", "Describe this clip in detail.", "Go"], batch)
    assert tuple(inputs["pixel_values"].shape[:2]) == (3, 4)  # 3 clips x 4 frames
    assert inputs["attention_mask"][:, -1].all() and (inputs["attention_mask"][:, 0] == 0).any()


@pytest.mark.parametrize("which", ["qwen", "idefics"])
def test_batched_greedy_generation_respects_settings(which, request, batch):
    captioner = request.getfixturevalue(which)
    prompts = [dense_prompt(hints_from_row(r)) for r in batch]
    texts, hit, tokens = captioner.generate(prompts, batch, max_new_tokens=5, min_new_tokens=5)
    assert len(texts) == 3 and hit == [True, True, True] and tokens == 15  # exactly the limit, flagged
    again, _, _ = captioner.generate(prompts, batch, max_new_tokens=5, min_new_tokens=5)
    assert again == texts  # greedy decoding is deterministic
    # a clip's caption does not depend on what it was batched with (left padding done right)
    alone, _, _ = captioner.generate(prompts[:1], batch[:1], max_new_tokens=5, min_new_tokens=5)
    assert alone[0] == texts[0]


@pytest.mark.parametrize("which", ["qwen", "idefics"])
def test_untrained_output_is_recorded_as_failed_with_provenance(which, request, batch):
    captioner = request.getfixturevalue(which)
    rows = captioner(batch)
    assert [r[CAP.clip_id] for r in rows] == [r[M.clip_id] for r in batch]
    for row, clip in zip(rows, batch, strict=True):
        assert "untrained" in row[CAP.captioner] and row[CAP.captioner].startswith("hf:/")
        assert row[CAP.prompt_version] == PROMPT_VERSION
        assert json.loads(row[CAP.hints]) == hints_from_row(clip)
        # random weights write gibberish: the checks must catch it, and no text is kept
        assert row[CAP.error] and row[CAP.caption_dense] is None and row[CAP.caption_short] is None


def test_missing_models_fail_before_any_work_naming_the_setting(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFound, match="--captioner.*no config.json"):
        VLMCaptioner(CaptionConfig(captioner=f"hf:{tmp_path}"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match=r"--captioner.*not in the local Hugging Face cache.*HF_HUB_OFFLINE"):
        VLMCaptioner(CaptionConfig(captioner="hf:rushes-tests/no-such-model"))
    with pytest.raises(ValueError, match="captioner must be 'metadata'"):
        CaptionConfig(captioner="qwen")


def test_unsupported_model_type_is_refused_at_setup(tiny_lm):
    captioner = VLMCaptioner(CaptionConfig(captioner=f"hf:{tiny_lm}"))
    with pytest.raises(ValueError, match="model type 'qwen2' is not supported"):
        captioner.setup()


def test_a_hub_id_loads_offline_from_the_local_cache_with_its_commit(tiny_idefics, tmp_path, monkeypatch, batch):
    """`hf:<org/name>` as a user names a hub model: found in the HF cache, revision recorded."""
    import shutil

    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--rushes-tests--tiny-idefics3"
    shutil.copytree(tiny_idefics, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    captioner = VLMCaptioner(CaptionConfig(captioner="hf:rushes-tests/tiny-idefics3", **SMALL))
    assert captioner.identity == f"hf:rushes-tests/tiny-idefics3@{commit} [untrained random weights]"
    assert captioner.model_ref.local_files_only
    captioner.setup()
    assert captioner.family == "images"
    [row] = captioner(batch[:1])
    assert row[CAP.captioner] == captioner.identity
