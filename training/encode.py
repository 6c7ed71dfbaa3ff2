"""`rushes encode`: pixel shards -> latent shards (autoencoder latents + text encoder token states).

Latents are the posterior means in float16; text states are stored per caption variant with padding
dropped. `SHARDS/latents/info.json` records which autoencoder and text encoder made them and the
per-channel latent mean and std the DiT normalizes with. Clips already encoded by the same models are
skipped, so an interrupted encode resumes.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from curation.core.models import pick_device
from curation.core.schema import LATENT_SHARDS, LSH, SH
from training.checkpoint import list_checkpoints, load_trained
from training.data import CAPTION_VARIANTS, LATENT_INFO, LATENTS_DIR, list_buckets
from training.shards import recorded_caption_blend
from training.text import DEFAULT_TEXT_ENCODER, TextEncoder


def encode_shards(shards: Path, vae_dir: Path, text_encoder: str = DEFAULT_TEXT_ENCODER, batch_size: int = 4,
                  device: str | None = None, chunk_latents: int = 4, progress=None) -> dict:
    """Encode every pixel-shard clip not yet in SHARDS/latents; returns counts and the info written.

    `device`: None or "auto" picks the GPU when torch sees one."""
    shards, vae_dir = Path(shards), Path(vae_dir).resolve()
    device = pick_device(device)
    pixel_buckets = list_buckets(shards)
    if not pixel_buckets:
        raise FileNotFoundError(f"no pixel shards under {shards}; run `rushes shard --out OUT` first")
    vae, _ = load_trained(vae_dir, device)
    latents_dir = shards / LATENTS_DIR
    info_path = latents_dir / LATENT_INFO
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("vae") != str(vae_dir) or old.get("text_encoder") != text_encoder or old.get("vae_step") != _vae_step(vae_dir):
            print(f"re-encoding: {latents_dir} was made by another autoencoder or text encoder")
            shutil.rmtree(latents_dir)
    encoder = TextEncoder(text_encoder, device=device)
    done = {row for b in list_buckets(latents_dir).values() for row in _clip_ids({loc[0] for loc in b.locations})}
    counts = {"encoded": 0, "already": 0}
    for bucket, rows in pixel_buckets.items():
        for part in sorted({loc[0] for loc in rows.locations}):
            table = pq.read_table(part)
            records = [r for r in table.to_pylist() if r[SH.clip_id] not in done]
            counts["already"] += table.num_rows - len(records)
            out_rows = []
            for i in range(0, len(records), batch_size):
                chunk = records[i : i + batch_size]
                out_rows += _encode_batch(chunk, vae, encoder, device, chunk_latents)
                if progress:
                    progress(len(chunk))
            if out_rows:
                path = latents_dir / bucket / f"part-{uuid.uuid4().hex[:12]}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                pq.write_table(pa.Table.from_pylist(out_rows, schema=LATENT_SHARDS), tmp, row_group_size=32)
                tmp.replace(path)
                counts["encoded"] += len(out_rows)
    info = {"vae": str(vae_dir), "caption_blend": recorded_caption_blend(shards), "vae_step": _vae_step(vae_dir), "text_encoder": text_encoder, "text_dim": encoder.dim,
            "latent_channels": vae.cfg.z_channels, "temporal_factor": vae.cfg.temporal_factor,
            "spatial_factor": vae.cfg.spatial_factor, **latent_stats(latents_dir, vae.cfg.z_channels)}
    info_path.write_text(json.dumps(info, indent=1))
    return {**counts, "info": info}


def _vae_step(vae_dir: Path) -> int | None:
    found = list_checkpoints(vae_dir)
    return int(found[-1].name.split("-")[1]) if found else None


def _clip_ids(parts) -> list[str]:
    return [cid for p in parts for cid in pq.read_table(p, columns=[LSH.clip_id])[LSH.clip_id].to_pylist()]


@torch.no_grad()
def _encode_batch(records: list[dict], vae, encoder, device, chunk_latents: int) -> list[dict]:
    videos = np.stack([np.frombuffer(r[SH.frames], np.uint8).reshape(r[SH.num_frames], r[SH.height], r[SH.width], 3)
                       for r in records])
    x = torch.from_numpy(videos).to(device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (B, 3, T, H, W)
    means = vae.encode_chunked(x, chunk_latents).float().cpu().numpy().astype(np.float16)  # (B, C, t, h, w)
    rows = [{LSH.clip_id: r[SH.clip_id], LSH.bucket: r[SH.bucket], LSH.latent: m.tobytes(),
             LSH.latent_shape: list(m.shape), LSH.text_dim: encoder.dim} for r, m in zip(records, means, strict=True)]
    for variant in CAPTION_VARIANTS:
        texts = [r[f"caption_{variant}"] or "" for r in records]
        present = [i for i, t in enumerate(texts) if t.strip()]
        for row, text in zip(rows, texts, strict=True):
            row[f"caption_{variant}"] = text or None
            row[f"text_{variant}"], row[f"text_{variant}_len"] = b"", 0
        if present:
            states, mask = encoder([texts[i] for i in present])
            for j, i in enumerate(present):
                n = int(mask[j].sum())
                rows[i][f"text_{variant}"] = states[j, :n].cpu().numpy().astype(np.float16).tobytes()
                rows[i][f"text_{variant}_len"] = n
    return rows


def latent_stats(latents_dir: Path, channels: int) -> dict:
    """Per-channel mean and std over every latent element in the latent shards."""
    total, sq, count = np.zeros(channels), np.zeros(channels), 0
    for rows in list_buckets(latents_dir).values():
        for part in {loc[0] for loc in rows.locations}:
            t = pq.read_table(part, columns=[LSH.latent, LSH.latent_shape]).to_pydict()
            for blob, shape in zip(t[LSH.latent], t[LSH.latent_shape], strict=True):
                z = np.frombuffer(blob, np.float16).reshape(shape).astype(np.float64).reshape(channels, -1)
                total += z.sum(1)
                sq += (z**2).sum(1)
                count += z.shape[1]
    if count == 0:
        raise ValueError(f"no latents under {latents_dir}")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    return {"latent_mean": mean.tolist(), "latent_std": std.tolist(), "latent_count": count}
