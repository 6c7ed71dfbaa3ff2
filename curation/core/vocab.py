"""Vocabularies shared by the stages that measure clips and the ones that describe or render them."""

from __future__ import annotations

# Named colours (RGB). The dominant-colour score names pixels by this palette; the footage generator
# paints shapes and backgrounds with it, so the two always agree.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 210),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "pink": (245, 130, 190),
    "cyan": (40, 210, 220),
    "brown": (120, 70, 30),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (10, 10, 10),
}

# The camera_motion column's values.
CAMERA_MOTIONS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "mixed")
