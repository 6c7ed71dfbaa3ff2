"""Causal spatiotemporal autoencoder: video (B, 3, T, H, W) <-> latent (B, C, 1 + (T-1)/ft, H/fs, W/fs).

Time is causal everywhere: a frame never sees a later one, and the first frame is encoded on its own,
so an image (T = 1) and the first frame of a video get the same latent; images and videos share one
model. Frames per clip must be 1 + ft*k (1, 5, 9, 17, ... for ft = 4); height and width must be
multiples of fs (or are padded with `pad_to_multiple`). The latent is a diagonal Gaussian (KL-regularized).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class VAEConfig:
    """Sizes of the autoencoder; plain data so it round-trips through JSON and YAML."""

    base_channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])  # one level per entry
    num_res_blocks: int = 1
    z_channels: int = 4
    spatial_factor: int = 8  # 2 ** (levels that halve height and width)
    temporal_factor: int = 4  # 2 ** (levels that halve time), taken by the first levels

    def __post_init__(self):
        s_downs, t_downs = _log2(self.spatial_factor, "spatial_factor"), _log2(self.temporal_factor, "temporal_factor")
        if s_downs > len(self.channel_mult) - 1 or t_downs > s_downs:
            raise ValueError(
                f"VAE config: spatial_factor {self.spatial_factor} needs {s_downs + 1} channel_mult entries "
                f"(got {len(self.channel_mult)}), and temporal_factor {self.temporal_factor} must not exceed it"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _log2(n: int, name: str) -> int:
    k = int(round(math.log2(n))) if n > 0 else -1
    if k < 0 or 2**k != n:
        raise ValueError(f"VAE config: {name} must be a power of two, got {n}")
    return k


def valid_frames(num_frames: int, temporal_factor: int) -> bool:
    """True for clip lengths the autoencoder takes: 1 + temporal_factor * k."""
    return num_frames >= 1 and (num_frames - 1) % temporal_factor == 0


#################################################################################
#                               Building blocks                                 #
#################################################################################


class CausalConv3d(nn.Module):
    """3D convolution padded on the past side in time (replicating the first frame), 'same' in space."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.time_pad = kernel - 1
        self.space_pad = kernel // 2
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride)

    def forward(self, x):  # (B, C, T, H, W)
        p = self.space_pad
        x = F.pad(x, (p, p, p, p, 0, 0), mode="constant")
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over each frame on its own: statistics over time would let later frames leak backwards."""

    def forward(self, x):  # (B, C, T, H, W)
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock3d(nn.Module):
    """Per-frame GroupNorm -> SiLU -> causal conv, twice, with a residual connection."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(_groups(cin), cin)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = FrameGroupNorm(_groups(cout), cout)
        self.conv2 = CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _groups(channels: int) -> int:
    """Up to 32 groups, but at least 4 channels per group where possible.

    One channel per group is instance norm: it subtracts each channel's per-frame mean, which for a
    plain-coloured frame is the colour itself, so narrow (tiny) autoencoders lost colour and learned slowly.
    """
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0 and (channels // g >= 4 or g == 1):
            return g
    return 1


class Downsample(nn.Module):
    """Halve height and width (stride-2 conv); optionally halve time, keeping the first frame on its own."""

    def __init__(self, channels: int, time: bool):
        super().__init__()
        self.time = time
        self.space = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.temporal = nn.Conv1d(channels, channels, 3, stride=2, padding=0) if time else None

    def forward(self, x):  # (B, C, T, H, W)
        b, c, t, h, w = x.shape
        y = self.space(x.transpose(1, 2).reshape(b * t, c, h, w))  # (B*T, C, H/2, W/2)
        h2, w2 = y.shape[-2:]
        x = y.reshape(b, t, c, h2, w2).transpose(1, 2)  # (B, C, T, H/2, W/2)
        if self.time and t > 1:
            first, rest = x[:, :, :1], x[:, :, 1:]  # rest: T-1 = 2m frames -> m frames
            seq = rest.permute(0, 3, 4, 1, 2).reshape(b * h2 * w2, c, t - 1)
            seq = F.pad(seq, (1, 0), mode="replicate")  # causal: each output sees its frame pair and one before
            seq = self.temporal(seq)  # (B*H*W, C, m)
            rest = seq.reshape(b, h2, w2, c, -1).permute(0, 3, 4, 1, 2)
            x = torch.cat([first, rest], dim=2)  # (B, C, 1 + m, H/2, W/2)
        return x


class Upsample(nn.Module):
    """Double height and width (nearest + conv); optionally double time, the first frame staying single."""

    def __init__(self, channels: int, time: bool):
        super().__init__()
        self.time = time
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x):  # (B, C, T, H, W)
        if self.time and x.shape[2] > 1:
            first, rest = x[:, :, :1], x[:, :, 1:]
            x = torch.cat([first, rest.repeat_interleave(2, dim=2)], dim=2)  # (B, C, 1 + 2(T-1), H, W)
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return self.conv(x)


