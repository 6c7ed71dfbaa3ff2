"""`rushes index`, `rushes search`, `rushes dedup`, `rushes serve`: the clip index and its search page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from workflows.commands import examples

OutOpt = Annotated[Path, typer.Option("--out", help="run directory written by `rushes curate`")]
UriOpt = Annotated[str | None, typer.Option(
    "--milvus-uri", help="Milvus URI; default: Milvus Lite at OUT/milvus.db (through the run's server when one is up)")]
TokenOpt = Annotated[str | None, typer.Option("--milvus-token", help="Milvus server token", envvar="MILVUS_TOKEN")]
CollectionOpt = Annotated[str, typer.Option("--collection", help="Milvus collection name")]
RecreateOpt = Annotated[bool, typer.Option("--recreate", help="drop the collection and rebuild it from OUT/embeddings")]
ClipModelOpt = Annotated[str, typer.Option("--clip-model", help="open_clip model, or 'tiny-random' (untrained, tests)")]
ClipPretrainedOpt = Annotated[str | None, typer.Option(
    "--clip-pretrained", help="open_clip pretrained tag or local weights file")]
FramesOpt = Annotated[int, typer.Option("--frames", help="frames sampled across each clip")]
PoolingOpt = Annotated[str, typer.Option("--pooling", help="mean or max of the frame embeddings")]
TextModelOpt = Annotated[str, typer.Option("--text-model", help="sentence-transformers model name or directory")]
AestheticOpt = Annotated[Path | None, typer.Option("--aesthetic-head", help="LAION-style aesthetic head (.safetensors)")]
MinAestheticOpt = Annotated[float | None, typer.Option("--min-aesthetic", help="filter clips scoring below this")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda")]
RayOpt = Annotated[bool, typer.Option("--ray/--no-ray", help="embed with a Ray actor pool, or in this process")]
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address (or RAY_ADDRESS)")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="embedding workers; default: one per CPU or GPU")]


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _user_errors() -> tuple[type[Exception], ...]:
    from curation.core.config import ConfigError
    from indexing.models import ModelNotFoundError
    from indexing.search import SearchError
    from indexing.server import ServerError
    from indexing.store import FilterExpressionError, StoreError

    return (ModelNotFoundError, StoreError, SearchError, FilterExpressionError, FileNotFoundError, ConfigError,
            ServerError)


def _visual(clip_model, clip_pretrained, frames, pooling, aesthetic_head, min_aesthetic, device):
    from curation.core.config import validate
    from indexing.config import VisualConfig

    return validate({"clip_model": clip_model, "clip_pretrained": clip_pretrained, "frames": frames,
                     "pooling": pooling, "aesthetic_head": aesthetic_head, "min_aesthetic": min_aesthetic,
                     "device": device}, VisualConfig, "options")


def _milvus(uri, token, collection, recreate=False):
    from curation.core.config import validate
    from indexing.config import MilvusConfig

    return validate({"uri": uri, "token": token, "collection": collection, "recreate": recreate}, MilvusConfig, "options")


def _mapper(use_ray: bool, ray_address: str | None, workers: int | None):
    """(context manager, executor): the one executor on Ray when asked for, else in this process."""
    from contextlib import nullcontext

    from workflows.executor import local_executor, ray_executor
    from workflows.raysession import ray_session

    if not use_ray:
        return nullcontext(), local_executor
    return ray_session(ray_address, workers), ray_executor(ray_address, workers)


def index(
    out: OutOpt,
    milvus_uri: UriOpt = None,
    milvus_token: TokenOpt = None,
    collection: CollectionOpt = "rushes_clips",
    recreate: RecreateOpt = False,
    clip_model: ClipModelOpt = "ViT-B-32",
    clip_pretrained: ClipPretrainedOpt = "laion2b_s34b_b79k",
    frames: FramesOpt = 8,
    pooling: PoolingOpt = "mean",
    text_model: TextModelOpt = "all-MiniLM-L6-v2",
    aesthetic_head: AestheticOpt = None,
    min_aesthetic: MinAestheticOpt = None,
    device: DeviceOpt = "auto",
    ray: RayOpt = True,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    export_bulk: Annotated[Path | None, typer.Option(
        "--export-bulk", help="only write Milvus bulk-import files of OUT/embeddings to this directory")] = None,
) -> None:
    """Embed kept clips (open_clip) and captions (MiniLM), score aesthetics, and upsert them into Milvus."""
    try:
        from curation.core.config import validate
        from indexing.config import IndexConfig
        from indexing.pipeline import index_run

        cfg = validate({
            "visual": _visual(clip_model, clip_pretrained, frames, pooling, aesthetic_head, min_aesthetic,
                              device).model_dump(),
            "text": {"text_model": text_model, "device": device},
            "milvus": _milvus(milvus_uri, milvus_token, collection, recreate).model_dump(),
        }, IndexConfig, "options")
        if export_bulk is not None:
            from indexing.bulk import export_bulk as write_bulk

            files, meta = write_bulk(out, cfg, export_bulk)
            typer.echo(f"bulk export: {sum(len(b) for b in files)} files for {meta.visual_model} + {meta.text_model} "
                       f"in {export_bulk} (collection.json holds the collection metadata); see docs/indexing.md")
            return
        context, mapper = _mapper(ray, ray_address, workers)
        with context:
            summary = index_run(out, cfg, mapper=mapper)
    except _user_errors() as e:
        _fail(e)
    typer.echo(summary.line())


def dedup(
    out: OutOpt,
    threshold: Annotated[float, typer.Option("--threshold", help="cosine similarity that makes two clips duplicates")] = 0.95,
    neighbours: Annotated[int, typer.Option("--neighbours", help="nearest neighbours checked per clip")] = 10,
    milvus_uri: UriOpt = None,
    milvus_token: TokenOpt = None,
    collection: CollectionOpt = "rushes_clips",
    recreate: RecreateOpt = False,
    clip_model: ClipModelOpt = "ViT-B-32",
    clip_pretrained: ClipPretrainedOpt = "laion2b_s34b_b79k",
    frames: FramesOpt = 8,
    pooling: PoolingOpt = "mean",
    text_model: TextModelOpt = "all-MiniLM-L6-v2",
    aesthetic_head: AestheticOpt = None,
    device: DeviceOpt = "auto",
    ray: RayOpt = True,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Find near-duplicate clips through the index; keep the best of each group, mark the rest filtered."""
    try:
        from curation.core.config import validate
        from indexing.config import DedupConfig, TextConfig
        from indexing.pipeline import dedup_run

        cfg = validate({
            "threshold": threshold, "neighbours": neighbours,
            "visual": _visual(clip_model, clip_pretrained, frames, pooling, aesthetic_head, None, device).model_dump(),
            "milvus": _milvus(milvus_uri, milvus_token, collection, recreate).model_dump(),
        }, DedupConfig, "options")
        text_cfg = validate({"text_model": text_model, "device": device}, TextConfig, "options")
        context, mapper = _mapper(ray, ray_address, workers)
        with context:
            summary = dedup_run(out, cfg, text_cfg=text_cfg, mapper=mapper)
    except _user_errors() as e:
        _fail(e)
    typer.echo(summary.line())


