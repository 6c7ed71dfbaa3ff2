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
from training.modes import Given, Start, given_ends, latent_known
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
             first_frames: np.ndarray | None = None, given: Given | None = None,
             start: Start | None = None) -> list[np.ndarray]:
    """Videos (T, H, W, 3) uint8, one per prompt. `text_states` (states, mask) skips the text encoder.

    `first_frames` (k, H, W, 3) uint8 — an image (k = 1) or the start of a clip — makes every video
    begin with them: image-to-video or extension. `given` (training.modes.Given) generalises that to
    any known pixels (last frames, both ends, a region, a padded canvas); `start` (Start) is SDEdit
    editing or blending, confined to where the prompts differ when it has a source prompt. See
    training/modes.py."""
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

    def latents_of(video: np.ndarray) -> torch.Tensor:  # (1, C, lt, lh, lw), normalised like training's
        z = encode_video(vae, video, meta.temporal_factor, device)
        return ((z - mean) / std)[:, :, :lt, :lh, :lw]

    if first_frames is not None:
        given = given_ends(frames, height, width, first=first_frames)
    known = known_mask = None
    if given is not None:
        if given.video.shape[:3] != (frames, height, width):
            raise ValueError(f"the given canvas is {given.video.shape[:3]}, not {(frames, height, width)}")
        known = latents_of(given.video).expand(b, -1, -1, -1, -1)
        cells = latent_known(given.known, meta.temporal_factor, meta.spatial_factor, (lt, lh, lw))
        if not cells.any():
            raise ValueError("no latent cell is wholly known: give larger known regions (whole "
                             f"{meta.spatial_factor}x{meta.spatial_factor} blocks, frames in steps of "
                             f"{meta.temporal_factor})")
        known_mask = torch.from_numpy(cells).to(device).view(1, 1, lt, lh, lw)
    x_start = strength = None
    if start is not None:
        x_start = sum(w * latents_of(v) for w, v in zip(start.weights, start.videos, strict=True))
        strength = start.strength
    if start is not None and start.source_prompt:
        if known is not None:
            raise ValueError("an edit with a source prompt cannot also be given known frames or regions")
        source, source_mask = _text_encoder(meta.text_encoder, device)([start.source_prompt] * b)
        region = edit_region(dit, x_start, cond, {"text": source.to(device), "mask": source_mask.to(device)}, seed)
        known, known_mask = x_start.expand(b, -1, -1, -1, -1), ~region[:, None]
    if known is not None and dit.cfg.frame_conditioning:  # a DiT trained for it also reads the known cells
        cells_mask = known_mask[:, 0].expand(b, lt, lh, lw)
        for half in (cond, uncond):  # guidance is on the caption only: both halves see the known cells
            half.update(cond=known, cond_mask=cells_mask)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with autocast:
        z = sample(lambda x, t, **c: dit(x, t, **c).float(), noise, cond, uncond if cfg_scale != 1.0 else None,
                   steps=steps, cfg_scale=cfg_scale, shift=shift_for_size(tokens, meta.shift_base_tokens),
                   method=method, start_t=1.0 if strength is None else strength,
                   x_start=None if x_start is None else x_start.expand(b, -1, -1, -1, -1),
                   known=known, known_mask=known_mask)
    if known is not None:  # the given region exactly, not the sampler's approximation of it
        z = torch.where(known_mask, known, z)
    video = vae.decode_chunked(z * std + mean)[:, :, :frames, :height, :width]  # (B, 3, T, H, W)
    if given is not None:
        # The decoder's reach crosses latent cells, so generated cells bleed into known pixels near them:
        # known pixels are the autoencoder's reconstruction of the canvas, pasted back.
        recon = vae.decode_chunked(known[:1] * std + mean)[:, :, :frames, :height, :width]
        pixels = torch.from_numpy(given.known).to(video.device).view(1, 1, frames, height, width)
        video = torch.where(pixels, recon, video)
    video = video.clamp(-1, 1)
    return [((v.permute(1, 2, 3, 0).float().cpu().numpy() + 1) * 127.5).round().astype(np.uint8) for v in video]


