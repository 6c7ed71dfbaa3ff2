"""The trainer: one straight loop for the autoencoder (kind: vae) and the video DiT (kind: dit).

    python -m training.train --kind dit --shards OUT/shards --vae RUNS/vae --run RUNS/dit --config training/configs/dit-tiny.yaml
    torchrun --nproc-per-node 2 -m training.train --run-dir RUNS/dit ...   # DDP: gloo on CPU, nccl on GPU

The file reads top to bottom: config, models, the pieces of a step, set-up, one step and one checkpoint,
logging, then `train()`, a straight loop over those helpers: set up (devices, data, model, EMA,
optimizer), resume if asked, then for each step: batch -> loss -> guard -> backward -> clip -> step ->
EMA -> log -> sample -> checkpoint. model.json (`ModelMeta`) and checkpoints are training/checkpoint.py's.
Every random draw of step s comes from a generator seeded with (seed, s, rank) and batch s comes from
the data plan alone, so N steps + resume + M steps equals N + M steps straight.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn

from curation.core.models import cap_torch_threads, pick_device
from training import checkpoint as ckpt
from training.checkpoint import ModelMeta
from training.data import LatentBatches, PixelBatches, make_loader, read_latent_info
from training.dit import DiT_models, DiTConfig, VideoDiT
from training.flow import flow_loss, frame_times, sample_timesteps, shift_for_size
from training.sample import generate, grow_cells, stand_out
from training.shards import DEFAULT_CAPTION_BLEND, parse_bucket
from training.vae import (
    PatchDiscriminator,
    VAE_models,
    VAEConfig,
    VideoAutoencoder,
    critic_loss,
    fool_loss,
    psnr,
    vae_loss,
    valid_frames,
)

METRICS = "metrics.jsonl"


@dataclass
class TrainConfig:
    """Everything a run is, as plain data (YAML in training/configs/); unknown keys are errors."""

    kind: str = "dit"  # vae | dit
    model: str = "DiT-tiny"  # a name in VAE_models / DiT_models
    model_args: dict = field(default_factory=dict)  # overrides of VAEConfig / DiTConfig fields
    seed: int = 0
    batch_size: int = 2
    bucket_batch_size: dict = field(default_factory=dict)  # e.g. {"17x64x96": 1}
    max_steps: int = 1000  # also the length of the cosine schedule
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 10
    ckpt_every: int = 200
    keep_last: int = 3
    workers: int = 0  # data loader worker processes
    spike_factor: float = 10.0  # a loss above spike_factor x the recent median is skipped
    max_bad_steps: int = 20  # stop after this many skipped steps in a row
    # autoencoder
    kl_weight: float = 1e-6
    gradient_weight: float = 0.1
    adv_weight: float = 0.0  # > 0: a 3D PatchGAN critic trains alongside and its verdict joins the loss
    adv_start_step: int = 0  # let reconstructions settle before the critic starts to push
    disc_channels: int = 32
    # DiT
    caption_blend: float | None = None  # p(dense caption); None: what `rushes shard --caption-blend` recorded
    caption_dropout: float = 0.1
    timestep_mean: float = 0.0
    timestep_std: float = 1.0
    shift_base_tokens: int = 256
    condition_prob: float = 0.0  # p(part of a clip is given): image-to-video, extension, in/outpainting training
    frame_noise_prob: float = 0.0  # p(a clip's latent frames get their own noise levels): learn how frames follow
    # what is given: "frames" (its first latent frames), "regions" (a box), "objects" (all but the cells that
    # stand out in each frame, the holes a region edit makes), "both" (frames or regions), "all" (any of them)
    condition_mode: str = "frames"
    sample_every: int = 0  # 0: no samples during training
    sample_prompts: list = field(default_factory=list)
    sample_steps: int = 20
    cfg_scale: float = 4.0

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        for f in fields(cls):
            if f.name in data:
                data = {**data, f.name: _checked(f.name, data[f.name], f.type, source)}
        cfg = cls(**data)
        for name, low, inclusive in LIMITS:
            value = getattr(cfg, name)
            if value is not None and (value < low if inclusive else value <= low):
                raise ValueError(f"{source}: {name} must be {'at least' if inclusive else 'above'} {low}, got {value!r}")
        for name in ("min_lr_ratio", "caption_dropout", "condition_prob", "frame_noise_prob", "caption_blend", "ema_decay"):
            value = getattr(cfg, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{source}: {name} must be within [0, 1], got {value!r}")
        if cfg.kind not in ("vae", "dit"):
            raise ValueError(f"{source}: kind must be 'vae' or 'dit', got {cfg.kind!r}")
        if cfg.condition_mode not in CONDITION_MODES:
            raise ValueError(f"{source}: condition_mode must be one of {CONDITION_MODES}, got {cfg.condition_mode!r}")
        names = VAE_models if cfg.kind == "vae" else DiT_models
        if cfg.model not in names:
            raise ValueError(f"{source}: model {cfg.model!r} is not one of {sorted(names)}")
        return cfg


# (setting, lowest value, whether the lowest is allowed): counts and rates that must be positive
LIMITS = [("batch_size", 1, True), ("max_steps", 1, True), ("log_every", 1, True), ("ckpt_every", 1, True),
          ("keep_last", 1, True), ("sample_steps", 1, True), ("max_bad_steps", 1, True), ("warmup_steps", 0, True),
          ("workers", 0, True), ("sample_every", 0, True), ("adv_start_step", 0, True), ("shift_base_tokens", 1, True),
          ("lr", 0, False), ("grad_clip", 0, False), ("spike_factor", 1, False), ("disc_channels", 1, True),
          ("weight_decay", 0, True), ("kl_weight", 0, True), ("gradient_weight", 0, True), ("adv_weight", 0, True)]
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def _checked(name: str, value, annotation: str, source: str):
    """`value` if it has the field's type (an int where a float is wanted becomes a float), else a ValueError
    naming the key, the value and the type wanted."""
    kinds = [k.strip() for k in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return value
    for kind in kinds:
        allowed = _TYPES.get(kind)
        if allowed and isinstance(value, allowed) and not (isinstance(value, bool) and kind in ("int", "float")):
            return float(value) if kind == "float" else value
    wanted = " or ".join("null" if k == "None" else {"str": "text", "dict": "mapping"}.get(k, k) for k in kinds)
    hint = ""
    if isinstance(value, str) and "float" in kinds:
        try:
            float(value)
            hint = f" (YAML reads {value} as text: write it with a point, e.g. {float(value):.1e})"
        except ValueError:
            pass
    raise ValueError(f"{source}: {name} must be {wanted}, got {value!r}{hint}")


def load_config(path: Path | str, **overrides) -> TrainConfig:
    from curation.core.yamlfile import read_yaml_mapping  # PyYAML only: the GPU box has no pydantic

    data = read_yaml_mapping(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data, source=str(path))


#################################################################################
#                               Models                                          #
#################################################################################


def model_config(kind: str, name: str, args: dict) -> VAEConfig | DiTConfig:
    """The config of a registry size plus overrides; the factory builds on the meta device (no weights)."""
    factory = VAE_models[name] if kind == "vae" else DiT_models[name]
    with torch.device("meta"):
        base = factory().cfg.to_dict()
    return VAEConfig(**{**base, **args}) if kind == "vae" else DiTConfig(**{**base, **args})


def build_model(kind: str, name: str, args: dict) -> nn.Module:
    """A fresh model from its registry name plus config overrides."""
    cfg = model_config(kind, name, args)
    return VideoAutoencoder(cfg) if kind == "vae" else VideoDiT(cfg)


#################################################################################
#                               Pieces of the loop                              #
#################################################################################


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine down to min_lr_ratio at max_steps (a factor of cfg.lr)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingDiverged(RuntimeError):
    """Too many steps in a row were skipped: the run stops with what to change."""


class LossGuard:
    """Skip steps with a non-finite or spiking loss, or non-finite gradients; give up after too many in a row."""

    def __init__(self, spike_factor: float, max_bad: int, window: int = 50):
        self.spike_factor, self.max_bad = spike_factor, max_bad
        self.recent: deque = deque(maxlen=window)
        self.skipped = 0  # all skipped steps of the run (reported)
        self.in_a_row = 0  # skipped steps since the last good one (decides when to give up)

    def is_bad(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        if len(self.recent) >= 10:
            median = sorted(self.recent)[len(self.recent) // 2]
            return loss > self.spike_factor * median
        return False

    def record(self, loss: float, bad: bool) -> None:
        if bad:
            self.skipped += 1
            self.in_a_row += 1
            if self.in_a_row > self.max_bad:
                raise TrainingDiverged(
                    f"stopped: {self.in_a_row} steps had non-finite or spiking losses or non-finite gradients, "
                    f"one after another (max_bad_steps {self.max_bad}); lower lr, raise grad_clip strictness, "
                    "or check the data")
        else:
            self.in_a_row = 0
            self.recent.append(loss)

    def state(self) -> dict:
        return {"recent": list(self.recent), "skipped": self.skipped, "in_a_row": self.in_a_row}

    def load(self, state: dict) -> None:
        self.recent.extend(state["recent"])
        self.skipped = state["skipped"]
        self.in_a_row = state.get("in_a_row", 0)  # checkpoints of earlier versions counted only the total


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)


def step_generator(seed: int, step: int, rank: int, device) -> torch.Generator:
    """The generator of every random draw in one step: a function of (seed, step, rank) only."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) * 4099 + rank)
    return g


