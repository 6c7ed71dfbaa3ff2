"""Embedding stages and the embeddings table.

`VisualEmbedder` (open_clip over frames sampled across each clip, pooled, normalized),
`CaptionEmbedder` (a sentence encoder over the dense caption) and `AestheticScorer` (an MLP head over
visual vectors) are `curation.core.stage.Stage`s: plain callables over a batch of row dicts that load
their model once in `setup()`. Any executor runs them: `curation.core.stage.map_in_process` here, or
workflows/executor.py's Ray Data actor pool.

OUT/embeddings/ holds their output (clip_id, kind, model, input_hash, vector), the source of truth
any Milvus collection is rebuilt from. A clip is embedded again only when its model or its input
(caption text, frame sampling) changed.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.core import schema
from curation.core.rundir import RunDir, atomic_write_table, now_utc, read_table, rows_to_table
from curation.core.schema import CAP, EMB, M
from curation.core.stage import PermanentError, Stage
from indexing.config import TextConfig, VisualConfig

VISUAL = "visual"
TEXT = "text"


def visual_input_hash(cfg: VisualConfig) -> str:
    """What a visual vector depends on besides the model: how frames were sampled and pooled."""
    return hashlib.sha256(f"frames={cfg.frames};pool={cfg.pooling};side={cfg.frame_max_side}".encode()).hexdigest()[:12]


def text_input_hash(caption: str) -> str:
    return hashlib.sha256(caption.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# stages


class VisualEmbedder(Stage):
    """open_clip embeddings of frames spread across each clip, pooled into one normalized vector."""

    name = "embed_visual"
    num_cpus = 1
    num_gpus = 1  # when the cluster has GPUs

    def __init__(self, run_root: Path | str, cfg: VisualConfig):
        self.run = RunDir(run_root)
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.clip = None

    def setup(self) -> None:
        from indexing.models import load_clip

        self.clip = load_clip(self.cfg.clip_model, self.cfg.clip_pretrained, self.cfg.device)

    def _pool(self, frame_vectors: np.ndarray) -> np.ndarray:
        pooled = frame_vectors.max(axis=0) if self.cfg.pooling == "max" else frame_vectors.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Kept clip rows -> rows with clip_id, vector (or error for an unreadable clip). Frames come from the
        clip file, or from the source's range in a clip-free run (`curation.core.clips`: the same frames)."""
        import av
        from PIL import Image

        from curation.core.clips import clip_frames

        images, owners, out = [], [], []
        for row in batch:
            try:
                frames = clip_frames(self.run, row, count=self.cfg.frames, max_side=self.cfg.frame_max_side,
                                     reader=self.cfg.video_reader)
            except (PermanentError, OSError, av.error.FFmpegError) as e:  # the clip file, not the worker, is bad
                out.append({M.clip_id: row[M.clip_id], "vector": None, "error": f"cannot read clip: {e}"})
                continue
            for frame in frames:
                images.append(Image.fromarray(frame))
                owners.append(row[M.clip_id])
        if images:
            vectors = self.clip.encode_images(images)
            owners_arr = np.asarray(owners)
            for clip_id in dict.fromkeys(owners):
                out.append({M.clip_id: clip_id, "vector": self._pool(vectors[owners_arr == clip_id]), "error": None})
        return out


