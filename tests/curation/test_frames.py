"""The frame reader (`curation.core.frames`): a clip file's frames and a source range's frames are
the frames curation placed there, by either backend, and decord's known failures fall back to PyAV."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from curation.config import CurateConfig
from curation.core import frames as F
from curation.core import schema
from curation.core.stage import PermanentError
from curation.decode import FrameClock, decode_frames
from curation.probe import probe
from curation.process import analyze_source
from workflows.synthetic.footage import Segment, write_footage

M = schema.M


def placed_frames(path: Path) -> dict[int, np.ndarray]:
    """{position: RGB frame} as analysis and extraction place a source's frames (the truth)."""
    clock = FrameClock(probe(path))
    return {clock.place(frame)[0]: frame.to_ndarray(format="rgb24") for frame in decode_frames(path)}


def _config() -> CurateConfig:
    cfg = CurateConfig()
    cfg.analysis.text_detector = "none"
    return cfg


def assert_ranges_read_right(path: Path, reader: str = "pyav") -> list[dict]:
    """Every clip analysis finds in `path`: its first, middle and last frame read by range are the
    frames curation placed at those positions."""
    rows = analyze_source(path.name, path, _config())
    truth = placed_frames(path)
    for row in rows:
        n = row[M.end_frame] - row[M.start_frame]
        wanted = sorted({0, n // 2, n - 1})
        got = F.read_range_frames(path, row[M.start_time], n, wanted, reader=reader)
        assert len(got) == len(wanted), row
        for k, frame in zip(wanted, got, strict=True):
            assert np.array_equal(frame, truth[row[M.start_frame] + k]), (row[M.start_frame], k)
    return rows


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "source.mp4"
    write_footage(path, [Segment(40, "circle", "red", "right", "blue"),
                         Segment(50, "square", "green", "none", "yellow", camera="pan_left"),
                         Segment(60, "triangle", "white", "up", "purple")], 192, 108, fps=24, seed=1)
    return path


def test_a_clip_files_frames_by_index(source):
    every = F.read_clip_frames(source, reader="pyav")
    assert len(every) == 150 == F.frame_count(source, reader="pyav")
    some = F.read_clip_frames(source, [149, 3, 3, 77], reader="pyav")
    assert [np.array_equal(a, every[i]) for a, i in zip(some, [3, 77, 149], strict=True)] == [True] * 3
    small = F.read_clip_frames(source, [3], max_side=96, reader="pyav")[0]
    assert small.shape == (54, 96, 3) and np.array_equal(small, F.resize_max_side(every[3], 96))


def test_source_ranges_are_the_frames_curation_placed(source):
    rows = assert_ranges_read_right(source)
    assert [r[M.start_frame] for r in rows[:3]] == [0, 40, 90]
    # a range deep in the source (the reader seeks there): by time alone
    read = F.read_range_frames(source, 120 / 24, 30, [0, 29], reader="pyav")
    truth = F.read_clip_frames(source, [120, 149], reader="pyav")
    assert all(np.array_equal(a, b) for a, b in zip(read, truth, strict=True))


def test_ranges_after_frames_lost_mid_source_and_at_its_start(opencv_clip, tmp_path):
    """vtest.avi with 256 KiB overwritten in the middle, and at its start: frames after the damage
    are read at their real places (the AVI index's slots, the stream's start as origin)."""
    data = opencv_clip("vtest.avi").read_bytes()
    middle, movi = len(data) // 2, data.find(b"movi")
    for name, at in (("mid.avi", middle), ("start.avi", movi + 4)):
        damaged = bytearray(data)
        damaged[at : at + 256 * 1024] = bytes(256 * 1024)
        path = tmp_path / name
        path.write_bytes(bytes(damaged))
        rows = assert_ranges_read_right(path)
        assert rows[0][M.source_frames_lost] > 5


def test_a_first_frame_stamped_one_late(opencv_clip):
    """Megamind.avi stamps its first frame one late: it still counts as frame 0 of the first clip."""
    assert_ranges_read_right(opencv_clip("Megamind.avi"))


def test_variable_frame_rate_ranges_follow_the_timestamps(tmp_path):
    rng = np.random.default_rng(1)
    times = np.concatenate([[0.0], np.cumsum(rng.choice([1 / 60, 1 / 30, 1 / 10], size=119))]).round(3)
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            img = np.zeros((96, 128, 3), np.uint8)
            img[..., 0 if i < 70 else 2] = 200
            img[40:56, (i * 3) % 100 : (i * 3) % 100 + 16] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rows = assert_ranges_read_right(path)
    assert rows[0][M.variable_frame_rate]


def test_bad_inputs_are_permanent_errors_naming_the_file(tmp_path, broken_files, source):
    for path in (tmp_path / "missing.mp4", *(broken_files[k] for k in ("zero_bytes", "text", "random_bytes", "audio_only", "truncated"))):
        with pytest.raises(PermanentError, match=path.name):
            F.read_clip_frames(path, [0])
    with pytest.raises(PermanentError, match="outside the clip's 10 frames"):
        F.read_range_frames(source, 0.0, 10, [10])
    with pytest.raises(ValueError, match="use one of auto, decord, pyav"):
        F.read_clip_frames(source, [0], reader="opencv")
