"""`--milvus-uri http://HOST:PORT`: index, search and dedup against a Milvus server process.

The server is Milvus Lite's own gRPC server mode (`python -m milvus_lite server`), started here on a
free port and stopped at the end: the same protocol a Milvus standalone or cluster speaks. Nothing may
touch a local OUT/milvus.db on this path. Batched searches are checked against single ones here too.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from indexing_testkit import DUPLICATES_OF, SHOTS, clip_id
from server_testkit import free_port, spawn, stop, wait_for_port
from typer.testing import CliRunner

from indexing.search import Searcher
from indexing.store import ClipStore
from workflows.cli import app

runner = CliRunner()
KEPT = len(SHOTS) + len(DUPLICATES_OF)
TINY = ["--clip-model", "tiny-random", "--frames", "3", "--device", "cpu", "--no-ray"]


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """A Milvus Lite gRPC server process on a free port: its URI."""
    root = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    log = root / "server.log"
    proc = spawn([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(root / "data"),
                  "--host", "127.0.0.1", "--port", str(port)], log)
    try:
        wait_for_port(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def remote_run(milvus_server, run_template, tmp_path_factory):
    """A run indexed twice into collection `remote` on the server: (OUT, URI, first output, second output)."""
    out = tmp_path_factory.mktemp("remote") / "run"
    shutil.copytree(run_template, out)
    args = ["index", "--out", str(out), "--milvus-uri", milvus_server, "--collection", "remote", *TINY]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    return out, milvus_server, first.stdout, second.stdout


def search_json(run, *args) -> dict:
    out, uri, _, _ = run
    res = runner.invoke(app, ["search", *args, "--milvus-uri", uri, "--collection", "remote", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_index_twice_upserts_one_row_per_clip(remote_run):
    out, _, first, second = remote_run
    assert f"visual embedded {KEPT}" in first and f"collection rows {KEPT}" in first
    assert "visual embedded 0" in second and f"upserted {KEPT}" in second and f"collection rows {KEPT}" in second
    assert "keyword" not in second  # the server has BM25: no "keyword mode is unavailable" note
    assert not (out / "milvus.db").exists()  # the server path never opens a local database


def test_hybrid_text_and_keyword_search_over_the_server(remote_run):
    data = search_json(remote_run, "a white triangle moving left", "--mode", "hybrid", "--k", "4")
    assert data["results"][0]["clip_id"] == clip_id(2) and len(data["results"]) == 4
    assert all(0 < r["score"] < 0.1 for r in data["results"])  # RRF sums
    assert search_json(remote_run, "a yellow square moving up", "--mode", "text")["results"][0]["clip_id"] == clip_id(1)
    keyword = search_json(remote_run, "triangle", "--mode", "keyword")["results"]
    assert [r["clip_id"] for r in keyword] == [clip_id(2)]


def test_filters_over_the_server(remote_run):
    hits = search_json(remote_run, "a shape moving", "--mode", "visual", "--k", "20", "--where", "duration > 1.2")
    assert {r["clip_id"] for r in hits["results"]} == {clip_id(1), clip_id(3)}
    colour = search_json(remote_run, "a shape", "--mode", "text", "--where", 'array_contains(dominant_colors, "purple")')
    assert [r["clip_id"] for r in colour["results"]] == [clip_id(2)]
    _, uri, _, _ = remote_run
    res = runner.invoke(app, ["search", "x", "--milvus-uri", uri, "--collection", "remote", "--where", "nope == 1"])
    assert res.exit_code == 2 and "Fields you can filter on" in res.stderr and "Traceback" not in res.output


def test_several_like_ids_in_one_search(remote_run):
    data = search_json(remote_run, "--like", clip_id(0), "--like", clip_id(2), "--k", "2")
    assert data["like"] == [clip_id(0), clip_id(2)]
    assert {r["clip_id"] for r in data["results"][clip_id(0)]} == {clip_id(5), clip_id(6)}
    assert clip_id(2) not in {r["clip_id"] for r in data["results"][clip_id(2)]}
    assert len(data["results"][clip_id(2)]) == 2


def _ranked(hits) -> tuple[list[float], list[tuple[str, float]]]:
    """The scores and clips above the lowest: clips of equal score come in any order, any of those tied at the
    cut-off may be returned, and which one shifts the last hybrid (rank-fused) score."""
    scores = [round(h.score, 4) for h in hits]
    return scores[:-1], sorted((h.clip_id, s) for h, s in zip(hits, scores, strict=True) if s > scores[-1])


def test_batched_searches_equal_single_ones(remote_run):
    _, uri, _, _ = remote_run
    store = ClipStore(uri, None, "remote")
    try:
        searcher = Searcher(store, device="cpu")
        ids = [clip_id(i) for i in range(KEPT)]
        assert [_ranked(h) for h in searcher.like_many(ids, k=3)] == [_ranked(searcher.like(c, k=3)) for c in ids]
        filtered = searcher.like_many(ids, k=3, where="duration > 0.9")
        assert [_ranked(h) for h in filtered] == [_ranked(searcher.like(c, k=3, where="duration > 0.9")) for c in ids]
        queries = ["a red circle moving right", "a white triangle", "a square moving up", "a green background"]
        for mode in ("text", "keyword", "visual", "hybrid"):
            batched = searcher.search_many(queries, mode=mode, k=4)
            single = [searcher.search(q, mode=mode, k=4) for q in queries]
            if mode == "hybrid":
                # Milvus fuses the ranks itself and breaks ties among the fixture's identical clips its own way,
                # so past the best hit the fused scores of a batched and a single search may differ
                assert [(len(h), round(h[0].score, 4)) for h in batched] == [(len(h), round(h[0].score, 4))
                                                                            for h in single], mode
            else:
                assert [_ranked(h) for h in batched] == [_ranked(h) for h in single], mode
    finally:
        store.close()


def test_dedup_over_the_server(milvus_server, run_template, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_template, out)
    res = runner.invoke(app, ["dedup", "--out", str(out), "--threshold", "0.99", "--milvus-uri", milvus_server,
                              "--collection", "dedup_remote", *TINY])
    assert res.exit_code == 0, res.output
    assert "duplicates filtered 2" in res.stdout and f"collection rows {KEPT - 2}" in res.stdout
    store = ClipStore(milvus_server, None, "dedup_remote")
    try:
        kept = store.get([clip_id(i) for i in range(KEPT)], ["clip_id"])
        assert set(kept) == {clip_id(i) for i in range(KEPT)} - set(map(clip_id, DUPLICATES_OF))
    finally:
        store.close()
    assert not (out / "milvus.db").exists()
