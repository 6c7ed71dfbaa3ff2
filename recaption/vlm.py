"""Vision-language captioners through transformers: the Qwen2-VL family (frames as one video) and the
Idefics3 / SmolVLM family (frames as a sequence of images).

One captioner loads its model once (`setup`) and captions a batch of clips per call with batched,
left-padded generation: a dense caption and a short one per clip, each checked before it counts.
"""

from __future__ import annotations

from pathlib import Path

from curation.core.schema import M
from curation.core.stage import Stage
from recaption.captions import caption_row
from recaption.checks import check_caption
from recaption.config import CaptionConfig
from recaption.models import ResolvedModel, eos_ids, pick_device, pick_dtype, resolve_model
from recaption.prompts import PROMPT_VERSION, dense_prompt, hints_from_row, short_prompt

# model_type in config.json -> how frames are given to the model
VIDEO_FAMILIES = {"qwen2_vl", "qwen2_5_vl"}
IMAGE_FAMILIES = {"idefics3", "smolvlm"}
FRAMES_KEY = "frames"  # batch rows carry their sampled frames (list of RGB uint8 arrays) under this key
FRAME_TIMES_KEY = "frame_times"  # and the time (s, from the clip's start) of each frame


class VLMCaptioner(Stage):
    """Captions clips with a transformers vision-language model named `hf:<hub id>` or `hf:/dir`."""

    name = "caption"
    needs_frames = True

    def __init__(self, config: CaptionConfig, model: ResolvedModel | None = None):
        self.config = config
        # resolving first means a missing model fails before any work, naming --captioner
        self.model_ref = model or resolve_model(config.captioner, "--captioner", config.revision)
        self.identity = self.model_ref.identity
        self.prompt_version = PROMPT_VERSION
        self.model = None
        self.processor = None

    def setup(self) -> None:
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        ref = self.model_ref
        if ref.local_files_only and not Path(ref.source).exists():  # on another node: its own cache or copy
            ref = self.model_ref = resolve_model(self.config.captioner, "--captioner", self.config.revision)
        kwargs = dict(revision=ref.revision, local_files_only=ref.local_files_only)
        model_type = AutoConfig.from_pretrained(ref.source, **kwargs).model_type
        if model_type in VIDEO_FAMILIES:
            self.family = "video"
        elif model_type in IMAGE_FAMILIES:
            self.family = "images"
        else:
            supported = ", ".join(sorted(VIDEO_FAMILIES | IMAGE_FAMILIES))
            raise ValueError(f"--captioner {self.config.captioner}: model type {model_type!r} is not supported "
                             f"(supported: {supported}); choose a model of one of these families")
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.processor = AutoProcessor.from_pretrained(ref.source, **kwargs)
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        self.model = AutoModelForImageTextToText.from_pretrained(ref.source, dtype=self.dtype, **kwargs)
        self.model.to(self.device).eval()
        self.eos = eos_ids(self.model)

    # -- prompts -------------------------------------------------------------------------------
    def chat_text(self, instruction: str, num_frames: int, answer: str | None = None) -> str:
        """The model's chat template applied to one user turn holding the clip and the instruction, then
        the assistant's turn: open (to generate), or holding `answer` (a training target)."""
        if self.family == "video":
            media = [{"type": "video"}]
        else:
            media = [{"type": "image"} for _ in range(num_frames)]
        messages = [{"role": "user", "content": media + [{"type": "text", "text": instruction}]}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if answer is None:
            return prompt
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        full = self.processor.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
        # the answer must follow the very prompt generation sees; else end it with the end-of-turn token
        return full if full.startswith(prompt) else prompt + answer + self.processor.tokenizer.eos_token

    def model_inputs(self, instructions: list[str], rows: list[dict]):
        texts = [self.chat_text(instr, len(row[FRAMES_KEY])) for instr, row in zip(instructions, rows, strict=True)]
        return self.encode(texts, rows)

    def encode(self, texts: list[str], rows: list[dict]):
        """The processor's tensors for chat texts and their rows' frames."""
        import numpy as np

        if self.family == "video":
            # still frames: each frame as many times as a patch spans frames, as the model's images are
            patch_frames = getattr(getattr(self.processor, "video_processor", None), "temporal_patch_size", 2)
            repeat = patch_frames if self.config.still_frames else 1
            videos = [np.repeat(np.stack(row[FRAMES_KEY]), repeat, axis=0) for row in rows]
            # the real frame rate of the sampled frames gives the model true temporal positions
            metadata = [_video_metadata(row, repeat) for row in rows]
            inputs = self.processor(text=texts, videos=videos, video_metadata=metadata, padding=True,
                                    return_tensors="pt")
        else:
            images = [list(row[FRAMES_KEY]) for row in rows]
            inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt",
                                    do_image_splitting=False)
        return inputs

    # -- generation ----------------------------------------------------------------------------
    def generate(self, instructions: list[str], rows: list[dict], max_new_tokens: int,
                 min_new_tokens: int | None = None) -> tuple[list[str], list[bool], int]:
        """Generated texts, whether each hit the token limit, and the number of tokens generated."""
        import torch

        inputs = self.model_inputs(instructions, rows)
        inputs = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v) else v.to(self.device))
                  for k, v in inputs.items() if hasattr(v, "to")}
        settings = dict(max_new_tokens=max_new_tokens, do_sample=self.config.do_sample,
                        pad_token_id=self.processor.tokenizer.pad_token_id)
        if self.config.do_sample:
            settings["temperature"] = self.config.temperature
        else:  # greedy; clear sampling defaults a checkpoint's generation_config may carry
            settings.update(temperature=None, top_p=None, top_k=None)
        if min_new_tokens:
            settings["min_new_tokens"] = min_new_tokens
        with torch.inference_mode():
            output = self.model.generate(**inputs, **settings)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        hit_limit = [len(r) >= max_new_tokens and not any(t in self.eos for t in r) for r in new_tokens.tolist()]
        generated = int(sum(_count_until_eos(r, self.eos) for r in new_tokens.tolist()))
        return [t.strip() for t in texts], hit_limit, generated

    def __call__(self, batch: list[dict]) -> list[dict]:
        if self.model is None:
            self.setup()
        hints = [hints_from_row(row) for row in batch]
        dense, dense_cut, _ = self.generate([dense_prompt(h) for h in hints], batch, self.config.max_new_tokens)
        short, short_cut, _ = self.generate([short_prompt(h) for h in hints], batch,
                                            self.config.short_max_new_tokens)
        rows = []
        for i, row in enumerate(batch):
            error = None
            if self.config.checks:
                problem = check_caption(dense[i], "dense", dense_cut[i])
                error = f"dense caption {problem}" if problem else None
                problem = None if error else check_caption(short[i], "short", short_cut[i])
                error = error or (f"short caption {problem}" if problem else None)
            rows.append(caption_row(row[M.clip_id], None if error else dense[i], None if error else short[i],
                                    self.identity, self.prompt_version, hints[i], error, self.config.checks))
        return rows


def _video_metadata(row: dict, repeat: int = 1) -> dict:
    """The processor's video metadata for the row's sampled frames, each given `repeat` times in a row
    (a repeated frame counts as frames `repeat` times as close, so a patch still spans one frame's time)."""
    times = row.get(FRAME_TIMES_KEY) or []
    n = len(row[FRAMES_KEY])
    span = (times[-1] - times[0]) if len(times) > 1 else 0.0
    fps = repeat * ((n - 1) / span if span > 0 else float(row.get(M.fps) or 1.0))
    n *= repeat
    return {"fps": fps, "total_num_frames": n, "duration": n / fps, "frames_indices": list(range(n))}


def _count_until_eos(tokens: list[int], eos: set[int]) -> int:
    for i, t in enumerate(tokens):
        if t in eos:
            return i + 1
    return len(tokens)
