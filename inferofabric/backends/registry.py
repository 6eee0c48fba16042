"""Back ends by name. Modules are imported on first use so a cloud SDK loads only where it is needed."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

from inferofabric.backends.base import Backend
from inferofabric.models.pool import PoolSpec

BACKENDS: dict[str, str] = {
    "local": "inferofabric.backends.local:LocalBackend",
    "simulated": "inferofabric.backends.simulated:SimulatedBackend",
    "kubernetes": "inferofabric.backends.kubernetes:KubernetesBackend",
    "aws-batch": "inferofabric.backends.aws_batch:AwsBatchBackend",
    "gcp-batch": "inferofabric.backends.gcp_batch:GcpBatchBackend",
    "azure-batch": "inferofabric.backends.azure_batch:AzureBatchBackend",
}

# Back ends whose activities run in an agent inside the pool (dialing out to Temporal) rather than
# in the control plane's worker: their activities go to the pool's own task queue.
AGENT_BACKENDS = {"kubernetes"}


def backend_class(kind: str) -> type[Backend]:
    try:
        target = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown backend {kind!r}; known: {', '.join(sorted(BACKENDS))}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


_instances: dict[tuple[str, str, str], Backend] = {}
_instances_lock = threading.Lock()


def backend_for(pool: PoolSpec, home: Path) -> Backend:
    """The pool's back end, one instance per pool spec (and so per credential) in this process.

    Reused across activities: its SDK client, HTTP connection pool and (on AWS) assumed-role session
    are built once, not per call. A changed spec (new credentials, endpoint) makes a new instance."""
    key = (pool.name, pool.model_dump_json(), str(home))
    with _instances_lock:
        backend = _instances.get(key)
        if backend is None:
            for stale in [k for k in _instances if k[0] == pool.name and k[2] == key[2]]:
                del _instances[stale]
            backend = _instances[key] = backend_class(pool.backend)(pool, home)
        return backend


SYSTEM_SUFFIX = ".system"


def system_queue(fabric_queue: str) -> str:
    """The task queue of the fabric's own loops (admission, pool monitors, pool watchers): a worker
    polls it with its own slots and sticky cache, so their workflow tasks never wait behind the
    thousands of workloads' tasks on the fabric's queue (a burst of submissions or a failover)."""
    return fabric_queue + SYSTEM_SUFFIX


def fabric_queue(task_queue: str) -> str:
    """The fabric's task queue, from the queue a workflow or activity runs on (its own or the system one)."""
    return task_queue.removesuffix(SYSTEM_SUFFIX)


def monitor_queue_for(pool: PoolSpec, default_queue: str) -> str:
    """The task queue of the pool's probes and watcher: its own worker slots, which launches, cancels
    and control calls can never take, so a busy fabric cannot starve its health checks."""
    return f"{task_queue_for(pool, default_queue)}.monitor"


def task_queue_for(pool: PoolSpec, default_queue: str) -> str:
    """The task queue that runs this pool's back-end activities."""
    if pool.backend in AGENT_BACKENDS:
        return f"pool.{pool.name}"
    return default_queue
