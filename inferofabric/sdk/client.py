"""The Python SDK: `FabricClient` (async) and its handles. The CLI is built on it.

    client = await FabricClient.connect("127.0.0.1:7233")
    handle = await client.submit(WorkloadSpec(...))
    print(await handle.status(), await handle.explain())

Its layers, each a module of inferofabric/sdk/: failures (how a failure reads), core (the Temporal
client, the store, control operations), reads (pools, queue, policy, audit, cost), workloads
(WorkloadHandle), endpoints (EndpointHandle), and here the writes, submit, schedules and listing.
"""

from __future__ import annotations

import builtins
import uuid
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.auth.client import find_token
from inferofabric.connection import connect, door_tls
from inferofabric.errors import AlreadyExists, FabricNotFound, InvalidInput, WorkloadExists
from inferofabric.models.common import Health, Location, WorkloadState
from inferofabric.models.messages import MonitorSettings, ReconcileReport, WorkloadRequest
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import PoolStatus, WorkloadStatus
from inferofabric.models.workload import WorkloadSpec
from inferofabric.sdk.reads import FabricReads
from inferofabric.sdk.workloads import WorkloadHandle
from inferofabric.secrets import seal
from inferofabric.settings import temporal_address
from inferofabric.workflows.workload_visibility import initial_search_attributes

if TYPE_CHECKING:  # loaded on first use (endpoints pull in their models and workflow); no cycle either way
    from inferofabric.models.endpoint import EndpointSpec
    from inferofabric.models.endpoint_status import EndpointStatus
    from inferofabric.sdk.endpoints import EndpointHandle

__all__ = ["FabricClient", "WorkloadHandle"]


