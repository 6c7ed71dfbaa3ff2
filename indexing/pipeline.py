"""The index and dedup runs as plain functions over a run directory.

`index_run` embeds what is missing (visual vectors of kept clips, caption vectors of captioned ones),
scores aesthetics, and upserts every kept clip into Milvus; `dedup_run` embeds, upserts and filters
near-duplicates. Neither touches the manifest: aesthetic scores are rows of OUT/scores/, and clips
filtered here (low aesthetic score, near duplicates) are rows of OUT/decisions/; `read_clips` joins
them. The `mapper` argument runs the embedding stages: in this process by default
(`curation.core.stage.map_in_process`), or workflows/executor.py's Ray Data executor. The aesthetic
head is a small MLP over vectors already in this process, so it always runs here. Milvus is written from this process only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from curation.core import schema
from curation.core.rundir import (
    RunDir,
    atomic_write_table,
    now_utc,
    read_quarantine,
    read_table,
    rows_to_table,
)
from curation.core.schema import M
from curation.core.stage import Mapper, map_in_process
from curation.core.tables import add_decisions, add_scores, kept_clips, read_clips
from indexing.config import DedupConfig, IndexConfig, MilvusConfig, TextConfig, VisualConfig
from indexing.embed import (
    TEXT,
    VISUAL,
    AestheticScorer,
    CaptionEmbedder,
    VisualEmbedder,
    latest_caption_rows,
    latest_captions,
    latest_vectors,
    text_input_hash,
    visual_input_hash,
    write_embeddings,
)
from indexing.store import ClipStore, StoreMeta, default_uri, store_row

QUARANTINE_STAGE = "embed_visual"
LOW_AESTHETIC = "low_aesthetic"
AESTHETIC = "aesthetic"  # the score's name in OUT/scores/, and the deciding stage in OUT/decisions/


@dataclass
class Summary:
    """Counts of one run, printed as one line."""

    name: str
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items())
        return f"{self.name}: {parts}" + "".join(f"\n  note: {n}" for n in self.notes)


def quarantined_ids(run: RunDir, stage: str) -> set[str]:
    tables = [read_quarantine(run), read_table(run.quarantine_parts, schema.QUARANTINE)]
    return {
        cid
        for t in tables
        for cid, st in zip(t[schema.Q.clip_id].to_pylist(), t[schema.Q.stage].to_pylist(), strict=True)
        if st == stage and cid
    }


def quarantine_failures(run: RunDir, stage: str, failures: list[dict], sources: dict[str, str]) -> None:
    if not failures:
        return
    created = now_utc()
    rows = [{schema.Q.source: sources.get(f[M.clip_id], ""), schema.Q.stage: stage, schema.Q.error: f["error"],
             schema.Q.clip_id: f[M.clip_id], schema.Q.created_at: created} for f in failures]
    atomic_write_table(rows_to_table(rows, schema.QUARANTINE), run.quarantine_parts / f"{stage}-{uuid.uuid4().hex}.parquet")


def embed_visual(run: RunDir, cfg: VisualConfig, mapper: Mapper, summary: Summary):
    """Visual vectors of every kept clip, embedding only the missing ones; returns (vectors, clip, aesthetic head)."""
    from indexing.models import load_aesthetic_head, load_clip

    # loaded here so a missing model fails now, not inside a worker; the driver only needs its name and size
    clip = load_clip(cfg.clip_model, cfg.clip_pretrained, "cpu")
    head = load_aesthetic_head(cfg.aesthetic_head, clip.dim, clip.name)
    kept = kept_clips(run)
    input_hash = visual_input_hash(cfg)
    kept_ids = {r[M.clip_id] for r in kept}
    have = {cid: v for cid, (v, h) in latest_vectors(run, VISUAL, clip.name).items()
            if h == input_hash and cid in kept_ids}
    skip = quarantined_ids(run, QUARANTINE_STAGE)
    # what a clip's frames are read by: its file, or (a clip-free run) its source's range
    frame_columns = (M.clip_id, M.clip_path, M.source, M.start_frame, M.end_frame, M.start_time, M.fps, M.config_hash)
    todo = [{c: r[c] for c in frame_columns} for r in kept
            if r[M.clip_id] not in have and r[M.clip_id] not in skip]
    results = mapper(VisualEmbedder(run.root, cfg), todo, "visual embeddings")
    failures = [r for r in results if isinstance(r.get("error"), str)]  # (Ray may hand back NaN for "no error")
    quarantine_failures(run, QUARANTINE_STAGE, failures, {r[M.clip_id]: r[M.source] for r in kept})
    summary.counts["visual_embedded"] = write_embeddings(
        run, VISUAL, clip.name, results, {r[M.clip_id]: input_hash for r in results})
    summary.counts["visual_reused"] = len(have)
    summary.counts["visual_failed"] = len(failures)
    for r in results:
        if r.get("vector") is not None:
            have[r[M.clip_id]] = np.asarray(r["vector"], dtype=np.float32)
    if clip.untrained:
        summary.notes.append(f"visual embeddings come from {clip.name}: visual similarity is meaningless")
    return have, clip, head


def score_aesthetics(run: RunDir, cfg: VisualConfig, vectors: dict[str, np.ndarray], clip, head,
                     summary: Summary) -> None:
    """Score kept clips' aesthetics (OUT/scores/); filter those below min_aesthetic (OUT/decisions/)."""
    kept_ids = {r[M.clip_id] for r in kept_clips(run)}
    rows = [{M.clip_id: cid, "vector": vectors[cid]} for cid in sorted(vectors) if cid in kept_ids]
    scorer = AestheticScorer(cfg, clip.dim, clip.name, head)
    # a small MLP over vectors already here: shipping them to Ray workers would cost more than scoring
    scores = {r[M.clip_id]: r["score"] for r in map_in_process(scorer, rows)}
    settings = {"head": head.name, "min_aesthetic": cfg.min_aesthetic}
    summary.counts["aesthetic_scored"] = add_scores(
        run, AESTHETIC, {cid: (score, head.name) for cid, score in scores.items()}, settings)
    low = {cid: LOW_AESTHETIC for cid, score in scores.items()
           if cfg.min_aesthetic is not None and score < cfg.min_aesthetic}
    add_decisions(run, AESTHETIC, low, settings)
    filtered = len(low)
    if cfg.min_aesthetic is not None:
        summary.counts["aesthetic_filtered"] = filtered
    if head.untrained:
        summary.notes.append(f"aesthetic scores come from {head.name}: they are placeholders, not judgements")