def vae_step_loss(model, batch, cfg: TrainConfig, gen, device, critic=None):
    """Loss, parts to log, and (clips, reconstructions) for the critic's own step."""
    video = batch["video"].to(device, non_blocking=True)  # (B, 3, T, H, W)
    recon, mean, logvar = model(video, generator=gen)
    loss, parts = vae_loss(recon.float(), video, mean.float(), logvar.float(), cfg.kl_weight, cfg.gradient_weight)
    parts["psnr"] = psnr(recon.detach(), video)
    if critic is not None:  # the critic's weights are frozen here: only the autoencoder learns from this term
        fool = fool_loss(critic(recon).float())
        loss = loss + cfg.adv_weight * fool
        parts["adv_fool"] = fool.detach()
    return loss, parts, (video, recon)


def critic_step(critic, train_critic, optimizer, video, recon, autocast, dist) -> float:
    """One update of the autoencoder's critic on real clips and (detached) reconstructions; none (nan
    returned) when its loss or a gradient is not finite."""
    critic.requires_grad_(True)
    with autocast:  # real and fake in one call: DDP allows one forward per backward
        logits = train_critic(torch.cat([video, recon.detach()])).float()
    real, fake = logits.chunk(2)
    loss = critic_loss(real, fake)
    loss.backward()
    grads = [p.grad for p in critic.parameters() if p.grad is not None]
    finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) and math.isfinite(loss.item())
    if all_finite(finite, dist):
        optimizer.step()
    else:
        loss = torch.tensor(float("nan"))
    optimizer.zero_grad(set_to_none=True)
    critic.requires_grad_(False)
    return loss.item()


