"""Per-clip scores, computed from the signals one analysis pass collected (`ClipSignals`).

- motion: Farnebäck optical flow on up to `flow_samples` gray frame pairs spread over the clip, each
  pair two new pictures (repeats of the frame before skipped) `shots.MOTION_INTERVAL_S` or more
  apart; `motion_score` is the mean speed and `motion_p90` the largest 90th percentile of per-pixel
  speeds, both in frame lengths (the longer side) per second of real time, so they mean the same at
  any frame rate and resolution (1.0: the picture moves its own width in a second).
- camera motion: the global flow field of each pair (in the same unit) is reduced to a translation
  (median flow) and a zoom rate (median radial flow about the centre). A camera panning right makes the content move
  left, tilting up makes it move down, zooming in makes it spread outwards. The label is static,
  pan_left, pan_right, tilt_up, tilt_down, zoom_in, zoom_out, or mixed when the pairs disagree or
  no one component dominates; the confidence is agreement between pairs times dominance.
- luminance: mean luma (0..255) over every frame; fractions of black and blown-out frames.
- sharpness: variance of the Laplacian of sampled frames at analysis size.
- colourfulness: Hasler and Suesstrunk's metric (2003) over the same frames: the spread and mean of
  the opponent channels rg = R - G and yb = (R + G) / 2 - B, sqrt(sd_rg² + sd_yb²) + 0.3 sqrt(mean_rg²
  + mean_yb²), on 0..255 values. 0 for gray footage; their scale calls 15 slightly, 33 moderately,
  59 quite and 109 extremely colourful.
- text: burnt-in text area via tesseract (tesserocr, the model loaded once per process) reading a
  low-saturation image of the frame (captions are colourless, scenes mostly not): the fraction of
  the frame covered by plausible word boxes above `text_min_confidence`, averaged over
  `text_samples` frames. With `text_prefilter`, frames without text-like edge bands skip OCR.
  Measured quality is in docs/curation.md.
- dominant colours: the palette names (`curation.core.vocab.COLORS`, which the test footage is
  painted with) nearest to the sampled pixels in Lab space, most frequent first, those covering at
  least 8% of the pixels.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from pathlib import Path

import numpy as np

from curation.config import AnalysisConfig
from curation.core import schema
from curation.core.video import spread_indices
from curation.core.vocab import COLORS
from curation.signals import ClipSignals

M = schema.M
_MIN_COLOR_SHARE = 0.08
_MAX_COLORS = 3
_MIN_FLOW_PAIRS = 4  # fewer pairs make the camera-motion vote too coarse
_AGREEMENT_FOR_LABEL = 0.6  # below this share of agreeing pairs (or dominance), the move is "mixed"


# ---------------------------------------------------------------------------------------------
# Motion and camera motion


def pair_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense Farnebäck flow (H, W, 2) from gray frame a to gray frame b."""
    import cv2

    # 2 pyramid levels, 1 iteration: at 128 px this follows 0.5-10 px/frame well, at a third of the cost
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 11, 1, 5, 1.1, 0)


@functools.lru_cache(maxsize=8)
def _radial_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Centred coordinates of the pixels away from the centre (xs, ys, r², mask) and mean radius."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs -= (w - 1) / 2
    ys -= (h - 1) / 2
    r2 = xs * xs + ys * ys
    radius = np.sqrt(r2)
    ring = radius > 0.25 * radius.max()  # the centre says nothing about zoom
    return xs[ring], ys[ring], r2[ring], ring, float(radius.mean())


def global_motion(flow: np.ndarray) -> tuple[float, float, float]:
    """(tx, ty, zoom) of a flow field: median translation, and the median radial flow at the
    frame's mean radius after removing it (positive: content spreads out, i.e. zooming in)."""
    h, w = flow.shape[:2]
    u, v = flow[..., 0], flow[..., 1]
    tx, ty = float(np.median(u)), float(np.median(v))
    xs, ys, r2, ring, mean_radius = _radial_grid(h, w)
    rate = ((u[ring] - tx) * xs + (v[ring] - ty) * ys) / r2
    return tx, ty, float(np.median(rate) * mean_radius)


def camera_label(tx: float, ty: float, zoom: float, static_px: float) -> tuple[str, float]:
    """Label of one global motion (content moves by tx, ty; zoom > 0 spreads out) and its dominance."""
    parts = {"x": abs(tx), "y": abs(ty), "zoom": abs(zoom)}
    main = max(parts, key=parts.get)
    if parts[main] < static_px:
        return "static", 1.0
    dominance = parts[main] / sum(parts.values())
    if main == "x":
        return ("pan_right" if tx < 0 else "pan_left"), dominance
    if main == "y":
        return ("tilt_down" if ty < 0 else "tilt_up"), dominance
    return ("zoom_in" if zoom > 0 else "zoom_out"), dominance


