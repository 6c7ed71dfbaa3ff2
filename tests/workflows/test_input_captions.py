"""caption_original from a list file's caption column: `rushes curate inputs.csv` (path,caption),
TSV or JSONL; the list's caption beats a sidecar, reaches the caption rows and the shards."""

import functools
import shutil

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.core.rundir import RunDir
from curation.core.schema import CAP, SH
from curation.core.tables import latest_captions
from curation.inputs import InputError, find_inputs
from recaption.run import caption_run
from recaption.sidecar import input_captions
from workflows.cli import app


@pytest.fixture
def videos(tmp_path, footage_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(footage_dir / "reels" / "reel_0008.mp4", folder / name)
    (folder / "b.mp4").write_bytes((folder / "b.mp4").read_bytes() + b"\0")  # not a byte-identical copy
    return folder


@pytest.mark.parametrize("name, text", [
    ("inputs.csv", 'path,caption\na.mp4,"A red circle, moving right."\nb.mp4,\n'),
    ("inputs.csv", 'path,caption\na.mp4,"A red circle,\nmoving right."\nb.mp4,\n'),  # a line break inside quotes
    ("inputs.tsv", "Video\tDescription\na.mp4\tA red circle, moving right.\nb.mp4\t\n"),
    ("inputs.jsonl", '{"path": "a.mp4", "caption": "A red circle, moving right."}\n\n{"path": "b.mp4"}\n'),
])
def test_a_table_list_file_names_inputs_and_their_captions(videos, name, text):
    (videos / name).write_text(text)
    found = find_inputs([str(videos / name)])
    assert found.sources == [str(videos / "a.mp4"), str(videos / "b.mp4")]
    assert {s: c.caption for s, c in found.captions.items()} == {str(videos / "a.mp4"): "A red circle, moving right."}
    assert found.captions[str(videos / "a.mp4")].list_file == str(videos / name)


@pytest.mark.parametrize("name, text, message", [
    ("inputs.csv", "file_name,caption\na.mp4,x\n", "no header row naming a path column"),
    ("inputs.csv", "path,caption\n,lonely caption\n", "line 2: no path"),
    ("inputs.jsonl", '{"path": "a.mp4"}\n{"path": \n', "line 2: not a JSON object"),
    ("inputs.jsonl", '["a.mp4"]\n', "line 1: each line holds an object"),
    ("inputs.csv", "path\nmissing.mp4\n", "line 2: input 'missing.mp4' does not exist"),
])
def test_a_bad_table_list_file_is_an_input_error_naming_the_line(videos, name, text, message):
    (videos / name).write_text(text)
    with pytest.raises(InputError, match=message):
        find_inputs([str(videos / name)])


def test_list_captions_reach_caption_rows_and_shards(videos, tmp_path, monkeypatch):
    import workflows.curate
    from workflows.shard import write_shards

    (videos / "a.txt").write_text("a sidecar that the list's caption overrides")
    (videos / "b.txt").write_text("the sidecar of b")
    (videos / "inputs.csv").write_text("path,caption\na.mp4,A red circle moving right.\nb.mp4,\n")
    config = tmp_path / "curate.yaml"
    config.write_text("analysis:\n  text_detector: none\nextract:\n  max_side: 96\n  thumb_side: 96\n")
    monkeypatch.setattr(workflows.curate, "curate", functools.partial(workflows.curate.curate, use_ray=False))
    out = tmp_path / "out"
    args = ["curate", str(videos / "inputs.csv"), "--out", str(out), "--config", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    assert input_captions(run) == {str(videos / "a.mp4"): "A red circle moving right."}
    result = CliRunner().invoke(app, args)  # the same list again records nothing new
    assert result.exit_code == 0 and len(list(run.input_captions.glob("*.parquet"))) == 1

    caption_run(out)
    by_source = {}
    for row in latest_captions(run).to_pylist():
        by_source.setdefault(row[CAP.caption_original], 0)
        by_source[row[CAP.caption_original]] += 1
    assert set(by_source) == {"A red circle moving right.", "the sidecar of b"}

    write_shards(out)
    originals = set()
    for part in run.shards.rglob("*.parquet"):
        originals |= set(pq.read_table(part, columns=[SH.caption_original])[SH.caption_original].to_pylist())
    assert "A red circle moving right." in originals and "the sidecar of b" in originals
