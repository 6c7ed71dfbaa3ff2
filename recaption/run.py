"""The caption stage over a run directory, in plain Python: what tests call and Ray workers wrap.

Kept clips of OUT/manifest/ are captioned in batches (frames from each clip's file, or from its source's
range in a clip-free run: `curation.core.clips`); each batch is written as one atomic part of
OUT/captions/. A clip counts as done for a captioner when a row of the same `captioner` and
`prompt_version` exists without error (or with a permanent one: an unreadable clip, an imported
caption that fails its checks, a caption failed by the measurement checks). Other failed captions
are written with their error and retried by the next run; several captioners' rows coexist. The
disagreement policy is part of the captioner's name when it fails captions, so a switch from `flag`
to `fail` (or to other `fail_signals`) checks every clip again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from curation.core import clips
from curation.core.clips import clip_frame_count, clip_frames
from curation.core.rundir import RunDir, atomic_write_table, remove_stale_temps, rows_to_table
from curation.core.schema import CAP, CAPTIONS, CHK, STATUS_KEPT, M
from curation.core.stage import PermanentError, Stage, map_in_process
from curation.core.tables import read_captions, read_clips
from curation.core.video import spread_indices
from recaption.agreement import disagreement_error, signal_checks
from recaption.captions import PERMANENT, caption_row, captioner_name
from recaption.config import CaptionConfig, import_path, is_model_spec, with_trained_settings
from recaption.imported import FileCaptioner
from recaption.metadata import MetadataCaptioner
from recaption.prompts import hints_from_row
from recaption.sidecar import SidecarCaptions, input_captions
from recaption.vlm import FRAME_TIMES_KEY, FRAMES_KEY, VLMCaptioner


@dataclass
class CaptionSummary:
    captioner: str
    prompt_version: str
    kept: int = 0
    captioned: int = 0
    failed: int = 0
    skipped: int = 0
    not_in_file: int = 0  # kept clips an imported caption file has no caption for
    left_out: list[str] = field(default_factory=list)  # rows of a caption file that match no kept clip, and why
    flagged: int = 0  # captions written as good whose words disagree with the clip's measurements

    def line(self) -> str:
        line = (f"caption: {self.kept} kept clips -> {self.captioned} captioned, {self.failed} failed, "
                f"{self.skipped} skipped (already done)")
        if self.not_in_file:
            line += f", {self.not_in_file} not in the file"
        line += f" by {self.captioner} ({self.prompt_version})"
        if self.flagged:
            line += f"; {self.flagged} captions disagree with the measurements (kept, flagged)"
        if self.left_out:
            line += f"; {len(self.left_out)} rows of the file left out"
        return line


def make_captioner(config: CaptionConfig, run: RunDir) -> Stage:
    """The captioner the config names; a VLM's model is found here (fails early) but loaded in setup(), and a
    caption file is read and matched to the run's clips here."""
    if config.captioner == "metadata":
        return MetadataCaptioner(config)
    if import_path(config.captioner) is not None:
        return FileCaptioner(config, read_clips(run).to_pylist())
    return VLMCaptioner(config)


