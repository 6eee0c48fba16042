"""The Python SDK: `FabricClient` (async) and its handles. The CLI is built on it.

    client = await FabricClient.connect("127.0.0.1:7233")
    handle = await client.submit(WorkloadSpec(...))
    print(await handle.status(), await handle.explain())
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.auth.client import find_token, with_token
from inferofabric.connection import connect, door_tls, task_queue_pollers
from inferofabric.models.common import Health, Location, WorkloadState
from inferofabric.models.messages import ControlRequest, MonitorSettings, ReconcileReport, WorkloadRequest
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import Explanation, PoolStatus, QueueEntry, QueueView, WorkloadStatus
from inferofabric.models.workload import WorkloadSpec
from inferofabric.sdk.errors import (
    AlreadyExists,
    FabricError,
    FabricNotFound,
    InvalidInput,
    NoAnswer,
    PermissionDenied,
    WorkloadExists,
    WorkloadNotFound,
)
from inferofabric.secrets import seal
from inferofabric.settings import task_queue as default_task_queue
from inferofabric.settings import temporal_address
from inferofabric.workflows.workload_visibility import initial_search_attributes

QUERY_TIMEOUT = timedelta(seconds=10)
CONTROL_TIMEOUT = timedelta(minutes=2)
POOLS_SEEN_FOR = 5.0  # seconds a submit's feasibility check reuses the registered pools it saw
NO_WORKER_CHECK_AFTER = timedelta(seconds=2)  # a control call not answered by then: is any worker there?


class FabricClient:
    """`store_url`: read access to the control plane's store (the embedded stack's SQLite file, or
    FABRIC_DATABASE_URL with a read-only role). With it, reads (queue, pools, policy) are store reads;
    without it they go through the control plane."""

    def __init__(self, client: Client, task_queue: str | None = None, store_url: str | None = None,
                 token: str | None = None, key: bytes | None = None) -> None:
        # `token`, else $FABRIC_TOKEN, else the admin token `fabric up` wrote under FABRIC_HOME (looked
        # up at the first request, so a client made before its stack's first start still finds it).
        # Through the door (a client connected with an API key) the door stamps the identity; a client
        # of the control plane's own, straight to Temporal, stamps the identity the token proves
        # (checked with `key`, default the fabric's key under FABRIC_HOME).
        self._token = token
        through_door = bool(client.service_client.config.api_key)
        self.temporal = client if through_door else with_token(client, self._current_token, key)
        self.task_queue = task_queue or default_task_queue()
        self.store_url = store_url
        self._pools_seen: tuple[float, list[PoolStatus]] | None = None  # for the door's checks
        self._pools_loading: asyncio.Future[list[PoolStatus]] | None = None

    def _current_token(self) -> str | None:
        if self._token is None:
            self._token = find_token()
        return self._token

    @property
    def token(self) -> str | None:
        return self._current_token()

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

    def _store(self) -> Any:
        from inferofabric.store.db import get_store

        return get_store(self.store_url)

    # -- control plane ------------------------------------------------------------------------------
    async def _control(self, op: str, **args: Any) -> Any:
        """Run one control operation as a short workflow on the fabric's worker, bounded in time: when no
        worker polls the task queue the caller hears so within seconds, not never."""
        try:
            handle = await self.temporal.start_workflow(
                "ControlWorkflow", ControlRequest(op=op, args=args), id=f"fabric-control-{op}-{uuid.uuid4().hex[:12]}",
                task_queue=self.task_queue, execution_timeout=CONTROL_TIMEOUT,
                static_summary=f"fabric control: {op}",
            )
            return await self._answer(handle, op)
        except WorkflowFailureError as error:
            kind = _root_type(error)
            message = _root_message(error)
            if kind == "NotFound":
                raise FabricNotFound(message) from None
            if kind == "InvalidInput":
                raise InvalidInput(message) from None
            if kind == "PermissionDenied":
                raise PermissionDenied(message) from None
            raise FabricError(message) from None

    async def answer_or_no_worker(self, call: Any, op: str) -> Any:
        """Await `call`; if it has no answer after a moment, ask Temporal whether any fabric worker polls
        the task queue, and say so at once when none does (instead of waiting out a long timeout)."""
        waiting = asyncio.ensure_future(call)
        done, _ = await asyncio.wait({waiting}, timeout=NO_WORKER_CHECK_AFTER.total_seconds())
        if not done and not await self.worker_polls():
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
            raise NoAnswer(self.no_worker_message(op))
        return await waiting

    async def _answer(self, handle: WorkflowHandle[Any, Any], op: str) -> Any:
        try:
            return await self.answer_or_no_worker(handle.result(), op)
        except NoAnswer:
            with contextlib.suppress(Exception):
                await handle.terminate("no fabric worker polls the task queue")
            raise
        except WorkflowFailureError as error:
            if isinstance(error.cause, TemporalTimeoutError):
                raise NoAnswer(f"the fabric did not answer {op!r} within {CONTROL_TIMEOUT.total_seconds():.0f}s "
                               f"(task queue {self.task_queue!r}): is its worker overloaded?") from None
            raise

    async def worker_polls(self) -> bool:
        """Whether a fabric worker polls this client's task queue now (Temporal's own poller list)."""
        pollers = await task_queue_pollers(self.temporal, self.task_queue)
        return pollers is None or bool(pollers)  # cannot tell: keep waiting rather than claim something untrue

    def _refused(self, error: RPCError, op: str) -> FabricError:
        """What a refusal by the Temporal server (or the fabric's door) means for a fabric user."""
        if error.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNAUTHENTICATED):
            return PermissionDenied(error.message.removeprefix("fabric door: "))
        if "no mapping defined for search attribute" in error.message:
            return NoAnswer(f"{op}: the Temporal server at {self.temporal.service_client.config.target_host} "
                            f"(namespace {self.temporal.namespace!r}) has never run a fabric (its search attributes "
                            "are not registered): start `fabric up`, or `fabric worker` against it, or point "
                            "FABRIC_TEMPORAL_ADDRESS at the running fabric")
        return FabricError(f"{op}: the Temporal server refused it: {error.message}")

    def no_worker_message(self, op: str) -> str:
        target = self.temporal.service_client.config.target_host
        return (f"no fabric worker polls task queue {self.task_queue!r} on {target} (namespace "
                f"{self.temporal.namespace!r}), so nothing can answer {op!r}: start one with `fabric up` or "
                "`fabric worker`, or point FABRIC_TEMPORAL_ADDRESS / FABRIC_TASK_QUEUE at the running fabric")

    async def register_pool(self, spec: PoolSpec | dict[str, Any],
                            monitor: MonitorSettings | None = None) -> PoolStatus:
        pool = spec if isinstance(spec, PoolSpec) else PoolSpec.model_validate(spec)
        result = await self._control("register_pool", spec=pool.model_dump(mode="json"),
                                     monitor=monitor.model_dump() if monitor else None, fabric=self.task_queue)
        return PoolStatus.model_validate(result)

    async def remove_pool(self, name: str) -> None:
        await self._control("remove_pool", name=name, fabric=self.task_queue)

    def _reader(self) -> Any:
        """The caller's identity for a read no gate sees (the store path, job output): its token checked
        with the fabric's key (inferofabric/auth/readers.py); PermissionDenied without a valid one."""
        from inferofabric.auth.readers import reader_identity
        from inferofabric.auth.tokens import AuthError
        from inferofabric.settings import fabric_home_path

        try:
            return reader_identity(self.token, fabric_home_path())
        except AuthError as error:
            raise PermissionDenied(f"permission denied: {error}") from None

    async def pools(self) -> list[PoolStatus]:
        if self.store_url:
            self._reader()
            return await asyncio.to_thread(lambda: self._store().pool_statuses())  # type: ignore[no-any-return]
        return [PoolStatus.model_validate(p) for p in await self._control("list_pools")]

    async def queue(self, team: str | None = None, workload_id: str | None = None) -> QueueView:
        """Waiting work in admission order, with position, reason, fair shares and quotas."""
        if self.store_url:
            from inferofabric.queue import snapshot

            self._reader()
            return await asyncio.to_thread(snapshot, self._store(), team, workload_id)
        return QueueView.model_validate(await self._control("queue", team=team, workload_id=workload_id))

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

    async def policy(self) -> dict[str, Any]:
        """{"version": int | None, "default": bool, "policy": {...}}"""
        if self.store_url:
            from inferofabric.policies.engine import policy_document

            self._reader()
            return policy_document(*await asyncio.to_thread(lambda: self._store().active_policy()))
        return dict(await self._control("get_policy"))

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

    async def audit(self, limit: int = 50, identity: str | None = None) -> list[dict[str, Any]]:
        """The newest audit entries (who did what, when, with what result), oldest first: everyone's
        for operators and admins, a member's own team's rows for a member."""
        if self.store_url:
            from inferofabric.auth.audit import audit_entries
            from inferofabric.auth.readers import audit_scope
            from inferofabric.auth.tokens import AuthError

            try:
                team = audit_scope(self._reader())
            except AuthError as error:
                raise PermissionDenied(f"permission denied: {error}") from None
            return await asyncio.to_thread(audit_entries, self._store(), limit, identity, team)
        return list(await self._control("audit", limit=limit, identity=identity))

    async def cost(self, by: str = "team", start: datetime | None = None, end: datetime | None = None,
                   step: str | None = None) -> list[dict[str, Any]]:
        """Cost rows per team/project/pool/location/region/workload (GPU-hours and USD, on-prem and
        cloud apart), over [start, end) (default: everything to now), per day or week with `step`."""
        view = await self._cost_view(by=by, start=start.isoformat() if start else None,
                                     end=end.isoformat() if end else None, step=step)
        return list(view["rows"])

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

    async def budgets(self) -> list[dict[str, Any]]:
        """Every budget the policy sets: team or project, scope, period, limit, spent, reserved, remaining (USD)."""
        if self.store_url:
            from inferofabric.queue import compiled_policy
            from inferofabric.store.budget import budget_view

            self._reader()
            store = self._store()
            return await asyncio.to_thread(lambda: budget_view(store, compiled_policy(store).policy))
        return list(await self._control("budgets"))

    async def cost_idle(self, start: datetime | None = None, end: datetime | None = None,
                        step: str | None = None) -> list[dict[str, Any]]:
        """Idle on-prem cost per pool (per day or week with `step`) over [start, end): capacity, used
        and idle GPU-hours, idle cost (USD), utilization."""
        view = await self._cost_view(idle=True, start=start.isoformat() if start else None,
                                     end=end.isoformat() if end else None, step=step)
        return list(view["idle"])

    async def cost_lines(self, workload_id: str) -> dict[str, Any]:
        """One workload's ledger lines (one per attempt: pool, interval, GPUs, price, cost) and total."""
        return await self._cost_view(workload_id=workload_id)

    async def _cost_view(self, **args: Any) -> dict[str, Any]:
        if self.store_url:
            from inferofabric.auth.readers import scoped_cost_view

            reader = self._reader()  # a member sees its own team's lines only
            try:
                return await asyncio.to_thread(scoped_cost_view, self._store(), reader, args.get("by") or "team",
                                               args.get("start"), args.get("end"), args.get("step"),
                                               args.get("workload_id"), bool(args.get("idle")))
            except ValueError as error:
                raise InvalidInput(str(error)) from None
        return dict(await self._control("cost", **args))

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
        except Exception as error:
            if type(error).__name__ == "WorkflowAlreadyStartedError":
                raise WorkloadExists(f"a workload named {workload.name!r} already exists") from None
            raise
        handle = WorkloadHandle(self, workload.name)
        handle.warnings = problems
        return handle

    async def problems_of(self, workload: WorkloadSpec) -> list[str]:
        """Why no registered pool could ever run the workload (empty: some pool could)."""
        from inferofabric.policies.feasibility import known_pools, workload_problems

        def check(pools: list[PoolStatus]) -> list[str]:
            return workload_problems(workload.gpu_types, workload.total_gpus, known_pools(pools))

        if not workload.total_gpus:
            return []
        try:
            problems = check(await self._registered_pools(fresh=False))
        except NoAnswer:
            return []  # nothing answers for the pools now: the workload's own wait will say why
        # A pool registered since the last look (by anyone) must not be missed: look again first.
        return check(await self._registered_pools(fresh=True)) if problems else []

    async def _registered_pools(self, fresh: bool) -> list[PoolStatus]:
        """The registered pools, looked up at most every few seconds by concurrent submits (one lookup
        shared by all of them), or now when `fresh`."""
        loop = asyncio.get_running_loop()
        if not fresh and self._pools_seen is not None and loop.time() - self._pools_seen[0] < POOLS_SEEN_FOR:
            return self._pools_seen[1]
        if self._pools_loading is None or self._pools_loading.done():
            self._pools_loading = asyncio.ensure_future(self.pools())
        loading = self._pools_loading
        pools = await asyncio.shield(loading)
        self._pools_seen = (loop.time(), pools)
        return pools

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
    async def deploy_endpoint(self, spec: Any) -> Any:
        """Deploy an inference endpoint (EndpointSpec or its dict); its handle, with `.url`."""
        from inferofabric.sdk.endpoints import deploy

        return await deploy(self, spec)

    def endpoint(self, name: str) -> Any:
        """The handle of a deployed endpoint: status(), scale(), update(), delete()."""
        from inferofabric.sdk.endpoints import EndpointHandle

        return EndpointHandle(self, name)

    async def endpoints(self) -> Any:
        from inferofabric.sdk.endpoints import list_endpoints

        return await list_endpoints(self)


