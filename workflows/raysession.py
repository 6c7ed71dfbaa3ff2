"""Starting (or joining) Ray quietly, so the user's terminal shows rushes' progress and nothing else.

Local Ray on this machine's cores by default; `address` (or the RAY_ADDRESS environment variable)
joins a running cluster instead. Worker logs stay in Ray's session directory (/tmp/ray/session_*/logs)
rather than being echoed to the terminal, the dashboard is not started, and Ray Data's own progress
bars are off: the workflow draws one progress display of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

# Ray reads these when it is imported or started; they keep it off the network and quiet.
_QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # The driver's C++ core worker prints to the terminal; its one routine line at actor-pool start
    # ("constructor arguments in the object store") is about Ray Data internals. Real failures still
    # surface as Python exceptions, and every process's full log stays in Ray's session directory.
    "RAY_BACKEND_LOG_LEVEL": "fatal",
}
_LOCAL_OBJECT_STORE_BYTES = 256 << 20  # the pipeline moves paths and counts, never frames


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: the argument, else RAY_ADDRESS, else None for a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of a `with` block; an already running Ray (tests, notebooks) is reused."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        _quiet_ray_data()
        logging.getLogger("ray").setLevel(logging.ERROR)
        yield
        return
    # Ray's warnings (token auth set-up, progress bars off, ...) are about Ray, not about the user's run
    common = {"log_to_driver": False, "logging_level": logging.ERROR}
    address = cluster_address(address)
    try:
        if address:  # a running cluster (host:port, "auto", or a Ray Client ray://host:10001) keeps its settings
            ray.init(address=address, **common)
        else:
            ray.init(address="local", num_cpus=num_cpus, object_store_memory=_LOCAL_OBJECT_STORE_BYTES,
                     include_dashboard=False, **common)
    except ConnectionError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r} ({e}); check --ray-address / "
                              f"RAY_ADDRESS, or leave both unset to run on this machine") from e
    _quiet_ray_data()
    try:
        yield
    finally:
        ray.shutdown()


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    for name in ("ray", "ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)


def total_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
