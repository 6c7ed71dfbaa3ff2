"""The footage generator: its truth must match what is really in the frames."""

import numpy as np
import pytest

from curation.core.video import read_frames
from workflows.synthetic.footage import (
    COLORS,
    DIRECTIONS,
    SHAPES,
    Segment,
    make_footage,
    random_segments,
    render_shape_clip,
    shape_caption,
    write_footage,
    write_video,
)


def _frame_diffs(frames: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))


def _centroid(frame: np.ndarray, color: str) -> tuple[float, float]:
    dist = np.abs(frame.astype(np.int16) - np.array(COLORS[color])).sum(axis=2)
    ys, xs = np.nonzero(dist < 60)
    assert len(xs) > 20, f"no {color} pixels found"
    return float(xs.mean()), float(ys.mean())


def _global_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """How far the content moved from frame a to frame b (phase correlation)."""
    import cv2

    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
    return dx, dy


def test_hard_cuts_are_where_the_frame_difference_spikes():
    segs = [
        Segment(20, "circle", "red", "right", "blue"),
        Segment(25, "square", "yellow", "left", "green"),
        Segment(15, "triangle", "white", "down", "purple"),
        Segment(20, "circle", "orange", "up", "cyan"),
    ]
    frames, truth = make_footage(segs, 128, 96)
    assert frames.shape == (80, 96, 128, 3) and frames.dtype == np.uint8
    assert truth.cuts == [20, 45, 60]
    diffs = _frame_diffs(frames)  # diffs[i] is between frame i and i+1
    spikes = sorted(int(i) + 1 for i in np.argsort(diffs)[-3:])
    assert spikes == truth.cuts
    assert diffs[np.array(truth.cuts) - 1].min() > 5 * np.median(diffs)


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_shape_moves_in_its_stated_direction(direction):
    frames = render_shape_clip(
        "circle", "red", direction, "blue", num_frames=8, height=64, width=64, speed=0.04
    )
    (x0, y0), (x1, y1) = _centroid(frames[0], "red"), _centroid(frames[-1], "red")
    dx, dy = x1 - x0, y1 - y0
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    moved = dx * expected[0] + dy * expected[1]
    across = abs(dx * expected[1]) + abs(dy * expected[0])
    assert moved > 10 and across < 2, (dx, dy)


def test_flat_background_clip_keeps_the_shape_and_its_path():
    textured = render_shape_clip("square", "yellow", "up", "brown", num_frames=6, height=48, width=40, seed=3)
    flat = render_shape_clip("square", "yellow", "up", "brown", num_frames=6, height=48, width=40, seed=3,
                             textured=False)
    background = ~np.all(flat == COLORS["yellow"], axis=-1)
    assert (flat[background] == COLORS["brown"]).all()  # one colour wherever the shape is not
    assert len(np.unique(textured[0].reshape(-1, 3), axis=0)) > len(np.unique(flat[0].reshape(-1, 3), axis=0))
    assert _centroid(flat[0], "yellow") == pytest.approx(_centroid(textured[0], "yellow"), abs=1.0)
    assert _centroid(flat[-1], "yellow")[1] < _centroid(flat[0], "yellow")[1] - 5  # moving up
    with pytest.raises(ValueError, match="static"):
        render_shape_clip("circle", camera="pan_left", textured=False)
    placed = render_shape_clip("circle", "red", "left", "blue", num_frames=3, height=48, width=64, start=(0.75, 0.25))
    assert _centroid(placed[0], "red") == pytest.approx((48, 12), abs=1.0)  # given as fractions of the frame


@pytest.mark.parametrize(
    "camera, content",
    [("pan_right", (-1, 0)), ("pan_left", (1, 0)), ("tilt_up", (0, 1)), ("tilt_down", (0, -1))],
)
def test_camera_moves_make_content_move_the_other_way(camera, content):
    frames, truth = make_footage([Segment(6, None, background="green", camera=camera)], 128, 96)
    assert truth.segments[0].content_motion == content
    dx, dy = _global_shift(frames[1], frames[4])
    step = 0.02 * 128 * 3
    assert abs(dx - content[0] * step) < 1.0 and abs(dy - content[1] * step) < 1.0, (dx, dy)