class CaptionWorker(Stage):
    """The caption stage: a batch of kept clip rows in, their caption rows out, written as one part.

    Per batch: frames, captions, enhancement, the comparison with the measurements, the source's own
    caption (a sidecar file), one atomic part of OUT/captions/. It holds a model, so an
    executor keeps one per worker; it asks for `gpus_per_worker` GPUs when it runs a VLM."""

    name = "caption"
    num_cpus = 1
    copies_without_gpu = 1  # a VLM per core would not fit in memory; `workers` asks for more

    def __init__(self, out: Path | str, config: CaptionConfig):
        from recaption.enhance import Enhancer

        self.run = RunDir(out)
        self.config = config
        self.captioner = make_captioner(config, self.run)
        self.enhancer = None
        if config.enhancer:
            self.enhancer = Enhancer(config.enhancer, max_new_tokens=config.max_new_tokens, device=config.device,
                                     dtype=config.dtype)
        self.identity = captioner_identity(self.captioner, self.enhancer, config.checks, policy_tag(config))
        self.prompt_version = self.captioner.prompt_version
        self.batch_size = config.batch_size
        self.num_gpus = config.gpus_per_worker if is_model_spec(config.captioner) else 0
        # caption_original: a list file's caption, else a file next to the source or its metadata
        self.sidecars = SidecarCaptions(input_captions(self.run))

    def setup(self) -> None:
        self.captioner.setup()
        if self.enhancer:
            self.enhancer.setup()

    def __call__(self, rows: list[dict]) -> list[dict]:
        readable, caption_rows = [], []
        for row in rows:
            try:
                readable.append(self.with_frames(row) if self.captioner.needs_frames else row)
            except PermanentError as e:
                caption_rows.append(caption_row(row[M.clip_id], None, None, self.captioner.identity,
                                                self.prompt_version, hints_from_row(row), f"{PERMANENT}{e}",
                                                self.config.checks))
        if readable:
            caption_rows += self.captioner(readable)
        if self.enhancer:
            self.enhance(caption_rows)
        clips = {row[M.clip_id]: row for row in rows}
        self.compare_with_measurements(caption_rows, clips)
        for r in caption_rows:
            r[CAP.captioner] = self.identity
            r[CAP.caption_original] = self.sidecars.caption(clips[r[CAP.clip_id]])
        if caption_rows:
            write_captions(self.run, caption_rows)
        return caption_rows

    def with_frames(self, row: dict) -> dict:
        return with_frames(self.run, row, self.config)

    def frame_count(self, row: dict) -> int:
        return frame_count(row, self.config)

    def enhance(self, caption_rows: list[dict]) -> None:
        good = [r for r in caption_rows if r[CAP.error] is None]
        if not good:
            return
        for r, (text, problem) in zip(good, self.enhancer.rewrite([r[CAP.caption_dense] for r in good]),
                                      strict=True):
            if problem and self.config.checks:
                r.update({CAP.caption_dense: None, CAP.caption_short: None,
                          CAP.error: f"enhanced caption {problem}"})
            else:
                r[CAP.caption_dense] = text


    def compare_with_measurements(self, caption_rows: list[dict], clips: dict[str, dict]) -> None:
        """Record how each caption agrees with its clip's measured signals; fail it on a disagreement if asked."""
        for r in caption_rows:
            if r[CAP.caption_dense] is None and r[CAP.caption_short] is None:
                continue
            checks = signal_checks(r[CAP.caption_dense], r[CAP.caption_short], clips[r[CAP.clip_id]])
            r[CAP.signal_checks] = checks
            problem = disagreement_error(checks, self.config.fail_signals)
            if problem and self.config.checks and self.config.on_disagreement == "fail" and r[CAP.error] is None:
                r.update({CAP.caption_dense: None, CAP.caption_short: None, CAP.error: f"{PERMANENT}{problem}"})


def clip_file(run: RunDir, row: dict, reader: str = "auto") -> tuple[Path, int]:
    """(the file the clip's frames come from: its clip file, or in a clip-free run its source; its frame
    count); PermanentError when that file is missing or unreadable."""
    count = clip_frame_count(run, row, reader=reader)  # PermanentError if missing or unreadable
    return (clips.clip_file(run, row) if clips.has_clip_file(row) else clips.source_file(run, row)), count


def with_frames(run: RunDir, row: dict, config: CaptionConfig) -> dict:
    """The clip row with its sampled frames and their times: what a VLM captioner (or its training) sees.
    Frames come from the clip file, or from the source's range in a clip-free run (the same frames)."""
    frames_in_clip = clip_frame_count(run, row, reader=config.video_reader)
    indices = spread_indices(frames_in_clip, frame_count(row, config))
    frames = clip_frames(run, row, indices, max_side=config.frame_max_side, reader=config.video_reader)
    fps = float(row.get(M.fps) or 0) or 25.0
    return {**row, FRAMES_KEY: frames, FRAME_TIMES_KEY: [i / fps for i in indices[: len(frames)]]}


def frame_count(row: dict, config: CaptionConfig) -> int:
    """`frames`, or with `frames_per_second` set, as many as the clip's length calls for."""
    if config.frames_per_second is None or not row.get(M.duration):
        return config.frames
    wanted = round(float(row[M.duration]) * config.frames_per_second)
    return max(min(2, config.frames), min(config.frames, wanted))