def dit_step_loss(model, batch, cfg: TrainConfig, gen, device, patch_size):
    x0 = batch["latent"].to(device, non_blocking=True)  # (B, C, t, h, w)
    text, mask = batch["text"].to(device), batch["mask"].to(device)
    tokens = math.prod(math.ceil(s / p) for s, p in zip(x0.shape[2:], patch_size, strict=True))
    t = sample_timesteps(x0.shape[0], gen, cfg.timestep_mean, cfg.timestep_std,
                         shift_for_size(tokens, cfg.shift_base_tokens)).to(device)
    noise = torch.randn(x0.shape, generator=gen, device=device)
    given, weight = {}, None
    if cfg.condition_prob > 0:  # drawn after t and noise: runs without conditioning keep their batches
        cond_mask = conditioning_mask(x0.shape, cfg.condition_prob, cfg.condition_mode, gen, x0).to(device)
        given = {"cond": x0, "cond_mask": cond_mask}
        weight = (~cond_mask).unsqueeze(1)  # (B, 1, T, H, W): given cells are not predicted
    if cfg.frame_noise_prob > 0:  # drawn last: runs without it keep their batches
        t = frame_times(t, x0.shape[2], cfg.frame_noise_prob, gen, cfg.timestep_mean, cfg.timestep_std,
                        shift_for_size(tokens, cfg.shift_base_tokens))
    loss = flow_loss(model, x0, t, noise, weight=weight, text=text, mask=mask, **given)
    return loss, {"tokens": tokens}


CONDITION_MODES = ("frames", "regions", "objects", "both", "all")


