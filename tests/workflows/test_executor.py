"""The one executor: any stage over rows, in this process or on Ray Data (tasks or an actor pool)."""

from __future__ import annotations

import os

import pytest

from curation.core.stage import Stage, map_in_process
from workflows.executor import map_stage, pool_size


def make_stage(stateful: bool, num_gpus: float = 0, batch_size: int = 2) -> Stage:
    class Double(Stage):
        """Doubles `x`; counts its set-ups in a file per process, so a test can see who set up."""

        name = "double"

        def __init__(self, marks: str | None = None):
            self.marks, self.ready = marks, False

        def setup(self) -> None:
            if self.marks and not self.ready:
                with open(os.path.join(self.marks, f"setup-{os.getpid()}"), "a") as f:
                    f.write("x")
            self.ready = True

        def __call__(self, batch: list[dict]) -> list[dict]:
            assert self.ready, "an executor calls setup before the first batch"
            return [{"x": row["x"] * 2, "batch": len(batch), "node": None} for row in batch]

    Double.stateful, Double.num_gpus, Double.batch_size = stateful, num_gpus, batch_size
    return Double


def test_pool_size_follows_the_stage_and_the_cluster():
    cpu_stage, gpu_stage = make_stage(True)(), make_stage(True, num_gpus=1)()
    assert pool_size(cpu_stage, rows=100, workers=None, cluster_cpus=8, cluster_gpus=0) == 8
    assert pool_size(cpu_stage, rows=3, workers=None, cluster_cpus=8, cluster_gpus=0) == 2  # 2 batches of 2
    assert pool_size(gpu_stage, rows=100, workers=None, cluster_cpus=16, cluster_gpus=4) == 4  # one per GPU
    two_gpus = make_stage(True, num_gpus=2)()
    assert pool_size(two_gpus, rows=100, workers=8, cluster_cpus=16, cluster_gpus=4) == 2  # never more than fit
    assert pool_size(gpu_stage, rows=100, workers=None, cluster_cpus=16, cluster_gpus=0) == 16  # no GPU: CPUs
    vlm = make_stage(True, num_gpus=1)()
    vlm.copies_without_gpu = 1
    assert pool_size(vlm, rows=100, workers=None, cluster_cpus=16, cluster_gpus=0) == 1  # one VLM on CPUs
    assert pool_size(vlm, rows=100, workers=None, cluster_cpus=16, cluster_gpus=4) == 4  # one per GPU
    assert pool_size(cpu_stage, rows=100, workers=3, cluster_cpus=16, cluster_gpus=0) == 3


def test_in_process_runs_batches_after_one_setup(tmp_path):
    stage = make_stage(True, batch_size=2)(str(tmp_path))
    rows = [{"x": i} for i in range(5)]
    assert [r["x"] for r in map_in_process(stage, rows)] == [0, 2, 4, 6, 8]
    seen = []
    out = map_stage(make_stage(True, batch_size=2)(str(tmp_path)), rows, "doubling", use_ray=False, progress=False,
                    on_output=lambda row: seen.append(row["x"]))
    assert [r["batch"] for r in out] == [2, 2, 2, 2, 1] and seen == [0, 2, 4, 6, 8]
    assert [p.read_text() for p in tmp_path.iterdir()] == ["xx"]  # one process, one set-up per stage
    assert map_stage(stage, [], "nothing", use_ray=False) == []


@pytest.mark.slow
def test_on_ray_actors_set_up_once_and_tasks_run_stateless_stages(tmp_path):
    from workflows.raysession import ray_session

    rows = [{"x": i} for i in range(12)]
    actors, tasks = tmp_path / "actors", tmp_path / "tasks"
    actors.mkdir()
    tasks.mkdir()
    with ray_session(num_cpus=2):
        out = map_stage(make_stage(True, batch_size=2)(str(actors)), rows, "actors", workers=2, progress=False)
        assert sorted(r["x"] for r in out) == [2 * i for i in range(12)]
        assert all(r["node"] for r in out)  # filled in by the worker that ran it
        # an actor pool of 2: at most two set-ups for six batches
        assert 1 <= len(list(actors.iterdir())) <= 2 and all(p.read_text() == "x" for p in actors.iterdir())
        out = map_stage(make_stage(False, batch_size=3)(str(tasks)), rows, "tasks", workers=2, progress=False)
        assert sorted(r["x"] for r in out) == [2 * i for i in range(12)] and {r["batch"] for r in out} == {3}
        assert sum(len(p.read_text()) for p in tasks.iterdir()) == 4  # a stateless stage: set up per task
