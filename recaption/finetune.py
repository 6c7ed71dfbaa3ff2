"""`rushes train-captioner`: fine-tune a VLM captioner on a run's captions (the DALL·E 3 recipe).

A small set of highly descriptive captions (imported from annotators with `file:PATH`, or any
captioner's rows in OUT/captions/) teaches a VLM of a family rushes runs (Qwen2-VL, Qwen2.5-VL,
Idefics3 / SmolVLM) to write them; the result captions the rest of the corpus with
`rushes caption --captioner hf:RUN/final`.

Each clip gives one example per caption (dense, and short when there is one): the clip's frames
sampled as captioning samples them, the same prompt (`recaption.prompts`, with the clip's measured
hints) in the model's chat template, and the caption as the assistant's answer; the loss is on the
answer's tokens only. Clips are split by a hash of their id into train and held-out evaluation sets.

The loop is straight: for each step, `batch_size` examples (in forward passes of up to
`examples_per_pass`, padded on the left so every answer ends the row; each example's loss is the
mean over its own answer tokens, as it would be alone), clip the gradient norm, step AdamW. The example order is a function of the
seed and the step alone, and a checkpoint holds the trainable weights, the optimizer and the RNG
states, so N steps + resume + M steps equals N + M steps straight. LoRA (peft) trains low-rank
adapters on the language model's attention and MLP projections and is merged into the weights at the
end (the vision encoder stays frozen unless `vision_learning_rate` is set: then it trains whole, at that
rate); rank 0 fine-tunes every weight. On a GPU the forward runs under bfloat16 autocast over float32 trainable
weights (a LoRA base is held in bfloat16). It is a training job, not a Ray stage: under torchrun
(`torchrun --nproc-per-node N -m workflows.cli train-captioner ...`) each process takes every N-th
example of a step and the summed gradients are all-reduced before the step, so N processes take
the steps one would; rank 0 writes everything.

RUN/ holds: checkpoints/step-NNNNNN.pt, metrics.jsonl (train and eval loss), final/ (a
save_pretrained directory with processor and README.md model card), samples.jsonl (held-out clips
captioned by the trained model beside their target captions).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from curation.core.config import StrictModel
from curation.core.rundir import RunDir, now_utc
from curation.core.schema import CAP, M
from curation.core.stage import PermanentError
from curation.core.tables import kept_clips, latest_captions
from recaption.config import (
    TRAINED_SETTINGS,
    TRAINED_SETTINGS_FILE,
    CaptionConfig,
    check_model_spec,
    import_path,
)
from recaption.prompts import dense_prompt, hints_from_row, short_prompt

# name parts of the vision encoder and projector: Qwen2-VL / Qwen2.5-VL (visual), Idefics3 (vision_model, connector)
VISION_MODULES = ("visual", "vision_model", "vision_tower", "connector", "multi_modal_projector")
VISION_MODULE_NAMES = rf".*\b({'|'.join(VISION_MODULES)})\b.*"  # peft's exclude_modules: a module inside one
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
AUTO_LORA_ABOVE = 1_000_000_000  # parameters: larger models get LoRA (rank 16) unless told otherwise
AUTO_LORA_RANK = 16
SAME_ON_RESUME = ("source", "base", "batch_size", "seed", "eval_fraction", "frames", "frames_per_second",
                  "frame_max_side", "still_frames", "vision_learning_rate")


class CaptionerTrainConfig(StrictModel):
    source: str = Field(..., description="the captions to learn: 'file:PATH' (imported first) or a captioner name "
                                         "of OUT/captions/")
    base: str = Field(..., description="'hf:<hub id>' or 'hf:/dir' of the VLM to fine-tune")
    lora_rank: int | None = Field(None, ge=0, description="LoRA rank; 0: full fine-tuning; null: LoRA "
                                                          f"{AUTO_LORA_RANK} above {AUTO_LORA_ABOVE:,} parameters")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scale numerator; null: twice the rank")
    max_steps: int = Field(200, ge=1)
    batch_size: int = Field(4, ge=1, description="examples per optimizer step")
    examples_per_pass: int = Field(8, ge=1, description="examples in one forward and backward pass (a step takes "
                                                        "batch_size in passes of at most this many); lower it "
                                                        "when memory is short, the result is the same")
    learning_rate: float = Field(1e-4, gt=0)
    vision_learning_rate: float | None = Field(
        None, ge=0, description="peak learning rate of the vision encoder and its projector; null: learning_rate "
                                "(with LoRA: frozen; set, it trains the encoder whole at this rate); 0 freezes them, so only the language model learns to read their features (at the "
                                "language model's rate, a randomly initialised encoder's output collapses to what "
                                "the caption template needs: colour, not shape or motion)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of clips held out for the evaluation loss")
    eval_every: int = Field(50, ge=1)
    save_every: int = Field(50, ge=1)
    samples: int = Field(4, ge=0, description="held-out clips captioned by the trained model at the end")
    seed: int = 0
    frames: int = Field(8, ge=1)
    frames_per_second: float | None = Field(None, gt=0)
    frame_max_side: int = Field(448, ge=28)
    still_frames: bool = Field(False, description="each frame given twice in a row (CaptionConfig.still_frames); "
                                                  "captioning with the trained model does the same")
    max_new_tokens: int = Field(256, ge=8, description="generation limit of the sample captions")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if import_path(v) is not None and not import_path(v).strip():
            raise ValueError("'file:' needs the path of a caption file: file:annotations.jsonl (or .parquet)")
        return v

    @field_validator("base")
    @classmethod
    def _base(cls, v: str) -> str:
        return check_model_spec(v, "base")

    def caption_config(self, captioner: str, dtype: str = "auto", checks: bool = True) -> CaptionConfig:
        """The captioning settings the training shares (frame sampling, device) for `captioner`."""
        return CaptionConfig(captioner=captioner, frames=self.frames, frames_per_second=self.frames_per_second,
                             frame_max_side=self.frame_max_side, still_frames=self.still_frames,
                             device=self.device, dtype=dtype, checks=checks,
                             max_new_tokens=self.max_new_tokens, short_max_new_tokens=min(48, self.max_new_tokens))


def is_vision(parameter_name: str) -> bool:
    """Whether a parameter belongs to the vision encoder or its projector."""
    return bool(set(parameter_name.split(".")) & set(VISION_MODULES))


@dataclass(frozen=True)
class Example:
    clip: dict  # the kept clip's manifest row
    kind: str  # dense | short
    target: str

    @property
    def instruction(self) -> str:
        hints = hints_from_row(self.clip)
        return dense_prompt(hints) if self.kind == "dense" else short_prompt(hints)


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch

        if self.size > 1:
            torch.distributed.barrier()

    def sum(self, tensor):
        """The tensor summed over every process (in place)."""
        import torch

        if self.size > 1:
            torch.distributed.all_reduce(tensor)
        return tensor


def join_world(device_setting: str) -> World:
    """torchrun's WORLD_SIZE > 1: gloo on the CPU, nccl with one GPU per local rank."""
    import torch

    from recaption.models import pick_device

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    cuda = pick_device(device_setting) == "cuda"
    if cuda:  # "cuda" then means this rank's GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return World(int(os.environ["RANK"]), size)


