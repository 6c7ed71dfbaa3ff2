"""Captions written elsewhere (by annotators, or by a large model through an API), imported as a captioner.

`--captioner file:PATH` reads a JSON Lines (`.jsonl`, `.ndjson`) or parquet file. Each row holds a
dense caption (`caption_dense`, or `caption`) and optionally a short one (`caption_short`), and names
its clip either by `clip_id` or by `source` + `start_time` + `end_time` (seconds). A row by time is
matched to the run's clip of that source whose time range overlaps it most, if they share at least
half of their joint range (intersection over union >= 0.5): an annotator's rounded times find their
clip, a range spanning two clips does not. `source` is the source as curation named it, its resolved
path, or its file name when no other source of the run has that name. Other keys are ignored.

A malformed file stops the command before any work, with every bad line named; rows that match no
kept clip are reported and left out. Imported captions pass the same checks as generated ones, and
their captioner is `file:<file name>@<content hash>`: a changed file is a new captioner, whose rows
are imported again beside the old ones. A row that fails its checks fails for good (the same file
would fail the same way): a re-run with the same file skips it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from curation.core.schema import CAP, STATUS_KEPT, M
from curation.core.stage import Stage
from recaption.captions import PERMANENT, caption_row
from recaption.checks import check_caption
from recaption.config import IMPORT_PREFIX, import_path
from recaption.prompts import hints_from_row

IMPORTED_PROMPT_VERSION = "imported-v1"
DENSE_KEYS = (CAP.caption_dense, "caption")
MIN_TIME_IOU = 0.5
MAX_PROBLEMS_SHOWN = 10


class CaptionFileError(ValueError):
    """The caption file cannot be read or has malformed rows; the message names the file and the lines."""


@dataclass(frozen=True)
class ImportedCaption:
    line: int  # 1-based line (JSONL) or row (parquet) of the file, for reports
    dense: str
    short: str | None
    clip_id: str | None = None
    source: str | None = None
    start_time: float | None = None
    end_time: float | None = None

    def where(self) -> str:
        if self.clip_id is not None:
            return f"clip_id {self.clip_id}"
        return f"{self.source} {self.start_time:g}-{self.end_time:g} s"


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def read_records(path: Path, setting: str = "--captioner") -> list[tuple[int, object]]:
    """(line number, record) of every row of a JSONL or parquet file."""
    where = f"{setting} {IMPORT_PREFIX}{path}"
    if not path.is_file():
        raise CaptionFileError(f"{where}: no such file; give the path of a .jsonl or .parquet file of captions")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - any reader error means "not a parquet file we can read"
            raise CaptionFileError(f"{where}: cannot be read as parquet ({e})") from None
        return list(enumerate(rows, start=1))
    if suffix not in (".jsonl", ".ndjson", ".json"):
        raise CaptionFileError(f"{where}: unknown format {suffix or '(no extension)'!r}; "
                               "use .jsonl (one JSON object a line) or .parquet")
    records, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise CaptionFileError(f"{where}: not UTF-8 text ({e})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            problems.append(f"line {number}: not JSON ({e.msg})")
    _raise_problems(where, problems)
    return records


def _raise_problems(where: str, problems: list[str]) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
    raise CaptionFileError(f"{where}: {len(problems)} malformed rows: {shown}{more}. Each row needs "
                           f"{CAP.caption_dense} (text) and either {CAP.clip_id} or {M.source} + {M.start_time} + "
                           f"{M.end_time} (seconds)")


def _text(record: dict, keys: tuple[str, ...]) -> object:
    return next((record[k] for k in keys if record.get(k) is not None), None)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def parse_record(number: int, record: object) -> tuple[ImportedCaption | None, str | None]:
    """One row as an ImportedCaption, or the reason it is malformed."""
    if not isinstance(record, dict):
        return None, f"line {number}: expected an object, got {type(record).__name__}"
    dense, short = _text(record, DENSE_KEYS), record.get(CAP.caption_short)
    if not isinstance(dense, str) or not dense.strip():
        return None, f"line {number}: no {CAP.caption_dense} text"
    if short is not None and not isinstance(short, str):
        return None, f"line {number}: {CAP.caption_short} must be text, not {type(short).__name__}"
    short = short.strip() or None if short else None
    clip_id = record.get(CAP.clip_id)
    if clip_id is not None:
        if not isinstance(clip_id, str) or not clip_id:
            return None, f"line {number}: {CAP.clip_id} must be text"
        return ImportedCaption(number, dense.strip(), short, clip_id=clip_id), None
    source, start, end = record.get(M.source), _number(record.get(M.start_time)), _number(record.get(M.end_time))
    if not isinstance(source, str) or not source:
        return None, f"line {number}: neither {CAP.clip_id} nor {M.source} given"
    if start is None or end is None or end <= start or start < 0:
        return None, (f"line {number}: {M.start_time} and {M.end_time} must be seconds with "
                      f"0 <= start < end, not {record.get(M.start_time)!r}, {record.get(M.end_time)!r}")
    return ImportedCaption(number, dense.strip(), short, source=source, start_time=start, end_time=end), None


def read_caption_file(path: Path, setting: str = "--captioner") -> list[ImportedCaption]:
    captions, problems = [], []
    for number, record in read_records(path, setting):
        caption, problem = parse_record(number, record)
        if problem:
            problems.append(problem)
        else:
            captions.append(caption)
    _raise_problems(f"{setting} {IMPORT_PREFIX}{path}", problems)
    return captions


class SourceIndex:
    """The run's sources found by the name a caption file gives: as curated, resolved, or by file name."""

    def __init__(self, clips: list[dict]):
        self.by_source: dict[str, list[dict]] = {}
        for clip in clips:
            self.by_source.setdefault(clip[M.source], []).append(clip)
        self.by_path = {_resolved(s): s for s in self.by_source}
        self.by_name: dict[str, list[str]] = {}
        for s in self.by_source:
            self.by_name.setdefault(Path(s).name, []).append(s)

    def find(self, given: str) -> tuple[str | None, str | None]:
        """(the run's source, or None with the reason)."""
        if given in self.by_source:
            return given, None
        if _resolved(given) in self.by_path:
            return self.by_path[_resolved(given)], None
        named = self.by_name.get(Path(given).name, [])
        if len(named) == 1:
            return named[0], None
        if named:
            return None, f"{given!r} names several sources of this run ({', '.join(sorted(named))}); give its full path"
        return None, f"no source {given!r} in this run"


