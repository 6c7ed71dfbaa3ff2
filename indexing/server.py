"""A rushes-managed Milvus Lite server: one long-lived process per database, shared by every command.

Milvus Lite 3 is pure Python. pymilvus opens a `.db` path by starting Milvus Lite's gRPC server on a
thread of the calling process, and the database directory stays locked (an flock on `<db>/LOCK`) until
that process exits. So `rushes serve` holding OUT/milvus.db would lock `rushes index` out of the run.

Instead, this module runs Milvus Lite's own gRPC server in a child process bound to 127.0.0.1 and
writes where it listens to a state file beside the database (OUT/milvus.db -> OUT/milvus.server.json:
pid, port, db path). Every `ClipStore` opening that database finds the state file and connects over
gRPC, so only the server process ever opens the `.db` directory. A state file whose process is gone
(or whose port no longer answers) is stale and removed. Starting takes a lock file
(OUT/milvus.server.lock), so two commands starting at once end up with one server.

`rushes serve` hosts the server on threads of its own process when none is up (`host`: its page then
calls Milvus Lite's servicer directly, other commands connect over gRPC as to a server process) and
stops it when the page stops; `rushes milvus stop` on such a server stops the page with it. `rushes
milvus start|stop|status --out OUT` manages a server process explicitly (it then runs until stopped).

Run as `python -m indexing.server --db PATH --token T [--owner-pid PID]` (what `start` does).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

HOST = "127.0.0.1"
START_TIMEOUT_S = 120  # importing Milvus Lite and opening a large database is slow on a busy machine
STOP_TIMEOUT_S = 60  # a stopping server finishes in-flight calls and waits for index builds
OWNER_POLL_S = 1.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Milvus RPCs that only read. Every other RPC (upsert, delete, flush, create/drop, ...) is run one at a
# time: Milvus Lite's engine takes one writer per collection, and with a shared server two commands
# (index and dedup) could otherwise write at once. Reads run alongside writes (Milvus Lite reads snapshots).
READ_RPCS = frozenset({
    "Connect", "GetVersion", "CheckHealth", "HasCollection", "DescribeCollection", "ShowCollections",
    "Query", "Search", "HybridSearch", "DescribeIndex", "GetLoadingProgress", "GetLoadState",
    "HasPartition", "ShowPartitions", "GetFlushState", "GetCollectionStatistics", "GetPartitionStatistics",
    "ListDatabases", "DescribeDatabase", "DescribeAlias", "ListAliases", "GetCompactionState",
})


class _Hosted(NamedTuple):  # a managed server on threads of this process (`host`)
    state: ServerState
    grpc_server: Any
    servicer: Any
    database: Any


_hosted: dict[str, _Hosted] = {}  # db path -> the server this process hosts for it


class ServerError(RuntimeError):
    """The managed server cannot be started, found or stopped; the message says what to do."""


@dataclass
class ServerState:
    pid: int
    port: int
    db: str
    token: str
    started_at: float
    owner_pid: int | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}"


def is_local_db(uri: str) -> bool:
    """A Milvus Lite database path (what pymilvus opens in-process), as opposed to a server URI."""
    return uri.endswith(".db") and not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def _db_path(db) -> Path:
    return Path(db).expanduser().resolve()


def state_path(db) -> Path:
    db = _db_path(db)
    return db.with_name(db.stem + ".server.json")


def log_path(db) -> Path:
    db = _db_path(db)
    return db.with_name(db.stem + ".server.log")


def _lock_path(db) -> Path:
    db = _db_path(db)
    return db.with_name(db.stem + ".server.lock")


def read_state(db) -> ServerState | None:
    try:
        return ServerState(**json.loads(state_path(db).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write_state(state: ServerState) -> None:
    path = state_path(state.db)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1))
    os.replace(tmp, path)  # readers never see half a file


def _remove_state(db, token: str) -> None:
    """Remove the state file if it is still the one with `token` (not a newer server's)."""
    state = read_state(db)
    if state is not None and state.token == token:
        with contextlib.suppress(FileNotFoundError):
            state_path(db).unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a server stopped from another terminal stays a zombie until the `rushes serve` that started it
    # reaps it: it has exited all the same
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def running(db) -> ServerState | None:
    """The managed server of `db` if one is up; a stale state file (process gone, port closed) is removed."""
    state = read_state(db)
    if state is None:
        return None
    if state.db != str(_db_path(db)):
        return None  # the run directory was copied or moved with its state file: not this database's server
    if _pid_alive(state.pid) and _port_open(state.port):
        return state
    _remove_state(db, state.token)
    return None


def lock_holder(db) -> int | None:
    """The pid holding Milvus Lite's lock on `db` (-1 when held but the holder is unknown), or None if free."""
    lock = _db_path(db) / "LOCK"
    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError:
        pass
    finally:
        os.close(fd)
    # /proc/locks lines: "1: FLOCK  ADVISORY  WRITE 4242 08:01:123456 0 EOF" (pid, then dev:inode)
    inode = lock.stat().st_ino
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
                return int(parts[4])
    return -1


def _describe_process(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"process {pid}"
    return f"process {pid} ({cmd[:120]})"


def locked_message(db, holder: int) -> str:
    """What to say when `db` is open in a process that is not a managed server."""
    who = "another process" if holder < 0 else _describe_process(holder)
    out = _db_path(db).parent
    return (f"{_db_path(db)} is open in {who}, which is not a rushes-managed Milvus server; Milvus Lite lets only one "
            f"process open a database. Wait for that command to finish (or stop it), then run this again. To use "
            f"the run from several commands at once, start the shared server first: `rushes milvus start --out {out}` "
            f"(`rushes serve` does this itself).")


@contextlib.contextmanager
def _start_lock(db):
    path = _lock_path(db)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: a concurrent start finishes first, then we find its server
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_children: dict[int, subprocess.Popen] = {}  # servers this process started, so stop() can reap them


def _run_db(db) -> Path:
    db = _db_path(db)
    if not db.parent.is_dir():
        raise ServerError(f"{db.parent} is not a directory: give the run directory (--out) of `rushes curate`")
    return db


def _up_or_free(db) -> ServerState | None:
    """Under the start lock: the server already up, or None when the database is free to open; a database
    another process holds is a ServerError saying which."""
    state = running(db)
    holder = lock_holder(db) if state is None else None
    if holder is not None:
        raise ServerError(locked_message(db, holder))
    return state


def start(db, owner_pid: int | None = None, timeout: float = START_TIMEOUT_S) -> tuple[ServerState, bool]:
    """Start the managed server of `db`, or find the one already up: (state, whether this call started it).

    With `owner_pid`, the server stops by itself when that process is gone."""
    db = _run_db(db)
    with _start_lock(db):
        state = _up_or_free(db)
        if state is not None:
            return state, False
        token = uuid.uuid4().hex
        cmd = [sys.executable, "-m", "indexing.server", "--db", str(db), "--token", token]
        if owner_pid is not None:
            cmd += ["--owner-pid", str(owner_pid)]
        with open(log_path(db), "ab") as log:
            # its own session: a Ctrl-C meant for the command that started it does not kill it mid-write;
            # that command stops it in order
            proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, env={**os.environ, "GRPC_VERBOSITY": "NONE"})
        _children[proc.pid] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = read_state(db)
            if state is not None and state.token == token and _port_open(state.port):
                return state, True
            if proc.poll() is not None:
                _children.pop(proc.pid, None)
                raise ServerError(f"the Milvus server for {db} exited at start (code {proc.returncode}): "
                                  f"{_log_tail(db)} (log: {log_path(db)})")
            time.sleep(0.1)
        _terminate(proc.pid)
        raise ServerError(f"the Milvus server for {db} did not start within {timeout:.0f} s (log: {log_path(db)})")


def _log_tail(db, lines: int = 3) -> str:
    try:
        text = log_path(db).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "no log"


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM `pid` and wait for it to exit (SIGKILL after `timeout`); True if it is gone."""
    proc = _children.pop(pid, None)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return True
        if proc is None and not _pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(10)
    return False


def host(db) -> tuple[ServerState, bool]:
    """Start the managed server of `db` on threads of this process, or find the one already up: (state,
    whether this call started it). `rushes serve` hosts it so that its page calls the servicer directly
    (no gRPC hop per search: `hosted_servicer`), while other commands reach it over gRPC as they reach a
    server process. It stops with `stop(db)` or with this process."""
    db = _run_db(db)
    with _start_lock(db):
        state = _up_or_free(db)
        if state is not None:
            return state, False
        from milvus_lite import DataDirLockedError
        from milvus_lite.db import MilvusLite

        _install_speedups()
        try:
            database = MilvusLite(str(db))
        except DataDirLockedError:
            raise ServerError(locked_message(db, lock_holder(db) or -1)) from None
        server, servicer, port = _grpc_server(database)
        state = ServerState(pid=os.getpid(), port=port, db=str(db), token=uuid.uuid4().hex, started_at=time.time(),
                            owner_pid=os.getpid())
        _write_state(state)
        _hosted[str(db)] = _Hosted(state, server, servicer, database)
        return state, True


def hosted_servicer(db):
    """The Milvus servicer of `db`'s server when this process hosts it (`host`), else None."""
    entry = _hosted.get(str(_db_path(db)))
    return entry.servicer if entry else None


def stop(db, timeout: float = STOP_TIMEOUT_S) -> ServerState | None:
    """Stop the managed server of `db`; returns its state, or None when none was running."""
    hosted = _hosted.pop(str(_db_path(db)), None)
    if hosted is not None:
        _remove_state(db, hosted.state.token)  # first, so no new command connects to a server that is going away
        hosted.grpc_server.stop(grace=5).wait()
        hosted.database.close()  # waits for background index builds, then releases the lock
        return hosted.state
    state = running(db)
    if state is None:
        return None
    _terminate(state.pid, timeout)
    _remove_state(db, state.token)
    return state


# -- the server process ----------------------------------------------------------------------------


def _serialize_writes(lock: threading.Lock):
    """A gRPC interceptor that runs every non-read RPC under `lock` (see READ_RPCS)."""
    import grpc

    class SerializeWrites(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):
            handler = continuation(details)
            if handler is None or handler.unary_unary is None or details.method.rsplit("/", 1)[-1] in READ_RPCS:
                return handler
            inner = handler.unary_unary

            def locked(request, context):
                with lock:
                    return inner(request, context)

            return grpc.unary_unary_rpc_method_handler(locked, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)

    return SerializeWrites()


def _install_speedups() -> bool:
    """Apply rushes' Milvus Lite search speedups in this process (it runs the searches), if present."""
    try:
        from indexing.milvus_lite_speedups import install
    except ModuleNotFoundError as e:
        if e.name != "indexing.milvus_lite_speedups":
            raise
        return False
    return bool(install())


def _grpc_server(database):
    """A started gRPC server of a MilvusLite database on a free 127.0.0.1 port: (server, servicer, port)."""
    from concurrent import futures

    import grpc
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from pymilvus.grpc_gen import milvus_pb2_grpc

    message_limit = 256 * 1024 * 1024  # as Milvus Lite's own server (and Milvus standalone)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         interceptors=[_serialize_writes(threading.Lock())],
                         options=[("grpc.max_receive_message_length", message_limit),
                                  ("grpc.max_send_message_length", message_limit)])
    servicer = MilvusServicer(database)
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    return server, servicer, port


