"""`shots.mode: stride`: fixed windows of `window_s` seconds every `stride_s` seconds, whatever the shots."""

import pytest

from curation.config import CurateConfig
from curation.core.config import ConfigError, validate
from curation.process import analyze_source
from workflows.synthetic.footage import Segment, write_footage


@pytest.fixture(scope="module")
def reel(tmp_path_factory):
    """10 s at 24 fps with hard cuts at 3 s and 7 s (which stride mode ignores)."""
    path = tmp_path_factory.mktemp("stride") / "reel.mp4"
    write_footage(path, [Segment(72, "circle", "red", "right", "blue"),
                         Segment(96, "square", "yellow", "up", "green"),
                         Segment(72, "triangle", "white", "left", "purple")], 128, 96, fps=24, seed=1)
    return path


def _windows(path, window_s, stride_s):
    cfg = validate({"shots": {"mode": "stride", "window_s": window_s, "stride_s": stride_s},
                    "analysis": {"text_detector": "none"}}, CurateConfig)
    rows = analyze_source(path.name, path, cfg)
    assert len({r["clip_id"] for r in rows}) == len(rows)
    return [(r["start_frame"], r["end_frame"]) for r in rows], rows


def test_windows_follow_the_clock_not_the_cuts(reel):
    spans, rows = _windows(reel, 2.0, 2.0)
    assert spans == [(0, 48), (48, 96), (96, 144), (144, 192), (192, 240)]
    assert [r["start_time"] for r in rows] == pytest.approx([0, 2, 4, 6, 8], abs=1e-6)
    assert [r["shot_detector"] for r in rows] == ["stride"] * 4 + ["end"]
    assert [r["transition_in"] for r in rows] == ["start"] + ["stride"] * 4


def test_overlapping_windows_and_windows_with_frames_between(reel):
    spans, _ = _windows(reel, 4.0, 2.0)  # each window shares half its frames with the next
    assert spans == [(0, 96), (48, 144), (96, 192), (144, 240)]
    spans, rows = _windows(reel, 1.0, 3.0)  # one second out of every three
    assert spans == [(0, 24), (72, 96), (144, 168), (216, 240)]
    assert all(r["duration"] == pytest.approx(1.0) for r in rows)


def test_stride_settings_are_checked():
    with pytest.raises(ConfigError, match="shots.mode"):
        validate({"shots": {"mode": "fixed"}}, CurateConfig)
    with pytest.raises(ConfigError, match="shots.window_s"):
        validate({"shots": {"mode": "stride", "window_s": 0}}, CurateConfig)


def test_a_window_never_spans_frames_that_did_not_decode(tmp_path):
    import numpy as np

    path = tmp_path / "damaged.avi"  # mjpeg: damage stays local
    write_footage(path, [Segment(96, "circle", "red", "right", "blue")], 128, 96, fps=24, codec="mjpeg")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 3000] = np.random.default_rng(0).bytes(3000)
    path.write_bytes(bytes(data))
    spans, rows = _windows(path, 1.0, 1.0)
    gaps = [(g["start_frame"], g["end_frame"]) for g in rows[0]["source_gaps"]]
    assert gaps and rows[-1]["end_frame"] == 96
    for start, end in spans:
        assert all(end <= g0 or start >= g1 for g0, g1 in gaps)
        assert start // 24 == (end - 1) // 24  # inside one second's window


def test_after_a_gap_several_strides_long_the_window_holding_the_time_opens(tmp_path):
    """A gap of several strides: one window after it, not a cascade of 1-2-frame clips."""
    import numpy as np

    path = tmp_path / "long_gap.avi"  # mjpeg: damage stays local
    write_footage(path, [Segment(240, "circle", "red", "right", "blue")], 128, 96, fps=24, codec="mjpeg")
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * 0.35), int(len(data) * 0.65)
    data[a:b] = np.random.default_rng(0).bytes(b - a)
    path.write_bytes(bytes(data))
    spans, rows = _windows(path, 1.0, 1.0)
    gaps = [(g["start_frame"], g["end_frame"]) for g in rows[0]["source_gaps"]]
    assert len(gaps) == 1 and gaps[0][1] - gaps[0][0] > 3 * 24, gaps
    windows = [start // 24 for start, _ in spans]
    assert len(windows) == len(set(windows)), spans  # one clip per window
    for start, end in spans:
        assert start // 24 == (end - 1) // 24
    after = [s for s in spans if s[0] >= gaps[0][1]]
    assert after[0][0] == gaps[0][1]  # the window holding the first frame after the gap
    assert after[0][1] == (gaps[0][1] // 24 + 1) * 24
    assert all(end - start == 24 for start, end in after[1:])


def test_after_frames_lost_at_the_start_the_window_holding_the_time_opens(tmp_path):
    path = tmp_path / "start_gap.avi"
    write_footage(path, [Segment(240, "circle", "red", "right", "blue")], 128, 96, fps=24, codec="mjpeg")
    data = bytearray(path.read_bytes())
    movi = data.find(b"movi")
    data[movi + 4 : movi + 4 + len(data) // 3] = bytes(len(data) // 3)
    path.write_bytes(bytes(data))
    spans, rows = _windows(path, 1.0, 1.0)
    gaps = [(g["start_frame"], g["end_frame"]) for g in rows[0]["source_gaps"]]
    assert gaps[0][0] == 0 and gaps[0][1] > 2 * 24, gaps
    assert spans[0] == (gaps[0][1], (gaps[0][1] // 24 + 1) * 24), spans
    windows = [start // 24 for start, _ in spans]
    assert len(windows) == len(set(windows)), spans
