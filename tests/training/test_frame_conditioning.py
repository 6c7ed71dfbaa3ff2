"""Image-to-video and extension by frame masking: the DiT reads given frames, the trainer masks them out
of the loss, and sampling starts every video with exactly the frames it was given."""

import numpy as np
import pytest
import torch
from training_testkit import TINY_DIT

from training.checkpoint import load_trained
from training.dit import DiTConfig, VideoDiT
from training.sample import generate
from training.train import (
    TrainConfig,
    conditioning_frames,
    conditioning_mask,
    conditioning_objects,
    conditioning_regions,
    train,
)
from workflows.commands.train import read_first_frames

CONDITIONED = {**TINY_DIT, "max_steps": 3, "condition_prob": 0.5,
               "model_args": {**TINY_DIT["model_args"], "frame_conditioning": True}}


def test_dit_reads_the_given_frames():
    torch.manual_seed(0)
    dit = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16, frame_conditioning=True))
    for p in dit.parameters():
        p.data += 0.02 * torch.randn_like(p)
    x, t, text, mask = torch.randn(2, 4, 3, 4, 6), torch.rand(2), torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    given = torch.tensor([[True, False, False], [True, True, False]])
    free = dit(x, t, text, mask)
    assert free.shape == x.shape
    torch.testing.assert_close(free, dit(x, t, text, mask, torch.randn_like(x), torch.zeros_like(given)))
    a = dit(x, t, text, mask, torch.randn_like(x), given)
    b = dit(x, t, text, mask, torch.randn_like(x), given)
    assert not torch.allclose(a, free) and not torch.allclose(a, b)  # the given latents matter
    plain = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16))
    with pytest.raises(ValueError, match="without frame_conditioning"):
        plain(x, t, text, mask, x, given)


def test_conditioning_frames_are_prefixes_and_never_whole_clips():
    gen = torch.Generator().manual_seed(0)
    given = conditioning_frames(4000, 5, 0.5, gen)
    counts = given.sum(1)
    assert 0.45 < (counts > 0).float().mean() < 0.55 and counts.max() == 4
    for row, k in zip(given, counts, strict=True):  # the first k frames, nothing after
        assert row[:k].all() and not row[k:].any()
    assert not conditioning_frames(100, 1, 1.0, gen).any()  # an image is never given to itself


def test_conditioning_regions_are_boxes_given_inside_or_outside_and_never_everything():
    gen = torch.Generator().manual_seed(0)
    given = conditioning_regions(400, 3, 4, 6, 0.5, gen)
    chosen = given.flatten(1).any(1)
    assert 0.4 < chosen.float().mean() < 0.6
    assert not given.flatten(1).all(1).any()  # something is always left to predict
    assert (given == given[:, :1]).all()  # the same cells in every frame
    share = given[chosen].float().flatten(1).mean(1)
    assert (share < 0.5).any() and (share > 0.5).any()  # boxes given (outpainting) and holes (inpainting)
    both = conditioning_mask((400, 4, 3, 4, 6), 1.0, "both", torch.Generator().manual_seed(1))
    frames_only = (both == both[:, :, :1, :1]).flatten(1).all(1)  # whole frames, or a box
    assert 0.3 < frames_only.float().mean() < 0.7
    with pytest.raises(ValueError, match="condition_mode"):
        TrainConfig.from_dict({**TINY_DIT, "condition_mode": "corners"})


def test_conditioning_objects_gives_all_but_the_cells_around_what_stands_out_in_each_frame():
    x0 = torch.zeros(300, 4, 3, 8, 8)
    for f in range(3):  # an object moving one cell a frame over a flat frame
        x0[:, :, f, 3, 2 + f] = 5.0
    given = conditioning_objects(x0, 0.5, torch.Generator().manual_seed(0))
    chosen = given.flatten(1).any(1)  # a clip not chosen is given nothing
    assert 0.4 < chosen.float().mean() < 0.6
    for clip in given[chosen]:
        hole = ~clip
        for f in range(3):
            assert hole[f, 3, 2 + f]  # the object's cell is always to be generated, in every frame
            rows, cols = hole[f].nonzero(as_tuple=True)  # grown 0-2 cells around it, so centred on it
            assert rows.float().mean() == 3 and cols.float().mean() == 2 + f
    grown = {int((~clip[0]).sum()) for clip in given[chosen]}
    assert grown == {1, 9, 25}  # 0, 1 or 2 cells of growth
    flat = conditioning_objects(torch.zeros(4, 4, 3, 8, 8), 1.0, torch.Generator())
    assert not flat.any()  # a flat clip has nothing that stands out: nothing is given
    mixed = conditioning_mask(x0.shape, 1.0, "all", torch.Generator().manual_seed(1), x0)
    whole_frames = (mixed == mixed[:, :, :1, :1]).flatten(1).all(1)
    object_holes = (~mixed[:, 0, 3, 2]) & (mixed.flatten(1).float().mean(1) > 0.55)
    assert 0.15 < object_holes.float().mean() < 0.5 and 0.15 < whole_frames.float().mean() < 0.5
    with pytest.raises(ValueError, match="needs the clips' latents"):
        conditioning_mask(x0.shape, 1.0, "objects", torch.Generator())


