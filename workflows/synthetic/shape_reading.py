"""Reading a generated shape clip back: the shape's colour, where it is in each frame, which way it moves.

The footage generator's shape worlds (one flat-coloured shape over a plain background) are simple
enough to score by pixels: each pixel takes the nearest of the world's shape colours or the
background (the median of the frame border). `benchmarks/bench_learns.py` scores its samples with
this, and the `train` step of a workflow that trains on such a world (`make demo`) checks that its
samples show the prompt's colour moving the prompt's way.
"""

from __future__ import annotations

import re

import numpy as np

DIRECTIONS = ("left", "right", "up", "down")


def palette_labels(video: np.ndarray, colours: tuple[str, ...]) -> np.ndarray:
    """(T, H, W) index of each pixel's nearest colour: 0..len(colours)-1 for the shape colours, len(colours)
    for the background (the median of the frames' border)."""
    from workflows.synthetic.footage import COLORS

    v = video.astype(np.float32)
    border = np.concatenate([v[:, 0], v[:, -1], v[:, :, 0], v[:, :, -1]], axis=1).reshape(-1, 3)
    palette = np.array([COLORS[c] for c in colours] + [np.median(border, axis=0)], np.float32)
    return ((v[..., None, :] - palette) ** 2).sum(-1).argmin(-1)


def path_of(video: np.ndarray, colours: tuple[str, ...]) -> np.ndarray:
    """(T, 2) centroid (x, y) of the shape's pixels in each frame; NaN where a frame shows none."""
    shape_pixels = palette_labels(video, colours) < len(colours)
    out = np.full((len(video), 2), np.nan)
    for t, frame in enumerate(shape_pixels):
        ys, xs = np.nonzero(frame)
        if len(xs):
            out[t] = xs.mean(), ys.mean()
    return out


def analyse(video: np.ndarray, colours: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(shape colour, direction) of a (T, H, W, 3) uint8 video: the commonest shape colour, and the larger
    component of the centroid's move from the first frame to the last (None below 1.5 px, or no shape)."""
    labels = palette_labels(video, colours)
    shape_pixels = labels < len(colours)
    if shape_pixels.sum() < 4 * len(video):
        return None, None
    colour = colours[int(np.bincount(labels[shape_pixels], minlength=len(colours)).argmax())]
    centroids = []
    for t in (0, len(video) - 1):
        ys, xs = np.nonzero(shape_pixels[t])
        if len(xs) == 0:
            return colour, None
        centroids.append((xs.mean(), ys.mean()))
    dx, dy = centroids[1][0] - centroids[0][0], centroids[1][1] - centroids[0][1]
    if max(abs(dx), abs(dy)) < 1.5:
        return colour, None
    if abs(dx) >= abs(dy):
        return colour, "right" if dx > 0 else "left"
    return colour, "down" if dy > 0 else "up"


def asked_for(prompt: str, colours: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(colour, direction) a prompt names first, of these colours and the four directions."""
    def first(words):
        found = [(m.start(), w) for w in words for m in [re.search(rf"\b{w}\b", prompt.lower())] if m]
        return min(found)[1] if found else None

    return first(colours), first(DIRECTIONS)
