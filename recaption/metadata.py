"""The metadata captioner: dense and short captions from curation's measured signals, no model weights.

It cannot see subjects, so it says only what was measured (camera motion, amount of motion,
brightness, dominant colours, duration). It is the default when no VLM is configured, and its rows
say `metadata` in `captioner` so no one mistakes them for a VLM's.
"""

from __future__ import annotations

from curation.core.schema import M
from curation.core.stage import Stage
from recaption.captions import caption_row
from recaption.checks import check_caption
from recaption.prompts import CAMERA_PHRASES, hints_from_row

METADATA_CAPTIONER = "metadata"
METADATA_PROMPT_VERSION = "metadata-v1"

MOTION_SENTENCES = {
    "almost still": "Almost nothing moves within the frame.",
    "slow": "Things in the frame move slowly.",
    "moderate": "There is a moderate amount of movement in the frame.",
    "fast": "Things in the frame move quickly.",
}
BRIGHTNESS_WORDS = {"dark": "dark, low-key", "dim": "dimly lit", "evenly lit": "evenly lit", "bright": "brightly lit"}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def describe(hints: dict) -> tuple[str, str]:
    """(dense, short) captions from the hints of one clip."""
    duration = hints.get("duration_s")
    length = f"{duration:g}-second " if duration is not None else ""
    camera = CAMERA_PHRASES.get(hints.get("camera_motion", ""), "the camera motion is unknown")
    colors = hints.get("dominant_colors") or []
    brightness = BRIGHTNESS_WORDS.get(hints.get("brightness", ""))

    dense = [f"A {length}video shot in which {camera}."]
    if camera.startswith("the camera pans") or camera.startswith("the camera tilts"):
        dense.append("The view sweeps steadily across the scene, so its contents slide through the frame.")
    elif camera.startswith("the camera zooms"):
        dense.append("The framing changes steadily as the view scales around the centre of the frame.")
    if brightness and colors:
        dense.append(f"The picture is {brightness}, dominated by {_join(colors)} tones.")
    elif brightness:
        dense.append(f"The picture is {brightness}.")
    elif colors:
        dense.append(f"The palette is dominated by {_join(colors)} tones.")
    if hints.get("motion") in MOTION_SENTENCES:
        dense.append(MOTION_SENTENCES[hints["motion"]])
    dense.append("This description was built from measured signals of the clip, not from recognising its subjects.")

    short = f"A {length}shot in which {camera}"
    if colors:
        short += f", in {_join(colors[:2])} tones"
    return " ".join(dense), short + "."


class MetadataCaptioner(Stage):
    """Captions from the manifest row alone; needs no frames and no model."""

    name = "caption"
    needs_frames = False

    def __init__(self, config=None):
        self.config = config
        self.identity = METADATA_CAPTIONER
        self.prompt_version = METADATA_PROMPT_VERSION

    def __call__(self, batch: list[dict]) -> list[dict]:
        rows = []
        for row in batch:
            hints = hints_from_row(row)
            dense, short = describe(hints)
            problem = check_caption(dense, "dense") or check_caption(short, "short")
            error = f"metadata caption {problem}" if problem else None
            rows.append(caption_row(row[M.clip_id], None if error else dense, None if error else short,
                                    self.identity, self.prompt_version, hints, error))
        return rows
