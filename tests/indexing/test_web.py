"""The search page: its API through fastapi's TestClient, and the page itself in headless Chromium."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pytest
from fastapi.testclient import TestClient
from indexing_testkit import clip_id, index_config

from indexing.pipeline import index_run
from indexing.web import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--mute-audio", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def served(run_template, tmp_path_factory):
    out = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(run_template, out)
    index_run(out, index_config())
    (out.parent / "secret.mp4").write_bytes(b"outside OUT")
    app = create_app(out)
    return out, app, TestClient(app)


def test_api_search_returns_results(served):
    _, _, client = served
    res = client.get("/api/search", params={"q": "a yellow square moving up", "mode": "text", "k": 2})
    assert res.status_code == 200
    data = res.json()
    assert data["results"][0]["clip_id"] == clip_id(1)
    assert any("untrained" in n for n in data["notes"])
    assert client.get("/api/search", params={"like": "x'"}).status_code == 400  # not a 500
    res = client.get("/api/search", params={"like": clip_id(0), "k": 2})
    assert {r["clip_id"] for r in res.json()["results"]} == {clip_id(5), clip_id(6)}


def test_api_rejects_bad_input(served):
    _, _, client = served
    res = client.get("/api/search", params={"q": "x" * 501})
    assert res.status_code == 400 and "limit is 500" in res.json()["error"]
    res = client.get("/api/search", params={"q": "x", "where": "bogus > 1"})
    assert res.status_code == 400 and "Fields you can filter on" in res.json()["error"]
    assert client.get("/api/search", params={"q": "x", "k": 100000}).status_code == 422


def test_files_stay_inside_out(served):
    out, _, client = served
    res = client.get(f"/files/clips/{clip_id(0)}.mp4")
    assert res.status_code == 200 and res.content == (out / "clips" / f"{clip_id(0)}.mp4").read_bytes()
    assert client.get(f"/files/thumbs/{clip_id(0)}.jpg").headers["content-type"] == "image/jpeg"
    for escape in ["/files/../secret.mp4", "/files/%2e%2e/secret.mp4", "/files/clips/..%2f..%2fsecret.mp4",
                   "/files//etc/passwd", "/files/manifest/part-0.parquet", "/files/milvus.db"]:
        assert 400 <= client.get(escape).status_code < 500, escape


def test_page_renders_results_and_errors(served):
    _, _, client = served
    res = client.get("/", params={"q": "a white triangle", "mode": "keyword"})
    assert res.status_code == 200
    assert f'data-clip-id="{clip_id(2)}"' in res.text and "a white triangle moving left" in res.text
    assert f'src="/files/clips/{clip_id(2)}.mp4"' in res.text
    res = client.get("/", params={"q": "<script>alert(1)</script>", "mode": "keyword"})
    assert "<script>alert(1)" not in res.text and "&lt;script&gt;" in res.text
    res = client.get("/", params={"q": "x", "where": "duration >>> 1"})
    assert res.status_code == 400 and 'id="error"' in res.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(served):
    import uvicorn

    _, app, _ = served
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _chromium(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make system-deps)")
def test_results_page_in_headless_chromium(live_server, tmp_path):
    url = f"{live_server}/?q=a+red+circle+moving+right&mode=hybrid&k=6"
    dom = _chromium(["--virtual-time-budget=8000", "--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    cards = re.findall(r'class="card" data-clip-id="([0-9a-f]+)"', dom.stdout)
    assert len(cards) == 6 and clip_id(0) in cards
    assert "a red circle moving right on a blue background" in dom.stdout
    # the browser decoded every clip's header: the h264 files are playable in the page
    videos = re.findall(r"<video[^>]*>", dom.stdout)
    assert len(videos) == 6 and all('data-ready="1"' in v for v in videos), videos
    shot = tmp_path / "results.png"
    res = _chromium(["--window-size=1280,900", "--virtual-time-budget=8000", f"--screenshot={shot}", url], tmp_path)
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    # kept for people to look at (see docs/indexing.md)
    keep = tmp_path.parent / "search-page.png"
    shutil.copy(shot, keep)


def test_a_loopback_page_answers_only_loopback_host_names(served):
    from indexing.web import LOOPBACK_HOSTS

    out, _, _ = served
    app = create_app(out, allowed_hosts=LOOPBACK_HOSTS)
    assert TestClient(app, base_url="http://127.0.0.1:8765").get("/api/search", params={"q": "a"}).status_code == 200
    assert TestClient(app, base_url="http://localhost:8765").get("/").status_code == 200
    rebound = TestClient(app, base_url="http://attacker.example:8765")  # a rebinding DNS name
    assert rebound.get("/api/search", params={"q": "a"}).status_code == 400


def test_serve_refuses_a_port_out_of_range(served):
    from typer.testing import CliRunner

    from workflows.cli import app

    out, _, _ = served
    result = CliRunner().invoke(app, ["serve", "--out", str(out), "--port", "70000"])
    assert result.exit_code == 2 and "65535" in result.output and "Traceback" not in result.output


def test_the_page_builds_the_keyword_index_when_it_starts(served, monkeypatch):
    out, _, _ = served
    from indexing.store import ClipStore

    warmed, original = [], ClipStore.warm
    monkeypatch.setattr(ClipStore, "warm", lambda self: (warmed.append(self.collection), original(self))[1])
    app = create_app(out)
    for thread in [t for t in threading.enumerate() if t.name == "warm-index"]:
        thread.join(timeout=60)
    assert warmed == ["rushes_clips"]
    res = TestClient(app).get("/api/search", params={"q": "yellow square", "mode": "keyword", "k": 2})
    assert res.status_code == 200 and res.json()["results"]
