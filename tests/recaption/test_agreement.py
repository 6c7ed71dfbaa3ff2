"""Captions compared with the clip's measured signals: the words, the policy, the table and the report."""

from datetime import UTC

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
from curation.core.schema import CAP, CAPTIONS, CHK, MANIFEST, M, clip_id_for
from curation.core.tables import latest_captions, read_captions
from recaption.agreement import signal_checks
from recaption.config import CaptionConfig
from recaption.metadata import describe
from recaption.prompts import hints_from_row
from recaption.report_section import agreement_rates
from recaption.run import caption_run

ROW = {M.camera_motion: "pan_right", M.motion_score: 0.12, M.luminance_mean: 120.0,
       M.dominant_colors: ["blue", "red"],
       M.text_area: 0.0, M.text_detector: "tesseract-5"}


def verdict(text: str, signal: str, **measured) -> bool | None:
    """Whether `text` agrees with the row on `signal`; None when it says nothing about it."""
    checks = [c for c in signal_checks(text, None, {**ROW, **measured}) if c[CHK.signal] == signal]
    assert len(checks) <= 1
    return checks[0][CHK.agrees] if checks else None


@pytest.mark.parametrize("text, camera, agrees", [
    ("A red circle crosses a blue field while the camera pans left.", "pan_right", False),
    ("The camera pans slowly to the right, following the ball.", "pan_right", True),
    ("The camera pans from left to right.", "pan_left", False),
    ("A slow leftward pan reveals the street. The camera is panning left.", "pan_left", True),
    ("The camera does not move.", "pan_right", False),
    ("The camera doesn't move at all.", "static", True),
    ("The camera does not pan.", "pan_left", False),
    ("There is no camera movement.", "zoom_in", False),
    ("A static camera frames the scene.", "zoom_in", False),
    ("The camera remains still as the circle drifts.", "static", True),
    ("The camera is still moving to the left.", "pan_left", True),
    ("The camera pans left.", "static", False),
    ("The camera tilts upward toward the sky.", "tilt_up", True),
    ("The camera tilts down.", "tilt_up", False),
    ("The camera zooms out slowly.", "zoom_in", False),
    ("The camera slowly zooms in on the shape.", "zoom_in", True),
    ("The camera pulls back to reveal the room.", "zoom_out", True),
    ("A slow zoom into the face.", "zoom_in", True),
    ("The camera moves in a circle around the statue.", "static", False),  # moving, though not zooming
    ("A slow pan to the right over the hills.", "pan_left", False),
    ("Shot on a handheld camera.", "static", False),
    ("The camera pans left, then tilts up.", "mixed", True),
    ("The camera is static.", "mixed", False),
    ("A red car zooms past a shop.", "static", None),  # the car zooms, not the camera
    ("Pots and pans hang on the wall.", "static", None),
    ("The circle moves to the left.", "static", None),  # the subject's motion
    ("A woman walks along the beach.", "pan_left", None),
])
def test_camera_words(text, camera, agrees):
    assert verdict(text, "camera_motion", camera_motion=camera) is agrees


@pytest.mark.parametrize("text, camera, agrees", [
    ("The camera barely pans left.", "pan_left", True),  # a little, not the opposite
    ("The camera barely pans left.", "pan_right", False),
    ("The camera barely moves.", "pan_left", None),  # neither still nor a named move
    ("The camera hardly moves at all.", "static", None),
    ("A barely steady camera follows the runner.", "pan_right", None),
])
def test_barely_and_hardly_weaken_a_claim_instead_of_turning_it_around(text, camera, agrees):
    assert verdict(text, "camera_motion", camera_motion=camera) is agrees


