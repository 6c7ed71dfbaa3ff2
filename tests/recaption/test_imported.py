"""Imported captions (`--captioner file:PATH`): matching to clips, checks, provenance, resume, bad files."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from curation.core.schema import CAP, M, clip_id_for
from curation.core.tables import read_captions, read_clips
from recaption.config import CaptionConfig
from recaption.imported import CaptionFileError, match_captions, read_caption_file
from recaption.run import caption_run

DENSE = ("A small shape moves steadily across a plain coloured background in a flat graphic animation, "
         "framed as a wide shot with even light.")
SHORT = "A shape crosses a plain background."


def ids(i: int) -> str:
    return clip_id_for(f"source{i}", 0, 12)  # the clips of conftest's make_run


def jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return f"file:{path}"


def test_captions_by_clip_id_are_imported_checked_and_named_by_file_and_content(make_run, tmp_path):
    run = make_run(3)
    spec = jsonl(tmp_path / "notes.jsonl", [
        {CAP.clip_id: ids(0), CAP.caption_dense: DENSE, CAP.caption_short: SHORT, "annotator": "ann-7"},
        {CAP.clip_id: ids(1), "caption": DENSE},  # short caption optional; "caption" is the dense one
    ])
    summary = caption_run(run.root, CaptionConfig(captioner=spec))
    assert (summary.kept, summary.captioned, summary.failed, summary.not_in_file) == (3, 2, 0, 1)
    assert summary.captioner.startswith("file:notes.jsonl@") and len(summary.captioner) == len("file:notes.jsonl@") + 12
    assert "1 not in the file" in summary.line()
    rows = {r[CAP.clip_id]: r for r in read_captions(run).to_pylist()}
    assert set(rows) == {ids(0), ids(1)}
    assert (rows[ids(0)][CAP.caption_dense], rows[ids(0)][CAP.caption_short]) == (DENSE, SHORT)
    assert rows[ids(1)][CAP.caption_short] is None
    assert rows[ids(0)][CAP.prompt_version] == "imported-v1"
    assert json.loads(rows[ids(0)][CAP.hints])["camera_motion"] == "pan_left"

    again = caption_run(run.root, CaptionConfig(captioner=spec))
    assert (again.captioned, again.skipped, again.not_in_file) == (0, 2, 1)  # resumes
    (tmp_path / "notes.jsonl").write_text(json.dumps({CAP.clip_id: ids(2), CAP.caption_dense: DENSE}) + "\n")
    changed = caption_run(run.root, CaptionConfig(captioner=spec))
    assert changed.captioner != summary.captioner and changed.captioned == 1  # a new file is a new captioner


def test_imported_captions_pass_the_same_checks(make_run, tmp_path):
    run = make_run(2)
    spec = jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: ids(0), CAP.caption_dense: "A red circle."},
                                        {CAP.clip_id: ids(1), CAP.caption_dense: DENSE, CAP.caption_short: "I'm sorry, "
                                         "I cannot describe this clip."}])
    summary = caption_run(run.root, CaptionConfig(captioner=spec))
    assert (summary.captioned, summary.failed) == (0, 2)
    errors = {r[CAP.clip_id]: r[CAP.error] for r in read_captions(run).to_pylist()}
    assert errors[ids(0)].startswith("permanent: imported dense caption empty")
    assert errors[ids(1)].startswith("permanent: imported short caption refusal")
    again = caption_run(run.root, CaptionConfig(captioner=spec))  # the same file fails the same way: not retried
    assert (again.captioned, again.failed, again.skipped) == (0, 0, 2)
    assert read_captions(run).num_rows == 2


def test_rows_by_source_and_time_match_their_clip_and_the_rest_are_reported(make_run, tmp_path):
    run = make_run(2)
    table = pa.Table.from_pylist([
        {M.source: "source0.mp4", M.start_time: 0.05, M.end_time: 0.95, CAP.caption_dense: DENSE,  # rounded times
         CAP.clip_id: None},
        {M.source: "/elsewhere/source1.mp4", M.start_time: 0.0, M.end_time: 1.0, CAP.caption_dense: DENSE},  # by name
        {M.source: "source0.mp4", M.start_time: 0.0, M.end_time: 1.0, CAP.caption_dense: DENSE},  # a second one
        {M.source: "source0.mp4", M.start_time: 0.8, M.end_time: 4.0, CAP.caption_dense: DENSE},  # times off
        {M.source: "nowhere.mp4", M.start_time: 0.0, M.end_time: 1.0, CAP.caption_dense: DENSE},
        {M.source: "source9.mp4", M.start_time: 0.0, M.end_time: 1.0, CAP.caption_dense: DENSE},  # filtered clip
        {CAP.clip_id: "no-such-clip", CAP.caption_dense: DENSE},
    ])
    pq.write_table(table, tmp_path / "a.parquet")
    summary = caption_run(run.root, CaptionConfig(captioner=f"file:{tmp_path / 'a.parquet'}"))
    assert (summary.captioned, summary.not_in_file) == (2, 0)
    assert set(read_captions(run)[CAP.clip_id].to_pylist()) == {ids(0), ids(1)}
    left_out = summary.left_out
    assert len(left_out) == 5 and "5 rows of the file left out" in summary.line()
    assert left_out[0].startswith("line 3 (source0.mp4 0-1 s): clip ") and "already has the caption of line 1" in left_out[0]
    assert left_out[1].startswith("line 4 (source0.mp4 0.8-4 s): no clip of that source shares half its time range")
    assert left_out[2] == "line 5 (nowhere.mp4 0-1 s): no source 'nowhere.mp4' in this run"
    assert left_out[3].endswith("was filtered (static)")
    assert left_out[4] == "line 7 (clip_id no-such-clip): no clip of this run has that id"


def test_a_file_name_shared_by_two_sources_must_be_given_in_full(tmp_path):
    clips = [{M.clip_id: f"c{i}", M.source: f"/{d}/take.mp4", M.start_time: 0.0, M.end_time: 1.0, M.status: "kept",
              M.filter_reasons: []} for i, d in enumerate(("a", "b"))]
    spec = jsonl(tmp_path / "a.jsonl", [{M.source: "take.mp4", M.start_time: 0, M.end_time: 1, CAP.caption_dense: DENSE},
                                        {M.source: "/b/take.mp4", M.start_time: 0, M.end_time: 1, "caption": DENSE}])
    matched, left_out = match_captions(read_caption_file(tmp_path / "a.jsonl"), clips)
    assert set(matched) == {"c1"}
    assert "names several sources of this run (/a/take.mp4, /b/take.mp4); give its full path" in left_out[0]
    assert spec


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "line 1: not JSON"),
    ([json.dumps([1, 2])], "line 1: expected an object, got list"),
    ([json.dumps({CAP.clip_id: "x"})], "line 1: no caption_dense text"),
    ([json.dumps({CAP.caption_dense: DENSE})], "line 1: neither clip_id nor source given"),
    ([json.dumps({M.source: "a.mp4", M.start_time: 2, M.end_time: 1, CAP.caption_dense: DENSE})],
     "line 1: start_time and end_time must be seconds with 0 <= start < end, not 2, 1"),
    (["", json.dumps({CAP.clip_id: "x", CAP.caption_dense: DENSE, CAP.caption_short: 3})],
     "line 2: caption_short must be text, not int"),
])
def test_malformed_rows_are_named_by_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    jsonl(path, lines)
    with pytest.raises(CaptionFileError) as e:
        read_caption_file(path)
    assert str(e.value).startswith(f"--captioner file:{path}: 1 malformed rows: ") and message in str(e.value)


def test_a_missing_or_unknown_file_is_a_clear_error(tmp_path):
    with pytest.raises(CaptionFileError, match="no such file"):
        read_caption_file(tmp_path / "nope.jsonl")
    (tmp_path / "a.csv").write_text("clip_id,caption\n")
    with pytest.raises(CaptionFileError, match="unknown format '.csv'; use .jsonl"):
        read_caption_file(tmp_path / "a.csv")
    (tmp_path / "a.parquet").write_text("not parquet")
    with pytest.raises(CaptionFileError, match="cannot be read as parquet"):
        read_caption_file(tmp_path / "a.parquet")
    with pytest.raises(ValidationError, match="'file:<captions.jsonl"):
        CaptionConfig(captioner="file:")


def test_cli_imports_reports_left_out_rows_and_refuses_a_bad_file_without_a_traceback(make_run, tmp_path):
    from workflows.cli import app

    run = make_run(2)
    spec = jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: ids(0), CAP.caption_dense: DENSE},
                                        {CAP.clip_id: "gone", CAP.caption_dense: DENSE}])
    result = CliRunner().invoke(app, ["caption", "--out", str(run.root), "--no-ray", "--captioner", spec])
    assert result.exit_code == 0, result.output
    assert "left out: line 2 (clip_id gone): no clip of this run has that id" in result.output
    assert "2 kept clips -> 1 captioned, 0 failed, 0 skipped (already done), 1 not in the file" in result.output
    bad = jsonl(tmp_path / "bad.jsonl", ["{oops"])
    result = CliRunner().invoke(app, ["caption", "--out", str(run.root), "--no-ray", "--captioner", bad])
    assert result.exit_code == 2 and "line 1: not JSON" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["caption", "--out", str(run.root), "--no-ray", "--captioner", spec,
                                      "--on-disagreement", "maybe"])
    assert result.exit_code == 2 and "on_disagreement" in result.output
    assert read_clips(run).num_rows == 3


def test_a_workflow_caption_step_with_a_bad_file_stops_with_the_error_not_a_traceback(make_run, tmp_path, capsys):
    from types import SimpleNamespace

    import typer

    from workflows.caption import run_step

    run = make_run(1)
    wf = SimpleNamespace(out=run.root, ray=SimpleNamespace(address=None))
    with pytest.raises(typer.Exit) as e:
        run_step(wf, CaptionConfig(captioner=f"file:{tmp_path / 'missing.jsonl'}"))
    assert e.value.exit_code == 2
    assert "error: caption: --captioner file:" in capsys.readouterr().err


def test_a_workflow_caption_step_on_a_run_without_clips_gives_the_caption_commands_error(tmp_path, capsys):
    from types import SimpleNamespace

    import typer

    from workflows.caption import run_step

    wf = SimpleNamespace(out=tmp_path / "empty-run", ray=SimpleNamespace(address=None))
    with pytest.raises(typer.Exit) as e:
        run_step(wf, CaptionConfig())
    assert e.value.exit_code == 2
    assert "error: caption: " in (err := capsys.readouterr().err) and "holds no clips" in err


def test_the_file_prefix_is_tested_in_one_place():
    """`file:` (and `hf:`) are told apart by recaption.config alone; `level` is public."""
    import ast
    import re
    from pathlib import Path

    from recaption.config import import_path
    from recaption.prompts import level  # noqa: F401 - public

    assert import_path("file:a.jsonl") == "a.jsonl" and import_path("file:") == "" and import_path("hf:x") is None
    root = Path(__file__).parents[2]
    files = [*sorted((root / "recaption").glob("*.py")), root / "workflows/caption.py",
             root / "workflows/commands/caption.py"]
    for path in files:
        if path.name == "config.py" and path.parent.name == "recaption":
            continue
        constants = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
        assert "file:" not in constants, path
        if path.name == "run.py":
            assert "hf:" not in constants, path
        assert not re.search(r"\b_level\b", path.read_text()), path


@pytest.mark.slow
def test_imported_captions_on_the_ray_actor_pool(make_run, tmp_path):
    from workflows.caption import run_caption
    from workflows.raysession import ray_session

    run = make_run(3)
    spec = jsonl(tmp_path / "a.jsonl", [{CAP.clip_id: ids(i), CAP.caption_dense: DENSE} for i in range(2)])
    with ray_session(num_cpus=2):
        summary = run_caption(run.root, CaptionConfig(captioner=spec, batch_size=1), progress=False)
    assert (summary.captioned, summary.not_in_file) == (2, 1)
    rows = read_captions(run).to_pylist()
    assert {r[CAP.clip_id] for r in rows} == {ids(0), ids(1)} and all(r[CAP.signal_checks] is not None for r in rows)
