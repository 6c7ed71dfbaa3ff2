"""Procedural footage with known truth: the test data of every stage, the demo, and the trainer.

A reel is a list of `Segment`s (one shot each): a coloured shape moving in a direction over a
textured coloured background, optionally filmed by a moving camera (a crop window travelling over a
larger canvas, so a camera panning right makes the content move left), optionally with burnt-in
text, or a black screen. Segments begin with a hard cut, a dissolve or a fade through black.

`render(segments, ...)` returns the frames lazily beside a `FootageTruth` (cut frames, transitions,
per-segment facts, text boxes and a truthful caption), so a 20-minute reel can be written without
holding it in memory; `make_footage` stacks the frames into a (T, H, W, 3) uint8 RGB array;
`write_video` (the kernel's, re-exported) encodes frames to mp4 (h264) or avi (mjpeg);
`write_footage` renders straight to a file. Everything is deterministic from a seed.

    frames, truth = make_footage([Segment(24, "circle", "red", "right", "blue"),
                                  Segment(24, "square", "yellow", "up", "green", camera="pan_right")])
    truth.cuts            # [24]: first frame of each new shot after a hard cut
    truth.segments[1].caption
    # 'a yellow square moving up on a green background, the camera panning right'
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from curation.core.video import write_video  # the kernel's writer; importers of footage use it too
from curation.core.vocab import COLORS  # noqa: E402 - the palette the colour score names

SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down", "none")
CAMERA_MOVES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")
TRANSITIONS = ("cut", "dissolve", "fade")

DIRECTION_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "none": (0, 0)}
# where the crop window travels for each camera move (x, y per frame, in units of camera_speed)
_CAMERA_VECTORS = {"pan_left": (-1, 0), "pan_right": (1, 0), "tilt_up": (0, -1), "tilt_down": (0, 1)}
_CAMERA_WORDS = {
    "pan_left": "panning left",
    "pan_right": "panning right",
    "tilt_up": "tilting up",
    "tilt_down": "tilting down",
    "zoom_in": "zooming in",
    "zoom_out": "zooming out",
}
_MAX_ZOOM = 3.0  # largest total zoom a segment may reach


@dataclass(frozen=True)
class Segment:
    """One shot of a reel.

    `speed` is the shape's speed and `camera_speed` the crop window's, both as a fraction of the
    frame width per frame. `zoom_rate` is the per-frame scale change of a zoom. `transition` says
    how the segment begins ("cut", "dissolve" from the previous shot, or "fade" through black over
    `transition_frames` frames on each side).
    """

    num_frames: int
    shape: str | None = "circle"
    color: str = "red"
    direction: str = "right"
    background: str = "blue"
    camera: str = "static"
    text: str | None = None
    black: bool = False
    transition: str = "cut"
    transition_frames: int = 0
    speed: float = 0.02
    camera_speed: float = 0.02
    zoom_rate: float = 1.015
    shape_size: float = 0.3  # fraction of the frame height
    # shape centre at frame 0 as fractions of (width, height); None: on the side it moves away from
    start: tuple[float, float] | None = None

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"Segment.num_frames must be >= 1, got {self.num_frames}")
        _check("shape", self.shape, SHAPES + (None,))
        _check("color", self.color, tuple(COLORS))
        _check("background", self.background, tuple(COLORS))
        _check("direction", self.direction, DIRECTIONS)
        _check("camera", self.camera, CAMERA_MOVES)
        _check("transition", self.transition, TRANSITIONS)
        if self.shape and not self.black and self.color == self.background:
            raise ValueError(
                f"Segment: shape colour and background are both {self.color!r}; pick two colours"
            )
        if self.transition != "cut" and self.transition_frames < 1:
            raise ValueError(f"Segment: a {self.transition} needs transition_frames >= 1")
        if self.transition_frames >= self.num_frames:
            raise ValueError("Segment: transition_frames must be shorter than the segment")


def _check(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"Segment.{name}={value!r} is not one of {allowed}")


@dataclass
class SegmentTruth:
    """What is really in one segment; frames [start, end) of the reel."""

    index: int
    start: int
    end: int
    shape: str | None
    color: str | None
    direction: str
    background: str | None
    camera: str
    black: bool
    text: str | None
    text_box: tuple[int, int, int, int] | None  # x, y, w, h in output pixels
    transition_in: str  # start | cut | dissolve | fade
    caption: str

    @property
    def content_motion(self) -> tuple[int, int]:
        """Direction the background content moves on screen: opposite to the camera's travel."""
        dx, dy = _CAMERA_VECTORS.get(self.camera, (0, 0))
        return (-dx, -dy)


