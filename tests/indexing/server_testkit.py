"""Server processes for the indexing tests: free ports, waiting for a port, stopping a process for sure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUSHES = [sys.executable, "-m", "workflows.cli"]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180  # a cold Python importing pymilvus/torch on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for_port(proc: subprocess.Popen, port: int, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before listening: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    pytest.fail(f"nothing listened on port {port} within {timeout} s: {log.read_text()[-2000:]}")


def spawn(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    """A process in its own group (so stopping it stops its children too), output to `log`."""
    env = {**os.environ, "GRPC_VERBOSITY": "NONE", **kw.pop("env", {})}
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, **kw)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    """Stop `proc` (SIGKILL to its whole group if it does not exit in time); its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode
