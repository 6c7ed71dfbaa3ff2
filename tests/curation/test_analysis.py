"""One decode pass: shot boundaries against the generator's truth, trimming, splitting, bounded
memory, salvaged and broken inputs."""

from pathlib import Path

import numpy as np
import pytest

from curation.analysis import AnalysisStats, analyze
from curation.config import CurateConfig
from curation.core.stage import PermanentError
from curation.decode import shrink_frame
from curation.probe import probe
from curation.shots import _MAX_SAMPLES
from workflows.synthetic.footage import Segment, make_footage, render_shape_clip, write_footage, write_video


def _clips(path: Path, cfg: CurateConfig | None = None, stats: AnalysisStats | None = None):
    cfg = cfg or CurateConfig()
    return list(analyze(path, probe(path), cfg, stats))


def test_hard_cuts_land_within_one_frame_of_the_truth(reel):
    _path, truth, rows = reel
    detected = [r["start_frame"] for r in rows if r["transition_in"] == "cut"]
    for cut in truth.cuts:
        assert min(abs(cut - d) for d in detected) <= 1, (cut, detected)
    for d in detected:  # and nothing was cut where there is no cut
        assert min(abs(cut - d) for cut in truth.cuts) <= 1, (d, truth.cuts)
    assert rows[0]["start_frame"] == 0 and rows[-1]["end_frame"] == truth.num_frames


def test_dissolves_and_fades_do_not_make_multiple_cuts(tmp_path):
    segs = [
        Segment(40, "circle", "red", "right", "blue"),
        Segment(40, "square", "yellow", "left", "green", transition="dissolve", transition_frames=12),
        Segment(40, "triangle", "white", "up", "purple", transition="fade", transition_frames=10),
        Segment(40, "circle", "orange", "down", "cyan", transition="dissolve", transition_frames=6),
    ]
    path = tmp_path / "soft.mp4"
    truth = write_footage(path, segs, 192, 144)
    clips = _clips(path)
    starts = [c.shot.start for c in clips[1:]]
    for t in truth.transitions:
        inside = [s for s in starts if t.start - 2 <= s <= t.end + 2]
        assert len(inside) <= 1, (t, starts)
    # the shots are not shredded: at most one clip per segment, plus one where a fade got trimmed
    assert len(clips) <= len(segs) + 1


def test_black_runs_become_their_own_clip_and_short_black_edges_are_trimmed(tmp_path):
    segs = [
        Segment(6, black=True),  # short black lead-in: trimmed
        Segment(40, "circle", "red", "right", "blue", transition="fade", transition_frames=5),
        Segment(30, black=True, transition="fade", transition_frames=5),  # long: a clip of its own
        Segment(40, "square", "yellow", "left", "green"),
    ]
    path = tmp_path / "black.mp4"
    write_footage(path, segs, 192, 144)
    clips = _clips(path)
    first = clips[0].shot
    assert 6 <= first.start <= 8  # the black lead-in (and the first, darkest fade-in frame) is gone
    black = [c for c in clips if c.luma.mean() < 5]
    assert len(black) == 1 and 44 <= black[0].shot.start <= 47 and 75 <= black[0].shot.end <= 77
    assert clips[-1].shot.end == 116


def test_frozen_lead_in_and_tail_are_trimmed(tmp_path):
    moving = render_shape_clip(
        "circle", "red", "right", "blue", num_frames=30, height=96, width=128, speed=0.03
    )
    frames = np.concatenate([np.repeat(moving[:1], 10, axis=0), moving, np.repeat(moving[-1:], 8, axis=0)])
    path = tmp_path / "frozen.mp4"
    write_video(path, frames)
    (clip,) = _clips(path)
    assert 8 <= clip.shot.start <= 10 and 39 <= clip.shot.end <= 41
    # a shot where nothing ever moves is kept whole (the static filter deals with it)
    still = tmp_path / "still.mp4"
    write_video(still, np.repeat(moving[:1], 30, axis=0))
    (clip,) = _clips(still)
    assert (clip.shot.start, clip.shot.end) == (0, 30)