@pytest.mark.parametrize("text, camera, agrees", [
    # a direction word alone does not make the camera the verb's subject
    ("A woman holds a pan in her right hand.", "static", None),
    ("A dog tilts its head up.", "static", None),
    ("A motorcycle zooms away.", "static", None),
    # the camera noun must be the subject of that verb, not of another one before it
    ("The footage shows people moving around.", "static", None),
    ("The camera captures a car turning left.", "static", None),
    # still read: the camera as subject (through auxiliaries and adverbs), a move named as a noun, one subject
    # for two verbs
    ("The view tilts up.", "tilt_up", True),
    ("The camera then slowly pans to the left.", "pan_right", False),
    ("The camera begins to tilt down.", "tilt_up", False),
    ("The shot opens on a slow tilt down to the street.", "tilt_up", False),
    ("The camera pans left and then tilts up.", "tilt_down", False),
    ("The camera zooms in, then pans to the right.", "pan_right", True),
    ("Panning left, the camera reveals a street.", "pan_right", False),  # no subject: the clause opens with it
    ("Slowly tilting up to the sky.", "tilt_up", True),
    ("Tilting its head, the dog looks up.", "static", None),
])
def test_camera_words_need_the_camera_as_subject(text, camera, agrees):
    assert verdict(text, "camera_motion", camera_motion=camera) is agrees


def test_a_camera_verb_after_another_verb_is_read_once():
    from recaption.agreement import camera_claims

    assert camera_claims("The camera pans left and then tilts up.")[0] == {"pan_left", "tilt_up"}
    assert camera_claims("The camera captures a car turning left.")[0] == set()


@pytest.mark.parametrize("text, area, agrees", [
    ("There are no people, and text at the bottom reads 'Exit'.", 0.04, True),  # the negation ends at the comma
    ("There are no people, and text at the bottom reads 'Exit'.", 0.0, False),
    ("No people; text at the bottom reads 'Exit'.", 0.04, True),
    ("There are no people and text reads 'Exit'.", 0.04, True),
    ("There is no text.", 0.04, False),
])
def test_a_negation_ends_at_a_comma_a_semicolon_and_or_but(text, area, agrees):
    assert verdict(text, "text", text_area=area) is agrees


def test_a_negated_colour_after_and_is_a_claim():
    from recaption.agreement import color_claims

    assert color_claims("No red, and a blue wall.") == [("blue", "blue")]
    assert color_claims("Not red but blue.") == [("blue", "blue")]


def test_the_pans_left_caption_on_a_pan_right_clip_is_caught_with_what_was_said_and_measured():
    checks = signal_checks("A red circle on a blue field; the camera pans left.", "The camera pans left.", ROW)
    camera = [c for c in checks if c[CHK.signal] == "camera_motion"]
    assert camera == [
        {CHK.signal: "camera_motion", CHK.field: "dense", CHK.caption: "pans left", CHK.measured: "pan_right",
         CHK.agrees: False},
        {CHK.signal: "camera_motion", CHK.field: "short", CHK.caption: "pans left", CHK.measured: "pan_right",
         CHK.agrees: False},
    ]


@pytest.mark.parametrize("text, score, agrees", [
    ("Almost nothing moves within the frame.", 0.8, False),
    ("Almost nothing moves within the frame.", 0.02, True),
    ("The ball races quickly across the frame.", 0.02, False),
    ("The ball rolls slowly to the side.", 0.3, True),  # slow and moderate are one level apart
    ("The ball rolls slowly to the side.", 0.9, False),
    ("The ball does not move fast.", 0.02, None),  # negated: says nothing
    ("The camera is still and a dog naps.", 0.8, None),  # a camera claim, not the scene's
    ("A motionless camera watches the street.", 0.8, None),
    ("There is no movement of the camera as cars pass.", 0.8, None),
    ("A car crosses a frozen lake.", 0.8, None),  # frozen water, not a frozen picture
    ("The lake is frozen and a car crosses it.", 0.8, None),
    ("The image is frozen on one frame.", 0.8, False),
    ("The ball barely moves fast.", 0.02, None),
])
def test_amount_of_motion_words(text, score, agrees):
    assert verdict(text, "motion", motion_score=score) is agrees


