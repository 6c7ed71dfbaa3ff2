"""Near-duplicate removal through the index, on generated clips that re-encode the same shot."""

from __future__ import annotations

import shutil

from indexing_testkit import DUPLICATES_OF, SHOTS, clip_id
from typer.testing import CliRunner

from curation.core import schema
from curation.core.rundir import RunDir
from curation.core.schema import M
from curation.core.tables import read_clips
from indexing.dedup import keeper_rank
from indexing.store import ClipStore, default_uri
from workflows.cli import app

runner = CliRunner()


def test_keeper_prefers_aesthetic_then_duration_then_resolution():
    base = {M.clip_id: "a", M.aesthetic_score: 5.0, M.duration: 2.0, M.width: 64, M.height: 64}
    assert keeper_rank({**base, M.aesthetic_score: 6.0, M.duration: 1.0}) > keeper_rank(base)
    assert keeper_rank({**base, M.duration: 3.0, M.width: 16}) > keeper_rank(base)
    assert keeper_rank({**base, M.width: 128}) > keeper_rank(base)
    assert keeper_rank(base) > keeper_rank({**base, M.aesthetic_score: None, M.duration: 10.0})
    # an untrained head's score is ignored: duration decides
    placeholder = {**base, M.aesthetic_model: "laion-style-mlp (untrained, random weights seed 0)"}
    assert keeper_rank({**placeholder, M.aesthetic_score: 1.0, M.duration: 3.0}) > keeper_rank(placeholder)


def test_dedup_marks_duplicates_and_keeps_the_original(run_template, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_template, out)
    curated = manifest_bytes(out)
    args = ["dedup", "--out", str(out), "--threshold", "0.99", "--clip-model", "tiny-random", "--frames", "3",
            "--device", "cpu", "--no-ray"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "duplicates filtered 2" in res.stdout and "untrained" in res.stdout
    rows = {r[M.clip_id]: r for r in read_clips(RunDir(out)).to_pylist()}
    original = clip_id(0)
    for dup in DUPLICATES_OF:
        assert rows[clip_id(dup)][M.status] == schema.STATUS_FILTERED
        assert rows[clip_id(dup)][M.filter_reasons] == [f"near_duplicate:{original}"]
    kept = [c for c, r in rows.items() if r[M.status] == schema.STATUS_KEPT]
    assert sorted(kept) == sorted(clip_id(i) for i in range(len(SHOTS)))
    # the duplicates left the index, and a second pass finds nothing more
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "duplicates filtered 0" in res.stdout and "visual embedded 0" in res.stdout
    store = ClipStore(default_uri(out), None, "rushes_clips")
    assert store.count() == len(SHOTS)
    assert not store.get([clip_id(d) for d in DUPLICATES_OF], [M.clip_id])
    # indexing afterwards reuses dedup's visual vectors and adds the captions of the clips still kept
    res = runner.invoke(app, ["index", "--out", str(out), "--clip-model", "tiny-random", "--frames", "3",
                              "--device", "cpu", "--no-ray"])
    assert res.exit_code == 0, res.output
    assert "index: kept clips 5, visual embedded 0" in res.stdout and "captions embedded 4" in res.stdout
    assert "collection rows 5" in res.stdout
    # dedup and index decided in tables of their own: the manifest is byte for byte what curation wrote
    assert manifest_bytes(out) == curated
    assert {p.name.split("-")[0] for p in (out / "decisions").glob("*.parquet")} == {"dedup"}


def manifest_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "manifest").glob("*.parquet"))}