@dataclass
class Transition:
    kind: str  # dissolve | fade
    start: int  # first frame affected
    end: int  # exclusive


@dataclass
class FootageTruth:
    width: int
    height: int
    fps: float
    num_frames: int
    cuts: list[int] = field(default_factory=list)  # first frame of each new shot after a hard cut
    transitions: list[Transition] = field(default_factory=list)
    segments: list[SegmentTruth] = field(default_factory=list)

    @property
    def boundaries(self) -> list[int]:
        """First frame of every segment after the first (cuts, dissolves and fades alike)."""
        return [s.start for s in self.segments[1:]]

    def segment_at(self, frame: int) -> SegmentTruth:
        for s in self.segments:
            if s.start <= frame < s.end:
                return s
        raise IndexError(f"frame {frame} is outside the reel (0..{self.num_frames - 1})")

    def to_dict(self) -> dict:
        return asdict(self)


def caption_for(seg: Segment) -> str:
    """A truthful one-line description of a segment."""
    if seg.black:
        return "a black screen"
    if seg.shape is None:
        text = f"a plain {seg.background} background"
    elif seg.direction == "none":
        text = f"a still {seg.color} {seg.shape} on a {seg.background} background"
    else:
        text = f"a {seg.color} {seg.shape} moving {seg.direction} on a {seg.background} background"
    if seg.camera != "static":
        text += f", the camera {_CAMERA_WORDS[seg.camera]}"
    if seg.text:
        text += f', with the text "{seg.text}" burnt in'
    return text


# ---------------------------------------------------------------------------------------------
# Rendering one segment


def _texture(
    rng: np.random.Generator, width: int, height: int, base: tuple[int, int, int], feature: int
) -> np.ndarray:
    """A background of colour `base` with lighter/darker blobs up to `feature` px, so its motion is measurable."""
    import cv2

    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = base
    n = max(8, int(width * height / (feature * feature) * 1.5))
    for _ in range(n):
        delta = int(rng.integers(-45, 46))
        col = tuple(int(np.clip(c + delta, 0, 255)) for c in base)
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(2, max(3, feature)))
        if rng.random() < 0.5:
            cv2.circle(canvas, (x, y), r, col, -1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, (x - r, y - r), (x + r, y + r), col, -1)
    return canvas


def _draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, size: float, color) -> None:
    import cv2

    half = size / 2
    col = tuple(int(c) for c in color)
    if shape == "circle":
        cv2.circle(img, (round(cx), round(cy)), max(1, round(half)), col, -1, lineType=cv2.LINE_AA)
    elif shape == "square":
        cv2.rectangle(
            img, (round(cx - half), round(cy - half)), (round(cx + half), round(cy + half)), col, -1
        )
    else:  # triangle, pointing up
        pts = np.array([[cx, cy - half], [cx - half, cy + half], [cx + half, cy + half]], np.float32)
        cv2.fillPoly(img, [np.round(pts).astype(np.int32)], col, lineType=cv2.LINE_AA)


def _text_layout(
    text: str, width: int, height: int
) -> tuple[float, int, tuple[int, int, int, int], tuple[int, int]]:
    """Font scale, thickness, box (x, y, w, h) and putText origin (baseline) of a subtitle near the bottom."""
    import cv2

    thickness = max(1, round(height / 120))
    scale = height / 200
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if tw > width * 0.9:  # shrink long text to fit
        scale *= width * 0.9 / tw
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = (width - tw) // 2
    y = height - int(height * 0.08) - th - base
    pad = _outline(thickness, height) // 2 + 1  # the dark outline drawn around the letters
    box = (int(x) - pad, int(y) - pad, int(tw) + 2 * pad, int(th + base) + 2 * pad)
    return scale, thickness, box, (int(x), int(y + th))


def _outline(thickness: int, height: int) -> int:
    """Stroke width of the dark outline behind the letters (subtitles carry one to stay legible)."""
    return thickness + 2 * max(1, round(height / 96))


