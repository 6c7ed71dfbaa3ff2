"""Filters: turn a clip's scores into `status` (kept | filtered) and its `filter_reasons`.

Nothing is deleted: every detected clip stays in the manifest, and a filtered clip lists every
reason that applies, in the order of `REASONS`. Reason names are stable (reports and users key
on them):

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

A score that was not measured (null, e.g. text with `text_detector: none`) fails no filter.
"""

from __future__ import annotations

from curation.config import FilterConfig
from curation.core import schema

M = schema.M
REASONS = (
    "too_short",
    "too_long",
    "low_resolution",
    "static",
    "jitter",
    "too_dark",
    "too_bright",
    "blurred",
    "text_overlay",
)


def filter_reasons(row: dict, cfg: FilterConfig) -> list[str]:
    """The reasons (from REASONS, in that order) that a manifest row's scores fail `cfg`."""

    def below(column: str, limit: float | None) -> bool:
        return limit is not None and row.get(column) is not None and row[column] < limit

    def above(column: str, limit: float | None) -> bool:
        return limit is not None and row.get(column) is not None and row[column] > limit

    checks = {
        "too_short": below(M.duration, cfg.min_duration),
        "too_long": above(M.duration, cfg.max_duration),
        "low_resolution": min(row[M.width], row[M.height]) < cfg.min_side,
        "static": below(M.motion_score, cfg.min_motion),
        "jitter": above(M.motion_score, cfg.max_motion),
        "too_dark": below(M.luminance_mean, cfg.min_luminance),
        "too_bright": above(M.luminance_mean, cfg.max_luminance),
        "blurred": below(M.sharpness, cfg.min_sharpness),
        "text_overlay": above(M.text_area, cfg.max_text_area),
    }
    return [reason for reason in REASONS if checks[reason]]


def apply_filters(row: dict, cfg: FilterConfig) -> dict:
    """Set `status` and `filter_reasons` on a manifest row (in place) and return it."""
    reasons = filter_reasons(row, cfg)
    row[M.filter_reasons] = reasons
    row[M.status] = schema.STATUS_FILTERED if reasons else schema.STATUS_KEPT
    return row
