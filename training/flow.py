"""Rectified flow: the straight path between data and noise, its training loss, and its samplers.

Convention: x_t = (1 - t) * x_0 + t * noise, t = 0 is data and t = 1 is noise; the model predicts the
velocity v = noise - x_0, and sampling integrates dx/dt = v from t = 1 down to t = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def shift_for_size(num_tokens: int, base_tokens: int = 256) -> float:
    """Resolution- and length-aware shift: more tokens -> more signal survives noise -> sample noisier t.

    Doubling the number of latent elements keeps the same signal-to-noise ratio only if t moves towards
    noise; sqrt(tokens / base) is the SD3 / Open-Sora rule, clamped to at least 1.
    """
    return max(1.0, math.sqrt(num_tokens / base_tokens))


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Warp t in [0, 1] towards 1 (noise) for shift > 1; identity for shift = 1."""
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(batch: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0,
                     shift: float = 1.0) -> torch.Tensor:
    """Logit-normal timesteps (sigmoid of a Gaussian: most weight in the middle), then shifted."""
    t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator))
    return shift_time(t, shift)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point at time t on the straight path from x0 (B, C, T, H, W) to noise: t (B,) for the whole
    clip, or (B, T) for each latent frame."""
    t = (t.view(-1, *([1] * (x0.ndim - 1))) if t.ndim == 1 else t.view(t.shape[0], 1, t.shape[1], 1, 1)).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def frame_times(t: torch.Tensor, frames: int, prob: float, gen: torch.Generator, mean: float = 0.0,
                std: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """(B, frames) times: with probability `prob` a clip's latent frames are noised to levels drawn
    independently (the clip's own t stays the first frame's), otherwise all to the clip's t.

    Frames at different noise levels can only be denoised well by reading the cleaner ones, so the
    model learns how a frame follows from the others (motion as a rule, not positions per frame)."""
    b = t.shape[0]
    chosen = torch.rand(b, generator=gen, device=gen.device) < prob
    own = sample_timesteps(b * frames, gen, mean, std, shift).view(b, frames).to(t.device)
    own[:, 0] = t
    return torch.where(chosen.to(t.device)[:, None] & (frames > 1), own, t[:, None].expand(b, frames))


def flow_loss(model: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, weight=None,
              **cond) -> torch.Tensor:
    """Mean squared error between the model's velocity at x_t and the true velocity noise - x0.

    `weight` (broadcastable to x0, e.g. (B, 1, T, 1, 1)) leaves out elements with weight 0: frames the
    model was given as conditions are not its to predict."""
    x_t = interpolate(x0, noise, t.to(x0.device))
    pred = model(x_t, t.to(x0.device), **cond)
    error = (pred.float() - (noise - x0).float()) ** 2
    if weight is None:
        return error.mean()
    weight = weight.to(error.dtype).expand_as(error)
    return (error * weight).sum() / weight.sum().clamp(min=1.0)


def sampling_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """steps + 1 times from 1 to 0, spaced evenly then shifted (more steps near noise when shift > 1)."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1), shift)


def guided_velocity(model: Callable, x, t, cond: dict, uncond: dict | None, cfg_scale: float):
    """Classifier-free guidance: v_u + g (v_c - v_u), both halves in one batched call."""
    tt = torch.full((x.shape[0],), float(t), device=x.device)
    if uncond is None or cfg_scale == 1.0:
        return model(x, tt, **cond)
    both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
    v = model(torch.cat([x, x]), torch.cat([tt, tt]), **both)
    v_cond, v_uncond = v.chunk(2)
    return v_uncond + cfg_scale * (v_cond - v_uncond)


@torch.no_grad()
def sample(model: Callable, noise: torch.Tensor, cond: dict, uncond: dict | None = None, steps: int = 30,
           cfg_scale: float = 1.0, shift: float = 1.0, method: str = "euler", progress: Callable | None = None,
           start_t: float = 1.0, x_start: torch.Tensor | None = None, known: torch.Tensor | None = None,
           known_mask: torch.Tensor | None = None):
    """Integrate from noise (t = 1) to data (t = 0) with Euler or Heun steps and optional CFG.

    SDEdit: with `x_start` (clean latents) and `start_t` < 1 the path starts at x_start noised to
    start_t and only the schedule's times below it are stepped (start_t 0 returns x_start). With
    `known` latents and `known_mask` (broadcastable bool), those cells are put back on the known
    path (known noised to the current time) after every step: the sampler fills in the rest."""
    if method not in ("euler", "heun"):
        raise ValueError(f"sampler method must be 'euler' or 'heun', got {method!r}")
    if not 0.0 <= start_t <= 1.0:
        raise ValueError(f"the start time (edit strength) must be within [0, 1], got {start_t}")
    times = sampling_schedule(steps, shift).tolist()
    x = noise
    if x_start is not None and start_t < 1.0:
        times = [start_t] + [t for t in times if t < start_t]
        x = (1 - start_t) * x_start + start_t * noise
    for i in range(len(times) - 1):
        t, t_next = times[i], times[i + 1]
        v = guided_velocity(model, x, t, cond, uncond, cfg_scale)
        x_next = x + (t_next - t) * v
        if method == "heun" and t_next > 0:  # trapezoid: average the slopes at both ends
            v_next = guided_velocity(model, x_next, t_next, cond, uncond, cfg_scale)
            x_next = x + (t_next - t) * 0.5 * (v + v_next)
        x = x_next
        if known is not None:
            x = torch.where(known_mask, (1 - t_next) * known + t_next * noise, x)
        if progress:
            progress()
    return x
