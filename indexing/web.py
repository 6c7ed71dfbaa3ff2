"""`rushes serve`: a small search page over one run's index.

GET /                 the page; with ?q= (or ?like=) it shows results, rendered on the server
GET /api/search       the same search as JSON (q, mode, k, where, like)
GET /files/<path>     thumbnails and clips, only media files inside OUT (anything else: 404)
GET /clip/<id>.mp4    a kept clip to play: its clip file, or in a clip-free run its source's range cut on
                      demand into OUT/_cache/player/ (only sources the manifest names are read)

The page is templates/search.html.j2 (Jinja2, everything escaped). Binds 127.0.0.1 unless told otherwise. Query length is limited (MAX_QUERY_CHARS). `rushes serve`
reads OUT/milvus.db through the run's rushes-managed Milvus server (indexing/server.py), so `rushes
index` and `rushes dedup` can write to the same run meanwhile; new rows show up in the next search.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from urllib.parse import quote, urlencode

from curation.core.models import is_untrained
from curation.core.schema import M
from indexing.search import MAX_K, MAX_QUERY_CHARS, MODES, Hit, Searcher, SearchError
from indexing.store import ClipStore, FilterExpressionError, StoreError, default_uri

log = logging.getLogger(__name__)

MEDIA_SUFFIXES = {".mp4", ".webm", ".jpg", ".jpeg", ".png", ".webp"}
MAX_WHERE_CHARS = 1000

TEMPLATES = Path(__file__).parent / "templates"


def _within(root: Path, rel: str) -> Path | None:
    """The file `rel` names under `root`, or None if it escapes root, is not media or does not exist."""
    try:
        path = (root / rel).resolve()
        path.relative_to(root)
    except (ValueError, OSError):
        return None
    if path.suffix.lower() not in MEDIA_SUFFIXES or not path.is_file():
        return None
    return path


class ClipPlayer:
    """What /clip/<id>.mp4 plays: a kept clip's file, or its range cut once into OUT/_cache/player/.

    Clips are looked up by id in the run's clip view, so only files and sources the manifest names are
    ever read; the view is read again when an id is not found (a `rushes extract` since)."""

    def __init__(self, root: Path):
        from curation.core.rundir import RunDir

        self.run = RunDir(root)
        self.cache = root / "_cache" / "player"
        self.rows: dict[str, dict] | None = None
        self.lock = threading.Lock()  # one cut at a time: each decodes and encodes a whole clip

    def _row(self, clip_id: str, fresh: bool = False) -> dict | None:
        if self.rows is None or fresh:
            from curation.core.tables import kept_clips

            self.rows = {r[M.clip_id]: r for r in kept_clips(self.run)}
        return self.rows.get(clip_id)

    def file(self, name: str) -> tuple[Path | None, str | None]:
        """(the mp4 to send, None) or (None, why not)."""
        import av

        from curation.core.clips import clip_file, cut_range, has_clip_file
        from curation.core.stage import PermanentError
        from indexing.search import CLIP_ID_RE

        clip_id = name.removesuffix(".mp4")
        if not CLIP_ID_RE.fullmatch(clip_id):
            return None, "not found"
        row = self._row(clip_id) or self._row(clip_id, fresh=True)
        if row is None:
            return None, f"no kept clip {clip_id} in this run"
        try:
            if has_clip_file(row):
                clip_file(self.run, row)  # a missing file: an error that says how to write it again
                return _within(self.run.root, row[M.clip_path]), None
            cached = self.cache / f"{clip_id}.mp4"
            with self.lock:
                if not cached.is_file():
                    self.cache.mkdir(parents=True, exist_ok=True)
                    cut_range(self.run, row, cached)
            return cached, None
        except PermanentError as e:
            return None, str(e)
        except (OSError, av.error.FFmpegError) as e:  # a full disk, a source unreadable just now
            return None, (f"cannot cut clip {clip_id} from its source ({e}); try again, or write its file with "
                          f"`rushes extract --out {self.run.root} --clip-id {clip_id}`")


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]


def create_app(out: Path | str, milvus_uri: str | None = None, milvus_token: str | None = None,
               collection: str = "rushes_clips", device: str = "cpu", allowed_hosts: list[str] | None = None):
    """The FastAPI app for one run directory; the index is opened now, query models on first use.

    `allowed_hosts`: the only Host headers answered (others get 400): a page bound to loopback takes
    LOOPBACK_HOSTS, so a web page elsewhere cannot reach it through a rebinding DNS name."""
    from fastapi import FastAPI, Query
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    root = Path(out).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"--out {out} is not a directory")
    uri = milvus_uri or default_uri(root)
    if not milvus_uri and not Path(uri).exists():
        raise StoreError(f"{uri} does not exist: run `rushes index --out {out}` first")
    store = ClipStore(uri, milvus_token, collection)
    searcher = Searcher(store, device=device)
    lock = threading.Lock()  # one search at a time: the query models are not shared across threads
    threading.Thread(target=_warm, args=(store, lock), name="warm-index", daemon=True).start()
    app = FastAPI(title="rushes search", docs_url=None, redoc_url=None)
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    def run_search(q: str, mode: str, k: int, where: str, like: str) -> list[Hit]:
        if len(q) > MAX_QUERY_CHARS:
            raise SearchError(f"the query has {len(q)} characters; the limit is {MAX_QUERY_CHARS}")
        if len(where) > MAX_WHERE_CHARS:
            raise SearchError(f"the filter has {len(where)} characters; the limit is {MAX_WHERE_CHARS}")
        from pymilvus.exceptions import MilvusException

        with lock:
            try:
                searcher.refresh()  # `rushes index` may have recreated the collection since the last search
                if like:
                    return searcher.like(like, k, where or None)
                return searcher.search(q, mode, k, where or None)
            except MilvusException as e:  # e.g. the run's Milvus server was stopped under the page
                raise StoreError(f"Milvus at {store.address} failed: {getattr(e, 'message', e)}. If the run's "
                                 "Milvus server was stopped (`rushes milvus stop`), restart `rushes serve`") from e

    @app.get("/api/search")
    def api_search(q: str = "", mode: str = "hybrid", k: int = Query(12, ge=1, le=MAX_K), where: str = "",
                   like: str = ""):
        try:
            hits = run_search(q, mode, k, where, like)
        except (SearchError, FilterExpressionError, StoreError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return {"query": q, "mode": mode, "like": like or None, "notes": searcher.notes,
                "results": [h.to_dict() for h in hits]}

    player = ClipPlayer(root)

    @app.get("/clip/{name}")
    def clip(name: str):
        path, error = player.file(name)
        if path is None:
            return Response(error or "not found", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type="video/mp4")

    @app.get("/files/{rel:path}")
    def files(rel: str):
        path = _within(root, rel)
        if path is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(path)

    @app.get("/", response_class=HTMLResponse)
    def page(q: str = "", mode: str = "hybrid", k: int = Query(12, ge=1, le=MAX_K), where: str = "", like: str = ""):
        hits, error, status = None, None, 200
        if q or like:
            try:
                hits = run_search(q, mode, k, where, like)
            except (SearchError, FilterExpressionError, StoreError) as e:
                error, status = str(e), 400
        body = render_page(q, mode, k, where, like, hits, error, searcher.notes, searcher.available_modes())
        return HTMLResponse(body, status_code=status)

    app.state.store = store
    return app


def _warm(store: ClipStore, lock: threading.Lock) -> None:
    """Build the keyword index now (Milvus Lite builds it on the first keyword search: 9.5 s at 1M clips),
    holding the search lock so that a search arriving meanwhile waits for it instead of building it too."""
    with lock:
        try:
            store.warm()
        except Exception as e:  # noqa: BLE001 - warming only saves the first search some time
            log.info("warming %s failed (%s); the first keyword search builds its index", store.collection, e)


def _card(h: Hit) -> dict:
    """What a result card shows, formatted; the template escapes it."""
    times = f"{h.start_time:.2f}–{h.end_time:.2f} s" if h.start_time is not None and h.end_time is not None else ""
    aesthetic = ""
    if h.aesthetic_score is not None:
        aesthetic = f" · aesthetic {h.aesthetic_score:.2f}" + (" (untrained)" if is_untrained(h.aesthetic_model) else "")
    return {
        "clip_id": h.clip_id,
        "clip_url": f"/files/{quote(h.clip_path)}" if h.clip_path else f"/clip/{quote(h.clip_id)}.mp4",
        "thumb_url": f"/files/{quote(h.thumb_path)}" if h.thumb_path else "",
        "score": f"{h.score:.4f}",
        "caption": h.caption,
        "source": h.source,
        "times": times,
        "aesthetic": aesthetic,
        "like_url": "/?" + urlencode({"like": h.clip_id}),
    }


def render_page(q: str, mode: str, k: int, where: str, like: str, hits: list[Hit] | None, error: str | None,
                notes: list[str], modes: list[str]) -> str:
    return _template().render(
        q=q, mode=mode, k=k, where=where, like=like, error=error, notes=notes,
        modes=[m for m in modes if m in MODES], cards=None if hits is None else [_card(h) for h in hits],
        max_query_chars=MAX_QUERY_CHARS, max_where_chars=MAX_WHERE_CHARS, max_k=MAX_K,
    )


@functools.cache
def _template():
    import jinja2

    # FileSystemLoader beside this file, not PackageLoader: under pytest `indexing` can resolve as the
    # namespace package tests/indexing/
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("search.html.j2")