def policy_tag(config: CaptionConfig) -> str:
    """The disagreement policy as part of the captioner's name, when it fails captions (none for `flag`)."""
    if not config.checks or config.on_disagreement != "fail":
        return ""
    signals = "all" if config.fail_signals is None else ", ".join(sorted(set(config.fail_signals))) or "none"
    return f" [fails on disagreement: {signals}]"


def captioner_identity(captioner: Stage, enhancer=None, checked: bool = True, policy: str = "") -> str:
    identity = captioner.identity
    if enhancer is not None:
        identity += f" + enhancer {enhancer.identity}"
    return captioner_name(identity + policy, checked)


def write_captions(run: RunDir, rows: list[dict]) -> Path:
    path = run.captions / f"part-{uuid.uuid4().hex[:16]}.parquet"
    atomic_write_table(rows_to_table(rows, CAPTIONS), path)
    return path


def done_clip_ids(run: RunDir, captioner: str, prompt_version: str) -> set[str]:
    """Clips this captioner and prompt version has finished: good captions and permanent failures."""
    rows = read_captions(run).to_pylist()
    return {r[CAP.clip_id] for r in rows
            if r[CAP.captioner] == captioner and r[CAP.prompt_version] == prompt_version
            and (r[CAP.error] is None or r[CAP.error].startswith(PERMANENT))}


def pending_rows(run: RunDir, captioner: str, prompt_version: str,
                 only: set[str] | None = None) -> tuple[list[dict], int, int]:
    """(kept manifest rows still to caption, kept clip count, skipped count); of the clips in `only` when given."""
    clips = read_clips(run).to_pylist()  # the manifest read once, with every later decision
    if not clips:
        raise FileNotFoundError(f"{run.manifest} holds no clips; run `rushes curate ... --out {run.root}` first")
    kept = [r for r in clips if r[M.status] == STATUS_KEPT]
    done = done_clip_ids(run, captioner, prompt_version)
    candidates = kept if only is None else [r for r in kept if r[M.clip_id] in only]
    todo = [r for r in candidates if r[M.clip_id] not in done]
    return todo, len(kept), len(candidates) - len(todo)


def count_outcome(summary: CaptionSummary, caption_rows: list[dict]) -> None:
    for r in caption_rows:
        if r[CAP.error] is None:
            summary.captioned += 1
            summary.flagged += any(not c[CHK.agrees] for c in r.get(CAP.signal_checks) or [])
        else:
            summary.failed += 1


def plan_captions(out: Path | str, config: CaptionConfig) -> tuple[CaptionWorker, list[dict], CaptionSummary]:
    """The worker (model not loaded yet: a missing model fails here), the clips still to caption, and the
    summary that counts them. Shared by the in-process run below and the Ray run in workflows/."""
    worker = CaptionWorker(out, with_trained_settings(config))
    only = getattr(worker.captioner, "covered", None)  # an imported file captions the clips it names
    todo, kept, skipped = pending_rows(RunDir(out), worker.identity, worker.prompt_version, only)
    summary = CaptionSummary(worker.identity, worker.prompt_version, kept=kept, skipped=skipped)
    if only is not None:
        summary.not_in_file = kept - len(only)
        summary.left_out = list(worker.captioner.left_out)
    return worker, todo, summary


def caption_run(out: Path | str, config: CaptionConfig | None = None, mapper=None) -> CaptionSummary:
    """Caption every kept clip of the run at `out` that this captioner has not done yet.

    `mapper(stage, rows, label)` runs the stage: in this process by default, or any executor of
    workflows/ (Ray Data)."""
    config = config or CaptionConfig()
    remove_stale_temps(RunDir(out).captions)  # parts a killed run was writing: never trusted, only in the way
    worker, todo, summary = plan_captions(out, config)
    if not todo:
        return summary
    if mapper is None:
        caption_rows = map_in_process(worker, todo)
    else:
        caption_rows = mapper(worker, todo, "captioning clips")
    count_outcome(summary, caption_rows)
    return summary
