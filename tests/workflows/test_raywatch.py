"""A local Ray started by rushes ends with its driver, even a `kill -9`ed one, and starts without a word on stderr."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workflows.raywatch import descendants, process_table

ROOT = Path(__file__).resolve().parents[2]


def alive(processes: dict[int, int]) -> dict[int, int]:
    table = process_table()
    return {pid: started for pid, started in processes.items() if table.get(pid, (0, None))[1] == started}


def wait_until_gone(processes: dict[int, int], seconds: float) -> dict[int, int]:
    deadline = time.time() + seconds
    while alive(processes) and time.time() < deadline:
        time.sleep(0.2)
    return alive(processes)


def start_driver(code: str, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as stderr:
        driver = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    assert driver.stdout.readline().strip() == "up", err.read_text()
    return driver, err


# a driver with a tree of its own below a "Ray" root: the root, its child, and a grandchild that outlives it
TREE = """
import subprocess, sys, time
root = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
time.sleep(1)
subprocess.Popen([sys.executable, "workflows/raywatch.py", str(__import__("os").getpid()), str(root.pid)],
                 start_new_session=True)
time.sleep(1)
print("up", flush=True)
time.sleep(60)
"""


def test_the_watchdog_kills_the_tree_it_follows_when_the_driver_is_killed(tmp_path):
    driver, _ = start_driver(TREE, tmp_path)
    tree = descendants({driver.pid}, process_table())
    assert len(tree) == 4  # the driver, the root, its child (which the root leaves behind) and the watchdog
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert wait_until_gone(tree, 10) == {}


RAY_DRIVER = """
import time
from workflows.raysession import ray_session
with ray_session(num_cpus=1):
    print("up", flush=True)
    time.sleep(120)
"""


def test_local_ray_ends_with_a_killed_driver_and_says_nothing_on_stderr(tmp_path):
    driver, err = start_driver(RAY_DRIVER, tmp_path)
    ray_processes = descendants({driver.pid}, process_table())
    del ray_processes[driver.pid]
    assert len(ray_processes) >= 4  # gcs_server, raylet, their helpers and agents, the watchdog
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    # without the watchdog Ray's agents outlive the driver by a minute or more, waiting for a dead GCS
    assert wait_until_gone(ray_processes, 15) == {}
    assert "logging.cc" not in err.read_text() and err.read_text().strip() == ""