def serve_forever(db: str, token: str, owner_pid: int | None = None) -> int:
    """Open `db` with Milvus Lite, serve it over gRPC on a free 127.0.0.1 port until SIGTERM/SIGINT
    (or until `owner_pid` is gone); the state file says where it listens while it runs."""
    from milvus_lite import DataDirLockedError
    from milvus_lite.db import MilvusLite

    speedups = _install_speedups()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        database = MilvusLite(db)
    except DataDirLockedError:
        holder = lock_holder(db)
        print(locked_message(db, holder if holder is not None else -1), file=sys.stderr, flush=True)
        return 3
    server, _, port = _grpc_server(database)
    state = ServerState(pid=os.getpid(), port=port, db=str(_db_path(db)), token=token, started_at=time.time(),
                        owner_pid=owner_pid)
    _write_state(state)
    print(f"rushes Milvus Lite server for {db} on {state.uri} (pid {state.pid}, search speedups "
          f"{'on' if speedups else 'off'})", flush=True)
    try:
        while not stopping.wait(OWNER_POLL_S):
            if owner_pid is not None and not _pid_alive(owner_pid):
                print(f"owner process {owner_pid} is gone; stopping", flush=True)
                break
    finally:
        _remove_state(db, token)  # first, so no new command connects to a server that is going away
        server.stop(grace=5).wait()
        database.close()  # waits for background index builds, then releases the lock
        print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexing.server", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="Milvus Lite database directory (OUT/milvus.db)")
    parser.add_argument("--token", default=uuid.uuid4().hex, help="written to the state file, to recognise it")
    parser.add_argument("--owner-pid", type=int, default=None, help="stop when this process is gone")
    args = parser.parse_args(argv)
    return serve_forever(args.db, args.token, args.owner_pid)


if __name__ == "__main__":
    raise SystemExit(main())
