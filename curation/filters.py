"""Filters: turn a clip's scores into `status` (kept | filtered) and its `filter_reasons`.

Measuring is apart from deciding: the scores are in the manifest row already, a filter only
compares one with a threshold, so a threshold can change without measuring again. Each filter is
one entry of `RULES` beside its threshold in `FilterConfig`.

Nothing is deleted: every detected clip stays in the manifest, and a filtered clip lists every
reason that applies, in the order of `RULES`. Reason names are stable (reports and users key on
them):

| reason           | when (FilterConfig field)                                   |
|------------------|-------------------------------------------------------------|
| `too_short`      | duration < `min_duration` seconds                           |
| `too_long`       | duration > `max_duration` seconds (null: no limit)          |
| `low_resolution` | the source's shorter side < `min_side` pixels               |
| `static`         | motion_score < `min_motion`                                 |
| `jitter`         | motion_score > `max_motion`                                 |
| `too_dark`       | luminance_mean < `min_luminance`                            |
| `too_bright`     | luminance_mean > `max_luminance`                            |
| `blurred`        | sharpness < `min_sharpness`                                 |
| `text_overlay`   | text_area > `max_text_area`                                 |
| `monochrome`     | colorfulness < `min_colorfulness` (null, the default: off)  |

A score that was not measured (null, e.g. text with `text_detector: none`) fails no filter, and a
threshold set to null turns its filter off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field, model_validator

from curation.core import schema
from curation.core.config import StrictModel

M = schema.M


class FilterConfig(StrictModel):
    min_duration: float = Field(1.0, ge=0, description="seconds")
    max_duration: float | None = Field(60.0, gt=0, description="seconds; null for no limit")
    min_side: int = Field(64, ge=1, description="smallest allowed shorter side of the source, pixels")
    min_motion: float = Field(0.001, ge=0, description="below: static (mean motion, frame lengths per second)")
    max_motion: float = Field(1.0, gt=0, description="above: jitter (frame lengths per second)")
    min_luminance: float = Field(20.0, ge=0, le=255, description="below: too dark (mean luma 0..255)")
    max_luminance: float = Field(235.0, ge=0, le=255, description="above: too bright")
    min_sharpness: float = Field(15.0, ge=0, description="below: blurred (variance of the Laplacian)")
    max_text_area: float = Field(0.05, ge=0, le=1, description="above: too much burnt-in text (frame fraction)")
    min_colorfulness: float | None = Field(None, ge=0, description="below: monochrome (Hasler-Suesstrunk, 0 gray "
                                           "to ~110 vivid; 10 drops gray footage); null keeps black-and-white")

    @model_validator(mode="after")
    def _ranges_are_not_empty(self) -> FilterConfig:
        """A lower limit above its upper one would filter every clip: a mistake, said at start-up."""
        for low, high in (("min_duration", "max_duration"), ("min_motion", "max_motion"),
                          ("min_luminance", "max_luminance")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo:g}) is above {high} ({hi:g}): every clip would be filtered; "
                                 f"lower {low} or raise {high}")
        return self


@dataclass(frozen=True)
class Limit:
    """The rule "row[column] is below (side "min") or above (side "max") cfg.<setting>"; passes when
    either is null. The report draws the setting as a line on the column's histogram."""

    column: str
    setting: str
    side: str

    def __call__(self, row: dict, cfg: FilterConfig) -> bool:
        limit, value = getattr(cfg, self.setting), row.get(self.column)
        if limit is None or value is None:
            return False
        return value < limit if self.side == "min" else value > limit


def below(column: str, setting: str) -> Limit:
    return Limit(column, setting, "min")


def above(column: str, setting: str) -> Limit:
    return Limit(column, setting, "max")


def _low_resolution(row: dict, cfg: FilterConfig) -> bool:
    return min(row[M.width], row[M.height]) < cfg.min_side


# (reason, rule): a clip is filtered for every reason whose rule holds, in this order
RULES: list[tuple[str, Callable[[dict, FilterConfig], bool]]] = [
    ("too_short", below(M.duration, "min_duration")),
    ("too_long", above(M.duration, "max_duration")),
    ("low_resolution", _low_resolution),
    ("static", below(M.motion_score, "min_motion")),
    ("jitter", above(M.motion_score, "max_motion")),
    ("too_dark", below(M.luminance_mean, "min_luminance")),
    ("too_bright", above(M.luminance_mean, "max_luminance")),
    ("blurred", below(M.sharpness, "min_sharpness")),
    ("text_overlay", above(M.text_area, "max_text_area")),
    ("monochrome", below(M.colorfulness, "min_colorfulness")),
]
REASONS = tuple(reason for reason, _ in RULES)


def filter_reasons(row: dict, cfg: FilterConfig) -> list[str]:
    """The reasons (in the order of RULES) that a manifest row's scores fail `cfg`."""
    return [reason for reason, rule in RULES if rule(row, cfg)]


def apply_filters(row: dict, cfg: FilterConfig) -> dict:
    """Set `status` and `filter_reasons` on a manifest row (in place) and return it."""
    reasons = filter_reasons(row, cfg)
    row[M.filter_reasons] = reasons
    row[M.status] = schema.STATUS_FILTERED if reasons else schema.STATUS_KEPT
    return row
