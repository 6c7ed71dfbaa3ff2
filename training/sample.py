"""Sampling: prompt -> text states -> flow sampler in latent space -> autoencoder decode -> uint8 frames.

Callers write the frames with `curation.core.video.write_video` (imported where a video is written:
the GPU box may not have PyAV).

Any frame count and size: the latent grid is rounded up (frames to 1 + ft*k, sides to multiples of
the autoencoder's factor) and the decoded video is cropped back to what was asked.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import ModelMeta, load_trained
from training.flow import sample, shift_for_size
from training.text import TextEncoder
from training.vae import pad_to_multiple


@functools.lru_cache(maxsize=2)
def _text_encoder(name: str, device: str):
    return TextEncoder(name, device=device)


@functools.lru_cache(maxsize=2)
def _autoencoder(vae_dir: str, device: str):
    if not Path(vae_dir).exists():
        raise FileNotFoundError(f"autoencoder run {vae_dir} (recorded in the DiT run's model.json) is missing; pass --vae")
    return load_trained(Path(vae_dir), device)[0]


def latent_size(frames: int, height: int, width: int, temporal_factor: int, spatial_factor: int) -> tuple[int, int, int]:
    """Latent (t, h, w) covering at least frames x height x width."""
    return (1 + math.ceil((frames - 1) / temporal_factor), math.ceil(height / spatial_factor),
            math.ceil(width / spatial_factor))


@torch.no_grad()
def generate(dit, meta: ModelMeta, prompts: list[str], frames: int | None = 17, height: int | None = 64,
             width: int | None = 64, steps: int = 30, cfg_scale: float = 4.0, seed: int = 0, device="cpu",
             method: str = "euler", vae_dir: str | None = None, text_states=None,
             first_frames: np.ndarray | None = None) -> list[np.ndarray]:
    """Videos (T, H, W, 3) uint8, one per prompt. `text_states` (states, mask) skips the text encoder.

    `first_frames` (k, H, W, 3) uint8 — an image (k = 1) or the start of a clip — makes every video
    begin with them (a DiT trained with frame_conditioning): image-to-video or extension. They are
    resized to height x width; the first 1 + temporal_factor*j of them that fit are used."""
    frames, height, width = frames or 17, height or 64, width or 64
    if frames < 1 or height < 1 or width < 1:
        raise ValueError(f"frames, height and width must be positive, got {frames}x{height}x{width}")
    device = str(device)
    dit.eval()
    if text_states is None:
        text, mask = _text_encoder(meta.text_encoder, device)(prompts)
    else:
        text, mask = text_states
    text, mask = text.to(device), mask.to(device)
    b = len(prompts)
    lt, lh, lw = latent_size(frames, height, width, meta.temporal_factor, meta.spatial_factor)
    pt, ph, pw = dit.cfg.patch_size
    tokens = math.ceil(lt / pt) * math.ceil(lh / ph) * math.ceil(lw / pw)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(b, dit.cfg.in_channels, lt, lh, lw, generator=gen).to(device)
    cond = {"text": text, "mask": mask}
    uncond = {"text": torch.zeros_like(text), "mask": torch.zeros_like(mask)}  # all masked: the DiT's null token
    vae = _autoencoder(vae_dir or meta.vae, device)
    mean = torch.tensor(meta.latent_mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(meta.latent_std, device=device).view(1, -1, 1, 1, 1)
    given = cond_mask = None
    if first_frames is not None:
        latents = encode_first_frames(vae, first_frames, frames, height, width, meta.temporal_factor, device)
        given = torch.zeros(b, dit.cfg.in_channels, lt, lh, lw, device=device)
        given[:, :, : latents.shape[2]] = ((latents - mean) / std)[:, :, :, :lh, :lw]
        cond_mask = torch.zeros(b, lt, dtype=torch.bool, device=device)
        cond_mask[:, : latents.shape[2]] = True
        for half in (cond, uncond):  # guidance is on the caption only: both halves see the given frames
            half.update(cond=given, cond_mask=cond_mask)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with autocast:
        z = sample(lambda x, t, **c: dit(x, t, **c).float(), noise, cond, uncond if cfg_scale != 1.0 else None,
                   steps=steps, cfg_scale=cfg_scale, shift=shift_for_size(tokens, meta.shift_base_tokens),
                   method=method)
    if given is not None:  # the given frames exactly, not the sampler's approximation of them
        z = torch.where(cond_mask.view(b, 1, lt, 1, 1), given, z)
    video = vae.decode_chunked(z * std + mean)  # (B, 3, T', H', W')
    video = video[:, :, :frames, :height, :width].clamp(-1, 1)
    return [((v.permute(1, 2, 3, 0).float().cpu().numpy() + 1) * 127.5).round().astype(np.uint8) for v in video]


@torch.no_grad()
def encode_first_frames(vae, first_frames: np.ndarray, frames: int, height: int, width: int, temporal_factor: int,
                        device) -> torch.Tensor:
    """Autoencoder latents (1, C, j, h, w) of the given frames, resized to height x width (padded up to the
    autoencoder's factor), at most 1 + temporal_factor*k frames and fewer than the video's."""
    first_frames = np.array(first_frames, dtype=np.uint8)  # a writable copy: PIL arrays are read-only
    if first_frames.ndim == 3:
        first_frames = first_frames[None]
    if first_frames.ndim != 4 or first_frames.shape[-1] != 3 or len(first_frames) == 0:
        raise ValueError(f"first frames must be (k, H, W, 3) RGB, got shape {first_frames.shape}")
    usable = 1 + (min(len(first_frames), frames) - 1) // temporal_factor * temporal_factor
    if usable >= frames and frames > 1:  # leave at least one latent frame to generate
        usable -= temporal_factor
    x = torch.from_numpy(first_frames[:usable]).to(device).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
    x = torch.nn.functional.interpolate(x[0].transpose(0, 1), size=(height, width), mode="bilinear",
                                        antialias=True, align_corners=False).transpose(0, 1)[None]
    x, _ = pad_to_multiple(x.clamp(-1, 1), vae.cfg.spatial_factor)
    return vae.encode(x)[0]


def upsample(prompt: str, enhancer: str | None) -> str:
    """Expand a short prompt into the dense caption style with the recaption stage's enhancer."""
    if not enhancer:
        raise ValueError("--upsample-prompt needs an enhancer model: pass --enhancer hf:<model id or local dir>")
    try:
        from recaption.enhance import upsample_prompt
    except ImportError as e:
        raise RuntimeError(
            "--upsample-prompt needs recaption.enhance.upsample_prompt, which is not installed here; "
            "drop --upsample-prompt or install the recaption stage"
        ) from e
    return upsample_prompt(prompt, enhancer)