def flow_pair_count(signals: ClipSignals, cfg: AnalysisConfig) -> int:
    """Flow pairs for a clip, relative to its length: one per second, at least
    `_MIN_FLOW_PAIRS`, at most `flow_samples` (a 2 s shot needs fewer than a 20 s one)."""
    seconds = max(0.0, signals.end_time - signals.start_time)
    return min(cfg.flow_samples, max(_MIN_FLOW_PAIRS, math.ceil(seconds)))


def _at_flow_size(signals: ClipSignals, *grays: np.ndarray) -> list[np.ndarray]:
    """The analysis keeps grays at flow level (up to twice flow size): resize the pairs flow reads."""
    import cv2

    if signals.flow_size is None:
        return list(grays)
    w, h = signals.flow_size
    # less than 2x larger: one bilinear step is enough (and much cheaper than a fractional area average)
    return [g if g.shape == (h, w) else cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR) for g in grays]


def motion_scores(signals: ClipSignals, cfg: AnalysisConfig) -> dict:
    """Motion in frame lengths per second: flow between frames a fixed time apart (new pictures
    only), divided by that time and by the frame's longer side, so the same scene scores the same
    at any frame rate and resolution."""
    pairs = [s for s in signals.samples if s.next_flow_gray is not None and (s.next_time or 0) > s.time]
    pairs = [pairs[i] for i in spread_indices(len(pairs), flow_pair_count(signals, cfg))]
    if not pairs:  # a clip too short for a pair, or that never changes: no motion can be measured
        return {
            M.motion_score: 0.0,
            M.motion_p90: 0.0,
            M.camera_motion: "static",
            M.camera_motion_confidence: 0.0,
        }
    means, p90s, moves = [], [], []
    for s in pairs:
        a, b = _at_flow_size(signals, s.flow_gray, s.next_flow_gray)
        flow = pair_flow(a, b) / ((s.next_time - s.time) * max(a.shape))  # frame lengths per second
        mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
        means.append(float(mag.mean()))
        p90s.append(float(np.percentile(mag, 90)))
        moves.append(global_motion(flow))
    tx, ty, zoom = (float(np.mean([m[i] for m in moves])) for i in range(3))
    label, dominance = camera_label(tx, ty, zoom, cfg.static_flow)
    per_pair = [camera_label(*m, cfg.static_flow)[0] for m in moves]
    agreement = per_pair.count(label) / len(per_pair)
    confidence = agreement * dominance
    if label != "static" and (agreement < _AGREEMENT_FOR_LABEL or dominance < _AGREEMENT_FOR_LABEL):
        label, confidence = "mixed", 1.0 - confidence
    return {
        M.motion_score: float(np.mean(means)),
        M.motion_p90: float(np.max(p90s)),
        M.camera_motion: label,
        M.camera_motion_confidence: round(float(confidence), 4),
    }


# ---------------------------------------------------------------------------------------------
# Luminance, sharpness, colours


def luminance_scores(signals: ClipSignals, cfg: AnalysisConfig) -> dict:
    luma = signals.luma
    return {
        M.luminance_mean: float(luma.mean()),
        M.black_fraction: float((luma < cfg.black_luma).mean()),
        M.bright_fraction: float((luma > cfg.bright_luma).mean()),
    }


def sharpness(bgr_frames: list[np.ndarray]) -> float:
    """Mean variance of the Laplacian of the frames' gray images (higher is sharper)."""
    import cv2

    values = [cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var() for f in bgr_frames]
    return float(np.mean(values)) if values else 0.0


def colorfulness(bgr_frames: list[np.ndarray]) -> float:
    """Mean Hasler-Suesstrunk colourfulness of the frames (0 for gray; see the module doc)."""
    values = []
    for frame in bgr_frames:
        b, g, r = (frame[..., i].astype(np.float32) for i in range(3))
        rg, yb = r - g, 0.5 * (r + g) - b
        values.append(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))
    return float(np.mean(values)) if values else 0.0


_PALETTE_NAMES = list(COLORS)


@functools.lru_cache(maxsize=1)
def _palette_lut() -> np.ndarray:
    """Index of the nearest palette colour (in Lab) for every BGR colour quantised to 5 bits."""
    import cv2

    levels = (np.arange(32, dtype=np.float32) * 8 + 4) / 255.0
    b, g, r = np.meshgrid(levels, levels, levels, indexing="ij")
    grid = np.stack([b, g, r], axis=-1).reshape(1, -1, 3)
    lab = cv2.cvtColor(grid, cv2.COLOR_BGR2Lab)[0]
    rgb = np.array([COLORS[n] for n in _PALETTE_NAMES], np.float32)[None] / 255.0
    palette = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[0]
    dist = ((lab[:, None, :] - palette[None]) ** 2).sum(axis=2)
    return dist.argmin(axis=1).astype(np.uint8).reshape(32, 32, 32)


