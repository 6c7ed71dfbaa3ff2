"""Every table of the run directory: its columns, their types, and the clip id.

This is the one place a column name is spelled. Code elsewhere writes `C.clip_id`, never "clip_id",
and builds tables with the schemas below, so a renamed or retyped column fails loudly in one place.
Only the standard library and pyarrow are imported here (training/ reads these schemas too).
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pyarrow as pa


def clip_id_for(fingerprint: str, start_frame: int, end_frame: int) -> str:
    """Stable id of the frames [start_frame, end_frame) of the source whose content hash is `fingerprint`."""
    key = f"{fingerprint}:{int(start_frame)}:{int(end_frame)}".encode()
    return hashlib.sha256(key).hexdigest()[:20]


def _fields(schema: pa.Schema) -> SimpleNamespace:
    return SimpleNamespace(**{name: name for name in schema.names})


# ---------------------------------------------------------------------------------------------
# OUT/manifest/: one row per detected clip, kept or filtered.
MANIFEST = pa.schema(
    [
        ("clip_id", pa.string()),
        ("source", pa.string()),  # the input as the user named it (path or URL)
        ("source_fingerprint", pa.string()),  # content hash of the source file
        ("clip_index", pa.int32()),  # position of the clip within its source
        ("start_frame", pa.int64()),  # inclusive; positions from timestamps (see curation.decode.FrameClock)
        ("end_frame", pa.int64()),  # exclusive
        ("start_time", pa.float64()),  # seconds from the first frame: the frames' own timestamps
        ("end_time", pa.float64()),
        ("duration", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),  # display size of the source (rotation applied)
        ("height", pa.int32()),
        ("codec", pa.string()),
        ("shot_detector", pa.string()),  # what closed this shot ("content", "adaptive", "black", "max_duration", "gap", "stride", "end")
        ("transition_in", pa.string()),  # "cut", "fade", "split" (a long shot cut in parts), "gap", "stride", "start"
        # scores
        ("motion_score", pa.float32()),  # mean optical-flow speed, frame lengths (longer side) per second
        ("motion_p90", pa.float32()),
        ("camera_motion", pa.string()),  # static | pan_left | pan_right | tilt_up | tilt_down | zoom_in | zoom_out | mixed
        ("camera_motion_confidence", pa.float32()),
        ("luminance_mean", pa.float32()),  # 0..255
        ("black_fraction", pa.float32()),  # fraction of sampled frames that are black
        ("bright_fraction", pa.float32()),  # fraction of sampled frames that are blown out
        ("sharpness", pa.float32()),  # variance of the Laplacian at analysis size
        ("colorfulness", pa.float32()),  # Hasler-Suesstrunk colourfulness of sampled frames (0: gray, ~110: vivid)
        ("text_area", pa.float32()),  # fraction of the frame covered by detected burnt-in text
        ("text_detector", pa.string()),
        ("dominant_colors", pa.list_(pa.string())),  # named colours, most frequent first
        ("aesthetic_score", pa.float32()),  # null as curation writes it; the clip view fills it from OUT/scores/
        ("aesthetic_model", pa.string()),
        # outcome
        ("status", pa.string()),  # kept | filtered
        ("filter_reasons", pa.list_(pa.string())),
        ("clip_path", pa.string()),  # relative to OUT; null for filtered clips and in a clip-free run (see OUT/clip_files/)
        ("thumb_path", pa.string()),  # relative to OUT
        ("config_hash", pa.string()),  # hash of the curation config that produced the row
        ("created_at", pa.timestamp("us", tz="UTC")),
        # the source as a whole (the same on each of its rows); null in runs written before
        ("variable_frame_rate", pa.bool_()),  # frame times vary: positions count frames, times are timestamps
        ("source_frames_lost", pa.int64()),  # frames of the source that did not decode (between decoded ones)
        ("source_gaps", pa.list_(pa.struct([("start_frame", pa.int64()), ("end_frame", pa.int64()),
                                            ("start_time", pa.float64()), ("end_time", pa.float64())]))),
    ]
)
M = _fields(MANIFEST)

STATUS_KEPT = "kept"
STATUS_FILTERED = "filtered"

# ---------------------------------------------------------------------------------------------
# Later decisions about curated clips. No stage rewrites the manifest: a score measured after
# curation, and a clip filtered after curation, are rows of their own tables, and `tables.read_clips`
# joins them onto the manifest.

# OUT/scores/: scores measured after curation (the aesthetic score, by indexing/). The newest row per
# (clip_id, score) wins.
SCORES = pa.schema(
    [
        ("clip_id", pa.string()),
        ("score", pa.string()),  # which score: a key of LATER_SCORES
        ("value", pa.float32()),
        ("model", pa.string()),  # what measured it; says "untrained" for a placeholder
        ("config_hash", pa.string()),  # hash of the settings of the stage that wrote the row
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
SC = _fields(SCORES)

# score name -> the manifest columns the clip view shows it in (value, model)
LATER_SCORES = {"aesthetic": (M.aesthetic_score, M.aesthetic_model)}

# OUT/decisions/: clips filtered after curation (near duplicates, low aesthetic score). A row filters
# its clip; its reason joins the clip's filter_reasons.
DECISIONS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("stage", pa.string()),  # which stage decided: dedup | aesthetic | ...
        ("reason", pa.string()),  # the filter reason shown in the report ("near_duplicate:<kept clip_id>")
        ("config_hash", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
DEC = _fields(DECISIONS)

# OUT/clip_files/: clip files written after curation (`rushes extract` on a clip-free run). The newest
# row per clip fills its clip_path and thumb_path in the clip view.
CLIP_FILES = pa.schema(
    [
        ("clip_id", pa.string()),
        ("clip_path", pa.string()),  # relative to OUT
        ("thumb_path", pa.string()),  # relative to OUT; null keeps the manifest's
        ("config_hash", pa.string()),  # of the extract settings the file was written with
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
CF = _fields(CLIP_FILES)

# OUT/input_captions/: captions named beside a source in a list file (`path,caption` CSV/TSV, or JSONL).
# The newest row per source is its clips' caption_original (recaption/sidecar.py).
INPUT_CAPTIONS = pa.schema(
    [
        ("source", pa.string()),  # as the run names the source (absolute path or URL)
        ("caption", pa.string()),
        ("list_file", pa.string()),  # the list file it came from
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
IC = _fields(INPUT_CAPTIONS)

# ---------------------------------------------------------------------------------------------
# OUT/quarantine.parquet: inputs (or clips) that could not be processed. Permanent failures only;
# transient ones are retried by the next run.
QUARANTINE = pa.schema(
    [
        ("source", pa.string()),
        ("stage", pa.string()),  # probe | analysis | extract | caption | ...
        ("error", pa.string()),  # what went wrong and what to do
        ("clip_id", pa.string()),  # null when the whole source failed
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
Q = _fields(QUARANTINE)
# the stage of an input-level row that is not a failure: a byte-identical copy of another input,
# curated once under that one (its error names it); the funnel counts these as "duplicate inputs"
STAGE_DUPLICATE = "duplicate"

# ---------------------------------------------------------------------------------------------
# OUT/captions/: one row per clip and captioner version (recaption/).
# One comparison of a caption with a measured signal: which signal, which caption (dense | short),
# what the caption says, what was measured, and whether they agree.
SIGNAL_CHECK = pa.struct([("signal", pa.string()), ("field", pa.string()), ("caption", pa.string()),
                          ("measured", pa.string()), ("agrees", pa.bool_())])
CHK = SimpleNamespace(**{f.name: f.name for f in SIGNAL_CHECK})
CAPTIONS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("caption_dense", pa.string()),
        ("caption_short", pa.string()),
        ("caption_original", pa.string()),  # a caption that came with the source, if any
        ("captioner", pa.string()),  # model id and revision, "metadata", or a tiny test model's name
        ("prompt_version", pa.string()),
        ("hints", pa.string()),  # JSON of the curation signals given to the captioner
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("error", pa.string()),  # null when the caption passed its checks
        # the captions compared with the clip's measured signals (recaption/agreement.py); null in runs written before
        ("signal_checks", pa.list_(SIGNAL_CHECK)),
    ]
)
CAP = _fields(CAPTIONS)

# ---------------------------------------------------------------------------------------------
# OUT/embeddings/: vectors, the source of truth any Milvus collection is built from (indexing/).
EMBEDDINGS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("kind", pa.string()),  # visual | text
        ("model", pa.string()),  # model name and pretrained tag; says "untrained" for random weights
        ("input_hash", pa.string()),  # hash of what was embedded (caption text, or frame sampling settings)
        ("vector", pa.list_(pa.float32())),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
EMB = _fields(EMBEDDINGS)

# ---------------------------------------------------------------------------------------------
# OUT/shards/<bucket>/part-*.parquet: training shards (workflows/shard.py writes, training/data.py reads).
# One directory per bucket (frames, height, width), so a batch of one shape reads one directory.
SHARDS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("source", pa.string()),
        ("bucket", pa.string()),  # "f17_h64_w96": frames, height, width of `frames`
        ("num_frames", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("frames", pa.binary()),  # raw RGB uint8, C-order (num_frames, height, width, 3)
        ("frame_stride", pa.int32()),  # source frames between two shard frames
        ("fps", pa.float64()),  # of the shard frames (source fps / frame_stride)
        ("caption_dense", pa.string()),
        ("caption_short", pa.string()),
        ("caption_original", pa.string()),
        ("captioner", pa.string()),
        ("metadata", pa.string()),  # JSON: camera motion, scores, times from the manifest
    ]
)
SH = _fields(SHARDS)

# SHARDS/latents/<bucket>/part-*.parquet: what `rushes encode` adds (autoencoder latents, text states).
LATENT_SHARDS = pa.schema(
    [
        ("clip_id", pa.string()),
        ("bucket", pa.string()),  # the pixel bucket the latent came from
        ("latent", pa.binary()),  # float16, C-order `latent_shape`
        ("latent_shape", pa.list_(pa.int32())),  # (channels, frames, height, width)
        ("caption_dense", pa.string()),
        ("caption_short", pa.string()),
        ("caption_original", pa.string()),
        ("text_dense", pa.binary()),  # float16 token states (text_dense_len, text_dim), padding dropped
        ("text_dense_len", pa.int32()),
        ("text_short", pa.binary()),
        ("text_short_len", pa.int32()),  # 0 when the caption is missing
        ("text_original", pa.binary()),
        ("text_original_len", pa.int32()),
        ("text_dim", pa.int32()),
    ]
)
LSH = _fields(LATENT_SHARDS)
