"""Settings of the caption stage (the `caption:` section of a workflow YAML, and `rushes caption`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from curation.core.config import StrictModel
from recaption.agreement import SIGNALS

IMPORT_PREFIX = "file:"  # a captioner spec of captions written elsewhere: file:PATH
MODEL_PREFIX = "hf:"  # a captioner spec of a transformers model: hf:<hub id> or hf:/dir


def import_path(spec: str) -> str | None:
    """The PATH of a `file:PATH` spec ('' when empty), or None when the spec imports no file: the one rule."""
    return spec[len(IMPORT_PREFIX):] if spec.startswith(IMPORT_PREFIX) else None


def is_model_spec(spec: str) -> bool:
    """Whether the spec names a model to load (and so wants GPUs)."""
    return spec.startswith(MODEL_PREFIX)


def check_model_spec(value: str, setting: str) -> str:
    if setting == "captioner" and (value == "metadata" or import_path(value)):
        return value
    if not is_model_spec(value) or len(value) <= len(MODEL_PREFIX):
        allowed = "'metadata', 'file:<captions.jsonl|.parquet>', " if setting == "captioner" else ""
        raise ValueError(f"{setting} must be {allowed}'hf:<hub id>' or 'hf:/path/to/model', not {value!r}")
    return value


class CaptionConfig(StrictModel):
    enabled: bool = True
    captioner: str = Field("metadata", description="'metadata' (no weights), 'hf:<hub id>', 'hf:/local/dir', or "
                           "'file:<captions.jsonl|.parquet>' (captions written elsewhere)")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) of the captioner")
    enhancer: str | None = Field(None, description="'hf:<hub id or dir>' of a text LLM that rewrites captions")
    batch_size: int = Field(4, ge=1, description="clips per model call")
    frames: int = Field(8, ge=1, description="frames per clip, spread evenly over the clip's length")
    frames_per_second: float | None = Field(
        None, gt=0, description="when set, a clip gets duration x this many frames (at least 2, at most `frames`)")
    frame_max_side: int = Field(448, ge=28, description="longest side of each frame given to the model")
    still_frames: bool = Field(
        False, description="give a video model (Qwen2-VL family) each sampled frame twice in a row: its patches span "
        "two frames, so each patch then holds one still frame, as its images do, and a moving shape is not "
        "blurred with its motion inside a patch; the same tokens then cover half as many frames")
    video_reader: Literal["auto", "decord", "pyav"] = Field(
        "auto", description="how frames are read (curation.core.frames.READERS): auto picks decord where it reads right")
    max_new_tokens: int = Field(256, ge=8, description="generation limit for the dense caption")
    short_max_new_tokens: int = Field(48, ge=4, description="generation limit for the short caption")
    do_sample: bool = Field(False, description="false: greedy decoding (deterministic)")
    temperature: float = Field(0.7, gt=0, description="used only when do_sample is true")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on the CPU")
    checks: bool = Field(True, description="false writes unchecked captions; the captioner name then says so")
    on_disagreement: Literal["flag", "fail"] = Field(
        "flag", description="a caption that contradicts the clip's measurements: 'flag' keeps it with its "
        "disagreements recorded, 'fail' fails it (the disagreements are recorded either way)")
    fail_signals: list[Literal[SIGNALS]] | None = Field(
        None, description="with on_disagreement 'fail': the signals whose disagreement fails a caption (null: all); "
        "the others are flagged")
    workers: int | None = Field(None, ge=1, description="caption workers (Ray actors); null: 1 per GPU, else 1")
    gpus_per_worker: float = Field(1.0, ge=0, description="GPUs each worker holds when the cluster has GPUs")

    @field_validator("captioner")
    @classmethod
    def _captioner(cls, v: str) -> str:
        return check_model_spec(v, "captioner")

    @field_validator("enhancer")
    @classmethod
    def _enhancer(cls, v: str | None) -> str | None:
        return None if v is None else check_model_spec(v, "enhancer")


# A captioner trained by `rushes train-captioner` saves the frame sampling it learnt with beside its
# weights; captioning with it uses them unless told otherwise, so a clip is seen as it was in training.
TRAINED_SETTINGS_FILE = "rushes_captioning.json"
TRAINED_SETTINGS = ("frames", "frames_per_second", "frame_max_side", "still_frames")


def with_trained_settings(config: CaptionConfig) -> CaptionConfig:
    """`config` with the frame settings saved by train-captioner next to its model filled in, where
    `config` does not set them itself."""
    import json
    from pathlib import Path

    saved = Path(config.captioner[len(MODEL_PREFIX):]) / TRAINED_SETTINGS_FILE if is_model_spec(config.captioner) else None
    if saved is None or not saved.is_file():
        return config
    trained = json.loads(saved.read_text())
    update = {k: trained[k] for k in TRAINED_SETTINGS if k in trained and k not in config.model_fields_set}
    return config.model_copy(update=update) if update else config