class _SegmentRenderer:
    """Draws frame t of one segment; t may run past the segment's end (a dissolve needs it)."""

    def __init__(self, seg: Segment, width: int, height: int, seed: int, index: int, overrun: int = 0):
        self.seg, self.w, self.h = seg, width, height
        rng = np.random.default_rng([seed, index])
        n = seg.num_frames + overrun  # a dissolve into the next segment shows `overrun` more frames
        self.cam_px = seg.camera_speed * width
        if seg.camera in _CAMERA_VECTORS:
            dx, dy = _CAMERA_VECTORS[seg.camera]
            self.canvas_w = width + int(math.ceil(abs(dx) * self.cam_px * n)) + 2
            self.canvas_h = height + int(math.ceil(abs(dy) * self.cam_px * n)) + 2
        elif seg.camera in ("zoom_in", "zoom_out"):
            self.zoom_rate = min(seg.zoom_rate, _MAX_ZOOM ** (1 / max(1, seg.num_frames)))
            self.canvas_w, self.canvas_h = math.ceil(width * _MAX_ZOOM), math.ceil(height * _MAX_ZOOM)
        else:
            self.canvas_w, self.canvas_h = width, height
        self.canvas = (
            None
            if seg.black
            else _texture(
                rng, self.canvas_w, self.canvas_h, COLORS[seg.background], max(3, min(width, height) // 12)
            )
        )
        # the shape starts on the side it moves away from, and wraps around the frame
        self.size = seg.shape_size * height
        dx, dy = DIRECTION_VECTORS[seg.direction]
        self.shape_start = (
            width * (0.5 - 0.3 * dx) + rng.uniform(-0.05, 0.05) * width * (dx == 0),
            height * (0.5 - 0.3 * dy) + rng.uniform(-0.05, 0.05) * height * (dy == 0),
        )
        if seg.start is not None:
            self.shape_start = (width * seg.start[0], height * seg.start[1])
        self.text_layout = None
        if seg.text:
            fscale, thick, _box, org = _text_layout(seg.text, width, height)
            self.text_layout = (fscale, thick, org)

    def crop(self, t: int) -> tuple[float, float, float]:
        """Crop window origin (x, y) on the canvas and its scale (canvas px per output px)."""
        seg = self.seg
        if seg.camera in _CAMERA_VECTORS:
            dx, dy = _CAMERA_VECTORS[seg.camera]
            x0 = 0 if dx >= 0 else self.canvas_w - self.w - 1
            y0 = 0 if dy >= 0 else self.canvas_h - self.h - 1
            return x0 + dx * self.cam_px * t, y0 + dy * self.cam_px * t, 1.0
        if seg.camera == "zoom_in":
            scale = max(1.0, _MAX_ZOOM / self.zoom_rate**t)
        elif seg.camera == "zoom_out":
            scale = min(_MAX_ZOOM, self.zoom_rate**t)
        else:
            return 0.0, 0.0, 1.0
        return (self.canvas_w - self.w * scale) / 2, (self.canvas_h - self.h * scale) / 2, scale

    def shape_center(self, t: int) -> tuple[float, float]:
        """Shape centre in output pixels at frame t (static camera), wrapping around the frame."""
        dx, dy = DIRECTION_VECTORS[self.seg.direction]
        step = self.seg.speed * self.w * t
        span_x, span_y = self.w + self.size, self.h + self.size
        x = (self.shape_start[0] + dx * step + self.size / 2) % span_x - self.size / 2
        y = (self.shape_start[1] + dy * step + self.size / 2) % span_y - self.size / 2
        return x, y

    def frame(self, t: int) -> np.ndarray:
        import cv2

        seg = self.seg
        if seg.black:
            return np.zeros((self.h, self.w, 3), np.uint8)
        x0, y0, scale = self.crop(t)
        if scale == 1.0:
            xi, yi = int(round(x0)), int(round(y0))
            xi = min(max(xi, 0), self.canvas_w - self.w)
            yi = min(max(yi, 0), self.canvas_h - self.h)
            img = self.canvas[yi : yi + self.h, xi : xi + self.w].copy()
        else:
            # sub-pixel crop + resize via one affine warp: smooth zooms without jitter
            m = np.array([[1 / scale, 0, -x0 / scale], [0, 1 / scale, -y0 / scale]], np.float32)
            img = cv2.warpAffine(self.canvas, m, (self.w, self.h), flags=cv2.INTER_LINEAR)
        if seg.shape:
            cx, cy = self.shape_center(t)
            size = self.size
            if seg.camera in ("zoom_in", "zoom_out"):
                # the shape lives in the scene: it grows and shrinks with the zoom about the centre
                mag = self.crop(0)[2] / scale
                size *= mag
                cx = self.w / 2 + (cx - self.w / 2) * mag
                cy = self.h / 2 + (cy - self.h / 2) * mag
            _draw_shape(img, seg.shape, cx, cy, size, COLORS[seg.color])
        if self.text_layout:
            fscale, thick, org = self.text_layout
            cv2.putText(
                img,
                seg.text,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                fscale,
                (0, 0, 0),
                _outline(thick, self.h),
                cv2.LINE_AA,
            )
            cv2.putText(
                img, seg.text, org, cv2.FONT_HERSHEY_SIMPLEX, fscale, (255, 255, 255), thick, cv2.LINE_AA
            )
        return img


# ---------------------------------------------------------------------------------------------
# Reels


def render(
    segments: list[Segment], width: int = 256, height: int = 192, fps: float = 24.0, seed: int = 0
) -> tuple[Iterator[np.ndarray], FootageTruth]:
    """Frames of the reel (a lazy iterator of (H, W, 3) uint8 RGB) and its truth."""
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"frame size {width}x{height}: width and height must be even and at least 16")
    if not segments:
        raise ValueError("render needs at least one Segment")
    for i, seg in enumerate(segments):
        if seg.transition == "dissolve" and i == 0:
            raise ValueError("the first segment cannot dissolve from nothing; use 'cut' or 'fade'")
        if seg.transition == "fade" and i > 0 and seg.transition_frames >= segments[i - 1].num_frames:
            raise ValueError(f"segment {i}: its fade is longer than the previous segment")

    truth = FootageTruth(
        width=width, height=height, fps=float(fps), num_frames=sum(s.num_frames for s in segments)
    )
    start = 0
    for i, seg in enumerate(segments):
        n = seg.transition_frames
        kind = "start" if i == 0 and seg.transition == "cut" else seg.transition
        if i > 0 and seg.transition == "cut":
            truth.cuts.append(start)
        elif seg.transition == "dissolve":
            truth.transitions.append(Transition("dissolve", start, start + n))
        elif seg.transition == "fade":
            truth.transitions.append(Transition("fade", start - n if i else start, start + n))
        box = _text_layout(seg.text, width, height)[2] if seg.text else None
        truth.segments.append(
            SegmentTruth(
                index=i,
                start=start,
                end=start + seg.num_frames,
                shape=None if seg.black else seg.shape,
                color=None if seg.black or not seg.shape else seg.color,
                direction="none" if seg.black or not seg.shape else seg.direction,
                background=None if seg.black else seg.background,
                camera="static" if seg.black else seg.camera,
                black=seg.black,
                text=seg.text,
                text_box=box,
                transition_in=kind,
                caption=caption_for(seg),
            )
        )
        start += seg.num_frames

    def frames() -> Iterator[np.ndarray]:
        prev: _SegmentRenderer | None = None
        for i, seg in enumerate(segments):
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            overrun = nxt.transition_frames if nxt is not None and nxt.transition == "dissolve" else 0
            cur = _SegmentRenderer(seg, width, height, seed, i, overrun)
            fade_out = nxt.transition_frames if nxt is not None and nxt.transition == "fade" else 0
            n = seg.transition_frames
            for t in range(seg.num_frames):
                img = cur.frame(t)
                if seg.transition == "dissolve" and t < n and prev is not None:
                    a = (t + 1) / (n + 1)
                    img = _blend(prev.frame(prev.seg.num_frames + t), img, a)
                elif seg.transition == "fade" and t < n:
                    img = _scale(img, (t + 1) / (n + 1))
                if fade_out and t >= seg.num_frames - fade_out:
                    k = t - (seg.num_frames - fade_out)  # 0 .. fade_out-1; reaches black on the last frame
                    img = _scale(img, (fade_out - 1 - k) / fade_out)
                yield img
            prev = cur

    return frames(), truth


