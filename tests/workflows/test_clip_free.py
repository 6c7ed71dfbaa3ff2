"""Clip-free runs (`extract.enabled: false`) against extracting runs of the same footage: the same kept
clips, captions, vectors, shard frames; the search page plays a range clip; `rushes extract` writes files later."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from curation.config import CurateConfig
from curation.core import schema
from curation.core.clips import CLIP_FREE, EXTRACTING, MIXED, clip_frame_count, clip_frames, run_kind
from curation.core.config import validate
from curation.core.rundir import RunDir
from curation.core.stage import map_in_process
from curation.core.tables import kept_clips, latest_captions
from recaption.config import CaptionConfig
from recaption.run import caption_run, with_frames
from workflows.cli import app

M, CAP, SH = schema.M, schema.CAP, schema.SH
# the source is resized (max_side) and resampled (fps) by extraction: a range must be read the same way
SETTINGS = {"extract": {"max_side": 96, "thumb_side": 64, "fps": 12}, "analysis": {"text_detector": "none"}}
H264_TOLERANCE = 8.0  # mean absolute difference (0..255) that h264 at crf 20 leaves on these small frames


def tiny_visual():
    from indexing.config import VisualConfig

    return VisualConfig(clip_model="tiny-random", clip_pretrained=None, frames=3, device="cpu")


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two generated reels curated twice in this process: with extraction, and clip-free."""
    from workflows.curate import curate
    from workflows.generate import generate_footage
    from workflows.workflow import GenerateConfig

    root = tmp_path_factory.mktemp("kinds")
    generate_footage(GenerateConfig(out_dir=root / "reels", reels=2, seconds=3, width=128, height=96, seed=3))
    outs = {}
    for kind, enabled in ((EXTRACTING, True), (CLIP_FREE, False)):
        cfg = validate({**SETTINGS, "extract": {**SETTINGS["extract"], "enabled": enabled}}, CurateConfig)
        curate(root / kind, [str(root / "reels")], cfg, use_ray=False, console=Console(quiet=True))
        outs[kind] = RunDir(root / kind)
    return outs


def test_same_kept_clips_and_the_run_says_its_kind(runs):
    extracted, free = (kept_clips(runs[k]) for k in (EXTRACTING, CLIP_FREE))
    assert extracted and sorted(r[M.clip_id] for r in extracted) == sorted(r[M.clip_id] for r in free)
    assert all(r[M.clip_path] for r in extracted) and not any(r[M.clip_path] for r in free)
    assert all((runs[CLIP_FREE].root / r[M.thumb_path]).is_file() for r in free)  # thumbnails made in the pass
    assert not runs[CLIP_FREE].clips.exists()
    assert run_kind(extracted) == EXTRACTING and run_kind(free) == CLIP_FREE
    result = CliRunner().invoke(app, ["report", str(runs[CLIP_FREE].root)])
    assert result.exit_code == 0 and "kind of run: clip-free" in result.output
    assert "Kind of run: <b>clip-free</b>" in runs[CLIP_FREE].report.read_text()


