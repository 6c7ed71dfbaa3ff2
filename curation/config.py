"""The curation stage's settings (conventions: `curation.core.config`; filter thresholds: `curation.filters`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from curation.core.config import StrictModel
from curation.filters import FilterConfig

# Curation settings. Defaults are documented here and in README; the demo YAML overrides a few.

class ProbeConfig(StrictModel):
    timeout_s: float = Field(60.0, gt=0, description="per-file time limit for probing; analysis gets this plus:")
    timeout_per_video_second: float = Field(2.0, ge=0, description="analysis seconds allowed per second of video")


class ShotConfig(StrictModel):
    mode: Literal["scenes", "stride"] = Field("scenes", description="scenes: cut at shot changes (the detectors); "
                                              "stride: fixed windows of window_s seconds every stride_s seconds")
    window_s: float = Field(10.0, gt=0, description="stride mode: length of each window, seconds")
    stride_s: float = Field(10.0, gt=0, description="stride mode: seconds from one window's start to the next "
                                                    "(below window_s: overlapping windows; above: frames left out)")
    detectors: list[Literal["content", "adaptive"]] = Field(default_factory=lambda: ["content", "adaptive"])
    content_threshold: float = Field(27.0, gt=0, description="PySceneDetect ContentDetector threshold")
    adaptive_threshold: float = Field(3.0, gt=0, description="PySceneDetect AdaptiveDetector threshold")
    min_shot_frames: int = Field(15, ge=1, description="shortest shot a cut may create")
    max_shot_seconds: float | None = Field(20.0, gt=0, description="split longer shots; null keeps them whole")
    trim_black: bool = Field(True, description="trim black lead-in and tail frames")
    trim_frozen: bool = Field(True, description="trim frozen (unchanging) lead-in and tail frames")


class AnalysisConfig(StrictModel):
    max_side: int = Field(256, ge=32, description="longest side of the downscaled frames analysis reads")
    flow_max_side: int = Field(128, ge=16, description="longest side of the gray frames optical flow reads")
    flow_samples: int = Field(20, ge=2, description="most frame pairs per clip for optical flow (one per second)")
    text_detector: Literal["tesseract", "none"] = "tesseract"
    text_samples: int = Field(3, ge=1, description="frames per clip given to the text detector")
    text_min_confidence: float = Field(70.0, ge=0, le=100, description="tesseract word confidence counted as text")
    tessdata: str | None = Field(None, description="tesseract model folder; null: TESSDATA_PREFIX or Debian's")
    text_prefilter: bool = Field(True, description="call tesseract only on frames with text-like edge bands")
    black_luma: float = Field(18.0, ge=0, le=255, description="a frame with mean luma below this is black")
    bright_luma: float = Field(240.0, ge=0, le=255, description="a frame with mean luma above this is blown out")
    frozen_change: float = Field(0.002, ge=0, le=1, description="share of pixels changing >10 levels: below, frozen")
    static_flow: float = Field(0.03, ge=0, description="global motion below this (frame lengths per second): camera static")

    @model_validator(mode="after")
    def _black_below_bright(self) -> AnalysisConfig:
        if self.black_luma >= self.bright_luma:
            raise ValueError(f"black_luma ({self.black_luma:g}) must be below bright_luma ({self.bright_luma:g}): "
                             "a frame cannot be black and blown out at once")
        return self


class ExtractConfig(StrictModel):
    enabled: bool = Field(True, description="false: a clip-free run (no clip files; kept clips are source frame "
                          "ranges that later stages read, resized and resampled by the settings below; "
                          "`rushes extract` writes files later)")
    max_side: int | None = Field(512, ge=16, description="downscale clips so the longest side is at most this")
    fps: float | None = Field(None, gt=0, description="resample clips to this rate; null keeps the source's")
    crf: int = Field(20, ge=0, le=51, description="x264 quality")
    keyframe_seconds: float | None = Field(
        0.5, gt=0, description="a key frame at least this often, B-frames off: frame sampling (decord) seeks "
        "instead of decoding through the clip (docs/curation.md: with 0.5 s decord reads 8 frames of a 20 s "
        "clip ~3x faster than a sequential decode, files ~2.3x the bytes); null: x264's default, the smallest files")
    thumb_side: int = Field(256, ge=16)


class UnitConfig(StrictModel):
    """How a long source is shared among workers (`curation.units`). The clips are the same however it
    is split, so these settings are left out of the config hash (and of the saved config)."""

    enabled: bool = Field(True, description="split sources of at least 2 x seconds into time ranges")
    seconds: float = Field(60.0, gt=0, description="length of one work unit (a time range of a source)")
    warmup_seconds: float = Field(5.0, ge=0, description="a range's worker starts decoding this much before it, "
                                  "so its detectors and open shot are settled by the range's start")


class CurateConfig(StrictModel):
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    shots: ShotConfig = Field(default_factory=ShotConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    units: UnitConfig = Field(default_factory=UnitConfig, exclude=True)
