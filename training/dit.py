"""Video diffusion transformer: latents (B, C, T, H, W) + timestep + text states -> velocity (B, C, T, H, W).

Latents are cut into (pt, ph, pw) patches that become tokens. Positions enter through a 3D rotary
embedding over (t, h, w) computed on the fly, plus Fourier features of each token's place as a
fraction of the frame, so any frame count, resolution and aspect ratio works with no table to
retrain. Timesteps condition every block with adaLN-zero; text enters by cross-attention over the
text encoder's token states (plus its pooled state in the adaLN signal).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

PREDICTIONS = ("velocity", "data")
TEXT_POOLS = ("mean", "attention")
# data prediction divides by t: below this the velocity is (x_t - x0) / MIN_DATA_T, as the sampler never
# evaluates t = 0 and training draws t from a logit-normal
MIN_DATA_T = 0.05


@dataclass
class DiTConfig:
    """Sizes of the transformer; plain data so it round-trips through JSON and YAML."""

    in_channels: int = 4
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw)
    text_dim: int = 384  # width of the text encoder's token states
    rope_theta: float = 10000.0
    # RoPE alone is relative: a token can tell where it sits in the frame only from the frame's edges.
    # frame_pos_freqs > 0 adds Fourier features of each token's place as a fraction of the frame
    # (and its frame index), which mean the same at any size or aspect ratio; 0 turns them off.
    # benchmarks/bench_learns.py: without them a small DiT's shapes moved any way (held-out direction
    # 25%, chance); with 8 it scored 100% for the same training time.
    frame_pos_freqs: int = 8
    # image-to-video and extension by frame masking: the DiT also reads clean latents of the frames it
    # is given and a mask of which frames those are (channels beside the noisy latents)
    frame_conditioning: bool = False
    # What the network's last layer predicts; forward() always returns the velocity noise - x0.
    # "velocity": directly. "data": the clean latents x0, turned into the velocity (x_t - x0) / t. A token
    # whose patch holds more values than the width (5x2x2 tubes of 8 channels: 160 > 128) cannot carry
    # the noise part of the velocity through the width, but the clean latents lie on a low-dimensional
    # manifold it can (Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise").
    prediction: str = "velocity"
    # How the caption's token states become the one vector added to the timestep in every block's adaLN
    # signal. "mean": their average. "attention": a learned, per-head softmax weighting of the tokens
    # (it starts as the average), so a single word that changes the whole video can dominate it.
    text_pool: str = "mean"
    grad_checkpoint: bool = False

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in self.patch_size)
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"DiT config: prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.text_pool not in TEXT_POOLS:
            raise ValueError(f"DiT config: text_pool must be one of {TEXT_POOLS}, got {self.text_pool!r}")
        head_dim = self.hidden_size // self.num_heads
        if self.hidden_size % self.num_heads or head_dim % 2 or head_dim < 6:
            raise ValueError(
                f"DiT config: hidden_size {self.hidden_size} / num_heads {self.num_heads} must give an even head "
                f"size of at least 6 (3D RoPE rotates pairs along t, h and w); got {self.hidden_size / self.num_heads}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d


#################################################################################
#                     Embedding layers for timesteps and positions              #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Scalar timesteps in [0, 1] -> vectors (sinusoidal features, then an MLP)."""

    def __init__(self, hidden_size: int, freq_size: int = 256):
        super().__init__()
        self.freq_size = freq_size
        self.mlp = nn.Sequential(nn.Linear(freq_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t):  # (B,)
        half = self.freq_size // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * 1000.0)[:, None] * freqs[None]  # (B, half)
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))  # (B, D)


def rope_axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """How many rotated pairs of the head go to t, h and w (h and w equal; t takes the remainder)."""
    pairs = head_dim // 2
    hw = pairs // 3
    return pairs - 2 * hw, hw, hw


