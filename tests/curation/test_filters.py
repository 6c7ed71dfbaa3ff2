"""Filters: every reason fires on its own threshold; nothing is dropped."""

import re

import pytest

from curation.core import schema
from curation.filters import REASONS, FilterConfig, apply_filters, filter_reasons

M = schema.M


def _good_row(**changes) -> dict:
    row = {
        M.duration: 4.0,
        M.width: 640,
        M.height: 360,
        M.motion_score: 0.05,
        M.luminance_mean: 110.0,
        M.sharpness: 300.0,
        M.text_area: 0.0,
        M.colorfulness: 40.0,
    }
    row.update(changes)
    return row


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({M.duration: 0.5}, "too_short"),
        ({M.duration: 600.0}, "too_long"),
        ({M.width: 48}, "low_resolution"),
        ({M.motion_score: 0.0002}, "static"),
        ({M.motion_score: 2.0}, "jitter"),
        ({M.luminance_mean: 5.0}, "too_dark"),
        ({M.luminance_mean: 250.0}, "too_bright"),
        ({M.sharpness: 2.0}, "blurred"),
        ({M.text_area: 0.3}, "text_overlay"),
        ({M.colorfulness: 3.0}, "monochrome"),
    ],
)
def test_each_reason_fires_alone(changes, reason):
    row = apply_filters(_good_row(**changes), FilterConfig(min_colorfulness=10.0))
    assert row[M.filter_reasons] == [reason] and row[M.status] == schema.STATUS_FILTERED


def test_a_good_clip_is_kept_and_reasons_come_in_stable_order():
    assert apply_filters(_good_row(), FilterConfig())[M.status] == schema.STATUS_KEPT
    black = _good_row(**{M.luminance_mean: 0.0, M.sharpness: 0.0, M.motion_score: 0.0, M.duration: 0.2})
    assert filter_reasons(black, FilterConfig()) == ["too_short", "static", "too_dark", "blurred"]
    assert set(REASONS) == {
        "too_short", "too_long", "low_resolution", "static", "jitter",
        "too_dark", "too_bright", "blurred", "text_overlay", "monochrome",
    }  # fmt: skip
    # off by default: black-and-white footage is kept unless asked
    assert filter_reasons(_good_row(**{M.colorfulness: 0.0}), FilterConfig()) == []


def test_unmeasured_scores_and_disabled_limits_fail_nothing():
    row = _good_row(**{M.text_area: None, M.duration: 10_000.0})
    assert filter_reasons(row, FilterConfig(max_duration=None)) == []


@pytest.mark.parametrize("section, values, words", [
    ("filters", {"min_duration": 5, "max_duration": 2}, "min_duration (5) is above max_duration (2)"),
    ("filters", {"min_motion": 2, "max_motion": 1}, "min_motion (2) is above max_motion (1)"),
    ("filters", {"min_luminance": 200, "max_luminance": 100}, "min_luminance (200) is above max_luminance (100)"),
    ("analysis", {"black_luma": 250}, "black_luma (250) must be below bright_luma (240)"),
])
def test_contradicting_limits_are_config_errors(section, values, words):
    from curation.config import CurateConfig
    from curation.core.config import ConfigError, validate

    with pytest.raises(ConfigError, match=re.escape(words)) as raised:
        validate({section: values}, CurateConfig)
    assert f"- {section}:" in str(raised.value)
    validate({"filters": {"min_duration": 5, "max_duration": None}}, CurateConfig)  # no upper limit: fine