# -- data ----------------------------------------------------------------------------------------------
SHOWN_LEFT_OUT = 20  # rows of a caption file named one by one when they match no kept clip


def source_captioner(out: Path | str, source: str, world: World = World(), log=print) -> str:
    """The captioner name whose rows are the targets; a `file:` source is imported first (by rank 0; resumes),
    and what the import made of the file is logged: its rows left out (no kept clip matches them) and why."""
    from recaption.run import caption_run, plan_captions

    if import_path(source) is None:
        return source
    config = CaptionConfig(captioner=source)
    name = None
    if world.main:
        summary = caption_run(out, config)
        for line in summary.left_out[:SHOWN_LEFT_OUT]:
            log(f"left out: {line}")
        if len(summary.left_out) > SHOWN_LEFT_OUT:
            log(f"left out: ... and {len(summary.left_out) - SHOWN_LEFT_OUT} more rows")
        log(summary.line())
        name = summary.captioner
    world.barrier()
    return name or plan_captions(out, config)[0].identity


def captioned_clips(run: RunDir, captioner: str) -> list[tuple[dict, dict]]:
    """(kept clip, its newest good caption by `captioner`), ordered by clip id."""
    captions = {r[CAP.clip_id]: r for r in latest_captions(run, captioner).to_pylist()}
    if not captions:
        known = sorted({str(c) for c in latest_captions(run)[CAP.captioner].to_pylist()})
        raise ValueError(f"--from {captioner!r}: no good caption of a kept clip in {run.captions}; captioners there: "
                         f"{', '.join(known) or 'none'}")
    return sorted(((c, captions[c[M.clip_id]]) for c in kept_clips(run) if c[M.clip_id] in captions),
                  key=lambda pair: pair[0][M.clip_id])


