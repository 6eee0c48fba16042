"""Workers: the control plane's worker (task queue `fabric`) and a pool agent (task queue `pool.<name>`).

The control plane's worker runs every workflow, the placement and control activities (they need
the store) and the back-end activities of pools without an agent. An agent runs only the back-end
activities of its own pool, from inside that pool's network, dialing out to Temporal.

Each of them polls a second task queue, `<queue>.monitor`, with slots of its own: the pools' probes
and watchers run there, so launches, cancels and control calls can never take the capacity the
health checks need (a busy fabric must not declare its own healthy pools dead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from inferofabric.activities.admission import AdmissionActivities
from inferofabric.activities.control import ControlActivities
from inferofabric.activities.endpoint import report_replica
from inferofabric.activities.jobs import JobActivities
from inferofabric.activities.placement import PlacementActivities
from inferofabric.activities.watch import PoolWatchActivities
from inferofabric.auth.audit import AuditSink
from inferofabric.auth.gate import AuthGate
from inferofabric.auth.identity import with_identity
from inferofabric.auth.tokens import SYSTEM, Identity, ensure_admin_token, signing_key
from inferofabric.backends.registry import system_queue
from inferofabric.settings import fabric_home, task_queue, workflow_cache_size
from inferofabric.stack_guard import worker_identity
from inferofabric.store.db import get_store
from inferofabric.store.meta import instance_id
from inferofabric.worker.input_errors import with_input_errors
from inferofabric.workflows.admission import AdmissionWorkflow
from inferofabric.workflows.control import ControlWorkflow
from inferofabric.workflows.endpoint import EndpointWorkflow
from inferofabric.workflows.monitor import PoolMonitorWorkflow
from inferofabric.workflows.watcher import PoolWatcherWorkflow
from inferofabric.workflows.workload import WorkloadWorkflow

WORKFLOWS = [WorkloadWorkflow, ControlWorkflow, PoolMonitorWorkflow, PoolWatcherWorkflow, AdmissionWorkflow,
             EndpointWorkflow]
SYSTEM_WORKFLOWS = [AdmissionWorkflow, PoolMonitorWorkflow, PoolWatcherWorkflow]
MONITOR_SLOTS = 500  # probes (seconds each) and one long-running watcher per pool
# The fabric's own models and helpers are deterministic and side-effect free: share the host's
# copies with the sandbox, so a model built in workflow code is the same class activities accept.
# The workflow modules are shared too: re-importing them for every workflow run cost ~6 ms of CPU per
# workload (a third of the worker's time, bench/throughput.py). With every module the workflows use
# shared, the sandbox intercepted nothing of ours, and it still cost: every payload of every workflow
# task (a memo field, a signal, an activity's input) asked the sandbox for its serialization context,
# a piece of code run inside it, three times on the way in and three on the way out — a third of the
# worker's CPU during a failover (py-spy, bench/running.py). So the fabric's workflows are declared
# `sandboxed=False`: they still run on Temporal's deterministic event loop, and what a sandbox would
# catch (clocks, randomness, I/O) is kept out by tests/test_workflow_determinism.py and the replay
# tests. The sandboxed runner stays for any other workflow a worker is given.
SHARED_MODULES = ("inferofabric.models", "inferofabric.backends", "inferofabric.policies", "inferofabric.secrets",
                  "inferofabric.settings", "inferofabric.workflows", "inferofabric.auth", "jwt")


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox every worker and replayer of fabric workflows uses."""
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*SHARED_MODULES))


def job_activities(home: Path, store_url: str | None = None, store: bool = False) -> list[Callable[..., Any]]:
    jobs = JobActivities(home, store_url, store)
    return [jobs.launch_job, jobs.job_status, jobs.cancel_job, jobs.cancel_jobs, jobs.job_logs, jobs.list_pool_jobs,
            jobs.job_statuses, jobs.pool_job_states]


def monitor_activities(home: Path, store_url: str | None = None, store: bool = False) -> list[Callable[..., Any]]:
    jobs = JobActivities(home, store_url, store)
    return [jobs.probe_pool, PoolWatchActivities(home).watch_pool]


