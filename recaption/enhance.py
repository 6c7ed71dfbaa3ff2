"""Caption enhancement and prompt upsampling with a text LLM (any transformers causal LM).

The same rewrite serves two moments: after captioning, a caption is rewritten into the dense style;
at sampling time, a user's short prompt is upsampled into the dense style the model was trained on
(`upsample_prompt`). The output passes the same checks as a caption.
"""

from __future__ import annotations

import logging

from recaption.checks import check_caption
from recaption.models import ResolvedModel, eos_ids, pick_device, pick_dtype, resolve_model
from recaption.prompts import enhance_prompt

log = logging.getLogger(__name__)


class Enhancer:
    """A causal LM that rewrites texts into the dense caption style, a batch at a time."""

    def __init__(self, spec: str, max_new_tokens: int = 256, device: str = "auto", dtype: str = "auto",
                 revision: str | None = None, model: ResolvedModel | None = None):
        self.model_ref = model or resolve_model(spec, "--enhancer", revision)
        self.identity = self.model_ref.identity
        self.max_new_tokens = max_new_tokens
        self.device_setting, self.dtype_setting = device, dtype
        self.model = None

    def setup(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ref = self.model_ref
        kwargs = dict(revision=ref.revision, local_files_only=ref.local_files_only)
        self.device = pick_device(self.device_setting)
        self.tokenizer = AutoTokenizer.from_pretrained(ref.source, **kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            ref.source, dtype=pick_dtype(self.dtype_setting, self.device), **kwargs)
        self.model.to(self.device).eval()
        self.eos = eos_ids(self.model)

    def _prompt_text(self, text: str) -> str:
        instruction = enhance_prompt(text)
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": instruction}]
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return instruction + "\n\nParagraph:"  # a base model without a chat template continues the text

    def rewrite(self, texts: list[str]) -> list[tuple[str, str | None]]:
        """(rewritten text, check failure or None) for each input text, greedy decoding."""
        import torch

        if self.model is None:
            self.setup()
        prompts = [self._prompt_text(t) for t in texts]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         temperature=None, top_p=None, top_k=None,
                                         pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        results = []
        for text, tokens in zip(decoded, new_tokens.tolist(), strict=True):
            hit_limit = len(tokens) >= self.max_new_tokens and not any(t in self.eos for t in tokens)
            results.append((text.strip(), check_caption(text, "dense", hit_limit)))
        return results


def upsample_prompt(prompt: str, enhancer: Enhancer | str, fallback: bool = True) -> str:
    """A user's short prompt rewritten into the dense caption style the video model was trained on.

    `enhancer` is an `Enhancer` (reuse one across calls) or a spec ("hf:<id or dir>"). When the
    rewrite fails its checks, the original prompt is returned with a warning (`fallback=True`) or a
    ValueError is raised naming the failure.
    """
    if not prompt or not prompt.strip():
        raise ValueError("upsample_prompt: the prompt is empty; give a short description of the video")
    if isinstance(enhancer, str):
        enhancer = Enhancer(enhancer)
    [(dense, problem)] = enhancer.rewrite([prompt])
    if problem is None:
        return dense
    message = f"prompt upsampling with {enhancer.identity} failed ({problem})"
    if not fallback:
        raise ValueError(message)
    log.warning("%s; using the prompt as given", message)
    return prompt