class CaptionEmbedder(Stage):
    """Sentence-encoder embeddings of dense captions (normalized)."""

    name = "embed_caption"
    num_cpus = 1
    num_gpus = 1  # when the cluster has GPUs

    def __init__(self, cfg: TextConfig):
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        self.text = None

    def setup(self) -> None:
        from indexing.models import load_text_model

        self.text = load_text_model(self.cfg.text_model, self.cfg.device)

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Rows with clip_id and caption -> rows with clip_id, vector."""
        vectors = self.text.encode([row["caption"] for row in batch], self.cfg.batch_size)
        return [{M.clip_id: row[M.clip_id], "vector": v, "error": None} for row, v in zip(batch, vectors, strict=True)]


class AestheticScorer(Stage):
    """A LAION-style aesthetic score per clip from its visual vector (rows: clip_id, vector -> clip_id, score)."""

    name = "score_aesthetic"
    num_cpus = 1
    batch_size = 1024  # an MLP over vectors: large batches cost nothing

    def __init__(self, cfg: VisualConfig, clip_dim: int, clip_name: str, head=None):
        self.cfg, self.clip_dim, self.clip_name = cfg, clip_dim, clip_name
        self.head = head  # already loaded by the caller (it checks the head exists before any work), or None

    def setup(self) -> None:
        from indexing.models import load_aesthetic_head

        if self.head is None:
            self.head = load_aesthetic_head(self.cfg.aesthetic_head, self.clip_dim, self.clip_name)

    def __call__(self, batch: list[dict]) -> list[dict]:
        scores = self.head.score(np.stack([np.asarray(r["vector"], dtype=np.float32) for r in batch]))
        return [{M.clip_id: r[M.clip_id], "score": float(s), "model": self.head.name} for r, s in zip(batch, scores, strict=True)]


# ---------------------------------------------------------------------------------------------
# the embeddings table


def read_embeddings(run: RunDir) -> pa.Table:
    return read_table(run.embeddings, schema.EMBEDDINGS)


def latest_vectors(run: RunDir, kind: str, model: str) -> dict[str, tuple[np.ndarray, str]]:
    """clip_id -> (vector, input_hash) of the newest row of `kind` made by `model`."""
    table = read_embeddings(run)
    if table.num_rows == 0:
        return {}
    import pyarrow.compute as pc

    table = table.filter(pc.and_(pc.equal(table[EMB.kind], kind), pc.equal(table[EMB.model], model)))
    table = table.sort_by([(EMB.created_at, "ascending")])
    out: dict[str, tuple[np.ndarray, str]] = {}
    for clip_id, input_hash, vector in zip(
        table[EMB.clip_id].to_pylist(), table[EMB.input_hash].to_pylist(), table[EMB.vector].to_pylist(), strict=True
    ):
        out[clip_id] = (np.asarray(vector, dtype=np.float32), input_hash)
    return out


def write_embeddings(run: RunDir, kind: str, model: str, results: list[dict], input_hashes: dict[str, str]) -> int:
    """Append one part of successful results; returns how many vectors were written."""
    created = now_utc()
    rows = [
        {
            EMB.clip_id: r[M.clip_id],
            EMB.kind: kind,
            EMB.model: model,
            EMB.input_hash: input_hashes[r[M.clip_id]],
            EMB.vector: np.asarray(r["vector"], dtype=np.float32).tolist(),
            EMB.created_at: created,
        }
        for r in results
        if r.get("vector") is not None
    ]
    if rows:
        name = f"{kind}-{created.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write_table(rows_to_table(rows, schema.EMBEDDINGS), run.embeddings / name)
    return len(rows)


# ---------------------------------------------------------------------------------------------
# captions


def latest_caption_rows(run: RunDir) -> dict[str, tuple[str, str]]:
    """clip_id -> (newest dense caption that passed its checks, captioner); empty when none exist yet."""
    from curation.core.tables import latest_captions as newest

    table = newest(run)
    out: dict[str, tuple[str, str]] = {}
    for clip_id, text, captioner in zip(table[CAP.clip_id].to_pylist(), table[CAP.caption_dense].to_pylist(),
                                        table[CAP.captioner].to_pylist(), strict=True):
        if text and text.strip():
            out[clip_id] = (text.strip(), captioner)
    return out


def latest_captions(run: RunDir) -> dict[str, str]:
    """clip_id -> newest good dense caption."""
    return {cid: text for cid, (text, _) in latest_caption_rows(run).items()}