def conditioning_mask(shape, prob: float, mode: str, gen: torch.Generator, x0: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, H, W) bool over latent cells: what each clip of a batch is given. "frames": first latent
    frames (`conditioning_frames`); "regions": a box, given inside (outpainting) or outside
    (inpainting) in every frame (`conditioning_regions`); "objects": everything but the cells least like
    the rest of their frame (`conditioning_objects`, needs the latents `x0`); "both": each clip frames or
    a region; "all": each clip any of the three."""
    b, _, t, h, w = shape
    frames = conditioning_frames(b, t, prob, gen)[:, :, None, None].expand(b, t, h, w)
    if mode == "frames":
        return frames
    regions = conditioning_regions(b, t, h, w, prob, gen)
    if mode == "regions":
        return regions
    if mode == "both":
        use_regions = (torch.rand(b, generator=gen, device=gen.device) < 0.5).view(b, 1, 1, 1)
        return torch.where(use_regions, regions, frames)
    objects = conditioning_objects(x0, prob, gen)
    if mode == "objects":
        return objects
    pick = torch.randint(0, 3, (b,), generator=gen, device=gen.device).view(b, 1, 1, 1)
    return torch.where(pick == 0, frames, torch.where(pick == 1, regions, objects))


def conditioning_objects(x0: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """(B, T, H, W) bool: with probability `prob` a clip is given all but its objects. An object cell is
    one whose latent lies far from its frame's typical (median) latent: above a random share (0.3-0.7) of
    the frame's largest distance, grown by 0-2 cells. A region edit (`training.sample.edit_region`) asks
    for the same: regenerate the cells around an object, keep the rest; trained on such holes, the DiT
    learns that what fills one sits where the hole is, not where the prompt would put it."""
    if x0 is None:
        raise ValueError("condition_mode 'objects' needs the clips' latents")
    b, _, t, h, w = x0.shape
    chosen = (torch.rand(b, generator=gen, device=gen.device) < prob).tolist()
    share = (0.3 + 0.4 * torch.rand(b, generator=gen, device=gen.device)).tolist()
    grow = torch.randint(0, 3, (b,), generator=gen, device=gen.device).tolist()
    scaled = stand_out(x0)
    out = torch.zeros(b, t, h, w, dtype=torch.bool, device=x0.device)
    for i in range(b):
        hole = scaled[i:i + 1] > share[i]
        hole = grow_cells(hole, grow[i]) if grow[i] else hole
        if chosen[i] and hole.any():  # a flat clip has no object: nothing is given
            out[i] = ~hole[0]
    return out


def conditioning_regions(batch: int, frames: int, height: int, width: int, prob: float,
                         gen: torch.Generator) -> torch.Tensor:
    """(batch, frames, height, width) bool: with probability `prob` a random box of latent cells (a quarter
    to three quarters of each side) is given in every frame, or everything but the box; never all."""
    chosen = torch.rand(batch, generator=gen, device=gen.device) < prob
    inside = torch.rand(batch, generator=gen, device=gen.device) < 0.5
    out = torch.zeros(batch, frames, height, width, dtype=torch.bool, device=gen.device)
    for i in range(batch):
        if not chosen[i] or height * width < 2:
            continue
        bh, bw = (int(torch.randint(max(1, n // 4), max(2, 3 * n // 4 + 1), (1,), generator=gen, device=gen.device))
                  for n in (height, width))
        y = int(torch.randint(0, height - bh + 1, (1,), generator=gen, device=gen.device))
        x = int(torch.randint(0, width - bw + 1, (1,), generator=gen, device=gen.device))
        box = torch.zeros(height, width, dtype=torch.bool, device=gen.device)
        box[y: y + bh, x: x + bw] = True
        if box.all():  # something must be left to predict
            box[0, 0] = False
        out[i] = box if inside[i] else ~box
    return out


def conditioning_frames(batch: int, frames: int, prob: float, gen: torch.Generator) -> torch.Tensor:
    """(batch, frames) bool: with probability `prob` a clip's first k latent frames (1 <= k < frames) are
    given — k = 1 is image-to-video, more is extending a clip; images (1 frame) are never given."""
    chosen = torch.rand(batch, generator=gen, device=gen.device) < prob
    k = torch.randint(1, max(2, frames), (batch,), generator=gen, device=gen.device)
    given = torch.arange(frames, device=gen.device)[None] < k[:, None]
    return given & chosen[:, None] & (frames > 1)


#################################################################################
#                               Set-up                                          #
#################################################################################


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int
    world: int
    device: torch.device

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """DDP when torchrun set WORLD_SIZE > 1: nccl with a GPU per local rank, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if pick_device() == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, device)