def test_the_dit_reads_given_cells_and_trains_on_regions(tiny_latents, tmp_path):
    torch.manual_seed(0)
    dit = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16, frame_conditioning=True))
    x, t, text, mask = torch.randn(1, 4, 2, 4, 6), torch.rand(1), torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool)
    frames = torch.tensor([[True, False]])
    cells = frames[:, :, None, None].expand(1, 2, 4, 6)
    torch.testing.assert_close(dit(x, t, text, mask, x, frames), dit(x, t, text, mask, x, cells))
    shards, vae_run, _ = tiny_latents
    for mode in ("regions", "all"):
        regions = {**CONDITIONED, "max_steps": 2, "condition_prob": 1.0, "condition_mode": mode}
        result = train(TrainConfig.from_dict(regions), shards, tmp_path / mode, vae_run, quiet=True)
        assert result["step"] == 2 and np.isfinite(result["loss"])


def test_trained_dit_starts_from_the_given_image(tiny_latents, tmp_path):
    shards, vae_run, _ = tiny_latents
    train(TrainConfig.from_dict(CONDITIONED), shards, tmp_path / "dit", vae_run, quiet=True)
    dit, meta = load_trained(tmp_path / "dit")
    vae, _ = load_trained(vae_run)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    prompts = ["a red circle moving left on a blue background"] * 2
    videos = generate(dit, meta, prompts, 9, 32, 48, steps=2, cfg_scale=2.0, seed=0, first_frames=image)
    with torch.no_grad():  # the causal decoder's first frame depends on the first latent only
        x = torch.from_numpy(image).float().permute(2, 0, 1)[None, :, None] / 127.5 - 1
        recon = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
    expected = ((recon[0, :, 0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    for video in videos:
        assert video.shape == (9, 32, 48, 3)
        assert np.abs(video[0].astype(int) - expected.astype(int)).max() <= 1
    free = generate(dit, meta, prompts[:1], 9, 32, 48, steps=2, cfg_scale=2.0, seed=0)[0]
    assert np.abs(free[0].astype(int) - expected.astype(int)).mean() > 5

    from PIL import Image
    from typer.testing import CliRunner

    from workflows.cli import app

    Image.fromarray(image).save(tmp_path / "first.png")
    result = CliRunner().invoke(app, ["sample", "--run", str(tmp_path / "dit"), "--prompt", prompts[0], "--first-frame",
                                      str(tmp_path / "first.png"), "--frames", "9", "--height", "32", "--width", "48",
                                      "--steps", "2", "--out", str(tmp_path / "i2v.mp4")])
    assert result.exit_code == 0, result.output
    assert read_first_frames(tmp_path / "i2v.mp4", 9).shape == (9, 32, 48, 3)

    plain_run = tmp_path / "plain"
    train(TrainConfig.from_dict({**TINY_DIT, "max_steps": 1}), shards, plain_run, vae_run, quiet=True)
    # a DiT trained without frame conditioning still starts from the image: the sampler puts the
    # known latents back after every step (replacement), so the first frame is the reconstruction
    plain = generate(*load_trained(plain_run), prompts[:1], 9, 32, 48, steps=2, seed=0, first_frames=image)[0]
    assert np.abs(plain[0].astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="needs a DiT that reads given frames"):
        train(TrainConfig.from_dict({**TINY_DIT, "condition_prob": 0.5}), shards, tmp_path / "x", vae_run, quiet=True)


def test_first_frames_come_from_an_image_or_a_video(tmp_path):
    from PIL import Image

    from workflows.synthetic.footage import render_shape_clip, write_video

    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "first.png")
    assert read_first_frames(tmp_path / "first.png", 9).shape == (1, 20, 30, 3)
    write_video(tmp_path / "clip.mp4", render_shape_clip(num_frames=12, height=32, width=32), fps=12)
    assert read_first_frames(tmp_path / "clip.mp4", 5).shape == (5, 32, 32, 3)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="junk.mp4: neither an image nor a readable video"):
        read_first_frames(tmp_path / "junk.mp4", 5)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_first_frames(tmp_path / "missing.png", 5)
