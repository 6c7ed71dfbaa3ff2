"""The frame reader (`curation.core.frames`): a clip file's frames and a source range's frames are
the frames curation placed there, by either backend, and decord's known failures fall back to PyAV."""

import os
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
        streamed = list(F.iter_range_frames(path, row[M.start_time], n))  # the whole range in one pass
        assert len(streamed) == n, row
        assert all(np.array_equal(f, truth[row[M.start_frame] + k]) for k, f in enumerate(streamed)), row
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


# ---------------------------------------------------------------------------------------------
# decord, and its guards

needs_decord = pytest.mark.skipif(not F.decord_installed(), reason="decord (decord2) is not installed")


def _remux_hiding_the_first(src: Path, dst: Path, hidden: int) -> None:
    """`src` remuxed with its first `hidden` frames before time 0: the mp4 gets an edit list that
    hides them, so the container holds more frames (packets) than it shows."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = [p for p in inp.demux(ist) if p.size]
        pts = sorted(p.pts for p in packets)
        shift = hidden * (pts[1] - pts[0])
        for p in packets:
            p.pts, p.dts, p.stream = p.pts - shift, p.dts - shift, ost
            out.mux(p)


def _spin_holding_the_gil() -> list:
    """Native code that never returns and holds the GIL (as decord's get_batch can): a regex that
    backtracks for longer than the universe is old."""
    import re

    re.match(r"(a+)+$", "a" * 64 + "b")
    return []


def _die(*_args) -> list:
    os._exit(3)


@needs_decord
def test_decord_gives_pyavs_frames_of_a_clip_and_of_ranges(source):
    why: list[str] = []
    wanted = [0, 17, 63, 120, 149, 400]  # 400 is past the end: left out, as PyAV does
    by_decord = F.read_clip_frames(source, wanted, reader="decord", on_fallback=why.append)
    by_pyav = F.read_clip_frames(source, wanted, reader="pyav")
    assert why == [] and len(by_decord) == 5
    assert all(np.array_equal(a, b) for a, b in zip(by_decord, by_pyav, strict=True))
    small = F.read_clip_frames(source, [17], max_side=64, reader="decord", on_fallback=why.append)[0]
    assert np.array_equal(small, F.read_clip_frames(source, [17], max_side=64, reader="pyav")[0])
    assert why == []
    rows = assert_ranges_read_right(source, reader="decord")
    for row in rows:  # and no range fell back
        n = row[M.end_frame] - row[M.start_frame]
        F.read_range_frames(source, row[M.start_time], n, [0, n - 1], reader="decord", on_fallback=why.append)
    assert why == []


@needs_decord
def test_an_over_reported_frame_count_is_caught_before_decord_reads(source, tmp_path):
    """The container holds 150 frames but shows 120 (an edit list hides 30): decord would count and
    return the hidden ones, PyAV counts 120. Validated first, read by PyAV, the reason said."""
    path = tmp_path / "hidden.mp4"
    _remux_hiding_the_first(source, path, 30)
    assert F.frame_count(path) == 120 and F.file_facts(path).hidden == 30
    why: list[str] = []
    got = F.read_clip_frames(path, [0, 60, 119], reader="decord", on_fallback=why.append)
    assert all(np.array_equal(a, b) for a, b in zip(got, F.read_clip_frames(path, [0, 60, 119], reader="pyav"),
                                                    strict=True))
    assert len(why) == 1 and "edit list hides 30" in why[0]
    # past that guard, the worker checks decord's own count against the file's before get_batch
    with pytest.raises(F.DecordFailed, match="decord counts 150 frames, the file shows 120"):
        F._worker().call(F._decord_clip, (str(path), [119], 120), 30)


def test_a_header_claiming_more_frames_than_the_file_has(source, tmp_path):
    """The mp4's sample table (stts) patched to claim twice the frames: the count is the packets'."""
    import struct

    data = bytearray(source.read_bytes())
    at = data.find(b"stts")
    entries = struct.unpack(">I", data[at + 8 : at + 12])[0]
    last = at + 12 + 8 * (entries - 1)
    struct.pack_into(">I", data, last, struct.unpack(">I", data[last : last + 4])[0] + 150)
    path = tmp_path / "claims_more.mp4"
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 300  # what the header says
    assert F.frame_count(path) == 150
    assert len(F.read_clip_frames(path, [0, 149, 299])) == 2  # the frames that exist


@pytest.mark.skipif("libvpx" not in av.codecs_available, reason="PyAV has no libvpx encoder")
def test_a_webm_vp8_clip_is_read_by_pyav(tmp_path):
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=24)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i in range(48):
            img = np.zeros((96, 128, 3), np.uint8)
            img[:, (i * 2) % 112 : (i * 2) % 112 + 16] = (200, 40, 40)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 24)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    why: list[str] = []
    got = F.read_clip_frames(path, [5, 40], reader="decord", on_fallback=why.append)
    assert all(np.array_equal(a, b) for a, b in zip(got, F.read_clip_frames(path, [5, 40], reader="pyav"), strict=True))
    assert len(why) == 1 and ("vp8" in why[0] or "not installed" in why[0])
    ranged = F.read_range_frames(path, 5 / 24, 10, [0, 9], reader="auto", on_fallback=why.append)
    assert np.array_equal(ranged[0], got[0])


@needs_decord
@pytest.mark.timeout(180)  # the spin never returns: only the 2 s limit can end it
def test_decord_hanging_or_dying_falls_back_and_the_worker_comes_back(source, monkeypatch):
    """A read that spins in native code holding the GIL is killed at its time limit; a worker that
    dies is noticed; each time PyAV reads instead, and the next read gets a fresh worker."""
    worker = F._worker()
    with pytest.raises(F.DecordFailed, match="longer than its 2 s limit"):
        worker.call(_spin_holding_the_gil, (), 2)
    with pytest.raises(F.DecordFailed, match="worker died"):
        worker.call(_die, (), 30)
    assert len(worker.call(F._decord_clip, (str(source), [3], 150), 30)) == 1  # a new worker reads

    # through the reader: a failure in the worker is a fallback with its reason, PyAV's frames
    monkeypatch.setattr(F, "_decord_clip", _die)
    why: list[str] = []
    got = F.read_clip_frames(source, [3], reader="decord", on_fallback=why.append)
    assert np.array_equal(got[0], F.read_clip_frames(source, [3], reader="pyav")[0])
    assert len(why) == 1 and "worker died" in why[0]


def test_without_decord_pyav_reads_and_decord_asked_for_says_so(source, monkeypatch):
    monkeypatch.setattr(F, "_decord_installed", False)
    why: list[str] = []
    auto = F.read_clip_frames(source, [3], reader="auto", on_fallback=why.append)
    assert why == []
    forced = F.read_clip_frames(source, [3], reader="decord", on_fallback=why.append)
    assert np.array_equal(auto[0], forced[0]) and len(why) == 1 and "not installed" in why[0]


@pytest.mark.parametrize("reader", ["pyav", "auto"])
def test_a_rotated_source_reads_as_displayed_like_its_extracted_clip(tmp_path, reader):
    from workflows.synthetic.footage import make_footage

    path = tmp_path / "portrait.mp4"
    frames, _ = make_footage([Segment(24, "circle", "red", "right", "blue")], 64, 32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)  # filmed with the phone turned: displayed 32 wide, 64 high
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    fallbacks = []
    got = F.read_range_frames(path, 0.0, 24, [4, 20], reader=reader, on_fallback=fallbacks.append)
    assert [f.shape for f in got] == [(64, 32, 3)] * 2
    for frame, i in zip(got, [4, 20], strict=True):
        assert np.abs(frame.astype(np.float32) - np.rot90(frames[i], k=1)).mean() < 12
    assert F.read_clip_frames(path, [4], reader=reader)[0].shape == (64, 32, 3)
    if reader == "auto" and F.decord_installed():
        assert any("rotation" in reason for reason in fallbacks)
