"""The dedup and index steps of `rushes run`, embedding with a Ray actor pool."""

from __future__ import annotations

import shutil

import pytest
import yaml
from indexing_testkit import DUPLICATES_OF, SHOTS, clip_id

from curation.core import schema
from curation.core.config import load_yaml
from curation.core.rundir import RunDir, atomic_write_table, read_table, rows_to_table
from curation.core.schema import M
from curation.core.tables import read_clips
from indexing.store import ClipStore, default_uri
from workflows.raysession import ray_session
from workflows.workflow import WorkflowConfig, run_workflow


@pytest.mark.slow
def test_dedup_then_index_on_ray(run_template, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_template, out)
    # one kept clip whose file is not a video: quarantined by the worker, the run goes on
    (out / "clips" / "broken.mp4").write_bytes(b"not a video")
    broken = {M.clip_id: "broken-clip", M.source: "reel9.mp4", M.status: "kept", M.clip_path: "clips/broken.mp4",
              M.filter_reasons: [], M.duration: 1.0}
    atomic_write_table(rows_to_table([broken], schema.MANIFEST), RunDir(out).manifest / "part-broken.parquet")
    visual = {"clip_model": "tiny-random", "clip_pretrained": None, "frames": 3, "device": "cpu", "batch_size": 4}
    config = {
        "out": str(out),
        "ray": {"workers": 1},
        "dedup": {"threshold": 0.99, "visual": visual},
        "index": {"visual": visual, "text": {"device": "cpu"}},
    }
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(config))
    with ray_session(num_cpus=2):  # one Ray for both steps (each step reuses a running Ray)
        run_workflow(load_yaml(path, WorkflowConfig))
    printed = capsys.readouterr().out
    assert "dedup: visual embedded 7, visual reused 0, visual failed 1" in printed
    assert "duplicates filtered 2" in printed
    quarantined = read_table(RunDir(out).quarantine_parts, schema.QUARANTINE).to_pylist()
    assert [(q[schema.Q.clip_id], q[schema.Q.stage]) for q in quarantined] == [("broken-clip", "embed_visual")]
    assert "broken.mp4" in quarantined[0][schema.Q.error]
    # index reuses dedup's visual vectors and adds caption vectors of the clips still kept
    # (the quarantined clip is not retried)
    assert "index: kept clips 6, visual embedded 0, visual reused 5, visual failed 0" in printed
    assert "captions embedded 4" in printed
    rows = {r[M.clip_id]: r for r in read_clips(RunDir(out)).to_pylist()}
    assert all(rows[clip_id(d)][M.status] == "filtered" for d in DUPLICATES_OF)
    assert ClipStore(default_uri(out), None, "rushes_clips").count() == len(SHOTS)
