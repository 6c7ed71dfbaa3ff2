"""Generation modes beyond text-to-video: what the video must contain, and where sampling starts.

Two ideas cover every mode of Sora's report that rushes offers:

- `Given`: a pixel canvas the size of the output and a mask of its known pixels. The canvas is
  encoded by the autoencoder; every latent cell whose pixels are all known is kept at every sampler
  step (replaced by the known latents noised to that step's time), and at the end it is exactly the
  autoencoder's latent, so the known region comes back as the autoencoder's reconstruction of it.
  Image-to-video and forward extension (known first frames), backward extension (known last
  frames), in-betweening (both ends), inpainting (a region mask) and outpainting (a padded canvas)
  are canvases and masks. A DiT trained with frame conditioning also reads whole known latent frames
  as conditions.
- `Start`: SDEdit. Sampling starts at time `strength` from the given video's latents (or a weighted
  blend of two videos' latents) noised to that time, instead of from pure noise at t = 1, and
  denoises under the new prompt. Strength 0 returns the reconstruction, 1 a fresh sample.
  With a `source_prompt` (what the video shows now) the edit is confined to a region, as DiffEdit
  does: the latent cells where the DiT's velocities under the two prompts differ most are
  regenerated, every other cell is kept as known (`training.sample.edit_region`). Plain SDEdit
  cannot keep an object's place when its new colour's latent is unlike its old one: under the new
  prompt the old object is evidence against the new one at its place, so the sampler moves it.

Frames of a given video are resized to the output's height x width, and cut or padded (the last
frame repeated) to its length; `fit` says when it had to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Given:
    """The pixels the video must contain: `video` (T, H, W, 3) uint8 at the output size, `known` (T, H, W) bool."""

    video: np.ndarray
    known: np.ndarray


@dataclass
class Start:
    """Start sampling at t = `strength` from a blend of videos (T, H, W, 3) uint8 with these weights;
    with `source_prompt`, only the region where it and the prompt disagree is sampled."""

    videos: list[np.ndarray]
    weights: list[float]
    strength: float
    source_prompt: str | None = None


def fit(video: np.ndarray, frames: int, height: int, width: int, what: str = "video",
        notes: list[str] | None = None) -> np.ndarray:
    """`video` (k, h, w, 3) as exactly (frames, height, width, 3): resized, then cut or padded with its last frame."""
    video = np.asarray(video, dtype=np.uint8)
    if video.ndim == 3:
        video = video[None]
    if video.ndim != 4 or video.shape[-1] != 3 or len(video) == 0:
        raise ValueError(f"{what} must be RGB frames (k, H, W, 3), got shape {video.shape}")
    changed = []
    if video.shape[1:3] != (height, width):
        changed.append(f"resized {video.shape[2]}x{video.shape[1]} -> {width}x{height}")
        video = resize(video, height, width)
    if len(video) != frames:
        changed.append(f"{'cut' if len(video) > frames else 'padded'} {len(video)} -> {frames} frames")
        video = video[:frames] if len(video) > frames else np.concatenate(
            [video, np.repeat(video[-1:], frames - len(video), axis=0)])
    if changed and notes is not None:
        notes.append(f"{what}: " + ", ".join(changed))
    return video


def resize(video: np.ndarray, height: int, width: int) -> np.ndarray:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------
# Canvases


def given_ends(frames: int, height: int, width: int, first: np.ndarray | None = None,
               last: np.ndarray | None = None, notes: list[str] | None = None, temporal_factor: int = 1) -> Given:
    """Known frames at the start (image-to-video, extension), at the end (backward extension), or both
    (in-betweening). Each is resized to the output size and cut to leave a frame to make (the first to
    half the video when both are given, the last to what the first leaves).

    A latent frame after the first stands for `temporal_factor` pixel frames, and only wholly known
    ones are kept, so known last frames are made to start on such a boundary: a last image (or a
    chunk shorter than a latent frame) is held over the frames before it, a longer chunk loses its
    first frames up to the next boundary."""
    if frames < 2:
        raise ValueError("given first or last frames need a video of at least 2 frames: raise --frames")
    room = frames - 1 if last is None else max(1, (frames - 1) // 2)  # both: the first takes at most half
    first = None if first is None else fit(first, min(len(first), room), height, width, "first frames", notes)
    room = frames - 1 - (0 if first is None else len(first))
    last = None if last is None else fit(last, min(len(last), room), height, width, "last frames", notes)
    start = None if last is None else frames - len(last)
    if start is not None and temporal_factor > 1 and (start - 1) % temporal_factor:
        if len(last) < temporal_factor:  # too short to fill a latent frame: hold its first frame before it
            held = start - (1 + (start - 1) // temporal_factor * temporal_factor)
            last = np.concatenate([np.repeat(last[:1], held, axis=0), last])
            change = f"the first held over {held} more frames"
        else:  # start it at the next latent frame
            cut = 1 + (start - 1) // temporal_factor * temporal_factor + temporal_factor - start
            last, change = last[cut:], f"the first {cut} left out"
        if notes is not None:
            notes.append(f"last frames: {change}, so they fill whole latent frames of {temporal_factor}")
    given = (0 if first is None else len(first)) + (0 if last is None else len(last))
    if given >= frames:
        raise ValueError(f"the given first and last frames ({given}) fill the whole {frames}-frame video: "
                         "ask for more --frames, or give fewer frames")
    anchor = first[0] if first is not None else last[0]
    video = np.repeat(anchor[None], frames, axis=0)  # unknown frames hold a neutral copy; they are generated
    known = np.zeros((frames, height, width), dtype=bool)
    if first is not None:
        video[: len(first)], known[: len(first)] = first, True
    if last is not None:
        video[frames - len(last):], known[frames - len(last):] = last, True
    return Given(video, known)


def given_inpaint(video: np.ndarray, regenerate: np.ndarray, frames: int, height: int, width: int,
                  notes: list[str] | None = None) -> Given:
    """Keep `video` except where `regenerate` (H, W) or (T, H, W) is True (a mask image's white pixels)."""
    video = fit(video, frames, height, width, "video", notes)
    mask = np.asarray(regenerate, dtype=bool)
    if mask.ndim == 2:
        mask = np.repeat(mask[None], frames, axis=0)
    if mask.shape[1:] != (height, width):
        mask = resize(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1), height, width)[..., 0] > 127
    if len(mask) != frames:
        mask = fit(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1), frames, height, width)[..., 0] > 127
    if not mask.any():
        raise ValueError("the mask marks nothing to regenerate: paint the region to regenerate white")
    return Given(video, ~mask)