@pytest.mark.parametrize("text, luminance, agrees", [
    ("The scene is dark and moody.", 200.0, False),
    ("A brightly lit kitchen.", 30.0, False),
    ("A dimly lit hallway.", 30.0, True),
    ("The room is not dark.", 200.0, None),
    ("A bright red ball on a dark blue background.", 30.0, None),  # colour shades, not light
    ("A man in a dark suit.", 220.0, None),
])
def test_brightness_words(text, luminance, agrees):
    assert verdict(text, "brightness", luminance_mean=luminance) is agrees


@pytest.mark.parametrize("text, area, detector, agrees", [
    ("White text reads SALE across the top.", 0.0, "tesseract-5", False),
    ("White text reads SALE across the top.", 0.04, "tesseract-5", True),
    ("No text is visible anywhere in the frame.", 0.04, "tesseract-5", False),
    ("The frame is free of text.", 0.0, "tesseract-5", True),
    ("White text reads SALE across the top.", 0.0, "none", None),  # OCR did not run: nothing to compare
])
def test_burnt_in_text_words(text, area, detector, agrees):
    assert verdict(text, "text", text_area=area, text_detector=detector) is agrees


@pytest.mark.parametrize("text, signal, measured", [
    ("Barely legible text runs along the bottom.", "text", {"text_area": 0.0}),
    ("There is hardly any text.", "text", {"text_area": 0.04}),
    ("The room is barely bright.", "brightness", {"luminance_mean": 30.0}),
])
def test_a_weakened_text_or_light_claim_says_nothing(text, signal, measured):
    assert verdict(text, signal, **measured) is None


@pytest.mark.parametrize("text, colors, agrees", [
    ("A red circle on a blue background.", ["green", "yellow"], False),
    ("A grey wall under a crimson sky.", ["gray", "white"], True),  # synonyms
    ("A turquoise sea.", ["blue"], True),  # a neighbouring colour agrees
    ("An old black and white film.", ["gray"], None),  # a style, not colours
    ("Hardly any red in this blue scene.", ["blue"], True),  # "hardly any red" claims no red
])
def test_colour_words(text, colors, agrees):
    assert verdict(text, "colors", dominant_colors=colors) is agrees


@pytest.mark.parametrize("camera", ["static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out",
                                    "mixed"])
@pytest.mark.parametrize("luminance, motion", [(30.0, 0.02), (75.0, 0.1), (120.0, 0.3), (200.0, 0.8)])
def test_metadata_captions_agree_with_the_measurements_they_were_written_from(camera, luminance, motion):
    row = {**ROW, M.camera_motion: camera, M.luminance_mean: luminance, M.motion_score: motion}
    dense, short = describe(hints_from_row(row))
    checks = signal_checks(dense, short, row)
    assert {c[CHK.signal] for c in checks} == {"camera_motion", "motion", "brightness", "colors"}
    assert all(c[CHK.agrees] for c in checks), [c for c in checks if not c[CHK.agrees]]


# -- in the caption stage ----------------------------------------------------------------------------
CLIP_ID = clip_id_for("source0", 0, 24)


def pan_right_run(tmp_path) -> RunDir:
    """A run of one kept pan_right clip (no clip file: the imported and metadata captioners need none)."""
    run = RunDir(tmp_path / "run")
    row = {**ROW, M.clip_id: CLIP_ID, M.source: "source0.mp4", M.start_frame: 0, M.end_frame: 24, M.start_time: 0.0,
           M.end_time: 2.0, M.duration: 2.0, M.fps: 12.0, M.status: "kept", M.filter_reasons: [],
           M.created_at: now_utc()}
    atomic_write_table(rows_to_table([row], MANIFEST), run.manifest / "part-0.parquet")
    return run


def write_jsonl(path, rows) -> str:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"file:{path}"


PANS_LEFT = ("A red circle moves across a plain blue background while the camera pans left, in a flat graphic "
             "animation style with even light.")


