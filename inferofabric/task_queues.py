"""Task-queue names: which queue runs what. Workflows, activities and workers all name queues from here.

    <queue>            the workloads' workflows and the back-end activities of control-plane pools
    <queue>.system     the fabric's own loops: admission, pool monitors, pool watchers
    <pool queue>.monitor  a pool's probes and watch (its own slots: launches never starve them)
    pool.<name>        an agent pool's back-end activities (the agent runs in the pool: kubernetes)

Naming a queue needs a pool's spec only, never its back end: workflows import this module, not
`inferofabric.backends` (the layer contract in pyproject.toml holds them to it).
"""

from __future__ import annotations

from inferofabric.models.pool import PoolSpec

# Back ends whose activities run in an agent inside the pool (dialing out to Temporal) rather than
# in the control plane's worker: their activities go to the pool's own task queue.
AGENT_BACKENDS = {"kubernetes"}

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
