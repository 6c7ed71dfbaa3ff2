"""Analysis: one decode pass per source, feeding shot detection and every per-clip signal.

`analyze(path, info, cfg)` ties three pieces together:

- `curation.decode`: every frame decoded once and shrunk to the small images analysis reads, in a
  second thread running a few frames ahead (so decoding overlaps with the rest on a free core);
- `curation.shots`: PySceneDetect's detectors weigh each frame's measured HSV difference, and the
  shot tracker buffers the open shot, closes it at each final cut and cleans it up into clips;
- the clips, handed on as `ClipSignals` (`curation.signals`) as their shots close, which is what
  `curation.scores` reads; only the open shot holds frames, so memory is bounded.

Inside the loop frames are counted as they decode (`index`); the clips handed on name their frames
by position in the source (`FrameClock`: from timestamps), and a stretch that did not decode closes
the open shot (a gap, in `stats.gaps`). Shots are half-open: [start, end).
Rotated sources are turned upright. Corrupt packets are skipped (the frames that decode are
salvaged); a stream where nothing decodes raises `PermanentError`, and a source that takes longer
than its time limit raises `TimeLimitError` with stage "analysis".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curation.config import CurateConfig
from curation.core.stage import PermanentError
from curation.decode import THREADED_DECODE_PIXELS, FramePreparer, decode_frames, in_background
from curation.probe import Deadline, ProbeInfo
from curation.shots import ShotTracker, make_detectors
from curation.signals import AnalysisStats, ClipSignals, Gap


def analysis_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(2, round(width * scale)), max(2, round(height * scale))


def analyze(
    path: Path | str, info: ProbeInfo, cfg: CurateConfig, stats: AnalysisStats | None = None
) -> Iterator[ClipSignals]:
    """Decode `path` once and yield its clips' signals as their shots close (see module doc)."""
    stats = stats if stats is not None else AnalysisStats()
    a = cfg.analysis
    size = analysis_size(info.width, info.height, a.max_side)
    flow_size = analysis_size(size[0], size[1], a.flow_max_side)
    tracker = ShotTracker(cfg, info, size, flow_size)
    detectors = make_detectors(cfg)
    latency = detector_latency(detectors)  # a detector may report a cut this many frames late
    # a long source may take long: the limit grows with its duration
    limit = cfg.probe.timeout_s + cfg.probe.timeout_per_video_second * info.duration
    deadline = Deadline(limit, path, "analysis", stage="analysis")
    decoded = decode_frames(path, deadline, stats, info.width * info.height >= THREADED_DECODE_PIXELS)
    index = -1
    # decoding and shrinking run one frame batch ahead in a second thread, overlapping this loop
    # (detectors, shot tracking) and whatever the caller does with each clip (scoring)
    previous = None
    stride_mode = cfg.shots.mode == "stride"
    for frame in in_background(decoded, FramePreparer(info, size, flow_size)):
        index = frame.index
        if previous is None and frame.position > 0:  # frames lost before the first that decodes
            stats.gaps.append(Gap(0, frame.position, 0.0, round(frame.time, 6)))
        if previous is not None and frame.position > previous.position + 1:
            # frames did not decode here: the open shot ends, so no clip spans the gap
            stats.gaps.append(Gap(previous.position + 1, frame.position,
                                  round(previous.time + 1.0 / info.fps, 6), round(frame.time, 6)))
            yield from tracker.close_ready(index - 1)
            yield from tracker.close(index, "gap", "gap")
        previous = frame
        if stride_mode:
            yield from tracker.stride_step(frame)
        yield from feed_frame(frame, tracker, detectors, stats, info.fps, latency)
    stats.frames_decoded = index + 1
    if index < 0:
        raise PermanentError(
            f"{path}: no frame of the video stream decodes; the file is corrupt, re-export it"
        )
    yield from finish(index + 1, tracker, detectors, stats, info.fps)


def detector_latency(detectors: dict) -> int:
    """How many frames after a cut a detector may report it (a cut waits that long to be final)."""
    return max([d.event_buffer_length for d in detectors.values()] + [0]) + 2


def feed_frame(frame, tracker: ShotTracker, detectors: dict, stats: AnalysisStats, fps: float,
               latency: int) -> Iterator[ClipSignals]:
    """One prepared frame through the tracker and the detectors; the clips of shots that closed.
    (`curation.units` runs a source's time ranges through this too, so both place cuts alike.)"""
    from scenedetect import FrameTimecode

    tracker.add_frame(frame)
    timecode = FrameTimecode(frame.index, fps)
    for name, det in detectors.items():
        for cut in det.process_frame(timecode, frame.hsv_delta):
            tracker.add_cut(int(cut.frame_num), name)
            stats.cuts[name] = stats.cuts.get(name, 0) + 1
    yield from tracker.close_ready(frame.index - latency)


def finish(end: int, tracker: ShotTracker, detectors: dict, stats: AnalysisStats, fps: float) -> Iterator[ClipSignals]:
    """The source ended before frame `end`: the detectors' last cuts, then the open shot closes."""
    from scenedetect import FrameTimecode

    end_tc = FrameTimecode(end, fps)
    for name, det in detectors.items():
        for cut in det.post_process(end_tc):
            tracker.add_cut(int(cut.frame_num), name)
            stats.cuts[name] = stats.cuts.get(name, 0) + 1
    yield from tracker.close_ready(end)
    yield from tracker.close(end, "end", "cut")