def test_long_shots_are_split_evenly(tmp_path):
    path = tmp_path / "long.mp4"
    write_footage(path, [Segment(60, "circle", "red", "right", "blue")], 128, 96, fps=24)
    cfg = CurateConfig()
    cfg.shots.max_shot_seconds = 1.0
    clips = _clips(path, cfg)
    assert [(c.shot.start, c.shot.end) for c in clips] == [(0, 20), (20, 40), (40, 60)]
    assert [c.shot.closed_by for c in clips] == ["max_duration", "max_duration", "end"]
    assert [c.shot.transition_in for c in clips] == ["start", "split", "split"]
    assert clips[1].start_time == pytest.approx(20 / 24) and clips[2].end_time == pytest.approx(2.5)


def test_memory_stays_bounded_on_a_long_shot(tmp_path):
    path = tmp_path / "one_long_shot.mp4"
    write_footage(
        path, [Segment(700, "circle", "red", "right", "blue", camera="pan_right", camera_speed=0.003)], 64, 48
    )
    cfg = CurateConfig()
    cfg.shots.max_shot_seconds = None
    (clip,) = _clips(path, cfg)
    assert clip.shot.end == 700 and len(clip.samples) <= _MAX_SAMPLES
    idx = [s.index for s in clip.samples]
    assert idx[0] < 50 and idx[-1] > 600  # samples still cover the whole shot
    assert sum(s.next_flow_gray is not None for s in clip.samples) >= len(idx) - 1


def test_shrink_frame_matches_a_full_rgb_conversion(tmp_path):
    import av
    import cv2

    frames, _ = make_footage([Segment(3, "square", "yellow", "left", "green")], 256, 192)
    path = tmp_path / "c.mp4"
    write_video(path, frames)
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        small, gray = shrink_frame(frame, (96, 72))
        reference = cv2.resize(frame.to_ndarray(format="bgr24"), (96, 72), interpolation=cv2.INTER_AREA)
    assert small.shape == (72, 96, 3) and gray.shape == (72, 96)
    assert np.abs(small.astype(int) - reference).mean() < 4
    assert np.abs(gray.astype(int) - cv2.cvtColor(reference, cv2.COLOR_BGR2GRAY)).mean() < 3


def test_adaptive_detector_reusing_content_scores_finds_the_same_cuts(tmp_path):
    segs = [Segment(30, "circle", "red", "right", "blue"), Segment(30, "square", "yellow", "left", "green")]
    segs += [Segment(30, "triangle", "white", "none", "purple", camera="pan_left")]
    path = tmp_path / "three.mp4"
    write_footage(path, segs, 128, 96)
    both, alone = CurateConfig(), CurateConfig()
    alone.shots.detectors = ["adaptive"]
    stats_both, stats_alone = AnalysisStats(), AnalysisStats()
    shots_both = [c.shot.start for c in _clips(path, both, stats_both)]
    shots_alone = [c.shot.start for c in _clips(path, alone, stats_alone)]
    assert shots_both == shots_alone == [0, 30, 60]
    assert stats_both.cuts["adaptive"] == stats_alone.cuts["adaptive"] == 2


def test_megamind_bugy_is_salvaged(opencv_clip):
    stats = AnalysisStats()
    clips = _clips(opencv_clip("Megamind_bugy.avi"), stats=stats)
    assert stats.frames_decoded == 270
    assert clips[-1].shot.end == 270 and all(c.shot.end > c.shot.start for c in clips)


