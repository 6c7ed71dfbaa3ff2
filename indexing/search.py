"""Searching the clip collection by text or by example.

Modes:
  visual   the query's open_clip text embedding against clips' visual vectors
  text     the query's sentence embedding against caption vectors
  keyword  BM25 full-text search over captions
  hybrid   reciprocal-rank fusion (Milvus RRFRanker, k=60) of the modes above (default)
`like` finds clips whose visual vectors are closest to a given clip's. `where` is a Milvus filter
expression over the scalar fields (see `store.scalar_field_types`). Query models are the ones named
in the collection's metadata, so queries land in the same space as the stored vectors.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from curation.core.models import is_untrained
from curation.core.schema import M
from indexing.store import F_BM25, F_CAPTION, F_HAS_CAPTION, F_TEXT, F_VISUAL, ClipStore, StoreError

MODES = ("hybrid", "visual", "text", "keyword")
MAX_QUERY_CHARS = 500
CLIP_ID_RE = re.compile(r"[0-9a-f]{20}")  # curation.core.schema.clip_id_for
MAX_K = 200


class SearchError(ValueError):
    """A search that cannot be run as asked; the message says what to change."""


@dataclass
class Hit:
    clip_id: str
    score: float
    caption: str
    source: str
    start_time: float | None
    end_time: float | None
    duration: float | None
    clip_path: str | None
    thumb_path: str | None
    aesthetic_score: float | None
    aesthetic_model: str | None
    width: int | None
    height: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def _and(*parts: str | None) -> str:
    parts = [p for p in parts if p]
    return " and ".join(f"({p})" for p in parts)


class Searcher:
    """Search one collection; query models are loaded on first use and kept."""

    def __init__(self, store: ClipStore, device: str = "cpu"):
        self.store = store
        self.meta = store.require()
        self.device = device
        self._clip = None
        self._text = None

    # -- models ---------------------------------------------------------------------------------

    def clip(self):
        if self._clip is None:
            from indexing.models import load_clip

            self._clip = load_clip(self.meta.clip_model, self.meta.clip_pretrained, self.device)
            if self._clip.name != self.meta.visual_model:
                raise StoreError(f"collection was indexed with {self.meta.visual_model} but {self._clip.name} loaded")
        return self._clip

    def text(self):
        if self._text is None:
            from indexing.models import load_text_model

            self._text = load_text_model(self.meta.text_model_ref, self.device)
        return self._text

    @property
    def notes(self) -> list[str]:
        notes = []
        if is_untrained(self.meta.visual_model):
            notes.append(f"visual vectors come from an untrained placeholder ({self.meta.visual_model}): "
                         "visual and --like similarity are meaningless")
        if is_untrained(self.meta.text_model):
            notes.append(f"caption vectors come from an untrained placeholder ({self.meta.text_model})")
        return notes

    def available_modes(self) -> list[str]:
        return [m for m in MODES if m != "keyword" or self.meta.bm25]

    # -- queries --------------------------------------------------------------------------------

    def _check(self, query: str, mode: str, k: int, where: str | None) -> str:
        if mode not in MODES:
            raise SearchError(f"mode {mode!r} is unknown; use one of {', '.join(MODES)}")
        if mode == "keyword" and not self.meta.bm25:
            raise SearchError(f"this Milvus ({self.store.uri}) has no BM25 full-text search; use --mode text or hybrid")
        query = (query or "").strip()
        if not query:
            raise SearchError("the query is empty; give some words, or use --like CLIP_ID")
        if len(query) > MAX_QUERY_CHARS:
            raise SearchError(f"the query has {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
        if not 1 <= k <= MAX_K:
            raise SearchError(f"--k {k} is out of range; use 1..{MAX_K}")
        return query  # a bad --where is told apart when the search fails (ClipStore._filter_errors)

    def refresh(self) -> None:
        """Follow the collection when another command dropped or recreated it (new models are loaded on
        next use); rows added meanwhile need nothing: every search sees them."""
        if self.store.refresh():
            old = self.meta
            self.meta = self.store.require()
            if (self.meta.clip_model, self.meta.clip_pretrained) != (old.clip_model, old.clip_pretrained):
                self._clip = None
            if self.meta.text_model_ref != old.text_model_ref:
                self._text = None

    def search(self, query: str, mode: str = "hybrid", k: int = 10, where: str | None = None) -> list[Hit]:
        return self.search_many([query], mode, k, where)[0]

    def search_many(self, queries: list[str], mode: str = "hybrid", k: int = 10,
                    where: str | None = None) -> list[list[Hit]]:
        """One result list per query, every query in one model batch and one Milvus call (bulk work:
        evaluation, many prompts); the same results as searching them one by one."""
        queries = [self._check(q, mode, k, where) for q in queries]
        if not queries:
            return []
        captioned = _and(where, f"{F_HAS_CAPTION} == true")
        if mode == "visual":
            results = self.store.search(F_VISUAL, list(self.clip().encode_texts(queries)), k, where)
        elif mode == "text":
            results = self.store.search(F_TEXT, list(self.text().encode(queries)), k, captioned)
        elif mode == "keyword":
            # Milvus Lite reports BM25 relevance negated (smaller = better, like a distance); show it positive
            results = [[{**h, "distance": abs(float(h["distance"]))} for h in hits]
                       for hits in self.store.search(F_BM25, queries, k, captioned)]
        else:
            requests = [(F_VISUAL, list(self.clip().encode_texts(queries)), where),
                        (F_TEXT, list(self.text().encode(queries)), captioned)]
            if self.meta.bm25:
                requests.append((F_BM25, queries, captioned))
            results = self.store.hybrid_many(requests, k)
        return [[self._hit(h) for h in hits] for hits in results]

    def like(self, clip_id: str, k: int = 10, where: str | None = None) -> list[Hit]:
        """Clips visually closest to `clip_id` (itself excluded)."""
        return self.like_many([clip_id], k, where)[0]

    def like_many(self, clip_ids: list[str], k: int = 10, where: str | None = None) -> list[list[Hit]]:
        """For each clip, the clips visually closest to it (itself excluded), in one Milvus call.

        The clip itself is dropped from its results (k + 1 are asked for) rather than filtered out, so
        every query shares one filter and one search call."""
        if not 1 <= k <= MAX_K:
            raise SearchError(f"--k {k} is out of range; use 1..{MAX_K}")
        for clip_id in clip_ids:
            if not CLIP_ID_RE.fullmatch(clip_id or ""):
                raise SearchError(f"{clip_id!r} is not a clip id (20 hex characters); `rushes search` results show them")
        if not clip_ids:
            return []
        found = self.store.get(list(dict.fromkeys(clip_ids)), [F_VISUAL])
        missing = [c for c in clip_ids if c not in found]
        if missing:
            raise SearchError(f"clip {', '.join(map(repr, missing))} is not in the index; "
                              "`rushes search` results show valid clip ids")
        results = self.store.search(F_VISUAL, [found[c][F_VISUAL] for c in clip_ids], k + 1, where)
        return [[self._hit(h) for h in hits if (h.get(M.clip_id) or h.get("id")) != clip_id][:k]
                for clip_id, hits in zip(clip_ids, results, strict=True)]

    @staticmethod
    def _hit(h: dict) -> Hit:
        e = h.get("entity") or {}
        return Hit(
            clip_id=h.get(M.clip_id) or h.get("id"),
            score=round(float(h["distance"]), 6),
            caption=e.get(F_CAPTION) or "",
            source=e.get(M.source) or "",
            start_time=e.get(M.start_time),
            end_time=e.get(M.end_time),
            duration=e.get(M.duration),
            clip_path=e.get(M.clip_path),
            thumb_path=e.get(M.thumb_path),
            aesthetic_score=e.get(M.aesthetic_score),
            aesthetic_model=e.get(M.aesthetic_model),
            width=e.get(M.width),
            height=e.get(M.height),
        )
