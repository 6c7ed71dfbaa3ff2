"""What one analysis pass hands on: shots, each clip's signals (what `curation.scores` reads), counts.

Plain records with no behaviour, so the decoder (`curation.decode`), the shot tracker
(`curation.shots`), the analysis loop (`curation.analysis`) and the scores can share them without
importing each other. A `Sample` and the tracker count frames as they decode; the `Shot` of a
`ClipSignals` names positions in the source (from timestamps, `decode.FrameClock`); shots are half-open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Shot:
    start: int  # first frame, inclusive
    end: int  # exclusive
    closed_by: str  # content | adaptive | black | max_duration | end: what ended the shot
    transition_in: str  # start | cut | fade | split: how it began


@dataclass
class Sample:
    """A frame kept for optical flow: gray at flow level (see `decode.reduce_frame`), with its partner,
    the first new picture (not a repeat of the one before) about `shots.MOTION_INTERVAL_S` later."""

    index: int
    flow_gray: np.ndarray
    small_bgr: np.ndarray  # the same frame in colour, smaller (a stand-in picture)
    time: float = 0.0  # seconds (the frame's timestamp)
    next_flow_gray: np.ndarray | None = None  # the partner frame
    next_index: int | None = None
    next_time: float | None = None


@dataclass
class ClipSignals:
    """What the scores of one clip are computed from."""

    shot: Shot
    start_time: float
    end_time: float
    luma: np.ndarray  # mean luma (0..255) of every frame of the clip
    samples: list[Sample]  # spread over the clip, each with its next frame where that is in the clip
    pictures: list[tuple[int, np.ndarray]]  # (frame index, BGR at analysis size), spread over the clip
    flow_to_analysis: float  # multiply flow-size pixels by this to get analysis-size pixels
    flow_size: tuple[int, int] | None = None  # (w, h) flow runs at; None: the samples' own size


@dataclass(frozen=True)
class Gap:
    """Frames of a source that did not decode: positions [start, end), from start_time to end_time (s)."""

    start: int
    end: int
    start_time: float
    end_time: float

    @property
    def frames(self) -> int:
        return self.end - self.start


@dataclass
class AnalysisStats:
    frames_decoded: int = 0
    decode_errors: int = 0
    cuts: dict[str, int] = field(default_factory=dict)  # cuts reported per detector
    gaps: list[Gap] = field(default_factory=list)  # undecodable stretches, in order

    @property
    def frames_lost(self) -> int:
        return sum(g.frames for g in self.gaps)