@pytest.mark.parametrize("camera, grows", [("zoom_in", True), ("zoom_out", False)])
def test_zoom_scales_the_shape(camera, grows):
    frames, _ = make_footage([Segment(30, "square", "yellow", "none", "blue", camera=camera)], 128, 96)

    def area(f):
        return (np.abs(f.astype(np.int16) - np.array(COLORS["yellow"])).sum(axis=2) < 60).sum()

    assert (area(frames[-1]) > 1.3 * area(frames[0])) == grows
    assert (area(frames[0]) > 1.3 * area(frames[-1])) == (not grows)


def test_dissolve_fade_black_and_text_truth():
    segs = [
        Segment(20, "circle", "red", "right", "blue", transition="fade", transition_frames=5),
        Segment(
            20, "square", "white", "none", "green", transition="dissolve", transition_frames=6, text="HELLO"
        ),
        Segment(20, black=True, transition="fade", transition_frames=4),
        Segment(20, "triangle", "yellow", "left", "purple"),
    ]
    frames, truth = make_footage(segs, 160, 120)
    assert truth.cuts == [60]
    assert [(t.kind, t.start, t.end) for t in truth.transitions] == [
        ("fade", 0, 5),
        ("dissolve", 20, 26),
        ("fade", 36, 44),
    ]
    # the reel fades in from dark, and fades out to black before the black segment
    lum = frames.mean(axis=(1, 2, 3))
    assert lum[0] < 0.3 * lum[10] and lum[39] == 0 and frames[40:60].max() == 0
    # a dissolve is gradual: no frame step inside it is as large as a hard cut
    diffs = _frame_diffs(frames)
    assert diffs[19:26].max() < 0.5 * diffs[59]
    # burnt-in text is white inside its box
    x, y, w, h = truth.segments[1].text_box
    box = frames[30, y : y + h, x : x + w]
    assert (box.min(axis=2) > 230).mean() > 0.05
    assert (
        truth.segments[1].caption
        == 'a still white square on a green background, with the text "HELLO" burnt in'
    )
    assert truth.segment_at(45).black and truth.segment_at(45).caption == "a black screen"


def test_generator_is_deterministic_from_its_seed():
    segs = random_segments(3, 200)
    a, ta = make_footage(segs, 64, 48, seed=1)
    b, tb = make_footage(random_segments(3, 200), 64, 48, seed=1)
    c, _ = make_footage(segs, 64, 48, seed=2)
    assert np.array_equal(a, b) and ta.to_dict() == tb.to_dict()
    assert not np.array_equal(a, c)
    assert ta.num_frames == len(a) >= 200


def test_bad_segments_are_rejected_with_the_field_named():
    with pytest.raises(ValueError, match="direction"):
        Segment(10, direction="sideways")
    with pytest.raises(ValueError, match="both 'red'"):
        Segment(10, color="red", background="red")
    with pytest.raises(ValueError, match="even"):
        make_footage([Segment(4)], 63, 48)
    with pytest.raises(ValueError, match="dissolve"):
        make_footage([Segment(10, transition="dissolve", transition_frames=3)])


def test_captions_and_vocabulary():
    assert shape_caption("circle", "red", "left", "blue") == "a red circle moving left on a blue background"
    assert shape_caption("square", "green", "up", "white", "pan_right").endswith("the camera panning right")
    assert {"circle", "square", "triangle"} <= set(SHAPES) and {"left", "right", "up", "down"} <= set(
        DIRECTIONS
    )


@pytest.mark.parametrize("codec, suffix", [("h264", ".mp4"), ("mjpeg", ".avi")])
def test_written_video_decodes_back_to_the_frames(tmp_path, codec, suffix):
    segs = [Segment(10, "circle", "red", "right", "blue"), Segment(10, "square", "yellow", "left", "green")]
    frames, _ = make_footage(segs, 96, 64)
    path = tmp_path / f"reel{suffix}"
    assert write_video(path, frames, fps=24, codec=codec) == 20
    back = np.stack(read_frames(path))
    assert back.shape == frames.shape
    assert np.abs(back.astype(np.int16) - frames).mean() < 8
    truth = write_footage(tmp_path / "streamed.mp4", segs, 96, 64)
    assert truth.cuts == [10] and len(read_frames(tmp_path / "streamed.mp4")) == 20


def test_footage_is_written_by_the_kernels_writer_and_stays_out_of_curation():
    """One h264 set-up in the project; the generator is test data no curation module imports."""
    import ast
    from pathlib import Path

    from curation.core import video

    assert write_video is video.write_video
    for path in Path(video.__file__).parents[1].rglob("*.py"):  # curation/, kernel included
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "workflows"], f"{path} imports {names}"
