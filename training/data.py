"""Reading shards, and batches that are a pure function of (seed, batch index).

Shards live in one directory per bucket (`f17_h64_w96`: frames, height, width), so every batch has one
shape and reads one directory. `BucketPlan` deals each epoch's clips into batches per bucket and
shuffles the batches of all buckets together; batch i of a run is the same whatever happened before
it, which is what makes `--resume` exact and DDP ranks disjoint (rank r of w takes batches s*w + r).

Why raw frames in pixel shards (not h264): a 17x64x96 clip is 313 KB of uint8 that reads at memory
speed and needs no decoder on the training box, where decoding h264 costs ~1 ms per frame per core;
the DiT, which is the long run, reads only the much smaller latent shards (`rushes encode`).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from curation.core.schema import LATENT_SHARDS, LSH, SH
from training.shards import BUCKET_RE, DEFAULT_CAPTION_BLEND, bucket_name, parse_bucket

LATENTS_DIR = "latents"
LATENT_INFO = "info.json"
CAPTION_VARIANTS = ("dense", "short", "original")


#################################################################################
#                                Shard files                                    #
#################################################################################


@dataclass
class ShardRows:
    """Where each row of one bucket lives: (file, row group, row within the group)."""

    bucket: str
    locations: list[tuple[Path, int, int]]

    def __len__(self) -> int:
        return len(self.locations)


def list_buckets(root: Path) -> dict[str, ShardRows]:
    """Index the shard files under root/<bucket>/ from parquet footers only (no data is read)."""
    root = Path(root)
    buckets: dict[str, ShardRows] = {}
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir() and BUCKET_RE.match(p.name)) if root.is_dir() else []:
        locations = []
        for part in sorted(f for f in bucket_dir.glob("*.parquet") if not f.name.startswith(".")):
            meta = pq.ParquetFile(part).metadata
            for g in range(meta.num_row_groups):
                locations.extend((part, g, r) for r in range(meta.row_group(g).num_rows))
        if locations:
            buckets[bucket_dir.name] = ShardRows(bucket_dir.name, locations)
    return buckets


class RowReader:
    """Fetch rows by location, keeping the last few row groups decoded (each worker has its own)."""

    def __init__(self, columns: list[str], cache_groups: int = 8):
        self.columns = columns
        self.cache: OrderedDict = OrderedDict()
        self.cache_groups = cache_groups

    def row(self, location: tuple[Path, int, int]) -> dict:
        path, group, index = location
        key = (path, group)
        if key not in self.cache:
            self.cache[key] = pq.ParquetFile(path).read_row_group(group, columns=self.columns).to_pydict()
            if len(self.cache) > self.cache_groups:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        table = self.cache[key]
        return {c: table[c][index] for c in self.columns}


#################################################################################
#                                Batch plan                                     #
#################################################################################


class DatasetTooSmall(ValueError):
    """No bucket holds enough clips for one batch."""


class BucketPlan:
    """Deterministic batches: batch i = (bucket, row indices), from the seed and i alone."""

    def __init__(self, bucket_sizes: dict[str, int], batch_sizes: dict[str, int], seed: int):
        self.bucket_sizes = dict(sorted(bucket_sizes.items()))
        self.batch_sizes = batch_sizes
        self.seed = seed
        self.batches_per_bucket = {b: n // batch_sizes[b] for b, n in self.bucket_sizes.items()}
        self.batches_per_epoch = sum(self.batches_per_bucket.values())
        if self.batches_per_epoch == 0:
            detail = ", ".join(f"{b}: {n} clips, batch size {batch_sizes[b]}" for b, n in self.bucket_sizes.items())
            raise DatasetTooSmall(
                f"no bucket has enough clips for one batch ({detail or 'no shards found'}); lower batch_size "
                "(or bucket_batch_size) in the training config, or shard more clips"
            )
        self._epoch_cache: tuple[int, list] | None = None

    def epoch_batches(self, epoch: int) -> list[tuple[str, np.ndarray]]:
        if self._epoch_cache and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket, n in self.bucket_sizes.items():
            bs = self.batch_sizes[bucket]
            perm = rng.permutation(n)
            batches.extend((bucket, perm[i * bs : (i + 1) * bs]) for i in range(self.batches_per_bucket[bucket]))
        order = rng.permutation(len(batches))  # mix buckets (and so sources and shapes) across the epoch
        batches = [batches[i] for i in order]
        self._epoch_cache = (epoch, batches)
        return batches

    def batch(self, index: int) -> tuple[str, np.ndarray]:
        epoch, position = divmod(index, self.batches_per_epoch)
        return self.epoch_batches(epoch)[position]


def batch_sizes_for(buckets, batch_size: int, overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Batch size per bucket: `overrides` (by '17x64x96' or 'f17_h64_w96' name), else `batch_size`."""
    named = {bucket_name(*parse_bucket(k)): int(v) for k, v in (overrides or {}).items()}
    return {b: named.get(b, batch_size) for b in buckets}


#################################################################################
#                                Datasets                                       #
#################################################################################