def make_dataset(cfg: TrainConfig, shards: Path, vae_dir: Path | None) -> tuple[PixelBatches | LatentBatches, dict | None]:
    """The run's batches, plus the latent shards' info.json for the DiT.

    For the DiT this also sets the input and text widths in cfg.model_args: the latent shards fix them."""
    if cfg.kind == "vae":
        dataset = PixelBatches(shards, cfg.batch_size, cfg.seed, cfg.bucket_batch_size)
        factor = model_config("vae", cfg.model, cfg.model_args).temporal_factor
        bad = [b for b in dataset.buckets if not valid_frames(parse_bucket(b)[0], factor)]
        if bad:
            raise ValueError(f"buckets {bad} have frame counts the autoencoder cannot take (1 + {factor}k); re-shard with other --buckets")
        return dataset, None
    info = read_latent_info(shards)
    if vae_dir is not None and Path(info["vae"]).resolve() != Path(vae_dir).resolve():
        raise ValueError(f"latent shards in {shards} were encoded with {info['vae']}, not {vae_dir}; run `rushes encode` again")
    # shards encoded before the blend was recorded in info.json get the default
    blend = cfg.caption_blend if cfg.caption_blend is not None else info.get("caption_blend", DEFAULT_CAPTION_BLEND)
    dataset = LatentBatches(shards, cfg.batch_size, cfg.seed, blend, cfg.caption_dropout, cfg.bucket_batch_size)
    cfg.model_args = {**cfg.model_args, "in_channels": info["latent_channels"], "text_dim": info["text_dim"]}
    return dataset, info


@dataclass
class Learner:
    """What learns, and what a checkpoint holds: model, EMA, optimizer, schedule, guard (and the autoencoder's critic)."""

    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    guard: LossGuard
    critic: nn.Module | None = None
    critic_optimizer: torch.optim.Optimizer | None = None
    # what forward and backward go through: the DDP wrappers under torchrun, else the modules themselves
    train_model: nn.Module | None = None
    train_critic: nn.Module | None = None


def build_learner(cfg: TrainConfig, device: torch.device) -> Learner:
    """Model, EMA, optimizer and schedule; the same seed on every rank gives identical initial weights."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.kind, cfg.model, cfg.model_args).to(device)
    if cfg.kind == "dit" and cfg.condition_prob > 0 and not model.cfg.frame_conditioning:
        raise ValueError(f"condition_prob {cfg.condition_prob} needs a DiT that reads given frames: "
                         "set model_args: {frame_conditioning: true}")
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg))
    learner = Learner(model, ema, optimizer, scheduler, LossGuard(cfg.spike_factor, cfg.max_bad_steps), train_model=model)
    if cfg.kind == "vae" and cfg.adv_weight > 0:
        learner.critic = learner.train_critic = PatchDiscriminator(cfg.disc_channels).to(device).requires_grad_(False)
        learner.critic_optimizer = torch.optim.AdamW(learner.critic.parameters(), lr=cfg.lr, betas=(0.5, 0.9),
                                                     weight_decay=0.0)
    return learner


def describe_model(cfg: TrainConfig, model: nn.Module, latent_info: dict | None) -> ModelMeta:
    """model.json of this run; a DiT's records the latents and text encoder sampling must match."""
    trained_on = {}
    if latent_info is not None:
        trained_on = {key: latent_info[key] for key in ("vae", "text_encoder", "latent_mean", "latent_std",
                                                        "temporal_factor", "spatial_factor")}
        trained_on["shift_base_tokens"] = cfg.shift_base_tokens
    return ModelMeta(cfg.kind, cfg.model, model.cfg.to_dict(), asdict(cfg), **trained_on)


def resume_or_refuse(learner: Learner, run_dir: Path, resume: bool, dist: Distributed) -> int:
    """The step to start from: 0 for a new run, the newest checkpoint's with `resume` (everything restored,
    RNG states too); a run directory with checkpoints and no `resume` is refused."""
    existing = ckpt.list_checkpoints(run_dir)
    if not existing:
        return 0
    if not resume:
        raise FileExistsError(f"{run_dir} already has checkpoints; pass --resume to continue or choose a new --run")
    state = ckpt.load_checkpoint(existing[-1], device=str(dist.device))
    learner.model.load_state_dict(state["model"])
    learner.ema.load_state_dict(state["ema"])
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.scheduler.load_state_dict({**state["state"]["scheduler"], "lr_lambdas": [None]})
    learner.guard.load(state["state"]["guard"])
    ckpt.set_rng_state(state["rng"])
    if learner.critic is not None:
        if state["discriminator"] is None:
            raise ValueError(f"{existing[-1]} was trained without the adversarial term; resume with adv_weight 0")
        learner.critic.load_state_dict(state["discriminator"][0])
        learner.critic_optimizer.load_state_dict(state["discriminator"][1])
    saved_world = state["state"]["data"]["world_size"]
    if saved_world != dist.world and dist.master:
        print(f"note: resumed with {dist.world} processes, the checkpoint had {saved_world}: batch order differs")
    return state["state"]["step"]


