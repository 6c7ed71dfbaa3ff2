"""The rushes-managed Milvus Lite server: started, found again, stale state, a clear message when the
database is held elsewhere, and `rushes serve` finding clips indexed while it runs.

Every database here is opened only by server processes, child processes or a server this process
hosts and stops (`managed.host`), never by pymilvus in the test process itself (it would keep the
database locked until pytest exits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pyarrow.parquet as pq
import pytest
from indexing_testkit import DUPLICATES_OF, SHOTS, clip_id
from server_testkit import RUSHES, free_port, spawn, stop, wait_for_port
from typer.testing import CliRunner

from curation.core import schema
from curation.core.rundir import atomic_write_table, rows_to_table
from curation.core.schema import M
from indexing import server as managed
from indexing.store import ClipStore, StoreError
from workflows.cli import app

runner = CliRunner()
KEPT = len(SHOTS) + len(DUPLICATES_OF)
TINY = ["--clip-model", "tiny-random", "--frames", "3", "--device", "cpu", "--no-ray"]


@pytest.fixture
def db(tmp_path):
    """A fresh database path; any managed server left on it is stopped at the end."""
    path = tmp_path / "milvus.db"
    yield path
    managed.stop(path)


def test_managed_server_is_started_once_found_and_stopped(db):
    state, started = managed.start(db)
    assert started and managed.state_path(db).exists()
    again, started_again = managed.start(db)
    assert not started_again and again == state
    assert managed.lock_holder(db) == state.pid  # the server process holds the database, not this one
    store = ClipStore(str(db), None, "rushes_clips")
    assert store.address == state.uri and not store.exists()
    store.close()
    res = runner.invoke(app, ["milvus", "status", "--out", str(db.parent), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["pid"] == state.pid
    assert managed.stop(db) == state
    assert managed.running(db) is None and managed.lock_holder(db) is None
    assert not managed.state_path(db).exists()
    res = runner.invoke(app, ["milvus", "status", "--out", str(db.parent)])
    assert res.exit_code == 0 and "no server running" in res.stdout
    res = runner.invoke(app, ["milvus", "restart", "--out", str(db.parent)])
    assert res.exit_code == 2 and "start, stop, status" in res.stderr
    res = runner.invoke(app, ["milvus", "start", "--out", str(db.parent / "missing")])
    assert res.exit_code == 2 and "not a directory" in res.stderr and "Traceback" not in res.output


def test_a_hosted_server_serves_this_process_directly_and_others_over_grpc(db):
    """`rushes serve` hosts the server on its own threads: its store calls the servicer (no gRPC hop),
    another process finds it through the state file, and stopping it releases the database."""
    import numpy as np

    from indexing import milvus_lite_speedups as speedups
    from indexing.store import F_VISUAL, StoreMeta, store_row

    state, started = managed.host(db)
    assert started and state.pid == os.getpid() and managed.running(db) == state
    assert managed.host(db) == (state, False) and managed.lock_holder(db) == os.getpid()
    store = ClipStore(str(db), None, "rushes_clips")
    assert store.address == state.uri and isinstance(store.client._get_connection()._stub, speedups._DirectStub)
    store.ensure(StoreMeta(visual_model="v", text_model="t", visual_dim=8, text_dim=8))
    row = store_row({M.clip_id: "a" * 20, M.source: "s.mp4", M.duration: 2.0}, np.eye(8, dtype=np.float32)[0],
                    None, None, None, 8)
    store.upsert([row])
    store.flush()
    assert store.search(F_VISUAL, [np.eye(8, dtype=np.float32)[0]], 1, None, [M.clip_id])[0][0][M.clip_id] == "a" * 20
    store.close()
    other = subprocess.run([sys.executable, "-c", "import sys; from indexing.store import ClipStore; "
                            "s = ClipStore(sys.argv[1], None, 'rushes_clips'); print(s.address, s.count())", str(db)],
                           capture_output=True, text=True, timeout=300, cwd=managed.PROJECT_ROOT)
    assert other.returncode == 0 and other.stdout.split() == [state.uri, "1"], other.stderr[-2000:]
    assert managed.stop(db) == state and managed.hosted_servicer(db) is None
    assert managed.running(db) is None and managed.lock_holder(db) is None


def test_a_stale_state_file_is_removed(db):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    managed.state_path(db).write_text(json.dumps({"pid": dead.pid, "port": free_port(), "db": str(db.resolve()),
                                                  "token": "old", "started_at": 0}))
    assert managed.running(db) is None and not managed.state_path(db).exists()


def test_the_server_stops_when_its_owner_is_gone(db):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        state, _ = managed.start(db, owner_pid=owner.pid)
    finally:
        owner.kill()
        owner.wait()
    managed._children[state.pid].wait(60)  # it exits by itself (this process started it, so reaps it)
    assert managed.running(db) is None and managed.lock_holder(db) is None


def test_a_database_held_by_another_process_is_a_clear_error(db):
    holder = spawn([sys.executable, "-c", f"from pymilvus import MilvusClient; c = MilvusClient({str(db)!r}); "
                                          "print('open', flush=True); import time; time.sleep(600)"],
                   db.parent / "holder.log")
    try:
        deadline = time.monotonic() + 120
        while managed.lock_holder(db) is None and time.monotonic() < deadline:
            assert holder.poll() is None, (db.parent / "holder.log").read_text()
            time.sleep(0.2)
        assert managed.lock_holder(db) == holder.pid
        with pytest.raises(managed.ServerError, match=rf"open in process {holder.pid}.*rushes milvus start"):
            managed.start(db)
        with pytest.raises(StoreError, match=rf"open in process {holder.pid}.*not a rushes-managed"):
            ClipStore(str(db), None, "rushes_clips")
        res = runner.invoke(app, ["search", "x", "--out", str(db.parent)])
        assert res.exit_code == 2 and "Wait for that command to finish" in res.stderr and "Traceback" not in res.output
    finally:
        stop(holder, signal.SIGKILL)


def test_the_page_says_so_when_its_server_is_gone(db):
    from fastapi.testclient import TestClient

    from indexing.store import StoreMeta
    from indexing.web import create_app

    managed.start(db)
    store = ClipStore(str(db), None, "rushes_clips")
    store.ensure(StoreMeta(visual_model="v", text_model="t", visual_dim=8, text_dim=8))
    store.close()
    client = TestClient(create_app(db.parent))
    res = client.get("/api/search", params={"like": "0" * 20})
    assert res.status_code == 400 and "not in the index" in res.json()["error"]
    managed.stop(db)
    res = client.get("/api/search", params={"like": "0" * 20})
    assert res.status_code == 400 and "restart `rushes serve`" in res.json()["error"]


def _split_manifest(out, later: set[str]) -> list[dict]:
    """Keep the clips not in `later` in the manifest; returns the rows of the others (clips to come)."""
    part = out / "manifest" / "part-0.parquet"
    rows = pq.read_table(part).to_pylist()
    atomic_write_table(rows_to_table([r for r in rows if r[M.clip_id] not in later], schema.MANIFEST), part)
    return [r for r in rows if r[M.clip_id] in later]


def _api(base: str, **params) -> dict:
    res = httpx.get(f"{base}/api/search", params=params, timeout=300)
    assert res.status_code == 200, res.text
    return res.json()


def test_serve_finds_clips_indexed_while_it_runs(run_template, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_template, out)
    db = out / "milvus.db"
    new = {clip_id(2), clip_id(3)}
    later = _split_manifest(out, new)
    # the first index runs in a child process: its embedded Milvus Lite is released when it exits
    first = subprocess.run([*RUSHES, "index", "--out", str(out), *TINY], capture_output=True, text=True, timeout=600,
                           cwd=managed.PROJECT_ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"collection rows {KEPT - 2}" in first.stdout
    port = free_port()
    log = tmp_path / "serve.log"
    serve = spawn([*RUSHES, "serve", "--out", str(out), "--port", str(port)], log)
    try:
        wait_for_port(serve, port, log)
        state = managed.running(db)
        assert state is not None and state.owner_pid == serve.pid  # the page started the run's server
        base = f"http://127.0.0.1:{port}"
        assert _api(base, q="triangle", mode="keyword")["results"] == []
        # new clips arrive in the run, and are indexed while the page is up (through its server)
        atomic_write_table(rows_to_table(later, schema.MANIFEST), out / "manifest" / "part-1.parquet")
        res = runner.invoke(app, ["index", "--out", str(out), *TINY])
        assert res.exit_code == 0, res.output
        assert "visual embedded 2" in res.stdout and f"collection rows {KEPT}" in res.stdout
        assert [r["clip_id"] for r in _api(base, q="triangle", mode="keyword")["results"]] == [clip_id(2)]
        assert _api(base, q="an orange circle moving down", mode="text", k=1)["results"][0]["clip_id"] == clip_id(3)
        assert len(_api(base, like=clip_id(3), k=2)["results"]) == 2
        # `rushes dedup` (it writes) and `rushes search` work on the run meanwhile too
        res = runner.invoke(app, ["dedup", "--out", str(out), "--threshold", "0.99", *TINY])
        assert res.exit_code == 0 and "duplicates filtered 2" in res.stdout, res.output
        assert {r["clip_id"] for r in _api(base, like=clip_id(0), k=KEPT)["results"]} & set(map(clip_id, DUPLICATES_OF)) == set()
        res = runner.invoke(app, ["search", "triangle", "--mode", "keyword", "--out", str(out), "--json"])
        assert res.exit_code == 0 and json.loads(res.stdout)["results"][0]["clip_id"] == clip_id(2)
    finally:
        code = stop(serve, signal.SIGINT)
    assert code == 0, log.read_text()[-3000:]
    # the page stopped the server it had started, and nothing holds the database any more
    assert managed.running(db) is None and managed.lock_holder(db) is None


def test_an_exited_server_not_yet_reaped_counts_as_stopped():
    """A server `rushes serve` started and another terminal stopped stays a zombie until serve reaps
    it; stopping must not wait out its timeout for a process that has exited."""
    from indexing.server import _pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(child.pid)  # exited, not reaped yet: a zombie
    child.wait()
    assert _pid_alive(os.getpid())