class FabricClient(FabricReads):
    """`store_url`: read access to the control plane's store (the embedded stack's SQLite file, or
    FABRIC_DATABASE_URL with a read-only role). With it, reads (queue, pools, policy) are store reads;
    without it they go through the control plane."""

    @classmethod
    async def connect(cls, address: str | None = None, namespace: str | None = None,
                      task_queue: str | None = None, store_url: str | None = None,
                      token: str | None = None) -> FabricClient:
        """Connect to the fabric's front door (TLS; `token` is sent as Temporal's API key), or, on
        the fabric's own host with no door CA to trust, straight to its Temporal (connection.door_tls)."""
        address = address or temporal_address()
        tls = door_tls(address)
        if tls is None:
            return cls(await connect(address, namespace), task_queue, store_url, token)
        token = token or find_token()
        return cls(await connect(address, namespace, api_key=token, tls=tls), task_queue, store_url, token)

    async def register_pool(self, spec: PoolSpec | dict[str, Any],
                            monitor: MonitorSettings | None = None) -> PoolStatus:
        pool = spec if isinstance(spec, PoolSpec) else PoolSpec.model_validate(spec)
        result = await self._control("register_pool", spec=pool.model_dump(mode="json"),
                                     monitor=monitor.model_dump() if monitor else None, fabric=self.task_queue)
        return PoolStatus.model_validate(result)

    async def remove_pool(self, name: str) -> None:
        await self._control("remove_pool", name=name, fabric=self.task_queue)

    async def set_priority(self, workload_id: str, priority_class: str) -> WorkloadStatus:
        """Change the priority class of a waiting workload."""
        return await self.get(workload_id).set_priority(priority_class)

    async def set_policy(self, policy: PlacementPolicy | dict[str, Any] | str, *, force: bool = False) -> int:
        """Set the active policy (a model, a dict or YAML text); returns its version. A placement target
        or region that names no location, registered pool or region is refused unless `force`."""
        if isinstance(policy, str):
            policy = PlacementPolicy.from_yaml(policy)
        elif isinstance(policy, dict):
            policy = PlacementPolicy.model_validate(policy)
        return int(await self._control("set_policy", policy=policy.model_dump(mode="json", exclude_none=True),
                                       force=force))

    async def cordon(self, pool: str) -> None:
        await self._control("cordon", name=pool, cordoned=True)

    async def uncordon(self, pool: str) -> None:
        await self._control("cordon", name=pool, cordoned=False)

    async def drain(self, pool: str, reason: str = "drained by operator") -> list[str]:
        """Cordon the pool and move its running workloads elsewhere; returns the moved workload ids."""
        return list(await self._control("drain", name=pool, reason=reason))

    async def fail_pool(self, pool: str) -> None:
        """Simulated pools only: the pool stops answering, as a dead cluster would."""
        await self._control("simulate", name=pool, action="fail")

    async def approve(self, workload_id: str, note: str = "") -> WorkloadStatus:
        """Approve the burst a waiting workload asks for (operator or admin); it is admitted next cycle."""
        return await self.get(workload_id).answer(True, self._subject(), note)

    async def deny(self, workload_id: str, note: str = "") -> WorkloadStatus:
        """Deny it: the workload stays queued for the default target (on-prem)."""
        return await self.get(workload_id).answer(False, self._subject(), note)

    def _subject(self) -> str:
        token = self._current_token()
        if not token:
            return ""
        from inferofabric.auth.tokens import token_claims

        try:
            return str(token_claims(token).get("sub", ""))
        except Exception:  # a malformed token: the gate refuses it with its own message
            return ""

    async def reclaim_pool(self, pool: str) -> str:
        """Simulated pools only: take back every job running there now, as a spot reclaim would."""
        return str(await self._control("simulate", name=pool, action="reclaim"))

    async def reconcile_pool(self, pool: str) -> ReconcileReport:
        """Compare the store, the pool's jobs and the workflows now: release leaked reservations,
        remove orphan jobs; what was found and done."""
        return ReconcileReport.model_validate(await self._control("reconcile", name=pool))

    async def restore_pool(self, pool: str) -> None:
        await self._control("simulate", name=pool, action="restore")

    async def set_simulated_health(self, pool: str, health: Health | str) -> None:
        await self._control("simulate", name=pool, action=Health(health).value)

    async def set_secret(self, name: str, value: str, pool: str | None = None, *, team: str | None = None,
                         fabric: bool = False, share_with: list[str] | None = None) -> None:
        """Store a secret owned by `team` (its workloads may use it, and those of the teams in
        `share_with`), or with `fabric=True` the fabric's own (admin only: pools' credentials; no workload
        may use it). A member's token defaults to its own team. Sealed here (FABRIC_SECRET_KEY or the key
        under FABRIC_HOME): only sealed text travels."""
        if fabric and team:
            raise InvalidInput("a secret is a team's (team=...) or the fabric's own (fabric=True), not both")
        await self._control("put_secret", name=name, sealed_value=seal(value), pool=pool, team=team,
                            shared_with=sorted(set(share_with or [])), fabric=fabric)

    async def secrets(self) -> list[dict[str, Any]]:
        """Secret names with their pool scope, owner (a team, or `fabric`) and sharing; never values."""
        return list(await self._control("list_secrets"))

    # -- workloads ----------------------------------------------------------------------------------
    async def submit(self, spec: WorkloadSpec | dict[str, Any], *, max_attempts: int = 5,
                     if_impossible: str = "reject") -> WorkloadHandle:
        """Start the workload. Before it is started it is checked against the registered pools: work no
        pool could ever run (a GPU type nobody has, a type in the wrong case, more GPUs than the largest
        pool) is refused with the reason (`if_impossible="reject"`), or started anyway with the reason
        in `handle.warnings` (`"warn"`: it waits until a pool that fits is registered)."""
        if if_impossible not in ("reject", "warn"):
            raise InvalidInput(f"if_impossible must be 'reject' or 'warn', not {if_impossible!r}")
        workload = spec if isinstance(spec, WorkloadSpec) else WorkloadSpec.model_validate(spec)
        if workload.name is None:
            workload = workload.model_copy(update={"name": f"{workload.team}-{uuid.uuid4().hex[:10]}"})
        assert workload.name is not None
        problems = await self.problems_of(workload)
        if problems and if_impossible == "reject":
            raise InvalidInput(f"{workload.name}: {'; '.join(problems)} (submit with --if-impossible warn to "
                               "queue it anyway: it waits until a pool that fits is registered)")
        request = WorkloadRequest(spec=workload, max_attempts=max_attempts)
        gpus = f"{workload.gpu_count} x {'/'.join(workload.gpu_types)}" if workload.gpu_count else "no GPU"
        try:
            await self.temporal.start_workflow(
                "WorkloadWorkflow", request.model_dump(mode="json"), id=workload.name, task_queue=self.task_queue,
                search_attributes=initial_search_attributes(workload.team, workload.total_gpus),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"{workload.team}/{workload.project}: {workload.name} ({gpus}, "
                               f"{workload.data_classification.value})",
                static_details=f"image `{workload.image}`\n\nteam {workload.team}, project {workload.project}, "
                               f"priority {workload.priority}",
            )
        except RPCError as error:
            if error.status == RPCStatusCode.ALREADY_EXISTS:
                raise WorkloadExists(f"a workload named {workload.name!r} already exists") from None
            raise self._refused(error, "submit") from None
        except WorkflowAlreadyStartedError:
            raise WorkloadExists(f"a workload named {workload.name!r} already exists") from None
        handle = WorkloadHandle(self, workload.name)
        handle.warnings = problems
        return handle

    async def schedule(self, schedule_id: str, spec: WorkloadSpec | dict[str, Any], cron: str) -> None:
        """Run a workload on a Temporal Schedule (a training pipeline every night, say); each run is a
        workload named <name>-<timestamp>."""
        workload = spec if isinstance(spec, WorkloadSpec) else WorkloadSpec.model_validate(spec)
        await _schedule(self, schedule_id, workload, cron)

    async def schedules(self) -> list[dict[str, Any]]:
        items = []
        async for entry in await self.temporal.list_schedules():
            upcoming = entry.info.next_action_times if entry.info else []
            items.append({"id": entry.id, "next": upcoming[0].isoformat() if upcoming else None})
        return items

    async def unschedule(self, schedule_id: str) -> None:
        try:
            await self.temporal.get_schedule_handle(schedule_id).delete()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise FabricNotFound(f"no schedule named {schedule_id!r}") from None
            raise

    def get(self, workload_id: str) -> WorkloadHandle:
        return WorkloadHandle(self, workload_id)

    async def list(self, *, state: WorkloadState | str | None = None, team: str | None = None,
                   pool: str | None = None, location: Location | str | None = None,
                   limit: int = 200) -> list[WorkloadStatus]:
        """Workloads, newest first, from Temporal visibility (search attributes and memo)."""
        state = _checked_filter(WorkloadState, "state", state)
        location = _checked_filter(Location, "location", location)
        clauses = ['WorkflowType = "WorkloadWorkflow"']
        for name, value in (("FabricState", state), ("FabricTeam", team), ("FabricPool", pool),
                            ("FabricLocation", location)):
            if value:
                clauses.append(f"{name} = '{_quote(str(getattr(value, 'value', value)))}'")
        items = []
        async for execution in self.temporal.list_workflows(" AND ".join(clauses), limit=limit):
            attrs = execution.typed_search_attributes
            values = {pair.key.name: pair.value for pair in attrs}
            memo = await execution.memo()
            state_value = values.get("FabricState", WorkloadState.QUEUED.value)
            if execution.status not in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED) \
                    and state_value not in ("succeeded", "failed", "cancelled"):
                state_value = "cancelled" if execution.status == WorkflowExecutionStatus.CANCELED else "failed"
            items.append(WorkloadStatus(
                id=execution.id, state=WorkloadState(state_value), pool=values.get("FabricPool"),
                location=values.get("FabricLocation") or None, region=memo.get("region") or None,
                backend=memo.get("backend") or None, gpu_type=values.get("FabricGpuType") or None,
                gpus=int(values.get("FabricGpus", 0) or 0), attempts=int(memo.get("attempts", 0) or 0),
                team=values.get("FabricTeam"), message=memo.get("message", ""), submitted_at=execution.start_time,
            ))
        return items

    # -- endpoints (inferofabric/sdk/endpoints.py) ----------------------------------------------------
    async def deploy_endpoint(self, spec: EndpointSpec | dict[str, Any]) -> EndpointHandle:
        """Deploy an inference endpoint (EndpointSpec or its dict); its handle, with `.url`."""
        from inferofabric.sdk.endpoints import deploy

        return await deploy(self, spec)

    def endpoint(self, name: str) -> EndpointHandle:
        """The handle of a deployed endpoint: status(), scale(), update(), delete()."""
        from inferofabric.sdk.endpoints import EndpointHandle

        return EndpointHandle(self, name)

    async def endpoints(self) -> builtins.list[EndpointStatus]:  # `list` is a method here
        from inferofabric.sdk.endpoints import list_endpoints

        return await list_endpoints(self)


