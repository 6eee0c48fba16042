"""Back ends by name. Modules are imported on first use so a cloud SDK loads only where it is needed."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

from inferofabric.backends.base import Backend
from inferofabric.models.pool import PoolSpec

# Task-queue naming (which back ends run in an agent, and so on its pool's queue) lives in
# inferofabric/task_queues.py, which workflows import without importing back ends; named here too.
from inferofabric.task_queues import (  # noqa: F401
    AGENT_BACKENDS,
    SYSTEM_SUFFIX,
    fabric_queue,
    monitor_queue_for,
    system_queue,
    task_queue_for,
)

BACKENDS: dict[str, str] = {
    "local": "inferofabric.backends.local:LocalBackend",
    "simulated": "inferofabric.backends.simulated:SimulatedBackend",
    "kubernetes": "inferofabric.backends.kubernetes:KubernetesBackend",
    "aws-batch": "inferofabric.backends.aws_batch:AwsBatchBackend",
    "gcp-batch": "inferofabric.backends.gcp_batch:GcpBatchBackend",
    "azure-batch": "inferofabric.backends.azure_batch:AzureBatchBackend",
}


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
