"""Shapes through the autoencoder and the DiT at awkward sizes, causality, chunking, and 3D RoPE."""

import pytest
import torch

from training.dit import DiTConfig, VideoDiT, apply_rope, frame_position_features, rope_3d
from training.vae import (
    PatchDiscriminator,
    VAEConfig,
    VideoAutoencoder,
    critic_loss,
    fool_loss,
    pad_to_multiple,
    psnr,
    vae_loss,
)


def tiny_vae(**kw):
    torch.manual_seed(0)
    vae = VideoAutoencoder(VAEConfig(base_channels=8, channel_mult=[1, 2, 2, 2], **kw))
    for p in vae.parameters():  # leave the zero-initialised residual branches: make every path matter
        p.data += 0.02 * torch.randn_like(p)
    return vae


@pytest.mark.parametrize("frames,height,width", [(1, 16, 24), (5, 32, 16), (9, 24, 40)])
def test_autoencoder_shapes(frames, height, width):
    vae = tiny_vae()
    x = torch.rand(2, 3, frames, height, width) * 2 - 1
    recon, mean, logvar = vae(x)
    assert mean.shape == (2, 4, 1 + (frames - 1) // 4, height // 8, width // 8) == logvar.shape
    assert recon.shape == x.shape
    loss, parts = vae_loss(recon, x, mean, logvar, gradient_weight=0.1)
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"l1", "mse", "kl", "gradient"}
    assert 0 < psnr(recon, x) < 60


@pytest.mark.parametrize("frames,height,width", [(1, 8, 8), (5, 32, 48)])
def test_patch_discriminator_scores_patches_of_images_and_videos(frames, height, width):
    critic = PatchDiscriminator(channels=8)
    logits = critic(torch.rand(2, 3, frames, height, width) * 2 - 1)
    assert logits.shape == (2, 1, frames, height // 8, width // 8)
    with pytest.raises(ValueError, match="too small.*at least 8 px"):
        critic(torch.zeros(1, 3, 1, 4, 16))


def test_adversarial_losses_point_the_right_way():
    sure_real, sure_fake = torch.full((4,), 5.0), torch.full((4,), -5.0)
    assert critic_loss(sure_real, sure_fake) < 0.1 < critic_loss(sure_fake, sure_real)  # a critic that is right
    assert fool_loss(sure_real) < 0.1 < fool_loss(sure_fake)  # reconstructions called real cost little
    assert min(critic_loss(sure_fake, sure_real), fool_loss(sure_fake)) >= 0  # the loss guard needs >= 0


def test_autoencoder_other_factors():
    vae = tiny_vae(spatial_factor=4, temporal_factor=2)
    mean, _ = vae.encode(torch.zeros(1, 3, 7, 12, 20))
    assert mean.shape == (1, 4, 4, 3, 5)
    assert vae.decode(mean).shape == (1, 3, 7, 12, 20)


def test_autoencoder_rejects_bad_sizes_with_clear_errors():
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"6 frames.*1 \+ 4\*k"):
        vae.encode(torch.zeros(1, 3, 6, 16, 16))
    with pytest.raises(ValueError, match="not a multiple of 8.*pad_to_multiple"):
        vae.encode(torch.zeros(1, 3, 5, 20, 16))
    padded, size = pad_to_multiple(torch.zeros(1, 3, 5, 20, 13), 8)
    assert padded.shape[-2:] == (24, 16) and size == (20, 13)
    vae.encode(padded)
    with pytest.raises(ValueError, match="power of two"):
        VAEConfig(spatial_factor=6)


def test_autoencoder_is_causal_so_images_and_videos_share_it():
    vae = tiny_vae()
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    mean, _ = vae.encode(x)
    image, _ = vae.encode(x[:, :, :1])
    prefix, _ = vae.encode(x[:, :, :5])
    torch.testing.assert_close(image, mean[:, :, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(prefix, mean[:, :, :2], atol=1e-5, rtol=0)
    later = x.clone()
    later[:, :, 5:] = 0  # changing later frames leaves earlier latents alone
    torch.testing.assert_close(vae.encode(later)[0][:, :, :2], mean[:, :, :2], atol=1e-5, rtol=0)
    decoded = vae.decode(mean)
    torch.testing.assert_close(vae.decode(mean[:, :, :1]), decoded[:, :, :1], atol=1e-5, rtol=0)


def test_chunked_encode_and_decode_match_whole_clip_with_full_context():
    vae = tiny_vae()
    x = torch.rand(1, 3, 25, 16, 16) * 2 - 1
    mean, _ = vae.encode(x)
    chunked = vae.encode_chunked(x, chunk_latents=2, context_latents=8)
    assert chunked.shape == mean.shape
    torch.testing.assert_close(chunked, mean, atol=1e-4, rtol=0)
    short_context = vae.encode_chunked(x, chunk_latents=2, context_latents=1)
    assert short_context.shape == mean.shape  # approximate, bounded memory
    torch.testing.assert_close(vae.decode_chunked(mean, 2, context_latents=8), vae.decode(mean), atol=1e-4, rtol=0)


def tiny_dit(**kw):
    torch.manual_seed(0)
    dit = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16, **kw))
    for p in dit.parameters():  # adaLN-zero starts at the identity; perturb so every path is exercised
        p.data += 0.02 * torch.randn_like(p)
    return dit