def _checked_filter(kind: Any, name: str, value: Any) -> Any:
    """A filter value that names nothing would list nothing, silently: refuse it with the valid ones."""
    if value is None or isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(item.value for item in kind)
        raise InvalidInput(f"unknown {name} {value!r}: one of {valid}") from None


def _quote(value: str) -> str:
    return value.replace("'", "")


async def _schedule(fabric: FabricClient, schedule_id: str, spec: WorkloadSpec, cron: str) -> None:
    from temporalio.client import Schedule, ScheduleActionStartWorkflow, ScheduleAlreadyRunningError, ScheduleSpec

    if spec.name is None:
        spec = spec.model_copy(update={"name": schedule_id})
    request = WorkloadRequest(spec=spec)
    try:
        await fabric.temporal.create_schedule(
            schedule_id,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    "WorkloadWorkflow", request.model_dump(mode="json"), id=spec.name or schedule_id,
                    task_queue=fabric.task_queue,
                    typed_search_attributes=initial_search_attributes(spec.team, spec.total_gpus)),
                spec=ScheduleSpec(cron_expressions=[cron]),
            ),
        )
    except ScheduleAlreadyRunningError:
        raise AlreadyExists(f"a schedule named {schedule_id!r} already exists (`fabric schedule remove "
                            f"{schedule_id}` first, or pick another id)") from None
    except RPCError as error:
        if error.status == RPCStatusCode.ALREADY_EXISTS:
            raise AlreadyExists(f"a schedule named {schedule_id!r} already exists") from None
        raise fabric._refused(error, f"schedule {schedule_id!r}") from None
