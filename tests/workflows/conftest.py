"""Shared fixtures of the workflow tests: one Ray cluster for the whole session, and the footage they curate.

Ray start-ups are the slow part of these tests, so every test that needs Ray joins one cluster
(`ray.cluster_utils.Cluster`, a real head node in its own processes). The node-failure test adds a
second node to it and kills that node; the kill -9 test runs `rushes curate` in a subprocess that
joins it with --ray-address.
"""

import logging
import shutil
from pathlib import Path

import pytest

from curation.core.rundir import RunDir, read_manifest

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
TEST_CONFIG = """\
extract:
  max_side: 96
  thumb_side: 96
"""


@pytest.fixture(scope="session")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "object_store_memory": 128 << 20},
    )
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def footage_dir(tmp_path_factory):
    """Six short generated reels (resume and cluster tests) plus broken files."""
    from workflows.generate import generate_footage
    from workflows.workflow import GenerateConfig

    root = tmp_path_factory.mktemp("footage")
    generate_footage(GenerateConfig(out_dir=root / "reels", reels=6, seconds=3, width=128, height=96, seed=7))
    broken = root / "broken"
    broken.mkdir()
    (broken / "empty.mp4").write_bytes(b"")
    (broken / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    reel = (root / "reels" / "reel_0007.mp4").read_bytes()
    (broken / "truncated.mp4").write_bytes(reel[: len(reel) // 3])
    return root


@pytest.fixture(scope="session")
def test_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "curate.yaml"
    path.write_text(TEST_CONFIG)
    return path


@pytest.fixture(scope="session")
def real_clips(tmp_path_factory):
    """Two real opencv-doc clips (the broken one included), copied so their paths are ours."""
    if not (OPENCV_DATA / "Megamind_bugy.avi").exists():
        pytest.skip("Debian's opencv-doc is not installed (make install adds it)")
    root = tmp_path_factory.mktemp("real")
    for name in ("Megamind_bugy.avi", "tree.avi"):
        shutil.copy(OPENCV_DATA / name, root / name)
    return root


@pytest.fixture(scope="session")
def baseline(ray_cluster, footage_dir, real_clips, test_config, tmp_path_factory):
    """One uninterrupted `rushes curate` through the CLI: the run every other run is compared with."""
    from typer.testing import CliRunner

    from workflows.cli import app

    out = tmp_path_factory.mktemp("baseline") / "out"
    args = ["curate", str(footage_dir), str(real_clips / "Megamind_bugy.avi"), str(real_clips / "tree.avi"),
            "--out", str(out), "--config", str(test_config)]
    result = CliRunner().invoke(app, args)
    return out, result


@pytest.fixture(scope="session")
def manifest_rows():
    return _manifest_rows


def _manifest_rows(out: Path, sources=None) -> dict[str, dict]:
    """Manifest rows by clip id (creation times left out: they differ between runs by design)."""
    rows = read_manifest(RunDir(out)).to_pylist()
    if sources is not None:
        rows = [r for r in rows if r["source"] in sources]
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a clip id appears twice in the manifest"
    return {r["clip_id"]: {k: v for k, v in r.items() if k != "created_at"} for r in rows}
