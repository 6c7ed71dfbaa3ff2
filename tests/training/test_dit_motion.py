"""Motion as a rule: latent frames noised to their own levels (the DiT takes a time per frame), and the
benchmark's frame-analysis helpers the per-mode cases are scored with."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from training_testkit import TINY_DIT

from training.dit import DiTConfig, VideoDiT, velocity_from_data
from training.flow import flow_loss, frame_times, interpolate
from training.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _dit():
    torch.manual_seed(0)
    dit = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16))
    for p in dit.parameters():  # adaLN-zero starts as the identity: give every path some weight
        p.data += 0.05 * torch.randn_like(p)
    return dit


def test_a_time_per_frame_is_one_time_per_clip_when_the_frames_agree():
    dit = _dit()
    x, text, mask = torch.randn(2, 4, 3, 4, 6), torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    t = torch.tensor([0.3, 0.8])
    one = dit(x, t, text, mask)
    torch.testing.assert_close(dit(x, t[:, None].expand(2, 3), text, mask), one, atol=1e-5, rtol=1e-5)
    mixed = dit(x, torch.tensor([[0.3, 0.3, 0.9], [0.8, 0.8, 0.8]]), text, mask)
    assert not torch.allclose(mixed[0], one[0], atol=1e-3)  # the first clip's last frame is noisier now
    torch.testing.assert_close(mixed[1], one[1], atol=1e-5, rtol=1e-5)


def test_interpolate_noises_each_frame_to_its_own_time():
    x0, noise = torch.zeros(1, 2, 3, 2, 2), torch.ones(1, 2, 3, 2, 2)
    x = interpolate(x0, noise, torch.tensor([[0.0, 0.5, 1.0]]))
    assert x[0, :, 0].eq(0).all() and x[0, :, 1].eq(0.5).all() and x[0, :, 2].eq(1).all()
    loss = flow_loss(lambda x, t, **_: torch.zeros_like(x), x0, torch.tensor([[0.1, 0.2, 0.3]]), noise)
    assert loss.item() == pytest.approx(1.0)


def test_frame_times_keep_the_clip_time_first_and_draw_the_rest():
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(2000, generator=gen)
    same = frame_times(t, 5, 0.0, gen)
    assert same.shape == (2000, 5) and torch.equal(same, t[:, None].expand(2000, 5))
    mixed = frame_times(t, 5, 0.5, gen)
    assert torch.equal(mixed[:, 0], t)
    own = (mixed[:, 1:] != t[:, None]).any(1).float().mean().item()
    assert 0.45 < own < 0.55  # about half the clips
    assert torch.equal(frame_times(t, 1, 1.0, gen), t[:, None])  # an image has one frame: nothing to draw


def test_training_with_frame_noise_runs_and_checks_its_probability(tiny_latents, tmp_path):
    shards, vae_run, _ = tiny_latents
    result = train(TrainConfig.from_dict({**TINY_DIT, "max_steps": 2, "frame_noise_prob": 0.5}), shards,
                   tmp_path / "dit", vae_run, quiet=True)
    assert np.isfinite(result["loss"])
    with pytest.raises(ValueError, match=r"frame_noise_prob must be within \[0, 1\]"):
        TrainConfig.from_dict({**TINY_DIT, "frame_noise_prob": 1.5})


def test_benchmark_paths_boxes_and_masked_psnr():
    import bench_learns as B

    clip = B.render("circle", "red", "right", "gray", 5, 32, 0, start=(0.3, 0.5))
    path = B.path_of(clip)
    assert path.shape == (5, 2) and np.all(np.diff(path[:, 0]) >= 1) and path[-1, 0] - path[0, 0] > 6 and np.allclose(path[:, 1], path[0, 1], atol=0.5)
    assert B.analyse(clip) == ("red", "right")
    box = B.path_box(clip, 1, 2)
    shape = (B.palette_labels(clip) < 4).any(0)
    assert box[shape].all() and not box.all()
    ys, xs = np.nonzero(box)
    assert ys.min() % 2 == 0 and xs.min() % 2 == 0 and (ys.max() + 1) % 2 == 0 and (xs.max() + 1) % 2 == 0
    where = np.ones(clip.shape[:3], dtype=bool)
    assert B.masked_psnr(clip, clip, where) == 99.0
    noisy = np.clip(clip.astype(int) + 8, 0, 255).astype(np.uint8)
    assert 25 < B.masked_psnr(clip, noisy, where) < 35


def test_data_prediction_returns_the_velocity_of_its_clean_estimate():
    """prediction="data": the network's output is x0, forward() still gives the velocity (x_t - x0) / t,
    so the loss and every sampler work unchanged; an unknown prediction is a clear error."""
    torch.manual_seed(0)
    dit = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16, prediction="data"))
    x0, noise = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    t = torch.tensor([0.3, 0.9])
    x_t = interpolate(x0, noise, t)
    text, mask = torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    # zero-initialised last layer: the clean estimate is 0, so the velocity is x_t / t
    torch.testing.assert_close(dit(x_t, t, text, mask), x_t / t.view(2, 1, 1, 1, 1))
    # a network that outputs x0 exactly gives the true velocity noise - x0, per clip or per frame
    exact = lambda x, tt, **c: velocity_from_data(x, x0, tt)  # noqa: E731
    torch.testing.assert_close(exact(x_t, t), noise - x0, atol=1e-5, rtol=1e-5)
    per_frame = torch.tensor([[0.3, 0.5, 0.9], [0.9, 0.9, 0.9]])
    torch.testing.assert_close(exact(interpolate(x0, noise, per_frame), per_frame), noise - x0, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prediction"):
        DiTConfig(prediction="noise")