def test_a_contradicting_caption_is_kept_flagged_by_default_and_shown_in_the_table(tmp_path):
    run = pan_right_run(tmp_path)
    clip_id = CLIP_ID
    spec = write_jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: clip_id, CAP.caption_dense: PANS_LEFT}])
    summary = caption_run(run.root, CaptionConfig(captioner=spec))
    assert (summary.captioned, summary.failed, summary.flagged) == (1, 0, 1)
    assert "1 captions disagree with the measurements" in summary.line()
    row = read_captions(run).to_pylist()[0]
    assert row[CAP.error] is None and row[CAP.caption_dense] == PANS_LEFT
    wrong = [c for c in row[CAP.signal_checks] if not c[CHK.agrees]]
    assert wrong == [{CHK.signal: "camera_motion", CHK.field: "dense", CHK.caption: "pans left",
                      CHK.measured: "pan_right", CHK.agrees: False}]


def test_policy_fail_fails_a_contradicting_caption_and_keeps_its_disagreement(tmp_path):
    run = pan_right_run(tmp_path)
    clip_id = CLIP_ID
    spec = write_jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: clip_id, CAP.caption_dense: PANS_LEFT}])
    summary = caption_run(run.root, CaptionConfig(captioner=spec, on_disagreement="fail"))
    assert (summary.captioned, summary.failed) == (0, 1)
    row = read_captions(run).to_pylist()[0]
    assert row[CAP.caption_dense] is None
    assert "camera_motion (dense caption says 'pans left', measured pan_right)" in row[CAP.error]
    assert not any(c[CHK.agrees] for c in row[CAP.signal_checks] if c[CHK.signal] == "camera_motion")
    assert latest_captions(run).num_rows == 0  # never served as a caption


def test_a_caption_failed_by_the_measurements_is_not_retried_by_the_same_policy(tmp_path):
    run = pan_right_run(tmp_path)
    spec = write_jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: CLIP_ID, CAP.caption_dense: PANS_LEFT}])
    fail = CaptionConfig(captioner=spec, on_disagreement="fail")
    assert caption_run(run.root, fail).failed == 1
    again = caption_run(run.root, fail)
    assert (again.captioned, again.failed, again.skipped) == (0, 0, 1)
    assert read_captions(run).num_rows == 1  # no identical failed row appended


def test_switching_the_policy_checks_the_clips_again(tmp_path):
    run = pan_right_run(tmp_path)
    spec = write_jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: CLIP_ID, CAP.caption_dense: PANS_LEFT}])
    flagged = caption_run(run.root, CaptionConfig(captioner=spec))
    assert (flagged.captioned, flagged.flagged) == (1, 1)
    failed = caption_run(run.root, CaptionConfig(captioner=spec, on_disagreement="fail"))
    assert (failed.failed, failed.skipped) == (1, 0) and failed.captioner != flagged.captioner
    assert "fails on disagreement: all" in failed.captioner
    only_text = caption_run(run.root, CaptionConfig(captioner=spec, on_disagreement="fail", fail_signals=["text"]))
    assert (only_text.captioned, only_text.skipped) == (1, 0)  # camera motion now only flags
    assert caption_run(run.root, CaptionConfig(captioner=spec)).skipped == 1  # back to flag: already done


def test_agreement_rates_count_the_newest_row_per_clip_of_kept_clips_only():
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from recaption.report_section import captions_section

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def row(clip, agrees, minutes, error=None):
        return {CAP.clip_id: clip, CAP.captioner: "cap", CAP.created_at: t0 + timedelta(minutes=minutes),
                CAP.error: error, CAP.caption_dense: None if error else "text", CAP.caption_short: None,
                CAP.prompt_version: "v", CAP.signal_checks: [{CHK.signal: "camera_motion", CHK.field: "dense",
                                                              CHK.caption: "pans left", CHK.measured: "pan_right",
                                                              CHK.agrees: agrees}]}

    captions = [row("a", False, 0, error="model failed"), row("a", False, 1, error="model failed"),
                row("a", True, 2),  # retried twice, now agrees
                row("b", False, 0), row("b", True, 3),  # an older caption, then a newer one
                row("gone", False, 0)]  # a clip filtered since
    clips = [{M.clip_id: "a", M.status: "kept"}, {M.clip_id: "b", M.status: "kept"},
             {M.clip_id: "gone", M.status: "filtered"}]
    section = captions_section(SimpleNamespace(captions=captions, clips=clips, latest_captions=[]))
    assert section["agreement"] == [{"name": "cap", "cells": [{"agree": 2, "compared": 2, "rate": 1.0}]}]
    assert section["disagreements"] == []
    signals, table = agreement_rates(captions)  # without the kept clips: still one row per clip
    assert [c["compared"] for c in table[0]["cells"]] == [3]