def embed_captions(run: RunDir, cfg: TextConfig, text, mapper: Mapper, summary: Summary):
    """Caption vectors of kept, captioned clips (`text` is the loaded model); returns (vectors, captions)."""
    captions = latest_captions(run)
    kept_ids = {r[M.clip_id] for r in kept_clips(run)}
    captions = {cid: c for cid, c in captions.items() if cid in kept_ids}
    existing = latest_vectors(run, TEXT, text.name)
    have = {cid: v for cid, (v, h) in existing.items() if cid in captions and h == text_input_hash(captions[cid])}
    todo = [{M.clip_id: cid, "caption": c} for cid, c in sorted(captions.items()) if cid not in have]
    results = mapper(CaptionEmbedder(cfg), todo, "caption embeddings")
    summary.counts["captions_embedded"] = write_embeddings(
        run, TEXT, text.name, results, {r[M.clip_id]: text_input_hash(captions[r[M.clip_id]]) for r in results})
    summary.counts["captions_reused"] = len(have)
    summary.counts["uncaptioned"] = len(kept_ids) - len(captions)
    for r in results:
        have[r[M.clip_id]] = np.asarray(r["vector"], dtype=np.float32)
    return have, captions


def captioner_names(run: RunDir) -> dict[str, str]:
    return {cid: captioner for cid, (_, captioner) in latest_caption_rows(run).items()}


def open_run_store(run: RunDir, mcfg: MilvusConfig, vcfg: VisualConfig, clip, text_model, text_ref: str) -> ClipStore:
    """The run's collection, created or checked against the models in use (search reloads them from its metadata)."""
    store = ClipStore(mcfg.uri or default_uri(run.root), mcfg.token, mcfg.collection)
    meta = StoreMeta(visual_model=clip.name, text_model=text_model.name, visual_dim=clip.dim, text_dim=text_model.dim,
                     clip_model=vcfg.clip_model, clip_pretrained=vcfg.clip_pretrained, text_model_ref=text_ref)
    store.ensure(meta, recreate=mcfg.recreate)
    return store


