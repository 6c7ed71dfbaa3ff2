"""Fixtures: tiny random-weight models of the real classes (built once per session) and small runs."""

from __future__ import annotations

import pytest

from curation.core.rundir import RunDir, atomic_write_table, now_utc, rows_to_table
from curation.core.schema import MANIFEST, STATUS_FILTERED, STATUS_KEPT, M, clip_id_for
from workflows.synthetic.footage import render_shape_clip, write_video

# (shape, colour, direction, background, camera, luminance, motion) of the kept clips a run holds
CLIP_SPECS = [
    ("circle", "red", "right", "blue", "pan_left", 120.0, 0.12),
    ("square", "yellow", "up", "green", "static", 30.0, 0.03),
    ("triangle", "white", "left", "purple", "zoom_in", 200.0, 0.8),
]


@pytest.fixture(scope="session", autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    from workflows.synthetic.tiny_models import build_qwen2_5_vl

    return build_qwen2_5_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_idefics(tmp_path_factory):
    from workflows.synthetic.tiny_models import build_idefics3

    return build_idefics3(tmp_path_factory.mktemp("models") / "tiny-idefics3")


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    from workflows.synthetic.tiny_models import build_qwen2_lm

    return build_qwen2_lm(tmp_path_factory.mktemp("models") / "tiny-qwen2-lm")


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory):
    """Three short h264 clips (12 frames, 64x48) written once; runs copy them."""
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for i, (shape, color, direction, background, camera, _, _) in enumerate(CLIP_SPECS):
        frames = render_shape_clip(shape, color, direction, background, num_frames=12, height=48, width=64,
                                   seed=i, camera=camera)
        path = root / f"clip{i}.mp4"
        write_video(path, frames, fps=12.0)
        paths.append(path)
    return paths


def manifest_row(i: int, spec, clip_path: str | None, status: str = STATUS_KEPT) -> dict:
    _, color, _, background, camera, luminance, motion = spec
    return {
        M.clip_id: clip_id_for(f"source{i}", 0, 12), M.source: f"source{i}.mp4", M.source_fingerprint: f"source{i}",
        M.clip_index: 0, M.start_frame: 0, M.end_frame: 12, M.start_time: 0.0, M.end_time: 1.0,
        M.duration: 1.0, M.fps: 12.0, M.width: 64, M.height: 48, M.codec: "h264", M.camera_motion: camera,
        M.motion_score: motion, M.luminance_mean: luminance, M.dominant_colors: [background, color],
        M.status: status, M.filter_reasons: [] if status == STATUS_KEPT else ["static"],
        M.clip_path: clip_path, M.created_at: now_utc(),
    }


@pytest.fixture
def make_run(tmp_path, clip_files):
    """make_run(n) -> RunDir with n kept clips (n <= 3) and one filtered clip."""

    def make(n: int = 3) -> RunDir:
        run = RunDir(tmp_path / "run")
        rows = []
        for i in range(n):
            rel = f"clips/clip{i}.mp4"
            (run.root / "clips").mkdir(parents=True, exist_ok=True)
            (run.root / rel).write_bytes(clip_files[i].read_bytes())
            rows.append(manifest_row(i, CLIP_SPECS[i], rel))
        rows.append(manifest_row(9, CLIP_SPECS[0], None, STATUS_FILTERED))
        atomic_write_table(rows_to_table(rows, MANIFEST), run.manifest / "part-0.parquet")
        return run

    return make
