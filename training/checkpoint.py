"""A run directory on disk: model.json (what the model is) and checkpoints (its weights and the trainer's state).

`ModelMeta` is model.json; `load_trained` builds a run's model from it and loads its newest weights,
for sampling, encoding and tests. Tensors are in safetensors, everything else in JSON, written
atomically, the last N checkpoints kept.

A checkpoint is a directory `step-000123/` with model.safetensors, ema.safetensors, optimizer.safetensors
(plus discriminator.safetensors when the autoencoder trains with an adversarial term) and state.json
(step, config, optimizer hyper-parameters, scheduler, RNG states, data position, guard counters).
It is written under a temporary name and renamed into place, so a killed run never leaves a
checkpoint that looks whole. Loading reads tensors and JSON only: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn

from training.dit import DiTConfig, VideoDiT
from training.vae import VAEConfig, VideoAutoencoder

MODEL_JSON = "model.json"
CHECKPOINTS = "checkpoints"
DISCRIMINATOR = "discriminator.safetensors"


#################################################################################
#                               model.json                                      #
#################################################################################


@dataclass
class ModelMeta:
    """model.json: what a run's model is and, for the DiT, the latents and text it was trained on."""

    kind: str  # vae | dit
    model: str  # the size's name in VAE_models / DiT_models
    model_config: dict  # every VAEConfig / DiTConfig field
    train_config: dict  # the TrainConfig it was trained with
    # DiT only (None for the autoencoder, and then not written): what sampling needs to match its training
    vae: str | None = None  # the autoencoder run of its latent shards
    text_encoder: str | None = None
    latent_mean: list[float] | None = None  # per latent channel: the DiT sees (z - mean) / std
    latent_std: list[float] | None = None
    temporal_factor: int | None = None  # the autoencoder's, to size the latent grid of a requested video
    spatial_factor: int | None = None
    shift_base_tokens: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict) -> ModelMeta:
        """From model.json as any version wrote it; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        meta = cls(**{k: v for k, v in data.items() if k in known})
        if meta.kind == "dit" and meta.shift_base_tokens is None:
            meta.shift_base_tokens = 256  # DiT runs from before it was recorded trained with 256
        return meta


def write_model_json(run_dir: Path, meta: ModelMeta) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MODEL_JSON).write_text(json.dumps(meta.to_dict(), indent=1))


def load_trained(run_dir: Path, device: str = "cpu", weights: str = "ema") -> tuple[nn.Module, ModelMeta]:
    """The model of a run from model.json and its newest checkpoint's EMA (or raw) weights; plus model.json."""
    run_dir = Path(run_dir)
    meta_path = run_dir / MODEL_JSON
    checkpoints = list_checkpoints(run_dir)
    if not meta_path.exists() or not checkpoints:
        raise FileNotFoundError(f"{run_dir} has no trained model (needs {MODEL_JSON} and {CHECKPOINTS}/); train it first")
    meta = ModelMeta.from_dict(json.loads(meta_path.read_text()))
    if meta.kind == "vae":
        model = VideoAutoencoder(VAEConfig(**meta.model_config))
    else:
        model = VideoDiT(DiTConfig(**meta.model_config))
    model.load_state_dict(load_tensors(checkpoints[-1] / f"{weights}.safetensors", device))
    return model.to(device).eval(), meta


#################################################################################
#                               Checkpoints                                     #
#################################################################################


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device=device)


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state_dict -> (tensors keyed 'param.name', JSON-able rest)."""
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> dict[str, torch.Tensor]:
    states = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"rng.cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(run_dir: Path, step: int, model_state: dict, ema_state: dict, optimizer_state: dict,
                    state: dict, keep_last: int = 3, discriminator: tuple[dict, dict] | None = None) -> Path:
    """Write checkpoints/step-XXXXXX atomically; delete all but the newest `keep_last`.

    `discriminator`: (weights, optimizer state) of the autoencoder's adversarial critic, if it has one."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    opt_tensors, opt_meta = flatten_optimizer(optimizer_state)
    _save_tensors(model_state, tmp / "model.safetensors")
    _save_tensors(ema_state, tmp / "ema.safetensors")
    _save_tensors({**opt_tensors, **rng_state()}, tmp / "optimizer.safetensors")
    if discriminator is not None:
        d_opt_tensors, d_opt_meta = flatten_optimizer(discriminator[1])
        _save_tensors({**{f"model.{k}": v for k, v in discriminator[0].items()},
                       **{f"optimizer.{k}": v for k, v in d_opt_tensors.items()}}, tmp / DISCRIMINATOR)
        state = {**state, "discriminator_optimizer": d_opt_meta}
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer": opt_meta}, indent=1))
    for f in tmp.iterdir():  # make the bytes durable before the rename publishes them
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories of a killed write are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / "state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    """{'model', 'ema', 'optimizer', 'rng', 'state'} from a checkpoint directory, plus 'discriminator':
    (weights, optimizer state) when it has one."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    extra = load_tensors(path / "optimizer.safetensors", device="cpu")
    rng = {k: v for k, v in extra.items() if k.startswith("rng.")}
    opt_tensors = {k: v.to(device) for k, v in extra.items() if not k.startswith("rng.")}
    discriminator = None
    if (path / DISCRIMINATOR).exists():
        tensors = load_tensors(path / DISCRIMINATOR, device)
        weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        opt = {k.removeprefix("optimizer."): v for k, v in tensors.items() if k.startswith("optimizer.")}
        discriminator = (weights, unflatten_optimizer(opt, state.pop("discriminator_optimizer")))
    return {
        "discriminator": discriminator,
        "model": load_tensors(path / "model.safetensors", device),
        "ema": load_tensors(path / "ema.safetensors", device),
        "optimizer": unflatten_optimizer(opt_tensors, state.pop("optimizer")),
        "rng": rng,
        "state": state,
    }