#################################################################################
#                               Encoder / decoder                               #
#################################################################################


class Encoder(nn.Module):
    """Video -> Gaussian posterior parameters (mean, logvar), each (B, z, T', H', W')."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        s_downs, t_downs = _log2(cfg.spatial_factor, ""), _log2(cfg.temporal_factor, "")
        self.conv_in = CausalConv3d(3, chans[0])
        blocks: list[nn.Module] = []
        cin = chans[0]
        for level, cout in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock3d(cin, cout))
                cin = cout
            if level < s_downs:
                blocks.append(Downsample(cin, time=level < t_downs))
        self.blocks = nn.Sequential(*blocks)
        self.mid = ResBlock3d(cin, cin)
        self.norm_out = FrameGroupNorm(_groups(cin), cin)
        self.conv_out = CausalConv3d(cin, 2 * cfg.z_channels)

    def forward(self, x):  # (B, 3, T, H, W) in [-1, 1]
        h = self.mid(self.blocks(self.conv_in(x)))
        moments = self.conv_out(F.silu(self.norm_out(h)))  # (B, 2z, T', H', W')
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """Latent (B, z, T', H', W') -> video (B, 3, T, H, W)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        chans = [cfg.base_channels * m for m in cfg.channel_mult][::-1]
        s_downs, t_downs = _log2(cfg.spatial_factor, ""), _log2(cfg.temporal_factor, "")
        levels = len(chans)
        self.conv_in = CausalConv3d(cfg.z_channels, chans[0])
        self.mid = ResBlock3d(chans[0], chans[0])
        blocks: list[nn.Module] = []
        cin = chans[0]
        for i, cout in enumerate(chans):
            level = levels - 1 - i  # the encoder level this mirrors
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock3d(cin, cout))
                cin = cout
            if 0 < level <= s_downs:
                blocks.append(Upsample(cin, time=level - 1 < t_downs))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameGroupNorm(_groups(cin), cin)
        self.conv_out = CausalConv3d(cin, 3)

    def forward(self, z):
        h = self.blocks(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, T, H, W)