def test_policy_fail_can_be_kept_to_the_signals_a_team_trusts(tmp_path):
    run = pan_right_run(tmp_path)
    spec = write_jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: CLIP_ID, CAP.caption_dense: PANS_LEFT}])
    summary = caption_run(run.root, CaptionConfig(captioner=spec, on_disagreement="fail", fail_signals=["text"]))
    assert (summary.captioned, summary.failed, summary.flagged) == (1, 0, 1)  # camera motion only flags
    with pytest.raises(ValueError, match="fail_signals"):
        CaptionConfig(fail_signals=["camera"])


def test_generated_captions_carry_their_comparisons(tmp_path):
    run = pan_right_run(tmp_path)
    caption_run(run.root)  # metadata: built from the measurements, so it agrees
    row = read_captions(run).to_pylist()[0]
    assert row[CAP.signal_checks] and all(c[CHK.agrees] for c in row[CAP.signal_checks])


def test_caption_parts_written_before_the_comparison_read_with_nulls_and_count_nowhere(tmp_path):
    run = pan_right_run(tmp_path)
    caption_run(run.root)
    old_schema = pa.schema([f for f in CAPTIONS if f.name != CAP.signal_checks])
    old = {CAP.clip_id: "old-clip", CAP.caption_dense: "An older caption.", CAP.captioner: "metadata"}
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema), run.captions / "part-old.parquet")
    rows = {r[CAP.clip_id]: r for r in read_captions(run).to_pylist()}
    assert rows["old-clip"][CAP.signal_checks] is None
    signals, table = agreement_rates(list(rows.values()))
    assert [sum(c["compared"] for c in r["cells"]) for r in table] == [4]  # only the new row's four signals


def test_report_shows_the_agreement_rate_per_captioner_and_signal_and_the_disagreement(tmp_path):
    from workflows.report import write_report

    run = pan_right_run(tmp_path)
    caption_run(run.root)
    clip_id = CLIP_ID
    spec = write_jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: clip_id, CAP.caption_dense: PANS_LEFT}])
    imported = caption_run(run.root, CaptionConfig(captioner=spec)).captioner
    page = write_report(run).read_text()
    assert "Captions against the measurements" in page
    assert f"<tr><td>{imported}</td><td class=n>0% (0/1)</td>" in page  # camera_motion: the one disagreement
    assert "<tr><td>metadata</td><td class=n>100% (1/1)</td>" in page
    assert "dense: “pans left”" in page and "<td>pan_right</td><td>flagged</td>" in page


def test_an_enhanced_caption_is_compared_as_rewritten(tmp_path):
    from curation.core.tables import kept_clips
    from recaption.run import CaptionWorker

    class Rewriter:  # stands in for the LLM: rewrites every caption into one that contradicts the clip
        identity = "stub-enhancer"

        def rewrite(self, texts):
            return [(PANS_LEFT, None) for _ in texts]

    run = pan_right_run(tmp_path)
    worker = CaptionWorker(run.root, CaptionConfig())
    worker.enhancer = Rewriter()
    (row,) = worker(kept_clips(run))
    assert row[CAP.caption_dense] == PANS_LEFT
    assert [c[CHK.caption] for c in row[CAP.signal_checks] if not c[CHK.agrees]] == ["pans left"]