def readable(run: RunDir, pairs: list[tuple[dict, dict]], log=print) -> list[tuple[dict, dict]]:
    """The pairs whose clip file can be read; each one left out is named, with why."""
    from recaption.run import clip_file

    kept = []
    for clip, caption in pairs:
        try:
            clip_file(run, clip)
        except PermanentError as e:
            log(f"train-captioner: skipped clip {clip[M.clip_id]}: {e}")
            continue
        kept.append((clip, caption))
    if not kept:
        raise ValueError(f"no clip captioned by the source can be read in {run.root}; re-run curation to extract them")
    return kept


def split(pairs: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Held-out clips by a hash of (seed, clip id): the same clips stay out however the run grows."""
    def key(pair):
        return hashlib.sha256(f"{seed}:{pair[0][M.clip_id]}".encode()).hexdigest()

    ordered = sorted(pairs, key=key)
    n_eval = min(len(ordered) - 1, max(1, round(eval_fraction * len(ordered)))) if eval_fraction > 0 else 0
    return ordered[n_eval:], ordered[:n_eval]


def examples(pairs: list[tuple[dict, dict]]) -> list[Example]:
    out = []
    for clip, caption in pairs:
        out.append(Example(clip, "dense", caption[CAP.caption_dense]))
        if caption[CAP.caption_short]:
            out.append(Example(clip, "short", caption[CAP.caption_short]))
    return out


def data_fingerprint(captioner: str, train: list[Example], held_out: list[Example]) -> dict:
    """What a checkpoint was trained on: a resume must see the same examples in the same order, so a
    caption file edited since, or a captioner that has captioned more clips, is another run."""
    digest = hashlib.sha256(captioner.encode())
    for part in (train, held_out):
        digest.update(b"\0")
        for e in part:
            digest.update(json.dumps([e.clip[M.clip_id], e.kind, e.target, e.instruction]).encode())
    return {"captioner": captioner, "train_examples": len(train), "held_out_examples": len(held_out),
            "sha256": digest.hexdigest()}


def example_at(train: list[Example], position: int, seed: int) -> Example:
    """The example seen at a global position: each epoch a fresh permutation of the seed and the epoch."""
    epoch, index = divmod(position, len(train))
    order = list(range(len(train)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return train[order[index]]


# -- the model -------------------------------------------------------------------------------------------
class Learner:
    """The captioner being trained: its model (maybe with LoRA adapters), processor and optimizer."""

    def __init__(self, cfg: CaptionerTrainConfig, run: RunDir):
        import torch

        from recaption.models import pick_device
        from recaption.vlm import VLMCaptioner

        self.cfg, self.run = cfg, run
        self.device = pick_device(cfg.device)
        probe = VLMCaptioner(cfg.caption_config(cfg.base))  # resolves the model: a missing one fails here
        self.base_identity = probe.identity
        self.rank = cfg.lora_rank if cfg.lora_rank is not None else self._auto_rank(probe.model_ref)
        # float32 trainable weights; a frozen LoRA base may sit in bfloat16 on a GPU
        dtype = "bfloat16" if self.rank and self.device == "cuda" else "float32"
        self.vlm = VLMCaptioner(cfg.caption_config(cfg.base, dtype=dtype), model=probe.model_ref)
        self.vlm.setup()  # its tokenizer pads on the left: every row's answer ends at the row's end
        model = self.vlm.model
        vision = [p for n, p in model.named_parameters() if is_vision(n)]
        if cfg.vision_learning_rate is not None and not vision:
            raise ValueError(f"vision_learning_rate {cfg.vision_learning_rate:g} is for the vision encoder, but the "
                             f"model has none (looked for modules named {', '.join(VISION_MODULES)})")
        if self.rank:
            from peft import LoraConfig, get_peft_model

            # adapters on the language model only; peft freezes everything else, the vision encoder too,
            # unless it is given a learning rate of its own (then it trains whole, at that rate)
            lora = LoraConfig(r=self.rank, lora_alpha=cfg.lora_alpha or 2 * self.rank, lora_dropout=0.0,
                              target_modules=LORA_TARGETS, exclude_modules=VISION_MODULE_NAMES)
            model = get_peft_model(model, lora)
            for p in vision:
                p.requires_grad_(bool(cfg.vision_learning_rate))
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        elif cfg.vision_learning_rate == 0:
            for p in vision:
                p.requires_grad_(False)
        model.train()
        self.model = model
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def param_groups(self) -> list[dict]:
        """One group, or with a positive `vision_learning_rate` the vision encoder's parameters in a
        second; each group's `scale` is its share of the scheduled learning rate."""
        cfg = self.cfg
        if not cfg.vision_learning_rate:  # the same rate for all, or a frozen encoder (not in trainable)
            return [{"params": list(self.trainable.values()), "scale": 1.0}]
        vision = {n for n in self.trainable if is_vision(n)}
        if not vision:
            raise ValueError("vision_learning_rate: the model has no trainable vision encoder parameters "
                             f"(looked for modules named {', '.join(VISION_MODULES)})")
        return [{"params": [p for n, p in self.trainable.items() if n not in vision], "scale": 1.0},
                {"params": [p for n, p in self.trainable.items() if n in vision],
                 "scale": cfg.vision_learning_rate / cfg.learning_rate}]

    @staticmethod
    def _auto_rank(ref) -> int:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(ref.source, revision=ref.revision, local_files_only=ref.local_files_only)
        text = getattr(config, "text_config", config)
        hidden, layers = getattr(text, "hidden_size", 0), getattr(text, "num_hidden_layers", 0)
        vocab = getattr(text, "vocab_size", 0)
        approx = 12 * layers * hidden * hidden + vocab * hidden  # transformer blocks + embeddings
        return AUTO_LORA_RANK if approx > AUTO_LORA_ABOVE else 0

    def frames(self, clip: dict) -> dict:
        from recaption.run import with_frames

        try:
            return with_frames(self.run, clip, self.vlm.config)
        except PermanentError as e:  # readable when training began, not now
            raise PermanentError(f"clip {clip[M.clip_id]}: {e}") from e

    def passes(self, examples: list[Example]):
        """The examples in groups of `examples_per_pass`, each example with its clip's frames."""
        per_pass = self.cfg.examples_per_pass
        for first in range(0, len(examples), per_pass):
            yield [(e, self.frames(e.clip)) for e in examples[first:first + per_pass]]

    def losses(self, batch: list[tuple[Example, dict]]):
        """Each example's mean cross-entropy over its answer's tokens given its frames and prompt, (n,),
        from one forward pass over the batch (left-padded, so the answers are the rows' last tokens)."""
        import torch

        from recaption.vlm import FRAMES_KEY

        tokenizer = self.vlm.processor.tokenizer
        texts, answers = [], []
        for example, clip in batch:
            n = len(clip[FRAMES_KEY])
            texts.append(self.vlm.chat_text(example.instruction, n, answer=example.target))
            # the answer and the template's end of turn: the full text's tokens minus the prompt's, counted on
            # the text (each media placeholder is one token in both), without the processor
            prompt = self.vlm.chat_text(example.instruction, n)
            answers.append(len(tokenizer(texts[-1])["input_ids"]) - len(tokenizer(prompt)["input_ids"]))
        inputs = self.vlm.encode(texts, [clip for _, clip in batch])
        inputs = {k: v.to(self.device) for k, v in inputs.items() if hasattr(v, "to")}
        ids = inputs["input_ids"]
        keep = max(answers) + 1  # logits of the last `keep` positions predict the last keep - 1 tokens
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device == "cuda"):
            logits = self.model(**inputs, logits_to_keep=keep).logits[:, :-1].float()
        targets = ids[:, ids.shape[1] - keep + 1:]
        from_end = torch.arange(keep - 1, 0, -1, device=ids.device)  # a target's distance from the row's end, +1
        scored = from_end[None, :] <= torch.tensor(answers, device=ids.device)[:, None]
        token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return (token_loss * scored).sum(1) / scored.sum(1)

    def loss(self, example: Example, clip_with_frames: dict):
        """Mean cross-entropy of one example's answer tokens given the frames and the prompt."""
        return self.losses([(example, clip_with_frames)])[0]

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return cfg.learning_rate * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# -- checkpoints -----------------------------------------------------------------------------------------
def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step-*.pt"))