def _format_time(value) -> str:
    return "?" if value is None else f"{value:.2f}"


def _search_uri(out: Path | None, milvus_uri: str | None) -> str:
    """The Milvus to search; a missing Milvus Lite file is an error (opening it would create an empty one)."""
    from indexing.store import StoreError, default_uri

    if milvus_uri:
        return milvus_uri
    if out is None:
        raise StoreError("give --out OUT (searches OUT/milvus.db) or --milvus-uri")
    if not Path(default_uri(out)).exists():
        raise StoreError(f"{default_uri(out)} does not exist: run `rushes index --out {out}` first")
    return default_uri(out)


def search(
    query: Annotated[str | None, typer.Argument(help="what to look for, in words")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run directory (its OUT/milvus.db)")] = None,
    k: Annotated[int, typer.Option("--k", help="number of results")] = 10,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, visual, text or keyword")] = "hybrid",
    where: Annotated[str | None, typer.Option("--where", help='Milvus filter, e.g. "duration > 2"')] = None,
    like: Annotated[list[str] | None, typer.Option(
        "--like", help="find clips similar to this clip_id (repeat it: one batched search for them all)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable results")] = False,
    milvus_uri: UriOpt = None,
    milvus_token: TokenOpt = None,
    collection: CollectionOpt = "rushes_clips",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (query models)")] = "cpu",
) -> None:
    """Search indexed clips by meaning (QUERY) or by example (--like CLIP_ID)."""
    from indexing.search import Searcher, SearchError
    from indexing.store import ClipStore

    store = None
    like = like or []
    try:
        if (query is None) == (not like):
            raise SearchError("give either a QUERY or --like CLIP_ID (not both)")
        store = ClipStore(_search_uri(out, milvus_uri), milvus_token, collection)
        searcher = Searcher(store, device=device)
        per_like = searcher.like_many(like, k, where) if like else None
        hits = per_like[0] if like else searcher.search(query, mode, k, where)
        notes = searcher.notes
    except _user_errors() as e:
        _fail(e)
    finally:
        if store is not None:
            store.close()
    if as_json:
        if len(like) > 1:  # one result list per --like clip
            typer.echo(json.dumps({"query": None, "like": like, "mode": None, "where": where, "notes": notes,
                                   "results": {c: [h.to_dict() for h in hs] for c, hs in zip(like, per_like, strict=True)}},
                                  indent=2))
            return
        typer.echo(json.dumps({"query": query, "like": like[0] if like else None, "mode": None if like else mode,
                               "where": where, "notes": notes, "results": [h.to_dict() for h in hits]}, indent=2))
        return
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if len(like) > 1:
        for clip, hs in zip(like, per_like, strict=True):
            typer.echo(f"like {clip}:")
            _print_hits(hs)
        return
    _print_hits(hits)


def _print_hits(hits) -> None:
    if not hits:
        typer.echo("no results")
    for rank, h in enumerate(hits, 1):
        typer.echo(f"{rank:2d}. {h.score:8.4f}  {h.clip_id}  {h.source} "
                   f"[{_format_time(h.start_time)}-{_format_time(h.end_time)} s]  {h.clip_path or '(range of the source)'}")
        if h.caption:
            typer.echo(f"    {h.caption}")


def serve(
    out: OutOpt,
    host: Annotated[str, typer.Option("--host", help="address to bind; 0.0.0.0 exposes the page to the network")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8765,
    milvus_uri: UriOpt = None,
    milvus_token: TokenOpt = None,
    collection: CollectionOpt = "rushes_clips",
) -> None:
    """Serve a search page for OUT: query box, mode and filter controls, thumbnails, playable clips."""
    import uvicorn

    from indexing import server as managed
    from indexing.store import StoreError, default_uri
    from indexing.web import LOOPBACK_HOSTS, create_app

    local = host in LOOPBACK_HOSTS
    uri = milvus_uri or default_uri(out)
    started = False
    try:
        if managed.is_local_db(uri):
            # the page hosts the run's Milvus Lite server (or uses the one up), so `rushes index` can write meanwhile
            if not Path(uri).exists():
                raise StoreError(f"{uri} does not exist: run `rushes index --out {out}` first")
            state, started = managed.host(uri)
            typer.echo(f"Milvus Lite server for {uri}: {state.uri} (" + ("in this process, stops with this page"
                       if started else f"pid {state.pid}, already running") + ")", err=True)
        app = create_app(out, milvus_uri, milvus_token, collection, allowed_hosts=LOOPBACK_HOSTS if local else None)
    except _user_errors() as e:
        if started:
            managed.stop(uri)
        _fail(e)
    if not local:
        typer.echo(f"warning: the page has no login; anyone who can reach {host}:{port} can search and play every "
                   "clip of this run (it serves only clips and thumbnails, never other files)", err=True)
    typer.echo(f"search page: http://{host}:{port}/  (Ctrl-C stops it)")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.store.close()
        if started:
            managed.stop(uri)


def register(app: typer.Typer) -> None:
    app.command(epilog=examples('rushes index --out demo-out --clip-model tiny-random --no-ray'))(index)
    app.command(epilog=examples('rushes search "a red circle" --out demo-out', 'rushes search --like CLIP_ID --out OUT --where "duration > 2" --json',
                                'rushes search --like CLIP_A --like CLIP_B --out OUT --k 5'))(search)
    app.command(epilog=examples('rushes dedup --out OUT --threshold 0.95'))(dedup)
    app.command(epilog=examples('rushes serve --out demo-out'))(serve)