def wrap_for_ddp(learner: Learner, cfg: TrainConfig, dataset, dist: Distributed) -> None:
    if dist.world == 1:
        return
    # a 1-frame (image) batch skips the autoencoder's temporal layers: DDP must look for unused parameters,
    # or the rank with the image never joins the all-reduce of their gradients and the other rank waits forever
    images = cfg.kind == "vae" and any(parse_bucket(b)[0] == 1 for b in dataset.buckets)
    learner.train_model = _ddp(learner.model, dist.device, find_unused_parameters=images)
    if learner.critic is not None:
        learner.train_critic = _ddp(learner.critic.requires_grad_(True), dist.device)  # DDP hooks only parameters that need grad
        learner.critic.requires_grad_(False)


def _ddp(module: nn.Module, device, **kwargs) -> nn.Module:
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, **kwargs)


#################################################################################
#                               One step, one checkpoint                        #
#################################################################################


def loss_agreed(loss: torch.Tensor, guard: LossGuard, dist: Distributed) -> tuple[float, bool]:
    """(mean loss over ranks, skip this step): every rank skips when any rank saw a bad loss."""
    value = loss.detach().float().item()
    flags = torch.tensor([0.0 if guard.is_bad(value) else 1.0, value], device=dist.device)
    if dist.world > 1:
        torch.distributed.all_reduce(flags)  # sum of "good" flags, sum of losses
    skipped = flags[0].item() < dist.world
    mean_loss = flags[1].item() / dist.world
    return mean_loss, skipped


