"""Back ends by name. Modules are imported on first use so a cloud SDK loads only where it is needed."""

from __future__ import annotations

import importlib
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


def backend_for(pool: PoolSpec, home: Path) -> Backend:
    return backend_class(pool.backend)(pool, home)


def task_queue_for(pool: PoolSpec, default_queue: str) -> str:
    """The task queue that runs this pool's back-end activities."""
    if pool.backend in AGENT_BACKENDS:
        return f"pool.{pool.name}"
    return default_queue
