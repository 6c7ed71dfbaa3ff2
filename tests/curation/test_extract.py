"""Extraction: frame-exact h264 clips and thumbnails, on generated footage and the real opencv-doc clips."""

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from curation.config import ExtractConfig
from curation.core import schema
from curation.core.rundir import RunDir
from curation.core.video import read_frames
from curation.extract import EXTRACT_FAILED, even_size, extract_source, output_frame_plan
from workflows.synthetic import footage

M = schema.M
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _rows(source, spans, fps, status=schema.STATUS_KEPT):
    return [
        {
            M.clip_id: f"clip{i}",
            M.source: str(source),
            M.start_frame: s,
            M.end_frame: e,
            M.fps: fps,
            M.status: status,
            M.filter_reasons: [],
        }
        for i, (s, e) in enumerate(spans)
    ]


def _stream_facts(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.name, s.codec_context.pix_fmt, s.width, s.height, float(s.average_rate)


def _resize(img, size):
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR), dtype=np.float32)


def assert_frames_match_source(clip_frames, source_frames, start):
    """Each clip frame is closest to the source frame at its own index, not to a neighbour."""
    h, w = clip_frames[0].shape[:2]
    for k in sorted({0, len(clip_frames) // 2, len(clip_frames) - 1}):
        errors = {}
        for offset in (-1, 0, 1):
            i = start + k + offset
            if 0 <= i < len(source_frames):
                errors[offset] = np.abs(_resize(source_frames[i], (w, h)) - clip_frames[k]).mean()
        assert min(errors, key=errors.get) == 0, f"clip frame {k} matches source frame offset {errors}"


@pytest.fixture(scope="module")
def reel(tmp_path_factory):
    """Two shots of moving shapes: every frame differs from its neighbours."""
    path = tmp_path_factory.mktemp("reel") / "reel.mp4"
    footage.write_footage(
        path,
        [
            footage.Segment(30, "circle", "red", "right", "blue", speed=0.03),
            footage.Segment(30, "square", "yellow", "up", "green", camera="pan_right"),
        ],
        width=256,
        height=192,
        fps=24,
    )
    return path


def test_clips_are_frame_exact_h264_with_even_sides(reel, tmp_path):
    run = RunDir(tmp_path)
    rows = _rows(reel, [(0, 30), (33, 60)], 24.0) + _rows(reel, [(7, 19)], 24.0, schema.STATUS_FILTERED)
    rows[2][M.clip_id] = "filtered0"
    out, quarantine = extract_source(reel, rows, run, ExtractConfig(max_side=100, crf=12))
    assert quarantine == []
    source = read_frames(reel)
    for row in out[:2]:
        assert row[M.clip_path] == f"clips/{row[M.clip_id]}.mp4"
        clip = read_frames(tmp_path / row[M.clip_path])
        assert len(clip) == row[M.end_frame] - row[M.start_frame]
        assert _stream_facts(tmp_path / row[M.clip_path]) == ("h264", "yuv420p", 100, 74, 24.0)
        assert_frames_match_source(clip, source, row[M.start_frame])
    # a filtered clip gets a thumbnail (the report shows it) but no clip file
    assert out[2][M.clip_path] is None and (tmp_path / out[2][M.thumb_path]).exists()
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["clip0.mp4", "clip1.mp4"]


def test_thumbnail_is_the_middle_frame(reel, tmp_path):
    out, _ = extract_source(
        reel, _rows(reel, [(10, 20)], 24.0), RunDir(tmp_path), ExtractConfig(thumb_side=128)
    )
    thumb = np.asarray(Image.open(tmp_path / out[0][M.thumb_path]).convert("RGB"))
    assert thumb.shape == (96, 128, 3)
    source = read_frames(reel)
    errors = [np.abs(_resize(source[i], (128, 96)) - thumb).mean() for i in (14, 15, 16)]
    assert int(np.argmin(errors)) == 1, errors


def test_frame_rate_resampling_keeps_the_duration(reel, tmp_path):
    assert output_frame_plan(6, 24.0, 12.0) == [0, 2, 4]
    assert output_frame_plan(3, 12.0, 24.0) == [0, 0, 1, 1, 2, 2]
    out, _ = extract_source(reel, _rows(reel, [(0, 24)], 24.0), RunDir(tmp_path), ExtractConfig(fps=12))
    clip_path = tmp_path / out[0][M.clip_path]
    assert len(read_frames(clip_path)) == 12
    assert _stream_facts(clip_path)[4] == 12.0
    assert_frames_match_source(read_frames(clip_path)[::1], read_frames(reel)[0:24:2], 0)


def _key_frames_and_reordering(path):
    """Which packets are key frames, and whether any frame is shown before one decoded earlier (B-frames)."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
    pts = [p.pts for p in packets]
    return [i for i, p in enumerate(packets) if p.is_keyframe], pts != sorted(pts)


def test_clips_have_a_key_frame_every_half_second_and_no_b_frames(reel, tmp_path):
    """What lets decord sample a few frames by seeking (docs/curation.md, bench_frame_reader.py)."""
    out, _ = extract_source(reel, _rows(reel, [(0, 60)], 24.0), RunDir(tmp_path / "a"), ExtractConfig())
    keys, reordered = _key_frames_and_reordering(tmp_path / "a" / out[0][M.clip_path])
    assert ExtractConfig().keyframe_seconds == 0.5
    assert keys[:3] == [0, 12, 24] and 30 in keys  # every 12 frames at 24 fps, and x264's own at the cut
    assert max(b - a for a, b in zip(keys, keys[1:] + [60], strict=True)) <= 12 and not reordered
    # null: x264's defaults, a key frame every 250 frames (a 30-frame shot has one) and B-frames
    out, _ = extract_source(reel, _rows(reel, [(0, 30)], 24.0), RunDir(tmp_path / "b"),
                            ExtractConfig(keyframe_seconds=None))
    keys, reordered = _key_frames_and_reordering(tmp_path / "b" / out[0][M.clip_path])
    assert keys == [0] and reordered


def test_even_size():
    assert even_size(257, 193, None) == (256, 192)
    assert even_size(1920, 1080, 512) == (512, 288)
    assert even_size(1080, 1920, 100) == (56, 100)


def test_clip_past_the_end_of_a_truncated_source_is_quarantined(reel, tmp_path):
    rows = _rows(reel, [(0, 20), (50, 75)], 24.0)  # the reel has 60 frames
    out, quarantine = extract_source(reel, rows, RunDir(tmp_path), ExtractConfig())
    assert out[0][M.status] == schema.STATUS_KEPT and out[0][M.clip_path] == "clips/clip0.mp4"
    assert out[1][M.status] == schema.STATUS_FILTERED and out[1][M.filter_reasons] == [EXTRACT_FAILED]
    assert out[1][M.clip_path] is None
    assert [(q[schema.Q.clip_id], q[schema.Q.stage]) for q in quarantine] == [("clip1", "extract")]
    assert "before clip frames [50, 75)" in quarantine[0][schema.Q.error]
    # nothing half-written is left: no temp file, no clip1.mp4
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["clip0.mp4"]


def test_display_rotation_is_applied(tmp_path):
    source = tmp_path / "portrait.mp4"
    frames, _ = footage.make_footage([footage.Segment(8, "circle", "red", "right", "blue")], 64, 32)
    with av.open(str(source), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)  # filmed with the phone turned: display is 32 wide, 64 high
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out, _ = extract_source(source, _rows(source, [(0, 8)], 24.0), RunDir(tmp_path / "out"), ExtractConfig())
    assert _stream_facts(tmp_path / "out" / out[0][M.clip_path])[2:4] == (32, 64)
    clip = read_frames(tmp_path / "out" / out[0][M.clip_path])
    expected = np.rot90(frames[4], k=1).astype(np.float32)
    assert np.abs(clip[4].astype(np.float32) - expected).mean() < 12


@pytest.mark.skipif(not (OPENCV_DATA / "vtest.avi").exists(), reason="Debian's opencv-doc is not installed")
@pytest.mark.parametrize(
    "name, spans", [("vtest.avi", [(100, 137)]), ("Megamind.avi", [(0, 40), (200, 270)])]
)
def test_real_opencv_clips_are_frame_exact(tmp_path, name, spans):
    path = OPENCV_DATA / name
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
    out, quarantine = extract_source(
        path, _rows(path, spans, fps), RunDir(tmp_path), ExtractConfig(max_side=256, crf=12)
    )
    assert quarantine == []
    source = read_frames(path, max_side=256)
    for row in out:
        clip = read_frames(tmp_path / row[M.clip_path])
        assert len(clip) == row[M.end_frame] - row[M.start_frame]
        codec, pix_fmt, w, h, rate = _stream_facts(tmp_path / row[M.clip_path])
        assert (codec, pix_fmt, max(w, h), w % 2, h % 2) == ("h264", "yuv420p", 256, 0, 0)
        assert rate == pytest.approx(fps, rel=1e-4)
        assert_frames_match_source(clip, source, row[M.start_frame])
