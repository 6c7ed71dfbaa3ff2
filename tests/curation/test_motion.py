"""Motion in frame lengths per second of real time: the same footage scores the same at any frame
rate (5-60 fps, frame-doubled or not) and resolution, and the default thresholds sit where the
footage generator's truth says they should."""

from pathlib import Path

import numpy as np
import pytest

from curation.config import CurateConfig
from curation.core.video import VideoWriter, read_frames
from curation.filters import FilterConfig
from curation.process import analyze_source
from workflows.synthetic.footage import Segment, write_footage

M_SCORE, M_REASONS = "motion_score", "filter_reasons"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _config() -> CurateConfig:
    cfg = CurateConfig()
    cfg.analysis.text_detector = "none"
    cfg.shots.max_shot_seconds = None  # one clip per file: the scores compare like with like
    return cfg


def _resampled(frames: list[np.ndarray], src_fps: float, fps: float, width: int, path: Path) -> Path:
    """`frames` (at `src_fps`) re-encoded at `fps` by dropping or repeating frames, `width` px wide."""
    import cv2

    height = round(width * frames[0].shape[0] / frames[0].shape[1] / 2) * 2
    seconds = len(frames) / src_fps
    with VideoWriter(path, fps, crf=18) as writer:
        for j in range(round(seconds * fps)):
            frame = frames[min(len(frames) - 1, int(j * src_fps / fps))]
            writer.write(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
    return path


@pytest.mark.skipif(not VTEST.exists(), reason="Debian's opencv-doc is not installed")
def test_people_under_a_fixed_camera_score_the_same_at_any_rate_and_size(tmp_path):
    frames = read_frames(VTEST, list(range(200)))  # 20 s at 10 fps
    scores = {}
    for fps, width in [(5, 384), (10, 384), (20, 384), (30, 384), (60, 384), (10, 192), (30, 768)]:
        path = _resampled(frames, 10.0, fps, width, tmp_path / f"vtest_{fps}_{width}.mp4")
        (row,) = analyze_source(path.name, path, _config())
        scores[(fps, width)] = row[M_SCORE]
        assert "static" not in row[M_REASONS], (fps, width, row[M_SCORE])  # moving people are not static
    reference = scores[(10, 384)]  # the source's own rate
    for key, score in scores.items():
        assert abs(score / reference - 1) <= 0.25, (key, score, reference)


def test_thresholds_sit_between_the_generators_still_and_moving_truth(tmp_path):
    thresholds = FilterConfig()
    for fps in (12, 24, 48):
        k = fps / 24  # the same seconds of footage at every rate: per-frame speeds scaled
        segments = [
            Segment(round(48 * k), "square", "white", "none", "green"),  # nothing moves
            Segment(round(48 * k), "circle", "red", "right", "blue", speed=0.0025 / k),  # 0.06 widths/s
            Segment(round(48 * k), "square", "yellow", "none", "green", camera="pan_right", camera_speed=0.02 / k),
        ]
        path = tmp_path / f"truth_{fps}.mp4"
        write_footage(path, segments, 256, 192, fps=fps, seed=3)
        still, slow, pan = analyze_source(path.name, path, _config())
        assert still[M_SCORE] < thresholds.min_motion / 2 and "static" in still[M_REASONS]
        assert slow[M_SCORE] > thresholds.min_motion * 1.5 and "static" not in slow[M_REASONS]
        # a pan of 0.48 frame widths per second reads as that at every rate, well below jitter
        assert 0.36 < pan[M_SCORE] < 0.6 < thresholds.max_motion and pan["camera_motion"] == "pan_right"
