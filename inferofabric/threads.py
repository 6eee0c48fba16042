"""Thread pools for the blocking calls that async activities make: the store, back ends, monitors.

Why not `asyncio.to_thread`: its default executor has min(32, cores + 4) threads (six on a
two-core machine), shared by everything in the worker. A dead cloud API whose calls hang until
their timeouts then holds every thread, and the store calls that give GPUs back and queue work again
— and the probes that tell a healthy pool from a dead one — wait behind it: a failover slows down
exactly when it is needed. Each kind of call gets its own pool here, so one kind of trouble cannot
starve the others. The pools are per process (nothing another worker needs lives in them).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# Store calls are short; SQLite serializes writers anyway, PostgreSQL takes them in parallel.
STORE_THREADS = int(os.environ.get("FABRIC_STORE_THREADS", "16"))
# Back-end calls (launch, cancel, status, logs) may each wait seconds on a slow cloud API.
BACKEND_THREADS = int(os.environ.get("FABRIC_BACKEND_THREADS", "64"))
# Probes and the pool watchers' batched looks: one or two per pool at a time.
MONITOR_THREADS = int(os.environ.get("FABRIC_MONITOR_THREADS", "32"))

_pools: dict[str, ThreadPoolExecutor] = {}


def _pool(kind: str, size: int) -> ThreadPoolExecutor:
    pool = _pools.get(kind)
    if pool is None:
        pool = _pools[kind] = ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix=f"fabric-{kind}")
    return pool


async def _run(kind: str, size: int, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    # Like asyncio.to_thread: the call sees the caller's context variables.
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_pool(kind, size), call)


async def in_store(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a store call off the event loop, on the store's own threads."""
    return await _run("store", STORE_THREADS, func, *args, **kwargs)


async def in_backend(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a back-end call (launch, cancel, status, logs) on the back ends' own threads."""
    return await _run("backend", BACKEND_THREADS, func, *args, **kwargs)


async def in_monitor(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a probe or a watcher's look on the monitors' own threads: never behind a hung launch."""
    return await _run("monitor", MONITOR_THREADS, func, *args, **kwargs)
