"""ControlWorkflow: runs one operator/SDK operation (register a pool, set the policy, cordon...).

Clients need only a Temporal connection; the store stays inside the control plane. Operations
that affect running work (drain, a pool registration that starts its monitor) fan out from here as
signals and child workflows, so they are durable too.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from inferofabric.errors import FailureType
    from inferofabric.models.common import Health
    from inferofabric.models.messages import (
        ControlRequest,
        CordonInput,
        MonitorInput,
        MonitorSettings,
        ReconcileReport,
        RelocateInput,
        WatcherInput,
        WatcherSettings,
    )
    from inferofabric.models.pool import PoolSpec
    from inferofabric.task_queues import system_queue
    from inferofabric.workflows.decode_failures import DECODE_FAILURES  # undecodable input fails the workflow
    from inferofabric.workflows.reconcile import reconcile
    from inferofabric.workflows.watcher import watcher_id

CONTROL_TIMEOUT = timedelta(seconds=30)
CONTROL_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=[FailureType.INVALID_INPUT.value,
                                                                       FailureType.NOT_FOUND.value])
# op -> activity and what it takes from ControlRequest.args: its arguments in this order, or (an
# activity taking one input model) {field of the model: name in ControlRequest.args}, sent as one
# object the activity decodes (undecodable input fails it at once, as a bad argument always did).
OPERATIONS: dict[str, tuple[str, tuple[str, ...] | dict[str, str]]] = {
    "register_pool": ("control_register_pool", ("spec",)),
    "remove_pool": ("control_remove_pool", ("name",)),
    "list_pools": ("control_list_pools", ()),
    "pool_spec": ("control_pool_spec", ("name",)),
    "set_policy": ("control_set_policy", ("policy", "force")),
    "get_policy": ("control_get_policy", ()),
    "cordon": ("control_cordon", {"pool": "name", "cordoned": "cordoned"}),  # CordonInput
    "simulate": ("control_simulate", ("name", "action")),
    "put_secret": ("control_put_secret", ("name", "sealed_value", "pool", "team", "shared_with", "fabric")),
    "list_secrets": ("control_list_secrets", ()),
    "decisions": ("control_decisions", ("workload_id",)),
    "queue": ("control_queue", ("team", "workload_id")),
    "audit": ("control_audit", ("limit", "identity")),
    "cost": ("control_cost", ("by", "start", "end", "step", "workload_id", "idle")),
    "budgets": ("control_budgets", ()),
}


def _fabric(request: ControlRequest) -> str:
    """The fabric's task queue, as the client named it (part of the request, so replay sees it too)."""
    return str(request.args.get("fabric") or workflow.info().task_queue)


def monitor_id(pool: str) -> str:
    return f"pool-monitor-{pool}"


@workflow.defn(name="ControlWorkflow", failure_exception_types=DECODE_FAILURES, sandboxed=False)
class ControlWorkflow:
    @workflow.run
    async def run(self, request: ControlRequest) -> Any:
        if request.op == "logs":  # an activity's result stays in history: job output never travels this way
            raise ApplicationError("logs are not read through the control plane (their text would stay in workflow "
                                   "history): `fabric logs` reads them from the pool on the fabric's host",
                                   type=FailureType.INVALID_INPUT, non_retryable=True)
        if request.op == "drain":
            return await self._drain(request.args["name"], request.args.get("reason", "drained by operator"))
        if request.op == "reconcile":
            return await self._reconcile(request.args["name"])
        if request.op not in OPERATIONS:
            raise ApplicationError(f"unknown operation {request.op!r}", type=FailureType.INVALID_INPUT,
                                   non_retryable=True)
        activity_name, arg_names = OPERATIONS[request.op]
        if isinstance(arg_names, dict):
            args: list[Any] = [{field: request.args.get(name) for field, name in arg_names.items()}]
        else:
            args = [request.args.get(name) for name in arg_names]
        result = await workflow.execute_activity(
            activity_name, args=args, start_to_close_timeout=CONTROL_TIMEOUT, retry_policy=CONTROL_RETRY,
            summary=request.op,
        )
        if request.op == "register_pool":
            name = PoolSpec.model_validate(request.args["spec"]).name
            await self._ensure_monitor(name, request.args.get("monitor"), _fabric(request))
            await self._ensure_watcher(name, request.args.get("watcher"), _fabric(request))
        elif request.op == "remove_pool":
            with contextlib.suppress(Exception):  # the watcher also stops by itself on its next run
                await workflow.get_external_workflow_handle(
                    watcher_id(request.args["name"], _fabric(request))).cancel()
        return result

    async def _ensure_monitor(self, pool: str, settings: dict[str, Any] | None, fabric: str) -> None:
        """Start the pool's health monitor once, on the fabric's system queue; an already running
        monitor is kept."""
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                "PoolMonitorWorkflow",
                MonitorInput(pool=pool, settings=MonitorSettings.model_validate(settings or {})),
                id=monitor_id(pool), task_queue=system_queue(fabric), parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"health monitor for pool {pool}",
            )

    async def _ensure_watcher(self, pool: str, settings: dict[str, Any] | None, fabric: str) -> None:
        """Start the pool's job watcher once (one batched look per period follows every job there)."""
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await workflow.start_child_workflow(
                "PoolWatcherWorkflow", WatcherInput(pool=pool, settings=WatcherSettings.model_validate(settings or {})),
                id=watcher_id(pool, fabric), task_queue=system_queue(fabric),
                parent_close_policy=ParentClosePolicy.ABANDON, static_summary=f"job watcher for pool {pool}",
            )

    async def _reconcile(self, name: str) -> ReconcileReport:
        pool: PoolSpec = await workflow.execute_activity(
            "control_pool_spec", name, result_type=PoolSpec, start_to_close_timeout=CONTROL_TIMEOUT,
            retry_policy=CONTROL_RETRY)
        return await reconcile(pool)

    async def _drain(self, pool: str, reason: str) -> list[str]:
        """Move every workload off the pool on purpose, with the failover machinery (one activity tells
        them all, concurrently: 1,000 workloads take seconds)."""
        await workflow.execute_activity("control_cordon", CordonInput(pool=pool, cordoned=True),
                                        start_to_close_timeout=CONTROL_TIMEOUT, retry_policy=CONTROL_RETRY,
                                        summary=f"cordon {pool}")
        moved: list[str] = await workflow.execute_activity(
            "control_relocate", RelocateInput(pool=pool, reason=reason, health=Health.CORDONED),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=30), retry_policy=CONTROL_RETRY,
            summary=f"move every workload off {pool}")
        return moved
