"""Probe: stream facts, a rename-proof fingerprint, and every broken input quarantined with a reason."""

import shutil
from fractions import Fraction

import numpy as np
import pytest

from curation.core.stage import PermanentError
from curation.probe import Deadline, fingerprint, probe
from workflows.synthetic.footage import Segment, make_footage, write_video

EXPECTED_MESSAGES = {
    "zero_bytes": "empty",
    "text": "text file",
    "random_bytes": "not a readable video container",
    "audio_only": "no video stream",
    "truncated": "not a readable video container",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_MESSAGES))
def test_broken_inputs_raise_a_permanent_error_naming_the_file(broken_files, kind):
    path = broken_files[kind]
    with pytest.raises(PermanentError) as err:
        probe(path)
    assert str(path) in str(err.value) and EXPECTED_MESSAGES[kind] in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PermanentError, match="does not exist"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(PermanentError, match="directory"):
        probe(tmp_path)


def test_generated_mp4_facts(tmp_path):
    frames, _ = make_footage([Segment(30, "circle", "red", "right", "blue")], 128, 96)
    path = tmp_path / "a.mp4"
    write_video(path, frames, fps=25)
    info = probe(path)
    assert (info.codec, info.width, info.height, info.num_frames, info.rotation) == ("h264", 128, 96, 30, 0)
    assert info.fps == pytest.approx(25) and info.duration == pytest.approx(1.2, abs=0.05)
    assert not info.variable_frame_rate and not info.num_frames_estimated


def test_rotation_swaps_the_display_size(tmp_path):
    import av

    frames, _ = make_footage([Segment(8, "circle", "red", "right", "blue")], 64, 48)
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.set_display_rotation(90)
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)


def test_fingerprint_follows_content_not_name(tmp_path):
    frames, _ = make_footage([Segment(12, "square", "yellow", "up", "green")], 64, 48)
    a = tmp_path / "a.mp4"
    write_video(a, frames)
    b = tmp_path / "renamed" / "b.mp4"
    b.parent.mkdir()
    shutil.copy(a, b)
    assert fingerprint(a) == fingerprint(b) == probe(b).fingerprint
    big = tmp_path / "big.bin"  # a large file is hashed from samples, and still sees a changed byte
    data = bytearray(np.random.default_rng(1).bytes(3_000_000))
    big.write_bytes(bytes(data))
    before = fingerprint(big)
    data[0] ^= 1
    big.write_bytes(bytes(data))
    assert fingerprint(big) != before


def test_variable_frame_rate_is_detected(tmp_path):
    import av

    frames, _ = make_footage([Segment(40, "circle", "red", "right", "blue")], 64, 48)
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            t += 33 if i % 2 else 100  # alternating gaps: not one frame rate
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert probe(path).variable_frame_rate


def test_opencv_doc_clips(opencv_clip):
    mega = probe(opencv_clip("Megamind.avi"))
    assert (mega.codec, mega.width, mega.height, mega.num_frames) == ("mpeg4", 720, 528, 270)
    # Megamind_bugy.avi has a damaged header (OpenCV's test of broken files); FFmpeg reads it
    bugy = probe(opencv_clip("Megamind_bugy.avi"))
    assert bugy.num_frames == 270 and bugy.fingerprint != mega.fingerprint
    # tree.avi's AVI index counts 444 slots but holds 68 pictures: a variable rate, count estimated
    tree = probe(opencv_clip("tree.avi"))
    assert tree.variable_frame_rate and tree.num_frames_estimated and 60 <= tree.num_frames <= 75


def test_deadline_stops_a_slow_file(tmp_path, opencv_clip):
    deadline = Deadline(1e-9, tmp_path / "slow.mp4")
    with pytest.raises(PermanentError, match="slow.mp4.*limit"):
        deadline.check()
    with pytest.raises(PermanentError, match="limit"):
        probe(opencv_clip("vtest.avi"), timeout_s=1e-9)


def test_a_probe_time_out_is_filed_under_probe(tmp_path):
    path = tmp_path / "slow.mp4"
    write_video(path, make_footage([Segment(24, "circle", "red", "right", "blue")], 64, 48)[0])
    with pytest.raises(PermanentError, match="probing took longer") as caught:
        probe(path, timeout_s=1e-9)
    assert caught.value.stage == "probe"