def _resolved(source: str) -> str:
    try:
        return str(Path(source).expanduser().resolve())
    except (OSError, RuntimeError):
        return source


def time_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    union = max(a[1], b[1]) - min(a[0], b[0])
    return max(0.0, overlap) / union if union > 0 else 0.0


def match_captions(captions: list[ImportedCaption], clips: list[dict]) -> tuple[dict[str, ImportedCaption], list[str]]:
    """({kept clip_id: its imported caption}, a line for each row left out and why)."""
    by_id = {c[M.clip_id]: c for c in clips}
    sources = SourceIndex(clips)
    matched: dict[str, ImportedCaption] = {}
    left_out = []
    for caption in captions:
        clip, why = _find_clip(caption, by_id, sources)
        if clip is None:
            left_out.append(f"line {caption.line} ({caption.where()}): {why}")
        elif clip[M.status] != STATUS_KEPT:
            reasons = ", ".join(clip[M.filter_reasons] or []) or "filtered"
            left_out.append(f"line {caption.line} ({caption.where()}): clip {clip[M.clip_id]} was filtered ({reasons})")
        elif clip[M.clip_id] in matched:
            left_out.append(f"line {caption.line} ({caption.where()}): clip {clip[M.clip_id]} already has the caption "
                            f"of line {matched[clip[M.clip_id]].line}, which is kept")
        else:
            matched[clip[M.clip_id]] = caption
    return matched, left_out


def _find_clip(caption: ImportedCaption, by_id: dict[str, dict], sources: SourceIndex) -> tuple[dict | None, str]:
    if caption.clip_id is not None:
        clip = by_id.get(caption.clip_id)
        return clip, "" if clip else "no clip of this run has that id"
    source, why = sources.find(caption.source)
    if source is None:
        return None, why
    span = (caption.start_time, caption.end_time)
    best = max(sources.by_source[source], key=lambda c: time_iou(span, (c[M.start_time], c[M.end_time])))
    if time_iou(span, (best[M.start_time], best[M.end_time])) < MIN_TIME_IOU:
        return None, (f"no clip of that source shares half its time range (nearest: "
                      f"{best[M.start_time]:.2f}-{best[M.end_time]:.2f} s)")
    return best, ""


class FileCaptioner(Stage):
    """Captions from a file, matched to the run's clips when made (on the driver); needs no frames, no model."""

    name = "caption"
    needs_frames = False

    def __init__(self, config, clips: list[dict]):
        self.config = config
        path = Path(import_path(config.captioner)).expanduser()
        captions = read_caption_file(path)
        self.identity = f"{IMPORT_PREFIX}{path.name}@{file_hash(path)}"
        self.prompt_version = IMPORTED_PROMPT_VERSION
        self.captions, self.left_out = match_captions(captions, clips)
        self.rows_read = len(captions)
        self.covered = set(self.captions)  # only these clips are captioned by this captioner

    def __call__(self, batch: list[dict]) -> list[dict]:
        rows = []
        for row in batch:
            imported = self.captions.get(row[M.clip_id])
            dense, short = (imported.dense, imported.short) if imported else (None, None)
            error = None if imported else f"{PERMANENT}the caption file has no caption of this clip"
            if imported and self.config.checks:  # the same file fails the same way: not retried
                problem = check_caption(dense, "dense")
                error = f"{PERMANENT}imported dense caption {problem}" if problem else None
                problem = None if error or short is None else check_caption(short, "short")
                error = error or (f"{PERMANENT}imported short caption {problem}" if problem else None)
            rows.append(caption_row(row[M.clip_id], None if error else dense, None if error else short,
                                    self.identity, self.prompt_version, hints_from_row(row), error,
                                    self.config.checks))
        return rows