def all_finite(finite: bool, dist: Distributed) -> bool:
    """True when this value is finite on every rank, so that all ranks take (or skip) an update together."""
    if dist.world == 1:
        return finite
    flag = torch.tensor([0.0 if finite else 1.0], device=dist.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.item() == 0


def train_step(learner: Learner, batch: dict, cfg: TrainConfig, step: int, dist: Distributed,
               autocast) -> tuple[float, float, dict, str]:
    """batch -> loss -> guard -> backward -> clip -> guard -> optimizer -> EMA (-> critic) -> schedule.

    Returns (mean loss over ranks, gradient norm, parts to log, why the step was skipped ("" when it was not))."""
    gen = step_generator(cfg.seed, step, dist.rank, dist.device)
    adversarial = learner.critic is not None and step >= cfg.adv_start_step
    with autocast:
        if cfg.kind == "vae":
            loss, parts, (video, recon) = vae_step_loss(learner.train_model, batch, cfg, gen, dist.device,
                                                        learner.critic if adversarial else None)
        else:
            loss, parts = dit_step_loss(learner.train_model, batch, cfg, gen, dist.device, learner.model.cfg.patch_size)
    mean_loss, bad_loss = loss_agreed(loss, learner.guard, dist)
    grad_norm, skipped = float("nan"), ""
    if bad_loss:
        skipped = "spiking loss" if math.isfinite(mean_loss) else "non-finite loss"
    else:
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(learner.model.parameters(), cfg.grad_clip).item()
        # a finite loss can still give a nan or inf gradient (an overflow in backward): one such update
        # would make every weight nan, so the step is skipped like a bad loss
        if not all_finite(math.isfinite(grad_norm), dist):
            skipped = "non-finite gradients"
    learner.guard.record(mean_loss, bool(skipped))
    if not skipped:
        learner.optimizer.step()
        update_ema(learner.ema, learner.model, cfg.ema_decay)
        if adversarial:
            parts["adv_critic"] = critic_step(learner.critic, learner.train_critic, learner.critic_optimizer,
                                              video, recon, autocast, dist)
    learner.optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # a skipped first step: the schedule counts steps, torch's warning does not apply
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`", category=UserWarning)
        learner.scheduler.step()
    return mean_loss, grad_norm, parts, skipped


def save_learner(learner: Learner, cfg: TrainConfig, run_dir: Path, done: int, dist: Distributed, dataset) -> None:
    """Checkpoint after `done` steps: weights, EMA, optimizer (and critic), with what resuming needs in state.json."""
    scheduler = {k: v for k, v in learner.scheduler.state_dict().items() if k != "lr_lambdas"}  # a lambda is code, not state
    state = {"config": asdict(cfg), "scheduler": scheduler, "guard": learner.guard.state(),
             "data": {"next_step": done, "world_size": dist.world, "seed": cfg.seed,
                      "batches_per_epoch": dataset.plan.batches_per_epoch}}
    critic = None
    if learner.critic is not None:
        critic = (learner.critic.state_dict(), learner.critic_optimizer.state_dict())
    ckpt.save_checkpoint(run_dir, done, learner.model.state_dict(), learner.ema.state_dict(),
                         learner.optimizer.state_dict(), state, cfg.keep_last, critic)


def check_replicas_in_sync(model: nn.Module, device) -> None:
    """DDP ranks must end with identical weights; a silent divergence would make checkpoints meaningless."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().view(1).to(device)
    gathered = [torch.zeros_like(checksum) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, checksum)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"DDP replicas diverged: parameter checksums {[g.item() for g in gathered]}")


#################################################################################
#                               Logging and samples                             #
#################################################################################


class TrainLog:
    """Rank 0's account of a run: metrics.jsonl, TensorBoard (when installed), and lines on stdout unless quiet."""

    def __init__(self, run_dir: Path, quiet: bool):
        self.run_dir, self.quiet = run_dir, quiet
        self.writer = _tensorboard(run_dir)

    def say(self, line: str) -> None:
        if not self.quiet:
            print(line)

    def step(self, record: dict, total: int, eta: float | None = None) -> None:
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer:
            for k, v in record.items():
                if isinstance(v, float) and math.isfinite(v):
                    self.writer.add_scalar(f"train/{k}", v, record["step"])
        extra = f" psnr {record['psnr']:.2f}" if "psnr" in record else ""
        if "skip" in record:
            extra += f"  (skipped: {record['skip']})"
        left = f"  eta {clock(eta)}" if eta is not None else ""
        self.say(f"step {record['step']:6d}/{total}  loss {record['loss']:.4f}{extra}  lr {record['lr']:.2e}  "
                 f"skipped {record['skipped']}{left}")

    def videos(self, step: int, videos: list) -> None:
        """A few frames of each (T, H, W, 3) uint8 video, to TensorBoard."""
        if self.writer:
            for i, video in enumerate(videos):
                frames = torch.from_numpy(video).permute(0, 3, 1, 2)[:: max(1, len(video) // 4)]
                self.writer.add_images(f"samples/{i}", frames, step, dataformats="NCHW")

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def clock(seconds: float) -> str:
    """12:34 or 1:02:03."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional on a bare GPU box: metrics.jsonl still has everything
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def write_training_samples(ema: nn.Module, meta: ModelMeta, prompts: list[str], cfg: TrainConfig, run_dir: Path,
                           step: int, device, log: TrainLog) -> None:
    """RUN/samples/stepNNNNNNN-i.mp4 from the EMA weights; skipped with a note when sampling cannot run here."""
    from curation.core.video import write_video  # PyAV only where a video is written

    try:
        videos = generate(ema, meta, prompts, frames=None, height=None, width=None, steps=cfg.sample_steps,
                          cfg_scale=cfg.cfg_scale, seed=cfg.seed, device=device)
    except (ImportError, RuntimeError, FileNotFoundError) as e:
        print(f"note: training samples skipped at step {step}: {e}")
        return
    for i, video in enumerate(videos):
        write_video(run_dir / "samples" / f"step{step:07d}-{i}.mp4", video, fps=8)
    log.videos(step, videos)
    ema.train()


def plot_loss_curve(run_dir: Path) -> Path | None:
    """loss_curve.png from metrics.jsonl (matplotlib is imported here only)."""
    metrics = Path(run_dir) / METRICS
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if math.isfinite(r["loss"])]
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(Path(run_dir).name)
    fig.tight_layout()
    path = Path(run_dir) / "loss_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#################################################################################
#                               The loop                                        #
#################################################################################


def train(cfg: TrainConfig, shards: Path, run_dir: Path, vae_dir: Path | None = None, max_steps: int | None = None,
          resume: bool = False, quiet: bool = False, progress=None) -> dict:
    """Train until `max_steps` (default cfg.max_steps); returns {'step', 'loss', 'skipped', 'seconds'}.

    `progress(done, total, last good loss, skipped steps)` is called on rank 0 before the first step and after
    each (the CLI's progress bar)."""
    dist = setup_distributed()
    run_dir, shards = Path(run_dir), Path(shards)
    stop_at = max_steps if max_steps is not None else cfg.max_steps

    dataset, latent_info = make_dataset(cfg, shards, vae_dir)
    learner = build_learner(cfg, dist.device)
    meta = describe_model(cfg, learner.model, latent_info)
    start_step = resume_or_refuse(learner, run_dir, resume, dist)
    if dist.master:
        ckpt.write_model_json(run_dir, meta)
    wrap_for_ddp(learner, cfg, dataset, dist)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dist.device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    loader = make_loader(dataset, start_step, stop_at, dist.rank, dist.world, cfg.workers)  # step s: batch s*world + rank
    log = TrainLog(run_dir, quiet) if dist.master else None
    sampling = bool(dist.master and cfg.kind == "dit" and cfg.sample_every and cfg.sample_prompts)

    if dist.master:
        params = sum(p.numel() for p in learner.model.parameters())
        log.say(f"training {cfg.model} ({params / 1e6:.2f}M parameters) on {dist.device} x{dist.world}, "
                f"steps {start_step} -> {stop_at}")
    started, last_loss = time.time(), float("nan")
    if progress is not None and dist.master:
        progress(start_step, stop_at, last_loss, learner.guard.skipped)
    learner.model.train()
    for step, batch in zip(range(start_step, stop_at), loader, strict=False):
        loss, grad_norm, parts, skipped = train_step(learner, batch, cfg, step, dist, autocast)
        if not skipped:
            last_loss = loss
        done = step + 1
        if dist.master and (done % cfg.log_every == 0 or done == stop_at or step == start_step or skipped):
            record = {"step": done, "loss": loss, "lr": learner.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                      "skipped": learner.guard.skipped, "bucket": batch["bucket"],
                      **{k: float(v) for k, v in parts.items()}}
            if skipped:  # every skipped step is in metrics.jsonl, with why
                record["skip"] = skipped
            log.step(record, stop_at, (time.time() - started) / (done - start_step) * (stop_at - done))
        if progress is not None and dist.master:
            progress(done, stop_at, last_loss, learner.guard.skipped)
        if sampling and done % cfg.sample_every == 0:
            write_training_samples(learner.ema, meta, cfg.sample_prompts, cfg, run_dir, done, dist.device, log)
        if dist.master and (done % cfg.ckpt_every == 0 or done == stop_at):
            save_learner(learner, cfg, run_dir, done, dist, dataset)
        if dist.world > 1:
            torch.distributed.barrier()

    if dist.world > 1:
        for replicated in (learner.model, learner.critic):
            if replicated is not None:
                check_replicas_in_sync(replicated, dist.device)
    if dist.master:
        plot_loss_curve(run_dir)
        log.close()
    if dist.world > 1:  # no rank tears the process group down while another still uses it
        torch.distributed.barrier()
    seconds = time.time() - started
    if dist.master:
        log.say(f"trained {cfg.model}: steps {start_step} -> {stop_at}, last loss {last_loss:.4f}, "
                f"skipped {learner.guard.skipped}, {seconds:.0f}s; checkpoints in {run_dir / ckpt.CHECKPOINTS}")
    return {"step": stop_at, "loss": last_loss, "skipped": learner.guard.skipped, "seconds": seconds}


#################################################################################
#                               Command line (torchrun)                         #
#################################################################################


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the autoencoder (--kind vae) or the video DiT (--kind dit).")
    parser.add_argument("--kind", choices=["vae", "dit"], default=None, help="overrides the config's kind")
    parser.add_argument("--shards", required=True, type=Path)
    # under torchrun spell it --run-dir: torchrun's own parser reads a bare --run as its --run-path
    parser.add_argument("--run-dir", "--run", dest="run", required=True, type=Path)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--vae", type=Path, default=None, help="the autoencoder run the latent shards came from")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    default = Path(__file__).parent / "configs" / ("vae-tiny.yaml" if args.kind == "vae" else "dit-tiny.yaml")
    cfg = load_config(args.config or default, kind=args.kind)
    cap_torch_threads(64)
    try:
        train(cfg, args.shards, args.run, args.vae, args.max_steps, args.resume)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
