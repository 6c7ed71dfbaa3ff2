"""Curation on a two-node Ray cluster whose worker node dies mid-run: the run completes, nothing lost."""

import threading

import pytest
from rich.console import Console

from curation.config import CurateConfig
from curation.core.config import load_yaml
from curation.core.rundir import RunDir
from curation.inputs import resolve_inputs
from workflows.curate import curate
from workflows.report import funnel

pytestmark = pytest.mark.slow


def _warm_up(node_id: str, workers: int) -> None:
    """Start the node's worker processes with rushes imported, so it takes work as fast as the head."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=1)
    def imports() -> str:
        import curation.process  # noqa: F401
        import workflows.curate  # noqa: F401

        return ray.get_runtime_context().get_node_id()

    on_node = imports.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
    assert ray.get([on_node.remote() for _ in range(workers)]) == [node_id] * workers


def test_worker_node_killed_mid_run(baseline, ray_cluster, footage_dir, test_config, tmp_path, manifest_rows):
    base_out, base_result = baseline
    assert base_result.exit_code == 0, base_result.output
    worker = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()
    _warm_up(worker.node_id, 2)

    out = tmp_path / "out"
    inputs = [str(footage_dir / "reels"), str(footage_dir / "broken")]
    sources = resolve_inputs(inputs)
    seen = {"before_kill": [], "after_kill": []}
    lock = threading.Lock()

    def kill_worker_node_after_its_first_source(result: dict) -> None:
        # called in the driver as each source finishes: the node dies while it still has work in flight
        with lock:
            if not seen["after_kill"] and result["node"] == worker.node_id and "killed" not in seen:
                seen["killed"] = len(seen["before_kill"]) + 1
                ray_cluster.remove_node(worker, allow_graceful=False)  # SIGKILL: raylet and its workers
            seen["after_kill" if "killed" in seen else "before_kill"].append(result)

    outcome = curate(out, inputs, load_yaml(test_config, CurateConfig), workers=4,
                     console=Console(file=open(tmp_path / "log.txt", "w")),  # noqa: SIM115
                     on_result=kill_worker_node_after_its_first_source)

    assert "killed" in seen, "no source ran on the worker node, so its death tested nothing"
    assert seen["killed"] < len(sources), "the node must die mid-run for this test to mean anything"
    assert outcome.completed, outcome.failed
    # every source finished exactly once, with the same clips as the one-node run
    assert manifest_rows(out) == manifest_rows(base_out, set(sources))
    f = funnel(RunDir(out))
    assert f.inputs == len(sources) and f.detected == f.kept + f.filtered
