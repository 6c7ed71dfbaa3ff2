"""`rushes serve`: a small search page over one run's index.

GET /                 the page; with ?q= (or ?like=) it shows results, rendered on the server
GET /api/search       the same search as JSON (q, mode, k, where, like)
GET /files/<path>     thumbnails and clips, only media files inside OUT (anything else: 404)

Binds 127.0.0.1 unless told otherwise. Query length is limited (MAX_QUERY_CHARS). Milvus Lite is
opened by this process alone, so stop the page before running `rushes index` on the same OUT.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path
from urllib.parse import quote, urlencode

from indexing.models import is_untrained
from indexing.search import MAX_K, MAX_QUERY_CHARS, MODES, Hit, Searcher, SearchError
from indexing.store import ClipStore, FilterExpressionError, StoreError, default_uri

MEDIA_SUFFIXES = {".mp4", ".webm", ".jpg", ".jpeg", ".png", ".webp"}
MAX_WHERE_CHARS = 1000

PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
header{background:#1f2430;color:#fff;padding:12px 20px}
header h1{margin:0 0 8px;font-size:20px}
form{display:flex;gap:8px;flex-wrap:wrap;align-items:center}
input[name=q]{flex:2;min-width:260px;padding:7px}
input[name=where]{flex:1.5;min-width:200px;padding:7px}
select,input[name=k],button{padding:7px}
.note{background:#fff3cd;border-left:4px solid #e0a800;margin:12px 20px;padding:8px 12px}
.error{background:#f8d7da;border-left:4px solid #c82333;margin:12px 20px;padding:8px 12px;white-space:pre-wrap}
.summary{margin:12px 20px;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px;padding:0 20px 20px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.15);overflow:hidden}
.card video{width:100%;aspect-ratio:16/10;background:#000;display:block}
.meta{padding:8px 10px;font-size:13px}
.caption{font-size:14px;margin:4px 0 6px}
.muted{color:#777}
.score{float:right;font-weight:600}
"""


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


def create_app(out: Path | str, milvus_uri: str | None = None, milvus_token: str | None = None,
               collection: str = "rushes_clips", device: str = "cpu"):
    """The FastAPI app for one run directory; the index is opened now, query models on first use."""
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
    app = FastAPI(title="rushes search", docs_url=None, redoc_url=None)

    def run_search(q: str, mode: str, k: int, where: str, like: str) -> list[Hit]:
        if len(q) > MAX_QUERY_CHARS:
            raise SearchError(f"the query has {len(q)} characters; the limit is {MAX_QUERY_CHARS}")
        if len(where) > MAX_WHERE_CHARS:
            raise SearchError(f"the filter has {len(where)} characters; the limit is {MAX_WHERE_CHARS}")
        with lock:
            if like:
                return searcher.like(like, k, where or None)
            return searcher.search(q, mode, k, where or None)

    @app.get("/api/search")
    def api_search(q: str = "", mode: str = "hybrid", k: int = Query(12, ge=1, le=MAX_K), where: str = "",
                   like: str = ""):
        try:
            hits = run_search(q, mode, k, where, like)
        except (SearchError, FilterExpressionError, StoreError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return {"query": q, "mode": mode, "like": like or None, "notes": searcher.notes,
                "results": [h.to_dict() for h in hits]}

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


def _card(h: Hit) -> str:
    e = html.escape
    clip = f"/files/{quote(h.clip_path)}" if h.clip_path else ""
    thumb = f"/files/{quote(h.thumb_path)}" if h.thumb_path else ""
    times = f"{h.start_time:.2f}–{h.end_time:.2f} s" if h.start_time is not None and h.end_time is not None else ""
    aesthetic = ""
    if h.aesthetic_score is not None:
        aesthetic = f" · aesthetic {h.aesthetic_score:.2f}" + (" (untrained)" if is_untrained(h.aesthetic_model) else "")
    return (
        f'<div class="card" data-clip-id="{e(h.clip_id)}">'
        f'<video controls preload="metadata" muted src="{e(clip)}" poster="{e(thumb)}"></video>'
        f'<div class="meta"><span class="score">{h.score:.4f}</span>'
        f'<div class="caption">{e(h.caption) if h.caption else "<i class=muted>(no caption)</i>"}</div>'
        f'<div class="muted">{e(h.source)} · {times}{aesthetic}</div>'
        f'<div class="muted"><code>{e(h.clip_id)}</code> · '
        f'<a href="/?{e(urlencode({"like": h.clip_id}))}">similar clips</a></div></div></div>'
    )


def render_page(q: str, mode: str, k: int, where: str, like: str, hits: list[Hit] | None, error: str | None,
                notes: list[str], modes: list[str]) -> str:
    e = html.escape
    options = "".join(f'<option value="{m}"{" selected" if m == mode else ""}>{m}</option>' for m in modes
                      if m in MODES)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>rushes search</title>",
        f"<style>{PAGE_CSS}</style></head><body><header><h1>rushes search</h1>",
        '<form method="get" action="/">',
        f'<input name="q" value="{e(q)}" maxlength="{MAX_QUERY_CHARS}" placeholder="describe a shot, e.g. a red ball rolling right">',
        f'<select name="mode" aria-label="mode">{options}</select>',
        f'<input name="where" value="{e(where)}" maxlength="{MAX_WHERE_CHARS}" placeholder="filter, e.g. duration &gt; 2">',
        f'<input name="k" type="number" min="1" max="{MAX_K}" value="{k}" aria-label="results">',
        "<button type=submit>Search</button></form></header>",
    ]
    parts += [f'<div class="note">{e(n)}</div>' for n in notes]
    if error:
        parts.append(f'<div class="error" id="error">{e(error)}</div>')
    if hits is not None:
        what = f"clips like {e(like)}" if like else f"“{e(q)}” ({e(mode)})"
        parts.append(f'<div class="summary" id="summary">{len(hits)} results for {what}</div>')
        parts.append('<div class="grid" id="results">' + "".join(_card(h) for h in hits) + "</div>")
    # marks each video once the browser has decoded its header, so a test can see clips are playable
    parts.append("<script>document.querySelectorAll('video').forEach(v=>{"
                 "const ok=()=>v.dataset.ready='1';if(v.readyState>=1)ok();"
                 "v.addEventListener('loadedmetadata',ok);"
                 "v.addEventListener('error',()=>v.dataset.ready='error');});</script>")
    parts.append("</body></html>")
    return "".join(parts)