def dominant_colors(bgr_frames: list[np.ndarray]) -> list[str]:
    """Palette names covering at least 8% of the sampled pixels, most frequent first (at most 3)."""
    if not bgr_frames:
        return []
    pixels = np.concatenate([f[::2, ::2].reshape(-1, 3) for f in bgr_frames]) >> 3
    names = _palette_lut()[pixels[:, 0], pixels[:, 1], pixels[:, 2]]
    counts = np.bincount(names, minlength=len(_PALETTE_NAMES)) / len(names)
    order = np.argsort(-counts)
    return [_PALETTE_NAMES[i] for i in order[:_MAX_COLORS] if counts[i] >= _MIN_COLOR_SHARE]


# ---------------------------------------------------------------------------------------------
# Burnt-in text


class TextDetectorUnavailable(RuntimeError):
    """The configured text detector cannot start; raised before any input is processed."""


_TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
)


def find_tessdata(configured: str | None) -> Path:
    candidates = [configured] if configured else [os.environ.get("TESSDATA_PREFIX"), *_TESSDATA_DIRS]
    for c in candidates:
        if c and (Path(c) / "eng.traineddata").exists():
            return Path(c)
    where = configured or ", ".join(str(c) for c in candidates if c)
    raise TextDetectorUnavailable(
        f"tesseract's English model (eng.traineddata) is not in {where}: install Debian's "
        "tesseract-ocr-eng (make install does), set analysis.tessdata to its folder, or set "
        "analysis.text_detector: none to skip text scoring"
    )


class TextDetector:
    """Burnt-in text via tesseract's C API (tesserocr): the model is loaded once per process."""

    def __init__(self, tessdata: Path, min_confidence: float, prefilter: bool = True):
        # Tesseract's own OpenMP threads fight the workers', so its runtime is capped at one thread. The cap
        # is an environment variable OpenMP reads once, as it loads: set it only for that moment. Left set,
        # it reached torch's OpenMP in the same process (and its children), whose kernels then ran 100x slower.
        previous = os.environ.get("OMP_THREAD_LIMIT")
        os.environ["OMP_THREAD_LIMIT"] = "1"
        try:
            import tesserocr

            self._api = tesserocr.PyTessBaseAPI(path=str(tessdata), lang="eng", psm=tesserocr.PSM.SPARSE_TEXT)
        finally:
            if previous is None:
                os.environ.pop("OMP_THREAD_LIMIT", None)
            else:
                os.environ["OMP_THREAD_LIMIT"] = previous
        self.min_confidence, self.prefilter = min_confidence, prefilter
        self._lock = threading.Lock()
        version = tesserocr.tesseract_version().split()[1]
        self.name = f"tesseract-{version}/eng/psm11/conf{int(min_confidence)}" + (
            "/prefilter" if prefilter else ""
        )

    def word_boxes(self, bgr: np.ndarray) -> list[tuple[int, int, int, int, str, float]]:
        """(x, y, w, h, text, confidence) of the words found above the confidence threshold.

        With the prefilter on, tesseract reads only the part of the frame that holds text-like
        regions, and is not called at all on a frame without any.
        """
        import tesserocr
        from PIL import Image

        x_off = y_off = 0
        full_height = bgr.shape[0]
        image = low_saturation(bgr)
        if self.prefilter:
            region = text_region(image)
            if region is None:
                return []
            x_off, y_off, w, h = region
            image = image[y_off : y_off + h, x_off : x_off + w]
        # (enlarging small frames 2x for tesseract was measured: a 1/30 recall gain for 2-3x the time)
        image = np.ascontiguousarray(image)
        level = tesserocr.RIL.WORD
        boxes = []
        with self._lock:
            self._api.SetImage(Image.fromarray(image))
            self._api.Recognize()
            iterator = self._api.GetIterator()
            words = tesserocr.iterate_level(iterator, level) if iterator is not None else []
            for word in words:
                try:
                    text = (word.GetUTF8Text(level) or "").strip()
                except RuntimeError:  # tesserocr's way of saying the page has no text
                    break
                conf = word.Confidence(level)
                box = word.BoundingBox(level)
                if box and conf >= self.min_confidence and _looks_like_a_word(text, box, full_height):
                    x0, y0, x1, y1 = box
                    boxes.append((x0 + x_off, y0 + y_off, x1 - x0, y1 - y0, text, float(conf)))
        return boxes

    def text_area(self, bgr: np.ndarray) -> float:
        """Fraction of the frame covered by the union of the word boxes."""
        mask = np.zeros(bgr.shape[:2], bool)
        for x, y, w, h, _text, _conf in self.word_boxes(bgr):
            mask[y : y + h, x : x + w] = True
        return float(mask.mean())


