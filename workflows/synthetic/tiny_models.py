"""Random-weight models of the real architectures, built from configs and saved like a hub checkpoint.

Nothing can be downloaded here, so tests and benchmarks build the model classes real users load
(Qwen2.5-VL for video, Idefics3 for image sequences, Qwen2 for text enhancement) with a tokenizer made
locally: byte-level BPE learnt from rushes' own prompts (so a prompt costs about as many tokens as
with a real tokenizer) plus the special tokens each processor and chat template need. The saved
directory is then loaded through the same `hf:/path` code path a user's checkpoint takes.

Every directory written here carries `UNTRAINED_MARKER`, and the captioner's provenance says
"untrained" whenever it loads such a directory, so placeholder output can never pass as a real
model's.
"""

from __future__ import annotations

import json
from pathlib import Path

from curation.core.models import UNTRAINED_MARKER

# ChatML-style conversation format of the Qwen family, written for these tests.
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The "User:<image>… text<end_of_utterance>\nAssistant:" format of Idefics3 / SmolVLM.
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% if m['content'] is string %} {{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %} {{ c['text'] }}{% elif c['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
IDEFICS3_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                     "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]

# Layouts. "tiny" runs in well under a second per batch on a CPU; "3b" is the Qwen2.5-VL-3B layout
# for GPU throughput measurements (3.44 B parameters with this small vocabulary; the real checkpoint's
# 151k-token vocabulary brings it to 3.75 B, which changes only the embedding and output layers).
QWEN_LAYOUTS = {
    # "tiny" only runs the mechanics in tests (nothing is learned with it), so its RoPE stays as it was
    "tiny": dict(
        text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                          "mrope_section": [2, 3, 3]}),
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                    fullatt_block_indexes=[1], window_size=56),
    ),
    # "small" is trained from scratch on tiny grids (benchmarks/bench_captioner.py: a 4 x 4 token grid per
    # temporal slice at 112 px), so its multimodal RoPE differs from the real checkpoints'. transformers
    # gives the t section the fastest frequencies, h the next, w the slowest; with the 3B's theta of 1e6
    # (head dim 32 here: 16 frequencies) one token's step in h turns at most 0.032 rad and in w 0.00018,
    # so the language model could not tell where in a 4 x 4 frame a token is, nor which way a shape moved
    # (a 4-layer copy of this model reading the direction of a marked token moving over a 4 x 4 x 4 grid:
    # 23% at theta 1e6, chance; 92% at theta 10, after 200 steps). The real models' grids are tens of
    # tokens wide and pretrained; at theta 10 the steps are 1..0.65 rad in t, 0.56..0.27 in h, 0.24..0.12 in w.
    "small": dict(
        text=dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10.0,
                                                          "mrope_section": [4, 6, 6]}),
        vision=dict(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=256,
                    fullatt_block_indexes=[1, 3], window_size=112),
    ),
    "3b": dict(
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                          "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                    fullatt_block_indexes=[7, 15, 23, 31], window_size=112),
    ),
}


def _bpe_vocab(vocab_size: int = 1024) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary learnt from rushes' own prompts and captions, so a prompt costs about
    as many tokens as with a real tokenizer (one token per byte would make prefill several times longer)."""
    import json as _json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from recaption.metadata import describe
    from recaption.prompts import CAMERA_PHRASES, dense_prompt, enhance_prompt, short_prompt

    corpus = []
    for camera in CAMERA_PHRASES:
        hints = {"duration_s": 4.5, "camera_motion": camera, "motion": "slow", "brightness": "bright",
                 "dominant_colors": ["red", "blue", "green"]}
        corpus += [dense_prompt(hints), short_prompt(hints), *describe(hints), enhance_prompt(describe(hints)[1])]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    model = _json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _mark_untrained(out: Path, family: str, layout: str) -> None:
    note = {"family": family, "layout": layout, "weights": "random (untrained placeholder built by workflows.synthetic.tiny_models)"}
    (out / UNTRAINED_MARKER).write_text(json.dumps(note, indent=2))


def qwen_tokenizer(chat_template: str = QWEN_CHAT_TEMPLATE):
    from transformers import Qwen2Tokenizer

    vocab, merges = _bpe_vocab()
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    tok.chat_template = chat_template
    return tok


def build_qwen2_5_vl(out: Path | str, layout: str = "tiny", seed: int = 0) -> Path:
    """A Qwen2.5-VL checkpoint (model, tokenizer, image and video processors) with random weights."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out)
    tok = qwen_tokenizer()
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    spec = QWEN_LAYOUTS[layout]
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=32768, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], **spec["text"]),
        vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, **spec["vision"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    with torch.device("cuda" if layout == "3b" and torch.cuda.is_available() else "cpu"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    # small frames keep tiny tests fast; the real checkpoints' processors allow far more pixels
    max_pixels = 56 * 56 * 4 if layout == "tiny" else 448 * 448
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=max_pixels),
        video_processor=Qwen2VLVideoProcessor(min_pixels=28 * 28, max_pixels=max_pixels, cap_pixels_per_frame=False),
        tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _mark_untrained(out, "qwen2_5_vl", layout)
    return out


def build_idefics3(out: Path | str, seed: int = 0) -> Path:
    """An Idefics3 (SmolVLM v1 architecture) checkpoint with random weights; it takes frames as images."""
    import torch
    from transformers import (
        GPT2Tokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    out = Path(out)
    vocab, merges = _bpe_vocab()
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                        eos_token="<end_of_utterance>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": IDEFICS3_SPECIALS})
    ids = {s: tok.convert_tokens_to_ids(s) for s in IDEFICS3_SPECIALS[:6]}
    # image_seq_len = (image_size / patch_size)^2 / scale_factor^2 = (32/8)^2 / 4 = 4 tokens per frame
    config = Idefics3Config(
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, bos_token_id=ids["<|im_start|>"],
                         eos_token_id=ids["<end_of_utterance>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        image_token_id=ids["<image>"], scale_factor=2, pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                               max_image_size={"longest_edge": 32}),
        tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _mark_untrained(out, "idefics3", "tiny")
    return out


def build_qwen2_lm(out: Path | str, seed: int = 0) -> Path:
    """A Qwen2 causal text LM with random weights, for caption enhancement and prompt upsampling."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    tok = qwen_tokenizer()
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    _mark_untrained(out, "qwen2", "tiny")
    return out
