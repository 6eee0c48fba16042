"""One stack per FABRIC_HOME, per port, and per task queue: a second `fabric up` or worker that would
break a running one refuses with a clear message instead.

- FABRIC_HOME: `fabric up` holds an exclusive lock on FABRIC_HOME/fabric.lock (flock: released by the
  kernel when the process dies, even with kill -9, so a crash never leaves a stale lock behind).
- Ports: a port something else listens on is refused before any server starts, so a stack never
  attaches to another stack's Temporal server (with its own, empty store).
- Task queue: every worker's identity names its store (`store:<id>`); a worker whose task queue is
  already polled by workers of another store refuses to start (two stores behind one queue would
  each act on the other's workloads and pool monitors). Several workers of one store are fine.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferofabric.sdk.errors import FabricError

LOCK_FILE = "fabric.lock"
STORE_TAG = "store:"


class StackConflict(FabricError):
    """Starting this would break a stack that is running (CLI exit code 1, one line)."""


@contextlib.contextmanager
def hold_home(home: Path, **facts: Any) -> Iterator[None]:
    """Hold FABRIC_HOME for this process; `facts` (address, ports) are what a refused second one shows."""
    path = home / LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _facts(handle.read())
        handle.close()
        raise StackConflict(
            f"another `fabric up` (pid {holder.get('pid', '?')}, Temporal {holder.get('address', '?')}) runs with "
            f"FABRIC_HOME {home}: stop it first, or give this one its own FABRIC_HOME") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), **facts}))
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            handle.truncate(0)
        handle.close()  # closing releases the lock


def _facts(text: str) -> dict[str, Any]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def ensure_port_free(port: int, option: str, host: str = "127.0.0.1") -> None:
    """Refuse a port that something already listens on (another stack's Temporal server, say)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            raise StackConflict(f"port {port} on {host} is in use (another fabric's Temporal server or Web UI?): "
                                f"choose another with {option}, or stop what listens there")


def worker_identity(store_id: str) -> str:
    """A worker identity that names the store it serves."""
    return f"{os.getpid()}@{socket.gethostname()} {STORE_TAG}{store_id}"


def other_stores(poller_identities: list[str], store_id: str) -> list[str]:
    """The stores, other than ours, whose workers poll the queue (pollers without a tag are ignored)."""
    found = set()
    for identity in poller_identities:
        for word in identity.split():
            if word.startswith(STORE_TAG) and word[len(STORE_TAG):] != store_id:
                found.add(word[len(STORE_TAG):])
    return sorted(found)


async def ensure_queue_is_ours(client: Any, queue: str, store_id: str) -> None:
    """Refuse to serve a task queue that workers of another store already poll."""
    from inferofabric.connection import task_queue_pollers

    pollers = await task_queue_pollers(client, queue)
    if pollers is None:
        return  # cannot tell: the worker's own checks and logs take over
    others = other_stores(pollers, store_id)
    if others:
        raise StackConflict(
            f"task queue {queue!r} (namespace {client.namespace!r}) is already served by the workers of another "
            f"store ({', '.join(others)}; this one is {store_id}): two stores behind one queue would act on each "
            "other's work. Use another FABRIC_TASK_QUEUE or namespace, or point FABRIC_DATABASE_URL at that store")
