"""Prompts and hints, and the metadata captioner checked against the footage generator's truth."""

import json

import pytest

from curation.core.schema import CAP, M
from recaption.metadata import METADATA_CAPTIONER, METADATA_PROMPT_VERSION, MetadataCaptioner
from recaption.prompts import PROMPT_VERSION, dense_prompt, hints_from_row, short_prompt
from workflows.synthetic.footage import CAMERA_MOVES, Segment, make_footage

WORDS = {"pan_left": "pans left", "pan_right": "pans right", "tilt_up": "tilts up", "tilt_down": "tilts down",
         "zoom_in": "zooms in", "zoom_out": "zooms out", "static": "is static"}


def truth_row(camera: str, color="red", background="blue", frames=48) -> dict:
    """A manifest row whose signals are the generator's truth (until analysis measures them itself)."""
    _, truth = make_footage([Segment(frames, "circle", color, "right", background, camera=camera)], 64, 48)
    seg = truth.segments[0]
    return {M.clip_id: f"clip-{camera}", M.duration: (seg.end - seg.start) / truth.fps, M.camera_motion: seg.camera,
            M.motion_score: 0.15, M.luminance_mean: 110.0, M.dominant_colors: [seg.background, seg.color]}


def test_hints_turn_signals_into_words():
    row = {M.duration: 4.25, M.camera_motion: "pan_left", M.motion_score: 0.02, M.luminance_mean: 30.0,
           M.dominant_colors: ["blue", "red", "white", "gray"]}
    assert hints_from_row(row) == {"duration_s": 4.2, "camera_motion": "pan_left", "motion": "almost still",
                                   "brightness": "dark", "dominant_colors": ["blue", "red", "white"]}
    assert hints_from_row({M.camera_motion: None}) == {}  # missing signals are left out, not invented


def test_prompts_carry_hints_and_the_dense_brief():
    hints = {"duration_s": 3.0, "camera_motion": "tilt_up", "motion": "fast", "brightness": "bright",
             "dominant_colors": ["green"]}
    dense = dense_prompt(hints)
    for needle in ("60 to 150 words", "subjects", "lighting", "camera motion", "only what is visible",
                   "3.0 seconds", "the camera tilts up", "fast", "bright", "green"):
        assert needle in dense
    assert "tilts up" in short_prompt(hints) and "20 words" in short_prompt(hints)
    assert "Measured" not in dense_prompt({})  # no hints, no hint sentence
    assert PROMPT_VERSION.startswith("dense-v")


@pytest.mark.parametrize("camera", CAMERA_MOVES)
def test_metadata_caption_says_what_the_camera_truly_did(camera):
    row = truth_row(camera)
    [out] = MetadataCaptioner()([row])
    assert out[CAP.error] is None
    assert WORDS[camera] in out[CAP.caption_dense] and WORDS[camera] in out[CAP.caption_short]
    assert "blue" in out[CAP.caption_dense] and "red" in out[CAP.caption_dense]
    assert out[CAP.captioner] == METADATA_CAPTIONER and out[CAP.prompt_version] == METADATA_PROMPT_VERSION
    assert json.loads(out[CAP.hints])["camera_motion"] == camera
    assert len(out[CAP.caption_short].split()) <= 20


def test_metadata_caption_reports_brightness_motion_and_duration():
    row = truth_row("static") | {M.luminance_mean: 20.0, M.motion_score: 0.9}
    [out] = MetadataCaptioner()([row])
    dense = out[CAP.caption_dense]
    assert "2-second" in dense and "dark" in dense and "quickly" in dense


def test_metadata_captions_of_analysed_footage_match_its_truth(tmp_path):
    """Generated footage -> curation's analysis -> metadata captions: each shot's real camera move is named."""
    from curation.config import CurateConfig
    from curation.process import analyze_source
    from workflows.synthetic.footage import write_footage

    segments = [Segment(36, "triangle", "white", "none", "purple", camera="pan_left"),
                Segment(36, "square", "pink", "none", "brown", camera="tilt_down"),
                Segment(36, "circle", "red", "right", "blue")]
    path = tmp_path / "reel.mp4"
    truth = write_footage(path, segments, 256, 192, fps=24, seed=3)
    cfg = CurateConfig()
    cfg.analysis.text_detector = "none"
    rows = analyze_source("reel.mp4", path, cfg)
    captions = MetadataCaptioner()(rows)
    for seg in truth.segments:
        i = max(range(len(rows)),
                key=lambda k: min(rows[k][M.end_frame], seg.end) - max(rows[k][M.start_frame], seg.start))
        assert captions[i][CAP.error] is None
        dense = captions[i][CAP.caption_dense]
        assert WORDS[seg.camera] in dense and seg.background in dense, (seg.camera, seg.background, dense)
