"""Captioning prompts, versioned, and the curation signals given to the captioner as hints.

A prompt's wording changes what a model writes, so every caption row records `PROMPT_VERSION`;
re-running with a new version captions every clip again while the old rows stay. Bump the version
whenever the text of a prompt below changes.
"""

from __future__ import annotations

import json

from curation.core.schema import M

PROMPT_VERSION = "dense-v1"

DENSE_WORDS = (60, 150)
SHORT_MAX_WORDS = 20

CAMERA_PHRASES = {
    "static": "the camera is static",
    "pan_left": "the camera pans left",
    "pan_right": "the camera pans right",
    "tilt_up": "the camera tilts up",
    "tilt_down": "the camera tilts down",
    "zoom_in": "the camera zooms in",
    "zoom_out": "the camera zooms out",
    "mixed": "the camera moves in several directions",
}

# motion_score is mean optical-flow speed in frame lengths (the longer side) per second; the levels are
# the earlier ones (0.5, 2 and 6 px/frame at a 256 px side) at 25 fps
MOTION_LEVELS = [(0.05, "almost still"), (0.2, "slow"), (0.6, "moderate"), (float("inf"), "fast")]
# luminance_mean is mean luma 0..255
BRIGHTNESS_LEVELS = [(50.0, "dark"), (100.0, "dim"), (170.0, "evenly lit"), (float("inf"), "bright")]


def level(value: float | None, table: list[tuple[float, str]]) -> str | None:
    if value is None:
        return None
    return next(name for limit, name in table if value < limit)


def hints_from_row(row: dict) -> dict:
    """The measured signals of a manifest row, in words a captioner can use. Missing signals are left out."""
    hints: dict = {}
    if row.get(M.duration) is not None:
        hints["duration_s"] = round(float(row[M.duration]), 1)
    camera = row.get(M.camera_motion)
    if camera in CAMERA_PHRASES:
        hints["camera_motion"] = camera
    motion = level(row.get(M.motion_score), MOTION_LEVELS)
    if motion:
        hints["motion"] = motion
    brightness = level(row.get(M.luminance_mean), BRIGHTNESS_LEVELS)
    if brightness:
        hints["brightness"] = brightness
    colors = row.get(M.dominant_colors)
    if colors:
        hints["dominant_colors"] = list(colors)[:3]
    return hints


def hints_json(hints: dict) -> str:
    return json.dumps(hints, sort_keys=True)


def _hint_sentences(hints: dict) -> str:
    parts = []
    if "duration_s" in hints:
        parts.append(f"The clip lasts {hints['duration_s']} seconds.")
    if "camera_motion" in hints:
        parts.append(f"Measured camera motion: {CAMERA_PHRASES[hints['camera_motion']]}.")
    if "motion" in hints:
        parts.append(f"Measured amount of motion: {hints['motion']}.")
    if "brightness" in hints:
        parts.append(f"Measured brightness: {hints['brightness']}.")
    if "dominant_colors" in hints:
        parts.append(f"Dominant colours: {', '.join(hints['dominant_colors'])}.")
    return " ".join(parts)


def dense_prompt(hints: dict) -> str:
    """The instruction for the dense caption."""
    lo, hi = DENSE_WORDS
    text = (
        f"Describe this video clip in one paragraph of {lo} to {hi} words of plain English. Cover, in order: "
        "the main subjects and their appearance (kind, colour, size, clothing or texture); what they do and "
        "how they move; the setting and background; the lighting and colour palette; the shot type "
        "(close-up, medium or wide) and the camera motion; and the visual style (live action, animation, "
        "graphics, film look). Describe only what is visible in the frames. Do not guess names, places, "
        "sounds or intentions, and do not mention frames, the viewer or these instructions."
    )
    measured = _hint_sentences(hints)
    if measured:
        text += (" These measurements were taken from the clip; use them where they agree with what you see: "
                 + measured)
    return text


def short_prompt(hints: dict) -> str:
    """The instruction for the short caption (the trainer blends short and dense captions)."""
    text = (f"Write one plain English sentence of at most {SHORT_MAX_WORDS} words saying what this video clip "
            "shows: the main subject, what it does, and where. Describe only what is visible.")
    if "camera_motion" in hints and hints["camera_motion"] != "static":
        text += f" Measured camera motion: {CAMERA_PHRASES[hints['camera_motion']]}."
    return text


def enhance_prompt(text: str) -> str:
    """The instruction that rewrites a caption or a user's short prompt into the dense style."""
    lo, hi = DENSE_WORDS
    return (
        f"Rewrite the following video description as one paragraph of {lo} to {hi} words of plain English. "
        "Keep every fact it states and add concrete visual detail in this order: subjects and their "
        "appearance, action and movement, setting, lighting and colour, shot type and camera motion, style. "
        "Do not add people, text, sounds or events that contradict it. Answer with the paragraph only.\n\n"
        f"Description: {text.strip()}"
    )
