"""Finding a model named by a setting (`hf:<hub id>` or `hf:/local/dir`) and naming it in provenance.

Resolution happens before any work starts: a model that is not there fails here, with a message
naming the setting to change, never half-way through a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from curation.core.models import UNTRAINED_MARKER, UNTRAINED_TAG, ModelNotFound, pick_device  # noqa: F401


@dataclass(frozen=True)
class ResolvedModel:
    source: str  # what from_pretrained gets: a local directory or a hub id
    identity: str  # provenance: "hf:<id>@<commit>" or "hf:<dir>", tagged when untrained
    revision: str | None
    local_files_only: bool
    untrained: bool


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or os.sep in name and Path(name).expanduser().exists()


def resolve_model(spec: str, setting: str, revision: str | None = None) -> ResolvedModel:
    """Find the model `spec` ("hf:…") names for the option `setting` (e.g. "--captioner")."""
    if not spec.startswith("hf:") or len(spec) <= 3:
        raise ModelNotFound(f"{setting} {spec!r}: expected 'hf:<hub id>' or 'hf:/path/to/model'")
    name = spec[3:]
    if _looks_like_path(name):
        path = Path(name).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ModelNotFound(
                f"{setting} {spec!r}: {path} is not a model directory (no config.json there); "
                f"point {setting} at a directory saved with save_pretrained, or use a hub id"
            )
        untrained = (path / UNTRAINED_MARKER).exists()
        identity = f"hf:{path}" + (UNTRAINED_TAG if untrained else "")
        return ResolvedModel(str(path), identity, None, True, untrained)

    from huggingface_hub import snapshot_download

    try:
        # a cached snapshot's directory name is its commit hash: the revision recorded in provenance
        snapshot = Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception as cached_error:  # noqa: BLE001 - any miss means "not in the local cache"
        if hub_offline():
            raise ModelNotFound(
                f"{setting} {spec!r}: model {name!r} is not in the local Hugging Face cache and the hub is "
                f"offline (HF_HUB_OFFLINE=1). Download it on a connected machine, or set {setting} to a local "
                f"directory (hf:/path/to/model) or to 'metadata'. ({type(cached_error).__name__})"
            ) from None
        from huggingface_hub import HfApi

        try:
            commit = HfApi().model_info(name, revision=revision).sha
        except Exception as e:  # noqa: BLE001
            raise ModelNotFound(f"{setting} {spec!r}: the hub has no model {name!r} ({e}); fix {setting}") from None
        return ResolvedModel(name, f"hf:{name}@{commit}", revision, False, False)
    untrained = (snapshot / UNTRAINED_MARKER).exists()
    identity = f"hf:{name}@{snapshot.name}" + (UNTRAINED_TAG if untrained else "")
    return ResolvedModel(str(snapshot), identity, revision, True, untrained)


def pick_dtype(dtype: str, device: str):
    """bfloat16 on a GPU, float32 on the CPU, unless the config names one."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}