def save_checkpoint(learner: Learner, run_dir: Path, step: int, data: dict | None = None) -> Path:
    import torch

    path = run_dir / "checkpoints" / f"step-{step:06d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "config": learner.cfg.model_dump(), "rank": learner.rank, "data": data,
             "trainable": {n: p.detach().cpu() for n, p in learner.trainable.items()},
             "optimizer": learner.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a killed run leaves no half-written checkpoint
    return path


def resume_or_refuse(learner: Learner, run_dir: Path, resume: bool, data: dict | None = None) -> int:
    """The step to start from: 0 for a new run, the newest checkpoint's with `resume` (refused when the
    checkpoint was trained with other settings or on other data than `data`, `data_fingerprint`'s)."""
    import torch

    existing = checkpoints(run_dir)
    if not existing:
        return 0
    if not resume:
        raise FileExistsError(f"{run_dir} already has checkpoints; pass --resume to continue or choose a new --run")
    state = torch.load(existing[-1], map_location="cpu", weights_only=False)
    if state["rank"] != learner.rank:
        raise ValueError(f"{existing[-1]} was trained with LoRA rank {state['rank']}, not {learner.rank}; "
                         "resume with the same --lora-rank")
    now = learner.cfg.model_dump()
    changed = [f"{k} {state['config'][k]!r} -> {now[k]!r}" for k in SAME_ON_RESUME if state["config"].get(k) != now[k]]
    if changed:  # these decide the data and its order: a resume with others is another run
        raise ValueError(f"{existing[-1]} was trained with other settings ({'; '.join(changed)}); resume with "
                         "the same ones or choose a new --run")
    was = state.get("data")  # None in a checkpoint written before the data was recorded
    if was and data and was["sha256"] != data["sha256"]:
        raise ValueError(
            f"{existing[-1]} was trained on other captions ({was['captioner']}: {was['train_examples']} examples, "
            f"{was['held_out_examples']} held out; now {data['captioner']}: {data['train_examples']} and "
            f"{data['held_out_examples']}): the caption file was edited or the captioner captioned more clips since. "
            "A resume must see the same examples; choose a new --run to train on these")
    if set(state["trainable"]) != set(learner.trainable):  # e.g. LoRA adapters on modules this version leaves out
        raise ValueError(f"{existing[-1]} trained other weights than this run would ({len(state['trainable'])} "
                         f"tensors, now {len(learner.trainable)}): it was written by another version of "
                         "train-captioner or for another model; choose a new --run")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            learner.trainable[name].copy_(value)
    learner.optimizer.load_state_dict(state["optimizer"])
    for group, fresh in zip(learner.optimizer.param_groups, learner.param_groups(), strict=True):
        group["scale"] = fresh["scale"]  # a checkpoint written before groups had a scale has none
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


