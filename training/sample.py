"""Sampling: prompt -> text states -> flow sampler in latent space -> autoencoder decode -> mp4.

Any frame count and size: the latent grid is rounded up (frames to 1 + ft*k, sides to multiples of
the autoencoder's factor) and the decoded video is cropped back to what was asked.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from training.flow import sample, shift_for_size


@functools.lru_cache(maxsize=2)
def _text_encoder(name: str, device: str):
    from training.text import TextEncoder

    return TextEncoder(name, device=device)


@functools.lru_cache(maxsize=2)
def _autoencoder(vae_dir: str, device: str):
    from training.train import load_trained

    if not Path(vae_dir).exists():
        raise FileNotFoundError(f"autoencoder run {vae_dir} (recorded in the DiT run's model.json) is missing; pass --vae")
    return load_trained(Path(vae_dir), device)[0]


def latent_size(frames: int, height: int, width: int, temporal_factor: int, spatial_factor: int) -> tuple[int, int, int]:
    """Latent (t, h, w) covering at least frames x height x width."""
    return (1 + math.ceil((frames - 1) / temporal_factor), math.ceil(height / spatial_factor),
            math.ceil(width / spatial_factor))


@torch.no_grad()
def generate(dit, meta: dict, prompts: list[str], frames: int | None = 17, height: int | None = 64,
             width: int | None = 64, steps: int = 30, cfg_scale: float = 4.0, seed: int = 0, device="cpu",
             method: str = "euler", vae_dir: str | None = None, text_states=None) -> list[np.ndarray]:
    """Videos (T, H, W, 3) uint8, one per prompt. `text_states` (states, mask) skips the text encoder."""
    frames, height, width = frames or 17, height or 64, width or 64
    if frames < 1 or height < 1 or width < 1:
        raise ValueError(f"frames, height and width must be positive, got {frames}x{height}x{width}")
    device = str(device)
    dit.eval()
    if text_states is None:
        text, mask = _text_encoder(meta["text_encoder"], device)(prompts)
    else:
        text, mask = text_states
    text, mask = text.to(device), mask.to(device)
    b = len(prompts)
    lt, lh, lw = latent_size(frames, height, width, meta["temporal_factor"], meta["spatial_factor"])
    pt, ph, pw = dit.cfg.patch_size
    tokens = math.ceil(lt / pt) * math.ceil(lh / ph) * math.ceil(lw / pw)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(b, dit.cfg.in_channels, lt, lh, lw, generator=gen).to(device)
    cond = {"text": text, "mask": mask}
    uncond = {"text": torch.zeros_like(text), "mask": torch.zeros_like(mask)}  # all masked: the DiT's null token
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with autocast:
        z = sample(lambda x, t, **c: dit(x, t, **c).float(), noise, cond, uncond if cfg_scale != 1.0 else None,
                   steps=steps, cfg_scale=cfg_scale, shift=shift_for_size(tokens, meta.get("shift_base_tokens", 256)),
                   method=method)
    mean = torch.tensor(meta["latent_mean"], device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(meta["latent_std"], device=device).view(1, -1, 1, 1, 1)
    vae = _autoencoder(vae_dir or meta["vae"], device)
    video = vae.decode_chunked(z * std + mean)  # (B, 3, T', H', W')
    video = video[:, :, :frames, :height, :width].clamp(-1, 1)
    return [((v.permute(1, 2, 3, 0).float().cpu().numpy() + 1) * 127.5).round().astype(np.uint8) for v in video]


def write_video(path: Path | str, frames: np.ndarray, fps: float = 8) -> Path:
    """Write (T, H, W, 3) uint8 frames as an h264 mp4 (odd sides are padded by one pixel for yuv420p)."""
    import av  # only the sampling path needs PyAV

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


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
