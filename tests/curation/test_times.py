"""Frame positions and times come from presentation timestamps: after an undecodable stretch, and in
variable-frame-rate sources, a clip's frames and times are its real ones in the source."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from curation.config import CurateConfig
from curation.core import schema
from curation.core.rundir import RunDir
from curation.core.video import read_frames
from curation.extract import extract_source
from curation.process import analyze_source
from workflows.report import read_run, render_report

M = schema.M


def _config(**shots) -> CurateConfig:
    cfg = CurateConfig()
    cfg.analysis.text_detector = "none"
    cfg.extract.max_side = 128
    for key, value in shots.items():
        setattr(cfg.shots, key, value)
    return cfg


@pytest.fixture(scope="module")
def damaged_vtest(tmp_path_factory):
    """vtest.avi (10 fps, 795 frames) with 256 KiB in the middle overwritten: ~30 frames do not decode."""
    original = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
    if not original.exists():
        pytest.skip("Debian's opencv-doc is not installed")
    data = bytearray(original.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256 * 1024] = bytes(256 * 1024)
    path = tmp_path_factory.mktemp("damaged") / "vtest_damaged.avi"
    path.write_bytes(bytes(data))
    return original, path


def _gray(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [f.astype(np.float32).mean(axis=2) for f in frames]


def test_times_after_an_undecodable_stretch_are_the_real_ones(damaged_vtest, tmp_path):
    original, path = damaged_vtest
    rows = analyze_source("vtest_damaged.avi", path, _config())
    lost, gaps = rows[0][M.source_frames_lost], rows[0][M.source_gaps]
    assert 25 <= lost <= 35 and len(gaps) == 1 and lost == gaps[0][M.end_frame] - gaps[0][M.start_frame]
    gap = gaps[0]
    assert gap[M.start_time] == pytest.approx(gap[M.start_frame] / 10, abs=0.1)
    for row in rows:
        # never across the gap; frame positions and times agree on the source's 10 fps grid
        assert row[M.end_frame] <= gap[M.start_frame] or row[M.start_frame] >= gap[M.end_frame]
        assert row[M.start_time] == pytest.approx(row[M.start_frame] / 10, abs=0.1)
        assert row[M.end_time] == pytest.approx(row[M.end_frame] / 10, abs=0.1)
        assert row[M.variable_frame_rate] is False
    after = [r for r in rows if r[M.start_frame] >= gap[M.end_frame]]
    assert after and after[-1][M.end_frame] == 795  # the source's last frame keeps its place

    # the frames a clip after the gap names are the source's real frames there, in the clip file too
    clip = after[0]
    reference = read_frames(original)  # every frame of the undamaged file, in order
    out, failures = extract_source(path, [{**clip, M.status: schema.STATUS_KEPT}], RunDir(tmp_path),
                                   _config().extract.model_copy(update={"max_side": None, "crf": 12}))
    assert failures == []
    extracted = read_frames(tmp_path / out[0][M.clip_path])
    assert len(extracted) == clip[M.end_frame] - clip[M.start_frame]
    # (until the next key frame, at 500, the decoder conceals the damage with older pictures)
    for offset in (505 - clip[M.start_frame], 540 - clip[M.start_frame], len(extracted) - 1):
        best = _best_match(extracted[offset], reference, clip[M.start_frame] + offset - 40, clip[M.start_frame] + offset + 40)
        assert abs(best - (clip[M.start_frame] + offset)) <= 1, (offset, best)


def _best_match(frame: np.ndarray, reference: list[np.ndarray], lo: int, hi: int) -> int:
    import cv2

    h, w = frame.shape[:2]
    gray = _gray([frame])[0]
    errors = {i: np.abs(gray - _gray([cv2.resize(reference[i], (w, h), interpolation=cv2.INTER_AREA)])[0]).mean()
              for i in range(max(0, lo), min(len(reference), hi))}
    return min(errors, key=errors.get)


def test_the_report_shows_the_frames_lost(damaged_vtest, tmp_path):
    from curation.core.rundir import atomic_write_table, rows_to_table

    _, path = damaged_vtest
    rows = analyze_source(str(path), path, _config())
    run = RunDir(tmp_path)
    atomic_write_table(rows_to_table(rows, schema.MANIFEST), run.manifest_part("k", "h"))
    page = render_report(read_run(run, _config()))
    assert "Frames lost (1 sources)" in page and str(rows[0][M.source_frames_lost]) in page


def _write_vfr(path, times: list[float], cut_at: int) -> None:
    """An h264 mp4 whose frames sit at `times` (seconds, irregular): a red shot, then at `cut_at` a blue one."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            img = np.zeros((96, 128, 3), np.uint8)
            img[..., 0 if i < cut_at else 2] = 200
            x = (i * 3) % 100
            img[40:56, x : x + 16] = 255  # something moving, so nothing is trimmed as frozen
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_variable_frame_rate_times_are_each_frames_own(tmp_path):
    rng = np.random.default_rng(1)
    gaps = rng.choice([1 / 60, 1 / 30, 1 / 10], size=120)  # frames 17-100 ms apart
    times = np.concatenate([[0.0], np.cumsum(gaps)[:-1]]).round(3).tolist()
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, times, cut_at=70)
    rows = analyze_source("vfr.mp4", path, _config(trim_frozen=False, trim_black=False))
    assert all(r[M.variable_frame_rate] for r in rows)
    starts = [r[M.start_frame] for r in rows]
    assert 70 in starts, starts
    second = rows[starts.index(70)]
    assert second[M.start_time] == pytest.approx(times[70], abs=0.002)  # not 70 / average rate
    assert rows[starts.index(70) - 1][M.end_time] == pytest.approx(times[70], abs=0.002)
    assert rows[-1][M.end_frame] == 120 and rows[0][M.source_frames_lost] == 0


