"""The captioner benchmark's world: what it holds out, how it reads a caption, and the shapes it draws."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_captioner import read_attributes, world, write_run  # noqa: E402

from curation.core.tables import kept_clips  # noqa: E402
from curation.core.video import read_frames  # noqa: E402


def test_every_colour_shape_and_direction_is_trained_though_some_combinations_are_held_out():
    colors, trained, held_out = world(6, 5)
    assert held_out and not set(held_out) & set(trained)
    assert len(trained) + len(held_out) == 6 * 3 * 4
    for i in range(3):  # shape, colour, direction: each value is seen in training
        assert {c[i] for c in held_out} <= {c[i] for c in trained}


def test_a_caption_is_read_by_the_first_word_of_each_kind():
    colors = ["red", "blue"]
    assert read_attributes("A blue square moves upward, then a red circle to the left.", colors) == (
        "square", "blue", "up")
    assert read_attributes("nothing here", colors) == (None, None, None)


@pytest.mark.parametrize("shape_size", [0.3, 0.45])
def test_the_world_draws_its_shapes_at_the_size_asked(tmp_path, shape_size):
    side = 112
    rows = write_run(tmp_path, [("square", "red", "right")], 1, frames=2, side=side, seed=0, shape_size=shape_size)
    assert [c["clip_id"] for c in kept_clips(tmp_path)] == [rows[0]["clip_id"]]
    frame = read_frames(tmp_path / rows[0]["clip_path"], [0])[0].astype(int)
    background = np.median(frame.reshape(-1, 3), axis=0)
    painted = (np.abs(frame - background).sum(axis=-1) > 60).sum()
    # the square may be cut by the frame's edge, so at least half of it shows and never more than all
    assert 0.5 * (shape_size * side) ** 2 < painted <= 1.1 * (shape_size * side) ** 2
