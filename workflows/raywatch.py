"""A watchdog that ends the local Ray a driver started when that driver dies without shutting it down.

Ray ties its GCS server and raylet to the driver that started them (the kernel kills them with it), but
not what the raylet started: after a `kill -9` of the driver, Ray's dashboard and runtime-env agents
(and any worker) hang on, waiting for a GCS that is gone. This watchdog is a child of the driver that
follows Ray's processes and everything they start; when the driver is gone it kills the lot.

    python -m workflows.raywatch DRIVER_PID ROOT_PID [ROOT_PID ...]

It imports only the standard library: it must start in a blink and cost nothing while it waits.
"""

from __future__ import annotations

import os
import signal
import sys
import time

INTERVAL_S = 0.5


def process_table() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, start time in clock ticks)} of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:  # it ended while we looked
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ", which may hold spaces
        table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """{pid: start time} of `roots` and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = table[pid][1]
            todo.extend(children.get(pid, []))
    return found


def kill_all(seen: dict[int, int]) -> int:
    """SIGKILL each process seen that still runs (the same process: same pid and start time); how many."""
    table = process_table()
    killed = 0
    for pid, started in seen.items():
        if pid in table and table[pid][1] == started and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def follow(roots: set[int], seen: dict[int, int]) -> None:
    """Add to `seen` every process now below `roots` or below a process seen before (when the raylet dies
    first, its children go to init: they are found again under their own pids)."""
    table = process_table()
    still = {pid for pid, started in seen.items() if table.get(pid, (0, None))[1] == started}  # not a reused pid
    seen.update(descendants((roots if not seen else set()) | still, table))


def watch(driver: int, roots: set[int], interval: float = INTERVAL_S) -> int:
    """Follow `roots` and their descendants while `driver` (our parent) runs; then kill them all."""
    seen: dict[int, int] = {}
    while os.getppid() == driver:  # reparented: the driver is gone
        follow(roots, seen)
        time.sleep(interval)
    follow(roots, seen)  # what started in the last interval
    return kill_all(seen)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver, which then shuts Ray down itself
    driver, *roots = (int(a) for a in argv)
    watch(driver, set(roots))


if __name__ == "__main__":
    main(sys.argv[1:])