class WorkloadHandle:
    def __init__(self, fabric: FabricClient, workload_id: str) -> None:
        self.fabric = fabric
        self.id = workload_id
        self.warnings: list[str] = []  # set by submit(if_impossible="warn"): why it may never run
        self._handle: WorkflowHandle[Any, WorkloadStatus] = fabric.temporal.get_workflow_handle(
            workload_id, result_type=WorkloadStatus)

    async def _query(self, name: str, result_type: type) -> Any:
        try:
            return await self.fabric.answer_or_no_worker(
                self._handle.query(name, result_type=result_type, rpc_timeout=QUERY_TIMEOUT), f"{name} of {self.id}")
        except NoAnswer:
            raise
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            if not await self.fabric.worker_polls():
                raise NoAnswer(self.fabric.no_worker_message(f"{name} of {self.id}")) from None
            if error.status == RPCStatusCode.DEADLINE_EXCEEDED:
                raise NoAnswer(f"workload {self.id!r} did not answer {name!r} within "
                               f"{QUERY_TIMEOUT.total_seconds():.0f}s: is the fabric's worker overloaded?") from None
            raise FabricError(f"workload {self.id!r}: {error.message}") from None
        except Exception as error:  # WorkflowQueryFailedError: bad input recorded in history, ...
            from inferofabric.auth.tokens import AuthError

            if isinstance(error, AuthError):  # this client's own token does not verify: a read needs one
                raise PermissionDenied(f"permission denied: {error}") from None
            description = await self._describe()
            if description == "failed":  # refused at the door? say so, not "query failed"
                try:
                    await self._handle.result()
                except WorkflowFailureError as failure:
                    _raise_if_denied(failure)
            raise FabricError(f"workload {self.id!r} is {description}: {error}") from None

    async def _describe(self) -> str:
        try:
            description = await self._handle.describe()
        except RPCError:
            raise WorkloadNotFound(f"no workload named {self.id!r}") from None
        return description.status.name.lower() if description.status else "unknown"

    async def status(self) -> WorkloadStatus:
        status: WorkloadStatus = await self._query("status", WorkloadStatus)
        if not status.state.terminal:
            await self._closed_outside(status)
        if status.state == WorkloadState.QUEUED:
            entry = await self._queue_entry()
            if entry is not None:
                status.position, status.reason = entry.position, entry.reason
                status.priority_class = entry.priority_class
            else:
                status.reason = status.message
        return status

    async def _closed_outside(self, status: WorkloadStatus) -> None:
        """A workflow ended by Temporal itself (terminated from the Web UI, timed out, failed in a way
        the workload could not record) answers queries with its last state: report how it really
        ended, so nothing shows `launching` for ever."""
        try:
            description = await self._handle.describe()
        except RPCError:
            return
        closed = description.status
        if closed is None or closed in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW,
                                        WorkflowExecutionStatus.COMPLETED):
            return
        how = {WorkflowExecutionStatus.FAILED: "failed", WorkflowExecutionStatus.TIMED_OUT: "timed out",
               WorkflowExecutionStatus.CANCELED: "was cancelled"}.get(closed, f"was {closed.name.lower()}")
        status.state = WorkloadState.CANCELLED if closed == WorkflowExecutionStatus.CANCELED else WorkloadState.FAILED
        reason = ""
        if closed == WorkflowExecutionStatus.FAILED:
            try:
                await self._handle.result()
            except WorkflowFailureError as failure:
                reason = f": {_root_message(failure)}"
            except Exception:  # the reason is a courtesy; the state above is what matters
                pass
        status.message = f"the workflow {how} in Temporal{reason}"
        status.reason = None

    async def explain(self) -> Explanation:
        explanation: Explanation = await self._query("explain", Explanation)
        if explanation.state == WorkloadState.QUEUED:
            explanation.queue = await self._queue_entry()
        return explanation

    async def _queue_entry(self) -> QueueEntry | None:
        view = await self.fabric.queue(workload_id=self.id)
        return view.entries[0] if view.entries else None

    async def set_priority(self, priority_class: str) -> WorkloadStatus:
        try:
            return await self._handle.execute_update(  # type: ignore[no-any-return]
                "set_priority", priority_class, result_type=WorkloadStatus)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            raise FabricError(f"workload {self.id!r}: {error.message}") from None
        except Exception as error:  # WorkflowUpdateFailedError: refused, not waiting, unknown class
            _raise_if_denied(error)
            raise InvalidInput(_root_message(error)) from None

    async def answer(self, approve: bool, by: str, note: str = "") -> WorkloadStatus:
        """Approve or deny the burst this workload waits for (FabricClient.approve/deny)."""
        from inferofabric.models.messages import ApprovalAnswer

        try:
            return await self._handle.execute_update(  # type: ignore[no-any-return]
                "approve", ApprovalAnswer(approve=approve, by=by, note=note), result_type=WorkloadStatus)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            raise FabricError(f"workload {self.id!r}: {error.message}") from None
        except Exception as error:  # refused, not waiting for an approval
            _raise_if_denied(error)
            raise InvalidInput(_root_message(error)) from None

    async def result(self) -> WorkloadStatus:
        """Wait until the workload ends; its final status."""
        try:
            return await self._handle.result()
        except WorkflowFailureError as error:
            _raise_if_denied(error)
            raise FabricError(f"workload {self.id!r} failed: {_root_message(error)}") from None
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise WorkloadNotFound(f"no workload named {self.id!r}") from None
            raise

    async def cancel(self) -> WorkloadStatus:
        """Cancel and wait until the job is stopped and its GPUs are released."""
        status = await self.status()
        if status.state.terminal:
            return status
        try:
            return await _retry_not_ready(  # type: ignore[no-any-return]
                lambda: self._handle.execute_update("cancel", result_type=WorkloadStatus))
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return await self.status()
            raise
        except WorkflowUpdateFailedError as error:
            _raise_if_denied(error)
            raise FabricError(f"workload {self.id!r}: {_root_message(error)}") from None

    async def logs(self, tail: int = 200) -> str:
        """The last `tail` lines of the current (or last) attempt's output."""
        status = await self.status()
        if not status.pool or not status.job_id:
            return ""
        return await self.attempt_logs(status, status.pool, status.job_id, tail)

    async def job_logs(self, pool: str, job_id: str, tail: int = 200) -> str:
        """The last `tail` lines of one attempt's job (pool and job id from `status().history`)."""
        return await self.attempt_logs(await self.status(), pool, job_id, tail)

    async def attempt_logs(self, status: WorkloadStatus, pool: str, job_id: str, tail: int = 200) -> str:
        """One attempt's output, read from its pool here, never through a workflow (whose history would
        keep the text). Only an attempt the workload's own record names (`status.history`); a member
        reads its own team's only. Needs the store (the pool's settings): the fabric's host."""
        reader = self.fabric._reader()
        from inferofabric.auth.readers import require_team_reader
        from inferofabric.auth.tokens import AuthError

        try:
            require_team_reader(reader, status.team, f"the output of workload {self.id!r}")
        except AuthError as error:
            raise PermissionDenied(f"permission denied: {error}") from None
        if not any(a.pool == pool and a.job_id == job_id for a in status.history) and \
                (status.pool, status.job_id) != (pool, job_id):
            raise InvalidInput(f"workload {self.id!r} has no attempt {job_id!r} on pool {pool!r}")
        if not self.fabric.store_url:
            raise FabricError("logs are read from the pool on the fabric's host (they never pass through "
                              "Temporal): run `fabric logs` there, or give the client the store "
                              "(FABRIC_DATABASE_URL)")
        from inferofabric.activities.jobs import reading_backend
        from inferofabric.backends.base import BackendError
        from inferofabric.settings import fabric_home_path

        spec = await asyncio.to_thread(lambda: self.fabric._store().pool_spec(pool))
        try:
            backend = reading_backend(spec, fabric_home_path(), self.fabric.store_url)
            return str(await asyncio.to_thread(backend.logs, job_id, tail))
        except BackendError as error:
            raise FabricError(f"logs of {job_id} on {pool}: {error}") from None


async def _retry_not_ready(call: Any, attempts: int = 10) -> Any:
    """Temporal answers an update with WorkflowNotReady when the workflow task that would take it
    failed or timed out (a busy or restarting worker): transient, so try again shortly."""
    for attempt in range(attempts):
        try:
            return await call()
        except RPCError as error:
            if "workflow task failure" not in error.message or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


def _raise_if_denied(error: BaseException) -> None:
    if _root_type(error) == "PermissionDenied":
        raise PermissionDenied(_root_message(error)) from None


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


def _root_type(error: BaseException) -> str | None:
    cause: BaseException | None = error
    kind = None
    while cause is not None:
        if isinstance(cause, ApplicationError):
            kind = cause.type
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return kind


def _root_message(error: BaseException) -> str:
    cause: BaseException | None = error
    message = str(error)
    while cause is not None:
        if isinstance(cause, ApplicationError):
            message = cause.message
        cause = cause.__cause__ or getattr(cause, "cause", None)
    return message


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