class PixelBatches(torch.utils.data.Dataset):
    """Batch i of raw-frame shards: {'video': (B, 3, T, H, W) float in [-1, 1], 'clip_id': [...]}."""

    def __init__(self, shards: Path, batch_size: int, seed: int, bucket_batch_size: dict | None = None):
        self.buckets = list_buckets(Path(shards))
        sizes = {b: len(rows) for b, rows in self.buckets.items()}
        self.plan = BucketPlan(sizes, batch_sizes_for(sizes, batch_size, bucket_batch_size), seed)
        self.reader = RowReader([SH.clip_id, SH.frames, SH.num_frames, SH.height, SH.width])

    def __len__(self) -> int:
        return 2**62  # indexed by global batch number; the trainer decides how many it takes

    def __getitem__(self, index: int) -> dict:
        bucket, rows = self.plan.batch(index)
        records = [self.reader.row(self.buckets[bucket].locations[r]) for r in rows]
        videos = [
            np.frombuffer(rec[SH.frames], dtype=np.uint8).reshape(rec[SH.num_frames], rec[SH.height], rec[SH.width], 3)
            for rec in records
        ]
        video = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (B, 3, T, H, W)
        return {"video": video, "clip_id": [rec[SH.clip_id] for rec in records], "bucket": bucket, "index": index}


def read_latent_info(shards: Path) -> dict:
    path = Path(shards) / LATENTS_DIR / LATENT_INFO
    if not path.exists():
        raise FileNotFoundError(f"no latent shards at {path.parent}; run `rushes encode --shards {shards} --vae RUN` first")
    return json.loads(path.read_text())


class LatentBatches(torch.utils.data.Dataset):
    """Batch i of latent shards with the caption blend and caption dropout applied.

    Returns {'latent': (B, C, t, h, w) normalized, 'text': (B, L, D), 'mask': (B, L) bool, 'caption': [...]};
    a dropped caption has an all-False mask (the DiT swaps in its learned null token).
    """

    def __init__(self, shards: Path, batch_size: int, seed: int, caption_blend: float = DEFAULT_CAPTION_BLEND,
                 caption_dropout: float = 0.1, bucket_batch_size: dict | None = None):
        self.info = read_latent_info(shards)
        self.buckets = list_buckets(Path(shards) / LATENTS_DIR)
        sizes = {b: len(rows) for b, rows in self.buckets.items()}
        self.plan = BucketPlan(sizes, batch_sizes_for(sizes, batch_size, bucket_batch_size), seed)
        self.seed, self.caption_blend, self.caption_dropout = seed, caption_blend, caption_dropout
        self.mean = torch.tensor(self.info["latent_mean"]).view(-1, 1, 1, 1)
        self.std = torch.tensor(self.info["latent_std"]).view(-1, 1, 1, 1)
        columns = [LSH.clip_id, LSH.latent, LSH.latent_shape, LSH.text_dim]
        for v in CAPTION_VARIANTS:
            columns += [f"caption_{v}", f"text_{v}", f"text_{v}_len"]
        assert set(columns) <= set(LATENT_SHARDS.names)
        self.reader = RowReader(columns)

    def __len__(self) -> int:
        return 2**62

    def choose_variant(self, rec: dict, rng: np.random.Generator) -> str | None:
        """DALL-E 3 blend: dense with p = caption_blend, else short or original (whichever exist); None = dropped."""
        if rng.random() < self.caption_dropout:
            return None
        available = [v for v in CAPTION_VARIANTS if rec[f"text_{v}_len"]]
        if not available:
            return None
        others = [v for v in available if v != "dense"]
        if "dense" in available and (rng.random() < self.caption_blend or not others):
            return "dense"
        return others[int(rng.integers(len(others)))] if others else available[0]

    def __getitem__(self, index: int) -> dict:
        bucket, rows = self.plan.batch(index)
        rng = np.random.default_rng([self.seed, index, 1])
        records = [self.reader.row(self.buckets[bucket].locations[r]) for r in rows]
        latents, texts, captions = [], [], []
        for rec in records:
            z = np.frombuffer(rec[LSH.latent], dtype=np.float16).reshape(rec[LSH.latent_shape])
            latents.append((torch.from_numpy(z.astype(np.float32)) - self.mean) / self.std)
            variant = self.choose_variant(rec, rng)
            if variant is None:
                texts.append(torch.zeros(0, rec[LSH.text_dim]))
                captions.append("")
            else:
                n = rec[f"text_{variant}_len"]
                states = np.frombuffer(rec[f"text_{variant}"], dtype=np.float16).reshape(n, rec[LSH.text_dim])
                texts.append(torch.from_numpy(states.astype(np.float32)))
                captions.append(rec[f"caption_{variant}"] or "")
        text, mask = pad_text(texts)
        return {"latent": torch.stack(latents), "text": text, "mask": mask, "caption": captions,
                "bucket": bucket, "index": index}


def pad_text(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (L_i, D) token states into (B, L, D) with a (B, L) mask, L >= 1."""
    length = max(1, max(s.shape[0] for s in states))
    dim = states[0].shape[1]
    text = torch.zeros(len(states), length, dim)
    mask = torch.zeros(len(states), length, dtype=torch.bool)
    for i, s in enumerate(states):
        text[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return text, mask


def make_loader(dataset: torch.utils.data.Dataset, start_step: int, max_steps: int, rank: int = 0,
                world_size: int = 1, workers: int = 0) -> torch.utils.data.DataLoader:
    """Batches for steps [start_step, max_steps): step s on rank r reads global batch s * world_size + r."""
    indices = [s * world_size + rank for s in range(start_step, max_steps)]
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=indices, num_workers=workers, collate_fn=_keep,
        persistent_workers=False, prefetch_factor=4 if workers else None,
    )


def _keep(batch):
    return batch