def test_frames_of_a_range_are_the_frames_of_its_clip_file(runs):
    by_id = {r[M.clip_id]: r for r in kept_clips(runs[CLIP_FREE])}
    for row in kept_clips(runs[EXTRACTING]):
        free = by_id[row[M.clip_id]]
        count = clip_frame_count(runs[EXTRACTING], row)
        assert count == clip_frame_count(runs[CLIP_FREE], free) == (row[M.end_frame] - row[M.start_frame]) // 2
        a, b = clip_frames(runs[EXTRACTING], row), clip_frames(runs[CLIP_FREE], free)
        assert [f.shape for f in a] == [f.shape for f in b] == [(72, 96, 3)] * count
        for k in (1, count // 2, count - 2):  # each frame is closest to its own, not to a neighbour
            assert mean_diff(a[k], b[k]) < H264_TOLERANCE
            assert mean_diff(a[k], b[k]) < min(mean_diff(a[k], b[k - 1]), mean_diff(a[k], b[k + 1]))


def test_captions_and_caption_frames_match(runs):
    config = CaptionConfig(frames=4, frame_max_side=64)
    captions = {}
    for kind, run in runs.items():
        assert caption_run(run.root, config).captioned == len(kept_clips(run))
        captions[kind] = {r[CAP.clip_id]: (r[CAP.caption_dense], r[CAP.caption_short])
                          for r in latest_captions(run).to_pylist()}
    assert captions[EXTRACTING] == captions[CLIP_FREE]
    free = {r[M.clip_id]: r for r in kept_clips(runs[CLIP_FREE])}
    for row in kept_clips(runs[EXTRACTING]):  # what a VLM would see: the same frames at the same times
        a = with_frames(runs[EXTRACTING], row, config)
        b = with_frames(runs[CLIP_FREE], free[row[M.clip_id]], config)
        assert a["frame_times"] == b["frame_times"] and len(a["frames"]) == 4
        assert max(mean_diff(x, y) for x, y in zip(a["frames"], b["frames"], strict=True)) < H264_TOLERANCE


def test_visual_vectors_match_within_tolerance(runs):
    from indexing.embed import VisualEmbedder

    vectors = {}
    for kind, run in runs.items():
        out = map_in_process(VisualEmbedder(run.root, tiny_visual()), kept_clips(run))
        assert all(r["error"] is None for r in out)
        vectors[kind] = {r[M.clip_id]: r["vector"] for r in out}
    for clip_id, v in vectors[EXTRACTING].items():
        assert float(np.dot(v, vectors[CLIP_FREE][clip_id])) > 0.99


def test_shards_hold_the_same_frames(runs):
    import pyarrow.parquet as pq

    from workflows.shard import ShardSettings, write_shards

    frames = {}
    for kind, run in runs.items():
        counts = write_shards(run.root, ShardSettings(buckets=["9x32x32"], max_frame_stride=2))
        assert counts["sharded"] == len(kept_clips(run)) and counts["unreadable"] == 0
        table = pq.ParquetDataset(run.shards / "f9_h32_w32").read().to_pylist()
        frames[kind] = {r[SH.clip_id]: np.frombuffer(r[SH.frames], np.uint8) for r in table}
    assert frames[EXTRACTING].keys() == frames[CLIP_FREE].keys()
    for clip_id, video in frames[EXTRACTING].items():
        assert mean_diff(video, frames[CLIP_FREE][clip_id]) < H264_TOLERANCE


def test_index_and_the_players_cut_of_a_range(runs, tmp_path):
    from fastapi.testclient import TestClient

    from indexing.config import IndexConfig, TextConfig
    from indexing.pipeline import index_run
    from indexing.web import create_app

    out = tmp_path / "run"
    shutil.copytree(runs[CLIP_FREE].root, out)
    summary = index_run(out, IndexConfig(visual=tiny_visual(), text=TextConfig(device="cpu")))
    kept = kept_clips(out)
    assert summary.counts["upserted"] == len(kept) and summary.counts["visual_failed"] == 0
    client = TestClient(create_app(out))
    hits = client.get("/api/search", params={"q": "a shape", "mode": "visual", "k": 5}).json()["results"]
    assert hits and all(h["clip_path"] is None for h in hits)
    page = client.get("/", params={"q": "a shape", "mode": "visual"}).text
    assert f'src="/clip/{hits[0]["clip_id"]}.mp4"' in page
    res = client.get(f"/clip/{kept[0][M.clip_id]}.mp4")
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    cut = tmp_path / "played.mp4"
    cut.write_bytes(res.content)
    with av.open(str(cut)) as container:
        played = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    reference = clip_frames(out, kept[0])
    assert len(played) == len(reference) and mean_diff(played[1], reference[1]) < H264_TOLERANCE
    assert client.get("/clip/0123456789abcdef0123.mp4").status_code == 404  # not a clip of this run
    assert client.get("/clip/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_rushes_extract_writes_files_later(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs[CLIP_FREE].root, out)
    first, *rest = sorted(r[M.clip_id] for r in kept_clips(out))
    manifest_before = {p.name: p.read_bytes() for p in RunDir(out).manifest.iterdir()}
    result = CliRunner().invoke(app, ["extract", "--out", str(out), "--clip-id", first])
    assert result.exit_code == 0, result.output
    assert "1 clip files written" in result.output
    assert run_kind(kept_clips(out)) == (MIXED if rest else EXTRACTING)
    result = CliRunner().invoke(app, ["extract", "--out", str(out)])
    assert result.exit_code == 0 and f"{len(rest)} clip files written, 1 had one" in result.output
    kept = kept_clips(out)
    assert run_kind(kept) == EXTRACTING
    assert {p.name: p.read_bytes() for p in RunDir(out).manifest.iterdir()} == manifest_before  # append-only
    extracted = {r[M.clip_id]: r for r in kept_clips(runs[EXTRACTING])}
    for row in kept:  # the files are those an extracting run writes
        assert (out / row[M.clip_path]).is_file()
        assert clip_frame_count(out, row) == clip_frame_count(runs[EXTRACTING], extracted[row[M.clip_id]])
    bad = CliRunner().invoke(app, ["extract", "--out", str(out), "--clip-id", "nope"])
    assert bad.exit_code == 2 and "--clip-id nope names no clip" in bad.output


def test_a_vanished_source_is_named(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs[CLIP_FREE].root, out)
    row = dict(kept_clips(out)[0])
    row[M.source] = str(tmp_path / "moved-away.mp4")
    from curation.core.stage import PermanentError

    with pytest.raises(PermanentError, match="moved-away.mp4 of clip .* is gone"):
        clip_frames(out, row, count=2)
    with pytest.raises(PermanentError, match="moved-away.mp4"):  # the caption stage makes it an error row
        with_frames(RunDir(out), row, CaptionConfig())
    assert Path(kept_clips(out)[0][M.source]).is_file()


def test_a_clip_free_step_decodes_its_source_once(runs, tmp_path, monkeypatch):
    """Thumbnails come from the analysis pictures: extraction's decode pass is never entered."""
    import curation.extract
    from curation.core.rundir import config_hash
    from curation.pipeline import process_source

    def second_decode(*args, **kwargs):
        raise AssertionError("a clip-free run decoded its source a second time")

    monkeypatch.setattr(curation.extract, "extract_source", second_decode)
    cfg = validate({**SETTINGS, "extract": {**SETTINGS["extract"], "enabled": False}}, CurateConfig)
    source = kept_clips(runs[CLIP_FREE])[0][M.source]
    result = process_source(source, tmp_path / "out", cfg, config_hash(cfg))
    assert result["status"] == "processed" and result["kept"] >= 1, result
    rows = kept_clips(tmp_path / "out")
    from PIL import Image

    with Image.open(tmp_path / "out" / rows[0][M.thumb_path]) as thumb:
        assert max(thumb.size) == SETTINGS["extract"]["thumb_side"]


def test_a_cut_that_fails_is_a_message_not_a_server_error(runs, tmp_path, monkeypatch):
    import curation.core.clips
    from indexing.web import ClipPlayer

    out = tmp_path / "run"
    shutil.copytree(runs[CLIP_FREE].root, out)
    clip_id = kept_clips(out)[0][M.clip_id]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(curation.core.clips, "cut_range", disk_full)
    path, why = ClipPlayer(out).file(f"{clip_id}.mp4")
    assert path is None and "No space left on device" in why and f"--clip-id {clip_id}" in why