@pytest.mark.parametrize("size", [(1, 4, 4), (1, 3, 5), (5, 6, 10), (3, 7, 9)])
@pytest.mark.parametrize("frame_pos_freqs", [0, 3])
def test_dit_shapes_any_size_via_padding(size, frame_pos_freqs):
    dit = tiny_dit(patch_size=(2, 2, 2), frame_pos_freqs=frame_pos_freqs)
    x = torch.randn(2, 4, *size)
    text = torch.randn(2, 5, 16)
    mask = torch.tensor([[True, True, True, False, False], [False] * 5])  # the second caption was dropped
    out = dit(x, torch.rand(2), text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()


def test_dit_uses_the_caption_and_null_token():
    dit = tiny_dit().eval()
    x, t = torch.randn(1, 4, 2, 4, 4), torch.rand(1)
    a = dit(x, t, torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool))
    b = dit(x, t, torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool))
    dropped = dit(x, t, torch.randn(1, 3, 16), torch.zeros(1, 3, dtype=torch.bool))
    dropped2 = dit(x, t, torch.zeros(1, 7, 16), torch.zeros(1, 7, dtype=torch.bool))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(dropped, dropped2)  # a dropped caption is the null token, whatever its states


def test_dit_activation_checkpointing_gives_the_same_gradients():
    x, t, text, mask = torch.randn(2, 4, 3, 4, 6), torch.rand(2), torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    grads = []
    for ckpt in (False, True):
        dit = tiny_dit(grad_checkpoint=ckpt)
        dit(x, t, text, mask).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in dit.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_dit_config_errors():
    with pytest.raises(ValueError, match="head size"):
        DiTConfig(hidden_size=50, num_heads=4)
    with pytest.raises(ValueError, match="text_pool must be one of"):
        DiTConfig(text_pool="max")


def test_attention_pooling_starts_as_the_mean_and_learns_to_pick_a_word():
    text = torch.randn(2, 5, 16)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    mean_dit = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16))
    pool_dit = VideoDiT(DiTConfig(in_channels=4, hidden_size=48, depth=2, num_heads=4, text_dim=16, text_pool="attention"))
    missing = pool_dit.load_state_dict(mean_dit.state_dict(), strict=False).missing_keys
    assert missing == ["text_pool.score.weight", "text_pool.score.bias"]
    torch.testing.assert_close(pool_dit.encode_text(text, mask)[2], mean_dit.encode_text(text, mask)[2])
    # padding is never pooled, and scored weights can single out one token
    states = torch.randn(1, 4, 48)
    padded = torch.cat([states, 1e3 * torch.ones(1, 2, 48)], dim=1)
    keep = torch.tensor([[True] * 4 + [False] * 2])
    pool = pool_dit.text_pool
    torch.testing.assert_close(pool(padded, keep), states.mean(1))
    with torch.no_grad():
        pool.score.weight.zero_()
        pool.score.bias.zero_()
        pool.score.weight[:, 0] = 1e3  # every head scores by the first channel
        states[0, 2, 0] = 1.0
        states[0, [0, 1, 3], 0] = -1.0
    torch.testing.assert_close(pool(states, torch.ones(1, 4, dtype=torch.bool)), states[:, 2])
    x = torch.randn(2, 4, 2, 4, 4)
    pool_dit(x, torch.rand(2), text, mask).square().mean().backward()
    assert pool.score.weight.grad is not None


def test_frame_position_features_are_fractions_of_the_frame():
    small = frame_position_features(2, 3, 3, 4, "cpu").view(2, 3, 3, -1)
    large = frame_position_features(2, 5, 7, 4, "cpu").view(2, 5, 7, -1)
    assert small.shape[-1] == 6 * 4
    torch.testing.assert_close(small[1, 1, 1], large[1, 2, 3])  # the centre of the frame, at any size
    assert not torch.allclose(large[0, 2, 0], large[0, 2, -1])  # left and right edges differ
    assert not torch.allclose(large[0, 0, 3], large[0, -1, 3])  # so do top and bottom
    assert not torch.allclose(large[0, 2, 3], large[1, 2, 3])  # and frames


def test_rope_3d_scores_depend_only_on_the_offset():
    torch.manual_seed(0)
    head_dim = 24
    cos, sin = rope_3d(6, 7, 8, head_dim, 10000.0, "cpu")  # tokens in (t, h, w) order
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(p, r):
        i = p[0] * 56 + p[1] * 8 + p[2]
        j = r[0] * 56 + r[1] * 8 + r[2]
        qr = apply_rope(q.view(1, 1, 1, -1), cos[i : i + 1], sin[i : i + 1]).flatten()
        kr = apply_rope(k.view(1, 1, 1, -1), cos[j : j + 1], sin[j : j + 1]).flatten()
        return torch.dot(qr, kr)

    offset = (1, 2, -3)
    scores = [score(p, tuple(a + o for a, o in zip(p, offset, strict=True))) for p in [(0, 0, 3), (2, 3, 5), (4, 4, 7)]]
    torch.testing.assert_close(scores[0], scores[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(scores[0], scores[2], atol=1e-4, rtol=0)
    assert not torch.allclose(score((0, 0, 0), (0, 0, 1)), score((0, 0, 0), (0, 1, 0)))  # axes are distinct
    # rotation keeps norms: RoPE changes only angles
    torch.testing.assert_close(apply_rope(q.view(1, 1, 1, -1), cos[5:6], sin[5:6]).norm(), q.norm())