# -- the loop ------------------------------------------------------------------------------------------
MAX_BAD_STEPS = 20  # steps in a row with a non-finite loss or gradient before the run stops


class TrainingDiverged(RuntimeError):
    """Too many steps in a row had a non-finite loss or gradient."""


def evaluate(learner: Learner, held_out: list[Example], world: World = World()) -> float | None:
    """Mean loss over the held-out examples (each process takes every size-th one)."""
    import torch

    if not held_out:
        return None
    learner.model.eval()
    with torch.no_grad():
        losses = [float(x) for batch in learner.passes(held_out[world.rank::world.size]) for x in learner.losses(batch)]
    learner.model.train()
    total = world.sum(torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=learner.device))
    return float(total[0] / total[1])


def train_captioner(out: Path | str, run_dir: Path | str, cfg: CaptionerTrainConfig, resume: bool = False,
                    log=print, stop_at: int | None = None) -> dict:
    """Fine-tune `cfg.base` on the captions of `cfg.source` in the run at `out`; returns the summary.

    `stop_at` pauses after that step with a checkpoint (as a killed run would), for a later resume."""
    import torch

    world = join_world(cfg.device)
    log = log if world.main else (lambda *_: None)
    run, run_dir = RunDir(out), Path(run_dir)
    captioner = source_captioner(out, cfg.source, world, log)
    pairs = readable(run, captioned_clips(run, captioner), log)
    train_pairs, eval_pairs = split(pairs, cfg.eval_fraction, cfg.seed)
    train, held_out = examples(train_pairs), examples(eval_pairs)
    torch.manual_seed(cfg.seed)
    learner = Learner(cfg, run)
    data = data_fingerprint(captioner, train, held_out)
    start = resume_or_refuse(learner, run_dir, resume, data)
    if start > cfg.max_steps:
        raise ValueError(f"{run_dir} is at step {start}, past --max-steps {cfg.max_steps}; pass --max-steps "
                         f"{start} or more to continue it")
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"train-captioner: {len(train_pairs)} clips ({len(train)} examples) to train, {len(eval_pairs)} held out, "
        f"{captioner} -> {learner.base_identity}, " + (f"LoRA rank {learner.rank}" if learner.rank else "full fine-tuning")
        + (f" on {world.size} processes" if world.size > 1 else "") + (f", resumed at step {start}" if start else ""))
    if start == 0:
        first_eval = eval_loss = evaluate(learner, held_out, world)
        if world.main:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # a run killed before its first checkpoint
            _metric(run_dir, {"step": 0, "eval_loss": first_eval})
    else:  # metrics past the checkpoint (a run killed between the two) are measured again
        first_eval, eval_loss = _keep_metrics_until(run_dir, start) if world.main else (None, None)
    bad_in_a_row = 0
    mine = [i for i in range(cfg.batch_size) if i % world.size == world.rank]  # this process's share of a step
    for step in range(start, min(cfg.max_steps, stop_at or cfg.max_steps)):
        for group in learner.optimizer.param_groups:
            group["lr"] = learner.learning_rate(step) * group["scale"]
        total = torch.zeros((), dtype=torch.float64, device=learner.device)
        for batch in learner.passes([example_at(train, step * cfg.batch_size + i, cfg.seed) for i in mine]):
            loss = learner.losses(batch).sum() / cfg.batch_size
            loss.backward()
            total += float(loss.detach())
        if world.size > 1:  # the gradient of the whole step: every process's share summed
            for p in learner.trainable.values():
                if p.grad is None:  # a process with no example this step adds a zero share
                    p.grad = torch.zeros_like(p)
                world.sum(p.grad)
            world.sum(total)
        norm = float(torch.nn.utils.clip_grad_norm_(list(learner.trainable.values()), cfg.grad_clip))
        done = step + 1
        record = {"step": done, "train_loss": float(total)}
        # one nan or inf gradient would make every weight nan: such a step is skipped. The gradients were
        # summed over the processes above, so every process sees the same norm and skips with the others.
        if math.isfinite(norm) and math.isfinite(float(total)):
            learner.optimizer.step()
            bad_in_a_row = 0
        else:
            bad_in_a_row += 1
            record["skip"] = "non-finite loss" if not math.isfinite(float(total)) else "non-finite gradients"
            log(f"train-captioner: step {done} skipped: {record['skip']}")
            if bad_in_a_row > MAX_BAD_STEPS:
                raise TrainingDiverged(f"stopped: {bad_in_a_row} steps in a row had non-finite losses or gradients; "
                                       "lower --learning-rate or check the captions and clips")
        learner.optimizer.zero_grad(set_to_none=True)
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            eval_loss = evaluate(learner, held_out, world)
            record["eval_loss"] = eval_loss
            log(f"step {done}/{cfg.max_steps}: train loss {float(total):.4f}"
                + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else ""))
        if world.main:
            _metric(run_dir, record)
            if done % cfg.save_every == 0 or done in (cfg.max_steps, stop_at):
                save_checkpoint(learner, run_dir, done, data)
    world.barrier()
    if stop_at is not None and stop_at < cfg.max_steps:
        return {"paused_at": stop_at}
    summary = {"steps": cfg.max_steps, "train_clips": len(train_pairs), "eval_clips": len(eval_pairs),
               "eval_loss": eval_loss, "samples": 0, "final": str(run_dir / "final")}
    if world.main:
        final = save_final(learner, run_dir, captioner, len(train_pairs), len(eval_pairs), first_eval, eval_loss)
        summary["samples"] = write_samples(cfg, run, run_dir, final, eval_pairs)
        log(f"train-captioner: wrote {final} (caption with --captioner hf:{final})")
    world.barrier()
    return summary