def _blend(a: np.ndarray, b: np.ndarray, weight_b: float) -> np.ndarray:
    return (a.astype(np.float32) * (1 - weight_b) + b.astype(np.float32) * weight_b + 0.5).astype(np.uint8)


def _scale(img: np.ndarray, factor: float) -> np.ndarray:
    return (img.astype(np.float32) * factor + 0.5).astype(np.uint8)


def make_footage(
    segments: list[Segment], width: int = 256, height: int = 192, fps: float = 24.0, seed: int = 0
) -> tuple[np.ndarray, FootageTruth]:
    """The whole reel in memory: frames (T, H, W, 3) uint8 RGB, and its truth."""
    it, truth = render(segments, width, height, fps, seed)
    return np.stack(list(it)), truth


def render_shape_clip(
    shape: str = "circle",
    color: str = "red",
    direction: str = "right",
    background: str = "blue",
    num_frames: int = 16,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    camera: str = "static",
    speed: float = 0.04,
    shape_size: float = 0.3,
    textured: bool = True,
    start: tuple[float, float] | None = None,
) -> np.ndarray:
    """One shot of one shape, (num_frames, height, width, 3) uint8 RGB: the trainer's toy data.

    Its caption is `shape_caption(shape, color, direction, background, camera)`. `textured=False`
    paints the background flat (static camera only): at tiny sizes the texture's blobs are as large
    as the shape and swamp it. `start` places the shape's centre at frame 0 (fractions of width and
    height) instead of on the side it moves away from.
    """
    seg = Segment(
        num_frames, shape, color, direction, background, camera=camera, speed=speed, camera_speed=speed,
        shape_size=shape_size, start=start,
    )
    if textured:
        frames, _ = make_footage([seg], width, height, seed=seed)
        return frames
    if camera != "static":
        raise ValueError(f"render_shape_clip: a flat background needs camera='static', got {camera!r}")
    renderer = _SegmentRenderer(seg, width, height, seed, 0)  # the geometry make_footage gives segment 0
    renderer.canvas[:] = COLORS[background]
    return np.stack([renderer.frame(t) for t in range(num_frames)])


