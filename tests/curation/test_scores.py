"""Scores against the generator's truth: camera moves, motion, luminance, sharpness, text, colours."""

import os

import numpy as np
import pytest

from curation.config import AnalysisConfig, CurateConfig
from curation.core import schema
from curation.scores import (
    TextDetectorUnavailable,
    camera_label,
    colorfulness,
    dominant_colors,
    find_tessdata,
    get_text_detector,
    global_motion,
    score_clip,
    sharpness,
)
from curation.signals import ClipSignals, Sample, Shot
from workflows.synthetic.footage import Segment, make_footage

M = schema.M


def _row_for(rows, segment):
    """The clip that covers most of a truth segment."""

    def overlap(r):
        return min(r[M.end_frame], segment.end) - max(r[M.start_frame], segment.start)

    return max(rows, key=overlap)


def test_camera_motion_labels_match_the_truth(reel):
    _path, truth, rows = reel
    for seg in truth.segments:
        row = _row_for(rows, seg)
        assert row[M.camera_motion] == seg.camera, (seg.caption, row[M.camera_motion])
        assert row[M.camera_motion_confidence] > 0.8


def test_motion_scores_tell_moving_from_still(reel):
    _path, truth, rows = reel
    by_caption = {seg.caption: _row_for(rows, seg) for seg in truth.segments}
    still = by_caption["a still white square on a green background"]
    pan = by_caption["a still yellow square on a green background, the camera panning right"]
    shape = by_caption["a red circle moving right on a blue background"]
    assert still[M.motion_score] < 0.001
    # the pan moves the whole frame 0.02 of its width a frame at 24 fps: 0.48 frame widths per second
    assert 0.36 < pan[M.motion_score] < 0.6 and pan[M.motion_p90] >= pan[M.motion_score]
    # a small moving shape: little mean motion, but its pixels move fast
    assert 0.002 < shape[M.motion_score] < 0.1 and shape[M.motion_p90] > shape[M.motion_score]


def test_luminance_sharpness_text_and_colours(reel):
    _path, truth, rows = reel
    black = _row_for(rows, next(s for s in truth.segments if s.black))
    assert black[M.luminance_mean] < 2 and black[M.black_fraction] == 1.0 and black[M.sharpness] < 1
    assert black[M.dominant_colors] == ["black"]
    for seg in truth.segments:
        row = _row_for(rows, seg)
        if seg.black:
            continue
        assert row[M.black_fraction] == 0.0 and row[M.sharpness] > 100
        assert row[M.dominant_colors][0] == seg.background, (seg.caption, row[M.dominant_colors])
        x, y, w, h = seg.text_box or (0, 0, 0, 0)
        if seg.text:  # detected words cover a good part of the true box
            assert 0.5 * (w * h) / (256 * 192) < row[M.text_area] < 1.5 * (w * h) / (256 * 192)
        else:
            assert row[M.text_area] < 0.02, (seg.caption, row[M.text_area])
    assert rows[0][M.text_detector].startswith("tesseract-")


def test_colorfulness_is_zero_for_gray_and_grows_with_colour(reel):
    gray = np.full((48, 64, 3), 128, np.uint8)
    assert colorfulness([gray]) == 0.0 and colorfulness([]) == 0.0
    noisy_gray = np.repeat(np.random.default_rng(0).integers(0, 255, (48, 64, 1), dtype=np.uint8), 3, axis=2)
    assert colorfulness([noisy_gray]) == 0.0  # texture without colour is still gray
    red_on_blue = np.zeros((48, 64, 3), np.uint8)
    red_on_blue[:, :32] = (210, 60, 30)  # BGR: blue
    red_on_blue[:, 32:] = (30, 30, 220)  # red
    muted = (0.3 * red_on_blue + 0.7 * 128).astype(np.uint8)
    assert colorfulness([red_on_blue]) > 100 > colorfulness([muted]) > 15
    _path, truth, rows = reel  # the generator's coloured scenes against its black shot
    black = _row_for(rows, next(s for s in truth.segments if s.black))
    assert black[M.colorfulness] < 1
    assert all(_row_for(rows, s)[M.colorfulness] > 20 for s in truth.segments if not s.black)


def test_blur_lowers_sharpness():
    import cv2

    frames, _ = make_footage([Segment(2, "square", "white", "none", "blue")], 256, 192)
    sharp = frames[0][:, :, ::-1].copy()
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    assert sharpness([blurred]) < CurateConfig().filters.min_sharpness < sharpness([sharp])


def test_global_motion_of_synthetic_flow_fields():
    h, w = 48, 64
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    shift = np.zeros((h, w, 2), np.float32)
    shift[..., 0] = -3  # content moves left: the camera pans right
    tx, ty, zoom = global_motion(shift)
    assert (tx, ty) == (-3, 0) and abs(zoom) < 1e-6
    assert camera_label(tx, ty, zoom, 0.3)[0] == "pan_right"
    radial = np.stack([(xs - (w - 1) / 2) * 0.05, (ys - (h - 1) / 2) * 0.05], axis=-1)
    _tx, _ty, zoom = global_motion(radial)
    assert zoom > 0 and camera_label(_tx, _ty, zoom, 0.3)[0] == "zoom_in"
    assert camera_label(0.0, 2.0, 0.0, 0.3)[0] == "tilt_up"  # content moves down
    assert camera_label(0.0, -2.0, 0.0, 0.3)[0] == "tilt_down"
    assert camera_label(0.1, 0.1, 0.05, 0.3) == ("static", 1.0)


def test_clip_with_one_frame_and_no_text_detector():
    bgr = np.full((48, 64, 3), 90, np.uint8)
    signals = ClipSignals(
        shot=Shot(0, 1, "end", "start"),
        start_time=0.0,
        end_time=0.04,
        luma=np.array([90.0], np.float32),
        samples=[Sample(0, bgr[..., 0].copy(), bgr)],
        pictures=[(0, bgr)],
        flow_to_analysis=1.0,
    )
    row = score_clip(signals, AnalysisConfig(text_detector="none"), None)
    assert row[M.motion_score] == 0.0 and row[M.camera_motion] == "static"
    assert row[M.text_area] is None and row[M.text_detector] == "none"
    assert dominant_colors([bgr]) == ["gray"]


def test_missing_tesseract_model_names_the_setting(tmp_path):
    with pytest.raises(TextDetectorUnavailable, match="analysis.text_detector: none"):
        find_tessdata(str(tmp_path))
    with pytest.raises(TextDetectorUnavailable, match=str(tmp_path)):
        get_text_detector(AnalysisConfig(tessdata=str(tmp_path)))
    assert get_text_detector(AnalysisConfig(text_detector="none")) is None


def test_text_detector_leaves_no_openmp_thread_cap_behind(monkeypatch):
    # The one-thread cap is for tesseract alone; left in the environment it slowed torch 100x in the demo.
    from curation.scores import TextDetector, find_tessdata

    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    detector = TextDetector(find_tessdata(None), min_confidence=70)
    assert "OMP_THREAD_LIMIT" not in os.environ
    assert detector.word_boxes(np.zeros((64, 64, 3), np.uint8)) == []
    monkeypatch.setenv("OMP_THREAD_LIMIT", "3")
    TextDetector(find_tessdata(None), min_confidence=70)
    assert os.environ["OMP_THREAD_LIMIT"] == "3"