def rope_3d(grid_t: int, grid_h: int, grid_w: int, head_dim: int, theta: float, device) -> tuple:
    """cos/sin tables (N, head_dim/2) for tokens at integer positions (t, h, w); each axis owns some pairs."""
    pos = torch.stack(
        torch.meshgrid(
            torch.arange(grid_t, device=device, dtype=torch.float32),
            torch.arange(grid_h, device=device, dtype=torch.float32),
            torch.arange(grid_w, device=device, dtype=torch.float32),
            indexing="ij",
        ),
        dim=-1,
    ).reshape(-1, 3)  # (N, 3)
    angles = []
    for axis, n_pairs in enumerate(rope_axis_pairs(head_dim)):
        freqs = 1.0 / theta ** (torch.arange(n_pairs, device=device, dtype=torch.float32) / n_pairs)
        angles.append(pos[:, axis : axis + 1] * freqs[None])  # (N, n_pairs)
    angles = torch.cat(angles, dim=-1)  # (N, head_dim/2)
    return angles.cos(), angles.sin()


def frame_position_features(grid_t: int, grid_h: int, grid_w: int, n_freqs: int, device) -> torch.Tensor:
    """(N, 6 * n_freqs) sin/cos features of each token's (frame index, row, column); rows and columns as
    fractions of the frame (cell centres in (0, 1)) so that "top left" means the same at any size."""
    t = torch.arange(grid_t, device=device, dtype=torch.float32) / 4.0  # time: index scaled to a few cycles
    h = (torch.arange(grid_h, device=device, dtype=torch.float32) + 0.5) / grid_h
    w = (torch.arange(grid_w, device=device, dtype=torch.float32) + 0.5) / grid_w
    pos = torch.stack(torch.meshgrid(t, h, w, indexing="ij"), dim=-1).reshape(-1, 3, 1)  # (N, 3, 1)
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, device=device, dtype=torch.float32)  # (F,)
    angles = (pos * freqs).reshape(pos.shape[0], -1)  # (N, 3F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def apply_rope(x, cos, sin):
    """Rotate consecutive pairs of x (B, heads, N, head_dim) by the angles of each token."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, N, head_dim/2) each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)


def conditioning_channels(x, cond, cond_mask):
    """[noisy latents, given latents (zero elsewhere), mask] for a frame-conditioned DiT's input.

    cond_mask is (B, T) for whole given frames, or (B, T, H, W) for given latent cells (regions)."""
    b, c, t, h, w = x.shape
    if cond is None or cond_mask is None:
        return x, torch.zeros_like(x), x.new_zeros(b, 1, t, h, w)
    m = cond_mask.to(x.dtype).view(b, 1, t, *((h, w) if cond_mask.ndim == 4 else (1, 1))).expand(b, 1, t, h, w)
    return x, cond.to(x.dtype) * m, m


def velocity_from_data(x_t, x0, t):
    """The velocity noise - x0 = (x_t - x0) / t of the straight path, for t (B,) or (B, T)."""
    t = t.view(-1, 1, 1, 1, 1) if t.ndim == 1 else t.view(t.shape[0], 1, t.shape[1], 1, 1)
    return (x_t - x0) / t.to(x_t.dtype).clamp(min=MIN_DATA_T)


#################################################################################
#                                 Core DiT model                                #
#################################################################################


def per_token(v, n: int):
    """A conditioning value for n tokens: (B, D), one per clip, -> (B, 1, D); (B, G, D), one per latent
    frame of a clip whose tokens run frame by frame, -> (B, n, D)."""
    return v.unsqueeze(1) if v.ndim == 2 else v.repeat_interleave(n // v.shape[1], dim=1)


def modulate(x, shift, scale):
    n = x.shape[1]
    return x * (1 + per_token(scale, n)) + per_token(shift, n)


class SelfAttention(nn.Module):
    """Multi-head self-attention with 3D RoPE on queries and keys."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // num_heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // num_heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, cos, sin):  # (B, N, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)  # (B, heads, N, hd)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Tokens attend to text states; `mask` (B, L) is True where a text token is real."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(dim // num_heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // num_heads, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, text, mask):  # x (B, N, D), text (B, L, D), mask (B, L)
        b, n, d = x.shape
        hd = d // self.num_heads
        q = self.q_norm(self.q(x).reshape(b, n, self.num_heads, hd).transpose(1, 2))
        k, v = self.kv(text).reshape(b, -1, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, self.k_norm(k), v, attn_mask=mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class AttentionPool(nn.Module):
    """(B, L, D) token states -> (B, D): each head's slice of the width is a softmax-weighted sum of the
    tokens, the weights scored from the tokens themselves. Zero-initialised scores: the plain average."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.score = nn.Linear(dim, num_heads)

    def forward(self, states, mask):  # states (B, L, D), mask (B, L)
        b, n, d = states.shape
        scores = self.score(states).float().masked_fill(~mask.unsqueeze(-1), float("-inf"))  # (B, L, heads)
        weights = scores.softmax(dim=1).to(states.dtype)
        return torch.einsum("blh,blhd->bhd", weights, states.view(b, n, self.num_heads, d // self.num_heads)).reshape(b, d)


class DiTBlock(nn.Module):
    """Self-attention, cross-attention and MLP; self-attention and MLP modulated by adaLN-zero."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, text, mask, cos, sin):  # x (B, N, D), c (B, D) or per latent frame (B, G, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + per_token(gate_msa, x.shape[1]) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), cos, sin)
        x = x + self.cross(self.norm_cross(x), text, mask)
        x = x + per_token(gate_mlp, x.shape[1]) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated norm, then a linear map from tokens back to patch values."""

    def __init__(self, dim: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_volume * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class VideoDiT(nn.Module):
    """Diffusion transformer over 3D latent patches with 3D RoPE and text cross-attention."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        pt, ph, pw = cfg.patch_size
        self.patch_volume = pt * ph * pw
        in_channels = 2 * cfg.in_channels + 1 if cfg.frame_conditioning else cfg.in_channels
        self.x_embedder = nn.Linear(in_channels * self.patch_volume, d)
        self.pos_embedder = nn.Linear(6 * cfg.frame_pos_freqs, d) if cfg.frame_pos_freqs else None
        self.t_embedder = TimestepEmbedder(d)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.pooled_proj = nn.Linear(d, d)
        self.text_pool = AttentionPool(d, cfg.num_heads) if cfg.text_pool == "attention" else None
        self.null_text = nn.Parameter(torch.zeros(1, cfg.text_dim))  # the "no caption" condition for CFG
        self.blocks = nn.ModuleList([DiTBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(d, self.patch_volume, cfg.in_channels)
        self.initialize_weights()

    def initialize_weights(self):
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.null_text, std=0.02)
        if self.text_pool is not None:  # starts as the average of the tokens
            nn.init.zeros_(self.text_pool.score.weight)
            nn.init.zeros_(self.text_pool.score.bias)
        # adaLN-zero: every block starts as the identity, the output as zero
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            nn.init.zeros_(block.cross.proj.weight)
            nn.init.zeros_(block.cross.proj.bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def patchify(self, x):  # (B, C, T, H, W) -> tokens (B, N, C*pt*ph*pw), grid, original size
        pt, ph, pw = self.cfg.patch_size
        b, c, t, h, w = x.shape
        pad = (0, (-w) % pw, 0, (-h) % ph, 0, (-t) % pt)  # pad the far end of each axis up to the patch
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        gt, gh, gw = x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw
        x = x.reshape(b, c, gt, pt, gh, ph, gw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, gt * gh * gw, c * pt * ph * pw), (gt, gh, gw), (t, h, w)

    def unpatchify(self, tokens, grid, size):  # (B, N, C*pt*ph*pw) -> (B, C, T, H, W) cropped to size
        pt, ph, pw = self.cfg.patch_size
        gt, gh, gw = grid
        b, c = tokens.shape[0], self.cfg.in_channels
        x = tokens.reshape(b, gt, gh, gw, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        x = x.reshape(b, c, gt * pt, gh * ph, gw * pw)
        t, h, w = size
        return x[:, :, :t, :h, :w]

    def encode_text(self, text, mask):
        """Project text states (B, L, text_dim) and pool them; empty captions (mask all False) get the null token."""
        empty = ~mask.any(dim=1)  # (B,)
        use_null = torch.zeros_like(mask)
        use_null[:, 0] = empty  # (B, L): the first slot of an empty caption holds the null token
        # torch.where keeps null_text in the graph even when no caption is empty (DDP needs every parameter used)
        text = torch.where(use_null.unsqueeze(-1), self.null_text.to(text.dtype).expand_as(text), text)
        mask = mask | use_null
        states = self.text_proj(text)  # (B, L, D)
        if self.text_pool is not None:
            return states, mask, self.text_pool(states, mask)
        weights = mask.to(states.dtype).unsqueeze(-1)
        pooled = (states * weights).sum(1) / weights.sum(1)  # (B, D)
        return states, mask, pooled

    def time_signal(self, t, grid):
        """Timestep embedding: (B, D) for t (B,), one time per clip; (B, gt, D) for t (B, T), one time per
        latent frame (a patch of several frames takes its first frame's)."""
        if t.ndim == 1:
            return self.t_embedder(t)
        t = t[:, :: self.cfg.patch_size[0]][:, : grid[0]]  # (B, gt)
        return self.t_embedder(t.reshape(-1)).view(t.shape[0], t.shape[1], -1)

    def forward(self, x, t, text, mask, cond=None, cond_mask=None):
        """x (B, C, T, H, W) noisy latents, t (B,) in [0, 1] or (B, T), one time per latent frame (frames
        noised to different levels), text (B, L, text_dim), mask (B, L) bool.

        With `frame_conditioning`: cond (B, C, T, H, W) clean latents of the given frames (zeros
        elsewhere) and cond_mask (B, T) bool, True on given latent frames, or (B, T, H, W), True on
        given latent cells; both None = nothing given.
        """
        x_t = x
        if self.cfg.frame_conditioning:
            x = torch.cat(conditioning_channels(x, cond, cond_mask), dim=1)
        elif cond is not None and cond_mask is not None and cond_mask.any():
            raise ValueError("this DiT was trained without frame_conditioning: it cannot start from given frames; "
                             "train one with model_args: {frame_conditioning: true} and condition_prob > 0")
        tokens, grid, size = self.patchify(x)  # (B, N, C*P)
        h = self.x_embedder(tokens)  # (B, N, D)
        if self.pos_embedder is not None:
            h = h + self.pos_embedder(frame_position_features(*grid, self.cfg.frame_pos_freqs, x.device))
        states, mask, pooled = self.encode_text(text, mask)
        c = self.time_signal(t, grid)  # (B, D) or (B, gt, D)
        c = c + (self.pooled_proj(pooled) if c.ndim == 2 else self.pooled_proj(pooled)[:, None])
        cos, sin = rope_3d(*grid, self.cfg.hidden_size // self.cfg.num_heads, self.cfg.rope_theta, x.device)
        for block in self.blocks:
            if self.cfg.grad_checkpoint and self.training:
                h = checkpoint(block, h, c, states, mask, cos, sin, use_reentrant=False)
            else:
                h = block(h, c, states, mask, cos, sin)  # (B, N, D)
        out = self.unpatchify(self.final_layer(h, c), grid, size)  # (B, C, T, H, W)
        if self.cfg.prediction == "data":
            return velocity_from_data(x_t, out, t)
        return out


#################################################################################
#                                  DiT Configs                                  #
#################################################################################


def DiT_tiny(**kw):
    return VideoDiT(DiTConfig(depth=2, hidden_size=96, num_heads=4, **kw))


def DiT_S(**kw):
    return VideoDiT(DiTConfig(depth=12, hidden_size=384, num_heads=6, **kw))


def DiT_B(**kw):
    return VideoDiT(DiTConfig(depth=12, hidden_size=768, num_heads=12, **kw))


def DiT_L(**kw):
    return VideoDiT(DiTConfig(depth=24, hidden_size=1024, num_heads=16, **kw))


def DiT_XL(**kw):
    return VideoDiT(DiTConfig(depth=28, hidden_size=1152, num_heads=16, **kw))


DiT_models = {"DiT-tiny": DiT_tiny, "DiT-S": DiT_S, "DiT-B": DiT_B, "DiT-L": DiT_L, "DiT-XL": DiT_XL}


def flops_per_token(cfg: DiTConfig, num_tokens: int, text_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward) of the transformer blocks."""
    d = cfg.hidden_size
    mlp = int(d * cfg.mlp_ratio)
    per_block = (
        2 * 3 * d * d  # qkv
        + 2 * 2 * num_tokens * d  # attention scores and values
        + 2 * d * d  # self-attention proj
        + 2 * 2 * d * d  # cross q + proj (text kv is per text token, small)
        + 2 * 2 * text_len * d  # cross-attention scores and values
        + 2 * 2 * d * mlp  # mlp
    )
    return 3.0 * cfg.depth * per_block