def low_saturation(bgr: np.ndarray) -> np.ndarray:
    """Gray image that is bright where the frame is colourless (white, gray or black) and dark where
    it is colourful: captions (white letters, black outline) stand out from coloured scenes, which
    a plain gray conversion can render at the letters' own brightness."""
    import cv2

    b, g, r = cv2.split(bgr)
    spread = cv2.subtract(cv2.max(cv2.max(b, g), r), cv2.min(cv2.min(b, g), r))
    return cv2.addWeighted(spread, -2.0, spread, 0.0, 255.0)  # 255 - 2 * spread, saturated


def text_region(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box (x, y, w, h) around every text-like region of a gray frame, or None without any.

    Text-like: strong, dense edges (morphological gradient above 80 levels) that merge, once
    closed horizontally, into a wide band 6 px to a fifth of the frame tall. About 1 ms at 256 px;
    a frame without such a band is not worth a tesseract call.
    """
    import cv2

    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, _KERNEL_3x3)
    edges = cv2.threshold(grad, 80, 255, cv2.THRESH_BINARY)[1]
    closed = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 3)))
    _n, _labels, stats, _centroids = cv2.connectedComponentsWithStats(closed, connectivity=8)
    height, width = gray.shape
    bands = [
        (x, y, w, h)
        for x, y, w, h, area in stats[1:].tolist()
        if 6 <= h <= height / 5 and w >= 2 * h and area >= 0.45 * w * h
    ]
    if not bands:
        return None
    # room around the letters for tesseract, and never a sliver (leptonica complains about those)
    pad = max(16, max(h for _x, _y, _w, h in bands))
    x0 = max(0, min(x for x, _y, _w, _h in bands) - pad)
    y0 = max(0, min(y for _x, y, _w, _h in bands) - pad)
    x1 = min(width, max(x + w for x, _y, w, _h in bands) + pad)
    y1 = min(height, max(y + h for _x, y, _w, h in bands) + pad)
    return x0, y0, x1 - x0, y1 - y0


_KERNEL_3x3 = np.ones((3, 3), np.uint8)


def _looks_like_a_word(text: str, box: tuple[int, int, int, int], frame_height: int) -> bool:
    """Tesseract reads texture as short 'words' (two letters, huge boxes): keep real-looking ones.

    At least 3 letters or digits, no taller than a fifth of the frame (burnt-in captions are far
    smaller), and a width per character between a quarter and 1.5 times the height.
    """
    chars = sum(ch.isalnum() for ch in text)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if chars < 3 or h <= 0 or h > frame_height / 5:
        return False
    return 0.25 <= (w / chars) / h <= 1.5


_detectors: dict[tuple, TextDetector] = {}
_detectors_lock = threading.Lock()


def get_text_detector(cfg: AnalysisConfig) -> TextDetector | None:
    """The process-wide text detector for `cfg` (None when text scoring is off)."""
    if cfg.text_detector == "none":
        return None
    key = (cfg.tessdata, cfg.text_min_confidence, cfg.text_prefilter)
    with _detectors_lock:
        if key not in _detectors:
            _detectors[key] = TextDetector(
                find_tessdata(cfg.tessdata), cfg.text_min_confidence, cfg.text_prefilter
            )
        return _detectors[key]


# ---------------------------------------------------------------------------------------------


def warm_up(cfg: AnalysisConfig) -> None:
    """Pay the per-process start-up costs now (a worker does this once, not per clip): the text
    model (~0.15 s) and the colour table (~0.1 s, mostly OpenCV's one-time Lab tables)."""
    get_text_detector(cfg)
    _palette_lut()


def score_clip(signals: ClipSignals, cfg: AnalysisConfig, text_detector: TextDetector | None) -> dict:
    """Every score column of one clip (manifest column names as keys)."""
    pictures = signals.pictures
    picked = [pictures[i][1] for i in spread_indices(len(pictures), cfg.text_samples)]
    row = {}
    row.update(motion_scores(signals, cfg))
    row.update(luminance_scores(signals, cfg))
    row[M.sharpness] = sharpness(picked)
    row[M.colorfulness] = colorfulness(picked)
    row[M.dominant_colors] = dominant_colors(picked)
    if text_detector is None:
        row[M.text_area], row[M.text_detector] = None, "none"
    else:
        areas = [text_detector.text_area(f) for f in picked]
        row[M.text_area] = float(np.mean(areas)) if areas else 0.0
        row[M.text_detector] = text_detector.name
    return row
