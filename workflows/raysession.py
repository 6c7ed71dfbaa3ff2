"""Starting (or joining) Ray quietly, so the user's terminal shows rushes' progress and nothing else.

Local Ray on this machine's cores by default; `address` (or the RAY_ADDRESS environment variable)
joins a running cluster instead. Worker logs stay in Ray's session directory (/tmp/ray/session_*/logs)
rather than being echoed to the terminal, the dashboard is not started, and Ray Data's own progress
bars are off: the workflow draws one progress display of its own. The one line Ray's C++ core prints
at every start goes nowhere, and a local Ray is watched by workflows/raywatch.py: if the driver is
killed (`kill -9`, the OOM killer) before it can shut Ray down, the watchdog ends every Ray process.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
# what Ray's C++ core prints straight to file descriptor 2 at every start, whatever the log level
_ROUTINE_CORE_LINE = re.compile(r"logging\.cc:\d+\S* Set ray log level")


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
    watchdog = None
    try:
        with _core_start_lines_caught():
            if address:  # a running cluster (host:port, "auto", or a Ray Client ray://host:10001) keeps its settings
                ray.init(address=address, **common)
            else:
                before = _children()
                ray.init(address="local", num_cpus=num_cpus, object_store_memory=_LOCAL_OBJECT_STORE_BYTES,
                         include_dashboard=False, **common)
                watchdog = _start_watchdog(_children() - before)
    except ConnectionError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r} ({e}); check --ray-address / "
                              f"RAY_ADDRESS, or leave both unset to run on this machine") from e
    _quiet_ray_data()
    try:
        yield
    finally:
        ray.shutdown()
        if watchdog is not None:
            watchdog.terminate()
            watchdog.wait()


@contextmanager
def _core_start_lines_caught() -> Iterator[None]:
    """Ray's C++ core writes a line to file descriptor 2 at every start ("logging.cc:303: Set ray log
    level ..."), past Python's sys.stderr: into the user's terminal, through the progress bar. Descriptor 2
    goes to a file while Ray starts; every other line caught is passed on to sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if line.strip() and not _ROUTINE_CORE_LINE.search(line):
                    print(line, file=sys.stderr)


def _children() -> set[int]:
    """This process's children (none where there is no /proc)."""
    if not os.path.isdir("/proc"):
        return set()
    from workflows.raywatch import process_table

    return {pid for pid, (parent, _) in process_table().items() if parent == os.getpid()}


def _start_watchdog(ray_processes: set[int]) -> subprocess.Popen | None:
    """workflows/raywatch.py over the processes ray.init started: they end when this driver is killed."""
    if not ray_processes:
        return None
    script = Path(__file__).with_name("raywatch.py")
    return subprocess.Popen([sys.executable, str(script), str(os.getpid()), *map(str, sorted(ray_processes))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # the terminal's Ctrl-C and hang-up are for the driver


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