def sync_store(run: RunDir, store: ClipStore, visual: dict, text: dict, captions: dict, summary: Summary) -> None:
    """Upsert every kept clip that has a visual vector; delete rows of clips no longer kept."""
    names = captioner_names(run)
    clips = read_clips(run).to_pylist()
    kept = [r for r in clips if r[M.status] == schema.STATUS_KEPT]
    rows = [store_row(r, visual[r[M.clip_id]], text.get(r[M.clip_id]), captions.get(r[M.clip_id]),
                      names.get(r[M.clip_id]) if r[M.clip_id] in captions else None, store.meta.text_dim)
            for r in kept if r[M.clip_id] in visual]
    summary.counts["upserted"] = store.upsert(rows)
    # clips filtered since they were indexed (dedup, aesthetic, a re-run of curation) leave the collection
    stale = sorted(r[M.clip_id] for r in clips if r[M.status] != schema.STATUS_KEPT)
    store.delete(stale)
    store.flush()
    if not store.meta.bm25:
        summary.notes.append(f"Milvus at {store.uri} has no BM25 full-text search: keyword mode is unavailable")


def index_run(out, cfg: IndexConfig, mapper: Mapper = map_in_process) -> Summary:
    """Embed, score and upsert a run directory into Milvus; returns the summary."""
    run = RunDir(out)
    if not run.manifest.exists():
        raise FileNotFoundError(f"{run.manifest} does not exist: run `rushes curate ... --out {run.root}` first")
    from indexing.models import load_text_model

    summary = Summary("index")
    summary.counts["kept_clips"] = len(kept_clips(run))
    # every model loads before any work, so a missing one stops the run at once (workers load their own copy)
    text_model = load_text_model(cfg.text.text_model, "cpu")
    visual, clip, head = embed_visual(run, cfg.visual, mapper, summary)
    score_aesthetics(run, cfg.visual, visual, clip, head, summary)
    text, captions = embed_captions(run, cfg.text, text_model, mapper, summary)
    store = open_run_store(run, cfg.milvus, cfg.visual, clip, text_model, cfg.text.text_model)
    try:
        sync_store(run, store, visual, text, captions, summary)
        summary.counts["collection_rows"] = store.count()
    finally:
        store.close()
    return summary


def dedup_run(out, cfg: DedupConfig, text_cfg: TextConfig | None = None, mapper: Mapper = map_in_process) -> Summary:
    """Embed kept clips, put them in Milvus, and mark near-duplicates filtered (the better clip stays)."""
    from indexing.dedup import apply_duplicates, find_duplicate_groups
    from indexing.models import load_text_model

    run = RunDir(out)
    if not run.manifest.exists():
        raise FileNotFoundError(f"{run.manifest} does not exist: run `rushes curate ... --out {run.root}` first")
    summary = Summary("dedup")
    text_cfg = text_cfg or TextConfig()
    # The collection is shared with `rushes index`: keep its caption model, or size it for the configured one.
    store = ClipStore(cfg.milvus.uri or default_uri(run.root), cfg.milvus.token, cfg.milvus.collection)
    try:
        if store.meta is not None and not cfg.milvus.recreate:
            text_name, text_dim, text_ref = store.meta.text_model, store.meta.text_dim, store.meta.text_model_ref
        else:
            text_model = load_text_model(text_cfg.text_model, "cpu")
            text_name, text_dim, text_ref = text_model.name, text_model.dim, text_cfg.text_model
        visual, clip, head = embed_visual(run, cfg.visual, mapper, summary)
        score_aesthetics(run, cfg.visual, visual, clip, head, summary)
        store.ensure(StoreMeta(visual_model=clip.name, text_model=text_name, visual_dim=clip.dim, text_dim=text_dim,
                               clip_model=cfg.visual.clip_model, clip_pretrained=cfg.visual.clip_pretrained,
                               text_model_ref=text_ref), recreate=cfg.milvus.recreate)
        # caption vectors that `rushes index` already made for the current captions keep their place
        current = latest_captions(run)
        text = {cid: v for cid, (v, h) in latest_vectors(run, TEXT, text_name).items()
                if cid in current and h == text_input_hash(current[cid])}
        sync_store(run, store, visual, text, {cid: current[cid] for cid in text}, summary)
        kept_ids = {r[M.clip_id] for r in kept_clips(run)}
        groups = find_duplicate_groups(store, {c: v for c, v in visual.items() if c in kept_ids},
                                       cfg.threshold, cfg.neighbours)
        dropped = apply_duplicates(run, groups, cfg)
        store.delete(sorted(dropped))
        store.flush()
        summary.counts["duplicate_groups"] = len(groups)
        summary.counts["duplicates_filtered"] = len(dropped)
        summary.counts["collection_rows"] = store.count()
    finally:
        store.close()
    return summary