def _keep_metrics_until(run_dir: Path, step: int) -> tuple[float | None, float | None]:
    """Drop metric records after `step`; returns the eval loss before training and the last one measured."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    records = [r for r in records if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    evals = [r["eval_loss"] for r in records if r.get("eval_loss") is not None]
    return next((r.get("eval_loss") for r in records if r["step"] == 0), None), (evals[-1] if evals else None)


def _metric(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def save_final(learner: Learner, run_dir: Path, captioner: str, n_train: int, n_eval: int,
               first_eval: float | None, eval_loss: float | None) -> Path:
    """The trained model as a plain save_pretrained directory (LoRA merged), with its processor and card."""
    import torch

    final = run_dir / "final"
    model = learner.model.merge_and_unload() if learner.rank else learner.model
    if learner.rank:
        model = model.to(torch.float32 if learner.device == "cpu" else torch.bfloat16)
    model.save_pretrained(final)
    learner.vlm.processor.tokenizer.padding_side = "left"
    learner.vlm.processor.save_pretrained(final)
    cfg = learner.cfg
    (final / TRAINED_SETTINGS_FILE).write_text(json.dumps({k: getattr(cfg, k) for k in TRAINED_SETTINGS}, indent=1))
    method = f"LoRA rank {learner.rank} (alpha {cfg.lora_alpha or 2 * learner.rank:g}), merged" if learner.rank \
        else "full fine-tuning"
    fmt = (lambda v: "n/a" if v is None else f"{v:.4f}")  # noqa: E731
    (final / "README.md").write_text(
        f"# Captioner fine-tuned by `rushes train-captioner`\n\n"
        f"| | |\n|---|---|\n"
        f"| base model | `{learner.base_identity}` |\n"
        f"| data | captions of `{captioner}` in `{learner.run.root}`: {n_train} clips trained, {n_eval} held out |\n"
        f"| method | {method} |\n"
        f"| steps | {cfg.max_steps} x {cfg.batch_size} examples, learning rate {cfg.learning_rate:g}"
        + (f" (vision encoder {cfg.vision_learning_rate:g})" if cfg.vision_learning_rate else "")
        + (", vision encoder frozen" if not any(is_vision(n) for n in learner.trainable) else "") + " |\n"
        f"| frames | {cfg.frames} per clip, longest side {cfg.frame_max_side}"
        + (", each given twice" if cfg.still_frames else "") + f" (saved in {TRAINED_SETTINGS_FILE}: captioning "
        "with this model uses them unless told otherwise) |\n"
        f"| eval loss | {fmt(first_eval)} before, {fmt(eval_loss)} after |\n"
        f"| trained | {now_utc().isoformat()} |\n\n"
        f"Use it with `rushes caption --out OUT --captioner hf:{final}`.\n")
    return final


def write_samples(cfg: CaptionerTrainConfig, run: RunDir, run_dir: Path, final: Path,
                  eval_pairs: list[tuple[dict, dict]]) -> int:
    """Held-out clips captioned by the trained model, beside their targets, in RUN/samples.jsonl."""
    from recaption.run import with_frames
    from recaption.vlm import VLMCaptioner

    pairs = eval_pairs[: cfg.samples]
    if not pairs:
        return 0
    config = cfg.caption_config(f"hf:{final}", checks=False)
    captioner = VLMCaptioner(config)
    written = captioner([with_frames(run, clip, config) for clip, _ in pairs])
    with open(run_dir / "samples.jsonl", "w") as f:
        for (clip, target), row in zip(pairs, written, strict=True):
            f.write(json.dumps({"clip_id": clip[M.clip_id], "target_dense": target[CAP.caption_dense],
                                "target_short": target[CAP.caption_short], "dense": row[CAP.caption_dense],
                                "short": row[CAP.caption_short]}) + "\n")
    return len(pairs)