def test_positions_count_frame_durations_so_a_rate_a_hair_off_makes_no_gaps():
    from types import SimpleNamespace

    from curation.decode import FrameClock

    clock = FrameClock(SimpleNamespace(fps=30.0, variable_frame_rate=False))  # the file really runs at 29.97
    places = [clock.place(SimpleNamespace(time=i * 1001 / 30000)) for i in range(3000)]
    assert [p for p, _t in places] == list(range(3000))
    lost = clock.place(SimpleNamespace(time=3010 * 1001 / 30000))  # 10 frames did not decode
    assert lost[0] == 3010


def test_frames_lost_at_the_start_leave_a_gap_at_position_0(tmp_path):
    """vtest.avi with 256 KiB overwritten at the start of its movi data: the first ~13 frames do not
    decode. Positions and times count from the stream's start (slot 0 of the AVI index), not from
    the first frame that decodes, and the loss is recorded."""
    original = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
    if not original.exists():
        pytest.skip("Debian's opencv-doc is not installed")
    data = bytearray(original.read_bytes())
    movi = data.find(b"movi")
    data[movi + 4 : movi + 4 + 256 * 1024] = bytes(256 * 1024)
    path = tmp_path / "vtest_start_damaged.avi"
    path.write_bytes(bytes(data))
    rows = analyze_source(path.name, path, _config())
    lost, gaps = rows[0][M.source_frames_lost], rows[0][M.source_gaps]
    assert 5 <= lost <= 30 and len(gaps) == 1 and gaps[0][M.start_frame] == 0 and gaps[0][M.end_frame] == lost
    assert gaps[0][M.start_time] == 0 and gaps[0][M.end_time] == pytest.approx(lost / 10, abs=1e-6)
    assert rows[0][M.start_frame] >= lost and rows[0][M.start_time] == pytest.approx(rows[0][M.start_frame] / 10)
    assert rows[-1][M.end_frame] == 795  # the last frame keeps its place
    for row in rows:
        assert row[M.start_time] == pytest.approx(row[M.start_frame] / 10, abs=0.1)

    # extraction places frames with the same clock: the clip's first frame is the source's frame there
    clip = rows[0]
    reference = read_frames(original)
    out, failures = extract_source(path, [{**clip, M.status: schema.STATUS_KEPT}], RunDir(tmp_path),
                                   _config().extract.model_copy(update={"max_side": None, "crf": 12}))
    assert failures == []
    extracted = read_frames(tmp_path / out[0][M.clip_path])
    assert len(extracted) == clip[M.end_frame] - clip[M.start_frame]
    offset = len(extracted) - 1  # past the next key frame (250): no concealment
    best = _best_match(extracted[offset], reference, clip[M.start_frame] + offset - 40, clip[M.start_frame] + offset + 40)
    assert abs(best - (clip[M.start_frame] + offset)) <= 1, (offset, best)


def test_a_first_frame_one_late_counts_from_itself():
    """Some AVIs stamp their first frame one frame after the stream's start (Megamind.avi): no gap."""
    from types import SimpleNamespace

    from curation.decode import FrameClock

    clock = FrameClock(SimpleNamespace(fps=10.0, variable_frame_rate=False, start_time=0.0))
    assert [clock.place(SimpleNamespace(time=(i + 1) / 10))[0] for i in range(3)] == [0, 1, 2]
    clock = FrameClock(SimpleNamespace(fps=10.0, variable_frame_rate=False, start_time=0.0))
    assert [clock.place(SimpleNamespace(time=(i + 13) / 10)) for i in range(2)] == [(13, 1.3), (14, 1.4)]


def test_a_rate_reported_double_the_real_one_makes_no_gaps():
    """A stream that says 50 fps for frames 40 ms apart: frames step by the timestamps' median gap,
    so consecutive frames are consecutive positions and only a real loss is a gap."""
    from types import SimpleNamespace

    from curation.decode import FrameClock
    from curation.probe import frame_step

    times = [i * 0.04 for i in range(100)] + [i * 0.04 for i in range(110, 150)]  # 10 frames lost
    assert frame_step(50.0, times) == pytest.approx(0.04)
    assert frame_step(25.0, times) is None and frame_step(30.0, [i / 29.97 for i in range(50)]) is None
    clock = FrameClock(SimpleNamespace(fps=50.0, variable_frame_rate=False, start_time=0.0,
                                       frame_duration=frame_step(50.0, times)))
    places = [clock.place(SimpleNamespace(time=t)) for t in times]
    assert [p for p, _t in places] == list(range(100)) + list(range(110, 150))
    assert [t for _p, t in places] == pytest.approx(times)
