"""Shards, the bucket plan and the loader: deterministic from seed and step, loud when too small."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curation.core.schema import SH
from training.data import BucketPlan, DatasetTooSmall, LatentBatches, PixelBatches, make_loader
from training.shards import parse_bucket
from workflows.shard import ShardSettings, choose_bucket, frame_indices, write_shards


def test_bucket_choice_and_frame_sampling():
    buckets = [parse_bucket(b) for b in ["17x64x64", "17x64x96", "17x96x64", "1x64x64", "1x64x96"]]
    assert choose_bucket(40, 1920, 1080, buckets) == (17, 64, 96)  # landscape
    assert choose_bucket(40, 720, 1280, buckets) == (17, 96, 64)  # portrait
    assert choose_bucket(10, 1280, 720, buckets) == (1, 64, 96)  # too short for 17: an image
    assert choose_bucket(10, 100, 100, [(17, 64, 64)]) is None
    assert frame_indices(40, 17, 2) == (list(range(3, 37, 2)), 2)
    assert frame_indices(17, 17, 2) == (list(range(17)), 1)
    assert frame_indices(10, 1, 2) == ([4], 1)


def test_shards_hold_frames_captions_and_metadata(tiny_shards):
    shards, counts = tiny_shards
    assert counts["sharded"] == 6 and counts["metadata_captions"] == 2
    assert counts["total_per_bucket"] == {"f1_h32_w32": 1, "f9_h32_w32": 2, "f9_h32_w48": 2, "f9_h48_w32": 1}
    table = pq.read_table(next((shards / "f9_h32_w48").glob("*.parquet"))).to_pylist()
    for row in table:
        frames = np.frombuffer(row[SH.frames], np.uint8).reshape(row[SH.num_frames], row[SH.height], row[SH.width], 3)
        assert frames.shape == (9, 32, 48, 3) and frames.std() > 5  # real content, not a blank
        assert row[SH.caption_dense] and json.loads(row[SH.metadata])["camera_motion"] == "static"
    dense = sorted(r[SH.caption_dense] for r in table)
    assert dense[0].startswith("a red square moving left") or dense[0].startswith("a video clip")


def test_resharding_skips_done_clips_and_refuses_other_settings(tiny_shards):
    shards, _ = tiny_shards
    again = write_shards(shards.parent, ShardSettings(buckets=["9x32x32", "9x32x48", "9x48x32", "1x32x32"], max_frame_stride=1))
    assert again["sharded"] == 0 and again["already"] == 6
    with pytest.raises(ValueError, match="other settings"):
        write_shards(shards.parent, ShardSettings(buckets=["5x32x32"]))


def test_bucket_plan_is_a_pure_function_of_seed_and_index():
    sizes = {"a": 10, "b": 7, "c": 1}
    plan = BucketPlan(sizes, {"a": 2, "b": 3, "c": 2}, seed=5)
    assert plan.batches_per_epoch == 5 + 2 + 0
    again = BucketPlan(sizes, {"a": 2, "b": 3, "c": 2}, seed=5)
    batches = [plan.batch(i) for i in range(30)]
    assert all(b == a[0] and np.array_equal(r, a[1]) for (b, r), a in zip(batches, (again.batch(i) for i in range(30)), strict=True))
    assert [again.batch(i)[0] for i in (29, 3, 17)] == [batches[29][0], batches[3][0], batches[17][0]]  # random access
    epoch0 = batches[:7]
    assert {b for b, _ in epoch0} == {"a", "b"}
    for bucket in ("a", "b"):  # an epoch never repeats a clip
        rows = np.concatenate([r for b, r in epoch0 if b == bucket])
        assert len(rows) == len(set(rows.tolist()))
    orders = [[b for b, _ in batches[e * 7 : (e + 1) * 7]] for e in range(4)]
    assert len({tuple(o) for o in orders}) > 1  # buckets are shuffled together, differently each epoch
    other = BucketPlan(sizes, {"a": 2, "b": 3, "c": 2}, seed=6)
    assert any(not np.array_equal(other.batch(i)[1], batches[i][1]) for i in range(7))


def test_too_small_dataset_is_a_loud_error_naming_the_buckets(tiny_shards):
    shards, _ = tiny_shards
    with pytest.raises(DatasetTooSmall, match=r"f9_h32_w32: 2 clips, batch size 3.*lower batch_size"):
        PixelBatches(shards, batch_size=3, seed=0)
    with pytest.raises(DatasetTooSmall, match="no shards found"):
        BucketPlan({}, {}, 0)


def test_pixel_batches_and_loader_are_deterministic(tiny_shards):
    shards, _ = tiny_shards
    data = PixelBatches(shards, batch_size=1, seed=0, bucket_batch_size={"9x32x32": 2})
    assert data.plan.batch_sizes["f9_h32_w32"] == 2
    first = [b for _, b in zip(range(8), make_loader(data, 0, 8), strict=False)]
    shapes = {tuple(b["video"].shape) for b in first}
    assert (1, 3, 1, 32, 32) in shapes or (2, 3, 9, 32, 32) in shapes
    for b in first:
        t, h, w = parse_bucket(b["bucket"])
        assert b["video"].shape[2:] == (t, h, w) and -1 <= b["video"].min() and b["video"].max() <= 1
    resumed = list(make_loader(PixelBatches(shards, 1, 0, {"9x32x32": 2}), 5, 8))  # a fresh process at step 5
    for a, b in zip(first[5:], resumed, strict=True):
        assert a["clip_id"] == b["clip_id"] and torch.equal(a["video"], b["video"])
    rank1 = list(make_loader(data, 0, 3, rank=1, world_size=2))  # DDP ranks take interleaved batches
    assert [b["index"] for b in rank1] == [1, 3, 5]


def test_latent_batches_blend_captions_and_drop_them(tiny_latents):
    shards, _, result = tiny_latents
    assert result["encoded"] == 6 and result["info"]["text_dim"] == 384
    data = LatentBatches(shards, batch_size=1, seed=0, caption_blend=0.5, caption_dropout=0.2)
    kinds = {"dense": 0, "short": 0, "dropped": 0, "other": 0}
    for i in range(400):
        batch = data[i]
        assert batch["latent"].shape[:2] == (1, 4) and batch["text"].shape[-1] == 384
        caption = batch["caption"][0]
        if not batch["mask"].any():
            kinds["dropped"] += 1
            assert caption == ""
        elif " moving " in caption or caption.startswith("a video clip"):
            kinds["dense"] += 1
        elif caption.startswith("a "):
            kinds["short"] += 1
        else:
            kinds["other"] += 1
    assert kinds["other"] == 0
    assert 50 < kinds["dropped"] < 110  # ~20%
    assert kinds["dense"] > kinds["short"] > 50  # clips with a short caption use it about half the time
    assert data[7]["caption"] == LatentBatches(shards, 1, 0, 0.5, 0.2)[7]["caption"]  # deterministic


def test_a_clip_filtered_after_curation_is_not_sharded(tiny_run, tmp_path):
    import shutil

    from curation.core.rundir import RunDir
    from curation.core.tables import add_decisions, kept_clips

    run = RunDir(tmp_path / "run")
    shutil.copytree(tiny_run.root, run.root, ignore=shutil.ignore_patterns("shards"))
    dropped = kept_clips(run)[0][SH.clip_id]
    add_decisions(run, "dedup", {dropped: "near_duplicate:other"}, {})
    counts = write_shards(run.root, ShardSettings(buckets=["9x32x32", "9x32x48", "9x48x32", "1x32x32"], max_frame_stride=1))
    assert counts["clips"] == 5 and counts["sharded"] == 5
    sharded = {cid for part in run.shards.glob("*/*.parquet") for cid in pq.read_table(part)[SH.clip_id].to_pylist()}
    assert dropped not in sharded and len(sharded) == 5