class FabricWorker:
    """The workers of one process, started and stopped together (`async with`)."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.task_queue = workers[0].task_queue
        self.on_close: list[Callable[[], None]] = []

    async def __aenter__(self) -> FabricWorker:
        started: list[Worker] = []
        try:
            for worker in self.workers:
                await worker.__aenter__()
                started.append(worker)
        except BaseException:
            for worker in reversed(started):
                await worker.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.gather(*(worker.__aexit__(*exc) for worker in reversed(self.workers)))
        for close in self.on_close:
            close()


def build_worker(client: Client, queue: str | None = None, home: Path | None = None,
                 store_url: str | None = None, max_concurrent_activities: int = 200) -> FabricWorker:
    home = home or fabric_home()
    queue = queue or task_queue()
    key = signing_key(home)
    ensure_admin_token(home, time.time())  # the local operator's first token (`fabric up`, tests)
    # The worker reaches Temporal itself (the control plane's own): what it sends carries the
    # fabric's own identity, as only the control plane may write it (auth/identity.py).
    client = with_identity(client, Identity(subject="fabric-worker", role=SYSTEM))
    # Input that cannot be decoded fails its workflow or activity at once, non-retryable, with the
    # reason (worker/input_errors.py), instead of a task retried for ever.
    client = with_input_errors(client)
    store = get_store(store_url)
    sink = AuditSink(store)
    identity = worker_identity(instance_id(store))  # names its store: see stack_guard
    placement = PlacementActivities(store_url)
    control = ControlActivities(home, store_url)
    admission = AdmissionActivities(store_url)
    activities: list[Callable[..., Any]] = [
        placement.release_capacity, placement.seal_secrets, placement.ledger_started, *admission.all(), *control.all(),
        *job_activities(home, store_url, store=True), report_replica,
    ]
    main = Worker(
        client, task_queue=queue, workflows=WORKFLOWS, activities=activities,
        workflow_runner=workflow_runner(), interceptors=[AuthGate(key, sink)],
        max_concurrent_activities=max_concurrent_activities, max_concurrent_local_activities=200,
        max_cached_workflows=workflow_cache_size(), identity=identity,
    )
    monitors = Worker(client, task_queue=f"{queue}.monitor", activities=monitor_activities(home, store_url, True),
                      max_concurrent_activities=MONITOR_SLOTS, identity=identity, interceptors=[AuthGate(key)])
    # The fabric's own loops on their own queue (backends/registry.py: system_queue): their workflow
    # tasks, local activities and control calls never wait behind the workloads'.
    system = Worker(
        client, task_queue=system_queue(queue), workflows=SYSTEM_WORKFLOWS, activities=activities,
        workflow_runner=workflow_runner(), interceptors=[AuthGate(key, sink)], max_concurrent_activities=50,
        max_concurrent_local_activities=50, max_cached_workflows=1000, identity=identity,
    )
    fabric_worker = FabricWorker([main, monitors, system])
    fabric_worker.on_close.append(sink.close)
    return fabric_worker


def build_agent_worker(client: Client, pool: str, home: Path | None = None) -> FabricWorker:
    """The pool agent's workers: only its own pool's back-end activities, on `pool.<name>` and
    `pool.<name>.monitor`. `client` dials the front door with the pool's agent token (`fabric token
    create --role agent --pool NAME`) as its API key: the door lets it poll and answer only its own
    pool's queues, and its watcher's job reports reach only workloads placed on its pool."""
    home = home or fabric_home()
    return FabricWorker([
        Worker(client, task_queue=f"pool.{pool}", activities=job_activities(home), max_concurrent_activities=100),
        Worker(client, task_queue=f"pool.{pool}.monitor", activities=monitor_activities(home),
               max_concurrent_activities=20),
    ])


async def run_until_stopped(worker: FabricWorker, stop: asyncio.Event) -> None:
    async with worker:
        await stop.wait()