@torch.no_grad()
def edit_region(dit, x0: torch.Tensor, cond: dict, source_cond: dict, seed: int = 0, draws: int = 8,
                t: float = 0.5, threshold: float = 0.6, grow: int = 0, objects: float | None = 0.5) -> torch.Tensor:
    """DiffEdit's mask, (B, t, h, w) bool over the latent grid: True where the prompt (`cond`, B rows)
    and the source prompt disagree about the video with latents `x0` (1, C, t, h, w).

    The DiT's velocities under both prompts at x0 noised to `t` (the same `draws` noises for both)
    differ where the prompts ask for different content; their absolute difference, averaged over
    channels and draws and scaled to each latent frame's largest, is kept above `threshold`, closed
    (cells enclosed by the region join it, or old content is left inside the new). With `objects` the
    region takes in the whole of every object it touches: the cells standing out from their frame
    (`stand_out` above `objects`) connected to it, since the velocities can differ over only part of
    an object and its rim, left known, would keep the old colour and hem the new content in. Last it is
    grown by `grow` cells; no growth is the default: every cell more is room for the new content to
    drift from where the old was (both measured in docs/training.md)."""
    b = cond["text"].shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    length = max(cond["text"].shape[1], source_cond["text"].shape[1])  # captions of different token counts
    both = {k: torch.cat([_pad_tokens(cond[k], length), _pad_tokens(source_cond[k], length)]) for k in ("text", "mask")}
    difference = 0
    for _ in range(draws):
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        x_t = ((1 - t) * x0 + t * noise).expand(2 * b, -1, -1, -1, -1)
        v = dit(x_t, torch.full((2 * b,), t, device=x0.device), **both).float()
        difference = difference + (v[:b] - v[b:]).abs().mean(1) / draws  # (B, t, h, w)
    if not bool((difference > 0).any()):
        raise ValueError("the DiT predicts the same video under the prompt and the source prompt, so there is "
                         "nothing to edit: give a source prompt that says what differs (or a DiT trained on captions)")
    scaled = difference / difference.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    above = scaled > threshold
    # closed (grown, then shrunk back): the cells inside an object whose difference dipped are in too
    region = above | ~grow_cells(~grow_cells(above, 1), 1, outside=True)
    if objects is not None:
        region = region | connected_within(region, stand_out(x0).expand_as(region) > objects)
    return grow_cells(region, grow) if grow else region


def stand_out(x0: torch.Tensor) -> torch.Tensor:
    """(B, t, h, w) in [0, 1]: how far each cell's latent lies from its frame's median latent (the
    background, wherever objects cover less than half the frame), scaled to the frame's farthest."""
    x = x0.detach().float()
    typical = x.flatten(3).median(dim=3).values[..., None, None]
    distance = (x - typical).norm(dim=1)
    return distance / distance.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)


def connected_within(seeds: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The `allowed` cells connected (side by side, within each frame) to an allowed seed cell, (B, t, h, w)."""
    reached = seeds & allowed
    while True:
        p = torch.nn.functional.pad(reached, (1, 1, 1, 1))
        beside = p[..., :-2, 1:-1] | p[..., 2:, 1:-1] | p[..., 1:-1, :-2] | p[..., 1:-1, 2:]
        more = reached | (beside & allowed)
        if torch.equal(more, reached):
            return reached
        reached = more


def grow_cells(cells: torch.Tensor, by: int, outside: bool = False) -> torch.Tensor:
    """(B, t, h, w) bool grown by `by` cells in each frame; `outside` is what lies beyond the grid."""
    padded = torch.nn.functional.pad(cells[:, None].float(), (by, by, by, by), value=float(outside))
    return torch.nn.functional.max_pool3d(padded, (1, 2 * by + 1, 2 * by + 1), 1)[:, 0] > 0


def _pad_tokens(x: torch.Tensor, length: int) -> torch.Tensor:
    """Text states (B, L, D) or mask (B, L) padded with zeros (masked out) to `length` tokens."""
    pad = [0, 0] * (x.ndim - 2) + [0, length - x.shape[1]]
    return torch.nn.functional.pad(x, pad)


@torch.no_grad()
def encode_video(vae, video: np.ndarray, temporal_factor: int, device) -> torch.Tensor:
    """Autoencoder latents (1, C, t, h, w) of (T, H, W, 3) uint8 frames; the length is padded to
    1 + temporal_factor*k with the last frame and the sides to the autoencoder's factor."""
    video = np.asarray(video, dtype=np.uint8)
    if video.ndim == 3:
        video = video[None]
    extra = (-(len(video) - 1)) % temporal_factor
    if extra:
        video = np.concatenate([video, np.repeat(video[-1:], extra, axis=0)])
    x = torch.from_numpy(np.ascontiguousarray(video)).to(device).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
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
