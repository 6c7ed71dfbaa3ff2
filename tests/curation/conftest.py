"""Shared curation test data: generated reels with known truth, broken files, the opencv-doc clips."""

from pathlib import Path

import numpy as np
import pytest

from workflows.synthetic.footage import Segment, make_footage, write_video

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_CLIPS = {
    name: OPENCV_DATA / name for name in ("Megamind.avi", "Megamind_bugy.avi", "tree.avi", "vtest.avi")
}


def _opencv_clip(name: str) -> Path:
    path = OPENCV_CLIPS[name]
    if not path.exists():
        pytest.skip(f"{path} missing: install Debian's opencv-doc (make install does)")
    return path


@pytest.fixture
def opencv_clip():
    """`opencv_clip("Megamind.avi")` is the path of that opencv-doc clip (skips when not installed)."""
    return _opencv_clip


def write_broken_files(folder: Path) -> dict[str, Path]:
    """One file per way an input can be unusable; each must be quarantined, never crash a run."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["zero_bytes"] = folder / "empty.mp4"
    files["zero_bytes"].write_bytes(b"")
    files["text"] = folder / "notes.txt"
    files["text"].write_text("these are my notes, not a video\n" * 50)
    files["random_bytes"] = folder / "noise.mp4"
    files["random_bytes"].write_bytes(np.random.default_rng(0).bytes(200_000))
    files["audio_only"] = folder / "tone.wav"
    with av.open(str(files["audio_only"]), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=8000)
        tone = (np.sin(np.arange(8000) / 8000 * 440 * 2 * np.pi) * 8000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    frames, _ = make_footage([Segment(24, "circle", "red", "right", "blue")], 128, 96)
    whole = folder / "whole.mp4"
    write_video(whole, frames)
    data = whole.read_bytes()
    files["truncated"] = folder / "truncated.mp4"  # mp4's index (moov) sits at the end: it is cut off
    files["truncated"].write_bytes(data[: len(data) // 2])
    whole.unlink()
    return files


@pytest.fixture(scope="session")
def broken_files(tmp_path_factory) -> dict[str, Path]:
    return write_broken_files(tmp_path_factory.mktemp("broken"))


# A reel with one segment per thing the scores must recognise, hard cuts between them.
REEL_SEGMENTS = [
    Segment(36, "circle", "red", "right", "blue"),
    Segment(36, "square", "yellow", "none", "green", camera="pan_right"),
    Segment(36, "triangle", "white", "none", "purple", camera="pan_left"),
    Segment(36, "circle", "orange", "none", "cyan", camera="tilt_up"),
    Segment(36, "square", "pink", "none", "brown", camera="tilt_down"),
    Segment(36, "circle", "yellow", "none", "blue", camera="zoom_in"),
    Segment(36, "triangle", "red", "none", "gray", camera="zoom_out"),
    Segment(36, "square", "white", "none", "green"),  # nothing moves: static
    Segment(36, black=True),
    Segment(36, "circle", "green", "left", "yellow", text="BREAKING NEWS"),
]


@pytest.fixture(scope="session")
def reel(tmp_path_factory):
    """(path, truth, manifest rows) of REEL_SEGMENTS written as h264 and analysed once."""
    from curation.config import CurateConfig
    from curation.process import analyze_source
    from workflows.synthetic.footage import write_footage

    path = tmp_path_factory.mktemp("reel") / "reel.mp4"
    truth = write_footage(path, REEL_SEGMENTS, 256, 192, fps=24, seed=3)
    rows = analyze_source("reel.mp4", path, CurateConfig())
    return path, truth, rows