def shape_caption(shape: str, color: str, direction: str, background: str, camera: str = "static") -> str:
    return caption_for(Segment(1, shape, color, direction, background, camera=camera))


def random_segments(
    rng: np.random.Generator | int,
    total_frames: int,
    fps: float = 24.0,
    min_seconds: float = 1.5,
    max_seconds: float = 6.0,
) -> list[Segment]:
    """A varied reel of about `total_frames`: every shape, colour, direction, camera move and transition,
    plus the odd static, black or captioned shot."""
    rng = np.random.default_rng(rng)
    segs: list[Segment] = []
    used = 0
    names = [c for c in COLORS if c != "black"]
    while used < total_frames:
        n = int(rng.integers(int(min_seconds * fps), int(max_seconds * fps) + 1))
        n = min(n, total_frames - used) if total_frames - used >= int(min_seconds * fps) else n
        bg, col = (str(c) for c in rng.choice(names, 2, replace=False))
        roll = rng.random()
        kwargs: dict = {}
        if segs and roll < 0.15:
            t = int(min(n // 3, segs[-1].num_frames // 3, 12))
            kwargs = {"transition": str(rng.choice(["dissolve", "fade"])), "transition_frames": max(1, t)}
        kind = rng.random()
        if kind < 0.06:
            seg = Segment(n, black=True, **kwargs)
        else:
            direction = "none" if kind < 0.14 else str(rng.choice(DIRECTIONS[:4]))
            camera = str(rng.choice(CAMERA_MOVES)) if rng.random() < 0.4 else "static"
            text = "SAMPLE TEXT" if rng.random() < 0.1 else None
            seg = Segment(n, str(rng.choice(SHAPES)), col, direction, bg, camera=camera, text=text, **kwargs)
        segs.append(seg)
        used += n
    return segs


# ---------------------------------------------------------------------------------------------
# Writing (the kernel's one encoder set-up: `write_video` is `curation.core.video.write_video`)


def write_footage(
    path: Path | str,
    segments: list[Segment],
    width: int = 256,
    height: int = 192,
    fps: float = 24.0,
    seed: int = 0,
    codec: str = "h264",
) -> FootageTruth:
    """Render a reel straight to a video file (streaming: any length fits in memory); returns its truth."""
    frames, truth = render(segments, width, height, fps, seed)
    write_video(path, frames, fps, codec)
    return truth