def given_outpaint(video: np.ndarray, pad: tuple[int, int, int, int], frames: int, notes: list[str] | None = None
                   ) -> tuple[Given, int, int]:
    """`video` at its own size in the middle of a canvas grown by `pad` (left, top, right, bottom) pixels;
    the padding is generated. Returns the canvas and its (height, width)."""
    left, top, right, bottom = pad
    if min(pad) < 0 or not any(pad):
        raise ValueError(f"--pad {','.join(map(str, pad))}: give four pixel counts (left,top,right,bottom), "
                         "none negative, at least one above 0")
    video = np.asarray(video, dtype=np.uint8)
    h, w = video.shape[1:3]
    video = fit(video, frames, h, w, "video", notes)
    height, width = h + top + bottom, w + left + right
    canvas = np.pad(video, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="edge")
    known = np.zeros((frames, height, width), dtype=bool)
    known[:, top: top + h, left: left + w] = True
    return Given(canvas, known), height, width


# ---------------------------------------------------------------------------------------------
# From pixels to latent cells


def latent_known(known: np.ndarray, temporal_factor: int, spatial_factor: int, latent_shape: tuple[int, int, int]
                 ) -> np.ndarray:
    """(t, h, w) bool over the latent grid: True where every pixel a cell stands for is known.

    Latent frame 0 is pixel frame 0; latent frame j > 0 stands for frames 1 + (j-1)*ft .. j*ft (the
    causal autoencoder's layout). Pixels beyond the canvas (the padding up to the factors) do not
    count against a cell."""
    lt, lh, lw = latent_shape
    frames, height, width = known.shape
    out = np.zeros(latent_shape, dtype=bool)
    for j in range(lt):
        span = range(0, 1) if j == 0 else range(1 + (j - 1) * temporal_factor, j * temporal_factor + 1)
        span = [f for f in span if f < frames]
        if not span:
            continue
        frame_known = known[span].all(axis=0)  # (H, W)
        for y in range(lh):
            for x in range(lw):
                cell = frame_known[y * spatial_factor: (y + 1) * spatial_factor,
                                   x * spatial_factor: (x + 1) * spatial_factor]
                out[j, y, x] = cell.size > 0 and bool(cell.all())
    return out