def test_a_corrupt_stream_is_salvaged_where_frames_decode(tmp_path):
    path = tmp_path / "damaged.avi"  # mjpeg: every frame stands alone, so damage stays local
    write_footage(path, [Segment(60, "circle", "red", "right", "blue")], 128, 96, codec="mjpeg")
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for at in (len(data) // 3, len(data) // 2):
        data[at : at + 3000] = rng.bytes(3000)
    path.write_bytes(bytes(data))
    stats = AnalysisStats()
    clips = _clips(path, stats=stats)
    assert stats.decode_errors >= 1 and 40 <= stats.frames_decoded < 60
    # frames keep their places in the source: the lost ones are gaps, which no clip spans
    assert clips[-1].shot.end == 60 and stats.frames_decoded + stats.frames_lost == 60
    assert stats.gaps and all(not (c.shot.start < g.end and g.start < c.shot.end) for c in clips for g in stats.gaps)
    assert sum(c.shot.end - c.shot.start for c in clips) <= stats.frames_decoded


def test_rotated_sources_are_analysed_upright(tmp_path):
    import av

    frames, _ = make_footage([Segment(20, "square", "yellow", "right", "blue")], 128, 96)
    frames[:, :16, :16] = 255  # a white mark in the stored top-left corner
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        s.set_display_rotation(90)  # shown turned 90° counter-clockwise: the mark ends bottom-left
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    (clip,) = _clips(path)
    img = clip.pictures[0][1]
    assert img.shape[:2] == (128, 96)
    assert img[-8:, :8].mean() > 200 and img[:8, :8].mean() < 200


def test_opencv_doc_clips_give_sensible_shots(opencv_clip):
    tree = opencv_clip("tree.avi")
    info = probe(tree)
    clips = _clips(tree)
    # a variable-rate file: times come from timestamps, and cover the whole file
    assert clips[-1].end_time == pytest.approx(info.duration, rel=0.05)
    assert all(a.end_time <= b.start_time + 1e-6 for a, b in zip(clips, clips[1:], strict=False))
    mega = _clips(opencv_clip("Megamind.avi"))
    assert 2 <= len(mega) <= 8 and mega[-1].shot.end == 270


def test_nothing_decodable_is_a_permanent_error(broken_files):
    with pytest.raises(PermanentError):
        _clips(broken_files["truncated"])


def test_analysis_time_limit_grows_with_the_source(tmp_path):
    path = tmp_path / "two_seconds.mp4"
    write_footage(path, [Segment(48, "circle", "red", "right", "blue")], 64, 48)
    cfg = CurateConfig()
    cfg.probe.timeout_s, cfg.probe.timeout_per_video_second = 1e-6, 0.0
    info = probe(path)
    with pytest.raises(PermanentError, match="analysis took longer"):
        list(analyze(path, info, cfg))
    cfg.probe.timeout_per_video_second = 30.0  # 60 s for this 2 s source
    assert list(analyze(path, info, cfg))


def test_an_analysis_time_out_is_filed_under_analysis_not_probe(tmp_path):
    """The quarantine table names the step that ran out of time: here analysis, after probing passed."""
    import pickle

    path = tmp_path / "slow.mp4"
    write_footage(path, [Segment(24, "circle", "red", "right", "blue")], 64, 48)
    info = probe(path)
    cfg = CurateConfig()
    cfg.probe.timeout_s, cfg.probe.timeout_per_video_second = 1e-6, 0.0
    with pytest.raises(PermanentError, match="analysis took longer") as caught:
        list(analyze(path, info, cfg))
    assert caught.value.stage == "analysis"
    assert pickle.loads(pickle.dumps(caught.value)).stage == "analysis"  # survives a hand-over between processes


def test_measured_detector_scores_equal_pyscenedetects_own(tmp_path):
    """The decode thread's HSV differences give exactly the score ContentDetector computes itself."""
    from scenedetect import FrameTimecode
    from scenedetect.detectors import ContentDetector

    from curation.analysis import analysis_size
    from curation.decode import FramePreparer, decode_frames
    from curation.probe import Deadline
    from curation.shots import make_detectors

    segs = [Segment(12, "circle", "red", "right", "blue"), Segment(12, "square", "yellow", "left", "green")]
    path = tmp_path / "two.mp4"
    write_footage(path, segs, 192, 144)
    info = probe(path)
    size = analysis_size(info.width, info.height, 256)
    prepare = FramePreparer(info, size, analysis_size(*size, 128))
    upstream, measured = ContentDetector(), make_detectors(CurateConfig())["content"]
    scores = []
    for frame in decode_frames(path, Deadline(None, path), AnalysisStats()):
        prepared = prepare(frame)
        tc = FrameTimecode(prepared.index, info.fps)
        expected = upstream._calculate_frame_score(tc, prepared.small_bgr)
        assert measured._calculate_frame_score(tc, prepared.hsv_delta) == pytest.approx(expected, abs=1e-9)
        scores.append(expected)
    assert max(scores) > 27 > scores[5]  # the cut scores far above the threshold, a moving shot below


def test_stopping_early_ends_the_decode_thread(tmp_path):
    import threading

    path = tmp_path / "two_shots.mp4"
    segs = [Segment(20, "circle", "red", "right", "blue"), Segment(20, "square", "yellow", "left", "green")]
    write_footage(path, segs, 128, 96)
    clips = analyze(path, probe(path), CurateConfig())
    assert 19 <= next(clips).shot.end <= 21
    clips.close()
    assert not [t for t in threading.enumerate() if t.name == "rushes-decode"]