class VideoAutoencoder(nn.Module):
    """Causal 3D KL autoencoder; `encode`/`decode` take whole clips, `*_chunked` long ones."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.initialize_weights()

    def initialize_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                nn.init.zeros_(m.bias)
        # start the residual branches small so the untrained autoencoder is a smooth function
        for m in self.modules():
            if isinstance(m, ResBlock3d):
                nn.init.zeros_(m.conv2.conv.weight)

    def check_input(self, x):
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"autoencoder input must be (B, 3, T, H, W), got {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        ft, fs = self.cfg.temporal_factor, self.cfg.spatial_factor
        if not valid_frames(t, ft):
            raise ValueError(f"clip has {t} frames; the autoencoder takes 1 + {ft}*k frames (1, {1 + ft}, {1 + 2 * ft}, ...)")
        if h % fs or w % fs:
            raise ValueError(f"frame size {h}x{w} is not a multiple of {fs}; pad it with pad_to_multiple() first")

    def encode(self, x):  # (B, 3, T, H, W) -> mean, logvar (B, z, 1 + (T-1)/ft, H/fs, W/fs)
        self.check_input(x)
        return self.encoder(x)

    def decode(self, z):  # (B, z, T', H', W') -> (B, 3, 1 + ft (T'-1), H'fs, W'fs)
        return self.decoder(z)

    def forward(self, x, generator: torch.Generator | None = None):
        mean, logvar = self.encode(x)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar

    @torch.no_grad()
    def encode_chunked(self, x, chunk_latents: int = 4, context_latents: int = 4):
        """Encode a long clip piece by piece, each piece re-reading `context_latents` latents of past frames.

        Pieces start on latent boundaries (frame ft*k), so every latent covers the same frames as in a
        whole-clip encode; the context frames warm up the causal convolutions and are dropped. The
        result equals the whole-clip encode when the context covers the receptive field, and is close
        otherwise; memory stays bounded by one piece.
        """
        self.check_input(x)
        ft, t = self.cfg.temporal_factor, x.shape[2]
        total = 1 + (t - 1) // ft  # latents of the whole clip
        means = []
        for first in range(0, total, chunk_latents):
            last = min(first + chunk_latents, total)  # latents [first, last)
            warm = max(0, first - 1 - context_latents)
            mean, _ = self.encoder(x[:, :, ft * warm : ft * (last - 1) + 1])
            means.append(mean[:, :, first - warm :])
        return torch.cat(means, dim=2)

    @torch.no_grad()
    def decode_chunked(self, z, chunk_latents: int = 4, context_latents: int = 4):
        """Decode a long latent piece by piece with `context_latents` of warm-up, like encode_chunked."""
        ft, total = self.cfg.temporal_factor, z.shape[2]
        videos = []
        for first in range(0, total, chunk_latents):
            last = min(first + chunk_latents, total)
            warm = max(0, first - 1 - context_latents)
            video = self.decoder(z[:, :, warm:last])  # frames 0 .. ft*(last-1-warm)
            videos.append(video if first == 0 else video[:, :, ft * (first - 1 - warm) + 1 :])
        return torch.cat(videos, dim=2)


#################################################################################
#                                   Losses                                      #
#################################################################################


def kl_loss(mean, logvar):
    """KL(q(z|x) || N(0, I)) per latent element, averaged."""
    return 0.5 * torch.mean(mean.pow(2) + logvar.exp() - 1.0 - logvar)


def gradient_loss(recon, target):
    """A simple perceptual term: L1 between spatial and temporal differences (edges and motion)."""
    loss = F.l1_loss(recon.diff(dim=-1), target.diff(dim=-1)) + F.l1_loss(recon.diff(dim=-2), target.diff(dim=-2))
    if recon.shape[2] > 1:
        loss = loss + F.l1_loss(recon.diff(dim=2), target.diff(dim=2))
    return loss


def vae_loss(recon, target, mean, logvar, kl_weight: float = 1e-6, gradient_weight: float = 0.0):
    """Reconstruction (L1 + MSE) + KL + optional gradient term; returns (total, parts for logging)."""
    l1 = F.l1_loss(recon, target)
    mse = F.mse_loss(recon, target)
    kl = kl_loss(mean, logvar)
    total = l1 + mse + kl_weight * kl
    parts = {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach()}
    if gradient_weight:
        g = gradient_loss(recon, target)
        total = total + gradient_weight * g
        parts["gradient"] = g.detach()
    return total, parts


class PatchDiscriminator(nn.Module):
    """A 3D PatchGAN critic for the autoencoder's optional adversarial term: videos (B, 3, T, H, W) ->
    real/fake logits per space-time patch. Strided in space only, so 1-frame clips (images) work;
    GroupNorm rather than BatchNorm, so real and fake halves of one batch do not mix statistics."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        self.layers = layers
        blocks: list[nn.Module] = []
        c_in, c = 3, channels
        for i in range(layers):
            blocks.append(nn.Conv3d(c_in, c, (3, 4, 4), stride=(1, 2, 2), padding=1))
            if i:
                blocks.append(nn.GroupNorm(_groups(c), c))
            blocks.append(nn.LeakyReLU(0.2))
            c_in, c = c, c * 2
        blocks.append(nn.Conv3d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, video):
        if min(video.shape[-2:]) < 2**self.layers:
            raise ValueError(f"the discriminator halves each side {self.layers} times; frames of "
                             f"{video.shape[-2]}x{video.shape[-1]} are too small (at least {2**self.layers} px a side)")
        return self.net(video)


# Non-saturating GAN losses. Both are >= 0, so the trainer's spike guard (a multiple of the recent
# median loss) keeps working with the adversarial term added.
def critic_loss(real_logits, fake_logits):
    """The discriminator's loss: call real clips real and reconstructions fake."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def fool_loss(fake_logits):
    """The autoencoder's adversarial term: make the discriminator call its reconstructions real."""
    return F.softplus(-fake_logits).mean()


def psnr(recon, target) -> float:
    """PSNR in dB for videos in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(recon.clamp(-1, 1).float(), target.float()).item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def pad_to_multiple(x, multiple: int):
    """Pad (…, H, W) on the bottom/right by replication up to a multiple; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        shape = x.shape
        flat = x.reshape(-1, 1, h, w) if x.ndim != 4 else x
        flat = F.pad(flat, (0, pw, 0, ph), mode="replicate")
        x = flat.reshape(*shape[:-2], h + ph, w + pw)
    return x, (h, w)


#################################################################################
#                                  Configs                                      #
#################################################################################


def VAE_tiny(**kw):
    return VideoAutoencoder(VAEConfig(base_channels=16, channel_mult=[1, 2, 2, 4], **kw))


def VAE_small(**kw):
    return VideoAutoencoder(VAEConfig(base_channels=64, channel_mult=[1, 2, 4, 4], num_res_blocks=2, **kw))


def VAE_base(**kw):
    return VideoAutoencoder(VAEConfig(base_channels=128, channel_mult=[1, 2, 4, 4], num_res_blocks=2, z_channels=16, **kw))


VAE_models = {"VAE-tiny": VAE_tiny, "VAE-S": VAE_small, "VAE-B": VAE_base}
