"""EndpointWorkflow: one durable workflow per inference endpoint (workflow id `endpoint-<name>`).

It owns the endpoint's replicas. Each replica is a workload (a child WorkloadWorkflow, started with
ABANDON so it outlives a continue-as-new), placed by the same admission loop and policy as any
other work: on-prem first, burst when the policy says, compliance on every replica, and moved by
its own workflow when its pool fails. The endpoint decides only how many replicas there are and
which go:

- the gateway signals `metrics` (load, latency, which replicas answer their readiness probe);
  `policies/autoscale.recommend` turns them into a desired count, `policies/replicas.plan_replicas`
  into replicas to start and stop (cloud ones first on the way down; a rolling update replaces old
  replicas only as new ones become ready; a burst replica is brought home when on-prem has room);
- each replica reports its state and address (signal `replica`, sent with the worker's identity);
- `scale`, `update` and `delete` are updates (checked by the auth gate like a workload's cancel).

A person's start carries the spec and nothing else (`EndpointRequest`): replicas, their addresses
and the endpoint's memory come only from the fabric, its own child workloads and their reports. The
state a run hands to the next (`EndpointCarry`) is read from the input only by a run that continues
the endpoint's own earlier run; a start that brings any of it is refused (InvalidInput), so nobody
can point the gateway at an address of their choosing or have the endpoint cancel someone else's
workload by naming it a replica.

History bound: continue-as-new past `history_limit` events (2,000; a gateway sample costs about 4), carrying
the replicas, the autoscaler's memory and the last events. It sleeps on signals: the only timer is
a slow tick that lets an idle endpoint reach its scale-to-zero time.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError
    from temporalio.workflow import ParentClosePolicy

    from inferofabric.errors import FailureType
    from inferofabric.models.common import WorkloadState
    from inferofabric.models.endpoint import EndpointSpec
    from inferofabric.models.endpoint_status import (
        EndpointCarry,
        EndpointRequest,
        EndpointRoutes,
        EndpointState,
        EndpointStatus,
        GatewaySample,
        ReplicaReport,
        ReplicaRole,
        ReplicaView,
        RouteReplica,
        ScaleMemory,
        ScaleRequest,
    )
    from inferofabric.models.messages import WorkloadRequest
    from inferofabric.models.workload import SIM_LATENCY_ANNOTATION
    from inferofabric.policies.autoscale import Sample, ScaleState, recommend
    from inferofabric.policies.replicas import plan_replicas
    from inferofabric.workflows.decode_failures import DECODE_FAILURES  # undecodable input fails the workflow
    from inferofabric.workflows.workload_visibility import initial_search_attributes

TICK = timedelta(seconds=30)  # an idle endpoint still looks now and then (scale to zero, stale samples)
SAMPLE_FRESH_S = 15.0  # a gateway's sample older than this no longer counts
DELETE_WAIT = timedelta(minutes=5)
# A serving replica that goes is first taken out of the gateway's routing (it refreshes every second),
# then given this long to finish what it serves, then stopped: scale-in and updates lose no request.
DRAIN_S = 3.0
MAX_EVENTS = 60
REPLICA_ATTEMPTS = 5
# Replicas that fail one after another before any of them served (a bad image, a command that exits):
# the endpoint stops starting new ones and says why, until the next update or scale.
CRASH_LOOP = 3


# Visibility query for the endpoints deployed now (the SDK's list, the gateway's routing table).
RUNNING_ENDPOINTS = 'WorkflowType = "EndpointWorkflow" AND ExecutionStatus = "Running"'


def endpoint_id(name: str) -> str:
    return f"endpoint-{name}"


@workflow.defn(name="EndpointWorkflow", failure_exception_types=DECODE_FAILURES, sandboxed=False)
class EndpointWorkflow:
    def __init__(self) -> None:
        self._req: EndpointCarry | None = None
        self._replicas: dict[str, ReplicaView] = {}
        self._samples: dict[str, tuple[float, GatewaySample]] = {}
        self._scale = ScaleState()
        self._reason = ""
        self._dirty = True
        self._deleting = False
        self._deleted = False

    # -- reads --------------------------------------------------------------------------------------
    @workflow.query(name="status")
    def status(self) -> EndpointStatus:
        assert self._req is not None
        spec = self._req.spec
        ready = self._ready()
        replicas = [self._view(r, ready) for r in self._replicas.values()]
        return EndpointStatus(
            name=spec.name, team=spec.team, state=self._state(ready), desired=self._scale.desired,
            ready=len([r for r in self._replicas.values() if r.id in ready and r.live]), version=self._req.version,
            min=spec.replicas.min, max=spec.replicas.max, replicas=replicas, reason=self._reason,
            events=list(self._req.events), spec=spec, updated_at=workflow.now())

    @workflow.query(name="routes")
    def routes(self) -> EndpointRoutes:
        """The gateway's view: replicas that may serve, their addresses, and how to probe them."""
        assert self._req is not None
        spec = self._req.spec
        ready = self._ready()
        return EndpointRoutes(
            state=self._state(ready), team=spec.team, access=spec.access, desired=self._scale.desired,
            ready=len(ready), readiness=spec.readiness,
            sim_latency=spec.annotations.get(SIM_LATENCY_ANNOTATION, "10ms"),
            in_flight_target=spec.autoscale.target if spec.autoscale.metric == "in_flight" else None,
            replicas=[RouteReplica(id=r.id, state=r.state, backend=r.backend, address=r.address, stopping=r.stopping)
                      for r in self._replicas.values() if r.live])

    # -- what the gateway and the replicas say -------------------------------------------------------
    @workflow.signal(name="metrics")
    def metrics(self, sample: GatewaySample) -> None:
        self._samples[sample.gateway] = (workflow.now().timestamp(), sample)
        self._dirty = True

    @workflow.signal(name="replica")
    def replica(self, report: ReplicaReport) -> None:
        replica = self._replicas.get(report.replica)
        if replica is None or report.seq <= replica.seq:
            return  # not ours, or older than what we know
        was = replica.state
        replica.seq = report.seq
        replica.state = report.state.value
        replica.pool, replica.location, replica.backend = report.pool, report.location, report.backend
        replica.address, replica.message = report.address, report.message
        if was != replica.state:
            where = f" on {report.pool} ({report.location.value if report.location else '?'})" if report.pool else ""
            self._event(f"{replica.id}: {replica.state}{where}" + (f": {report.message}" if report.message else ""))
            if report.state == WorkloadState.FAILED and not replica.stopping and not replica.served \
                    and self._req is not None:
                self._req.failures += 1
                if self._req.failures == CRASH_LOOP:
                    self._event(f"{CRASH_LOOP} replicas in a row failed before serving (last: {report.message}): "
                                "no more are started until `fabric endpoint update` or `scale`")
        self._dirty = True

    # -- what users ask ------------------------------------------------------------------------------
    @workflow.update(name="scale")
    def scale(self, request: ScaleRequest) -> EndpointStatus:
        assert self._req is not None
        spec = self._req.spec
        low = spec.replicas.min if request.min is None else request.min
        high = spec.replicas.max if request.max is None else request.max
        spec.replicas = type(spec.replicas)(min=low, max=high)
        self._scale.desired = min(high, max(low, self._scale.desired))
        self._req.failures = 0
        self._event(f"scaled: replicas {low}..{high}")
        self._dirty = True
        return self.status()

    @scale.validator
    def _validate_scale(self, request: ScaleRequest) -> None:
        assert self._req is not None
        low = self._req.spec.replicas.min if request.min is None else request.min
        high = self._req.spec.replicas.max if request.max is None else request.max
        if low > high:
            raise ApplicationError(f"min ({low}) cannot exceed max ({high})", type=FailureType.INVALID_INPUT,
                                   non_retryable=True)
        if self._deleting:
            raise ApplicationError("the endpoint is being deleted", type=FailureType.INVALID_INPUT, non_retryable=True)

    @workflow.update(name="update")
    def update(self, spec: EndpointSpec) -> EndpointStatus:
        assert self._req is not None
        self._req.spec = spec
        self._req.version += 1
        self._req.failures = 0
        self._scale.desired = min(spec.replicas.max, max(spec.replicas.min, self._scale.desired))
        self._event(f"update to version {self._req.version}: rolling, at most {spec.update.max_surge} extra "
                    "replica(s) at a time")
        self._dirty = True
        return self.status()

    @update.validator
    def _validate_update(self, spec: EndpointSpec) -> None:
        assert self._req is not None
        current = self._req.spec
        if spec.name != current.name or spec.team != current.team:
            raise ApplicationError(f"an update keeps the endpoint's name and team ({current.name}, {current.team})",
                                   type=FailureType.INVALID_INPUT, non_retryable=True)
        if self._deleting:
            raise ApplicationError("the endpoint is being deleted", type=FailureType.INVALID_INPUT, non_retryable=True)

    @workflow.update(name="delete")
    async def delete(self) -> EndpointStatus:
        self._deleting = True
        self._dirty = True
        await workflow.wait_condition(lambda: self._deleted)
        return self.status()

    @delete.validator
    def _validate_delete(self) -> None:
        """Seen by the auth gate (team members, operators, admins)."""

    # -- main ----------------------------------------------------------------------------------------
    @workflow.run
    async def run(self, raw: Any) -> EndpointStatus:
        request = admit(raw, workflow.info())
        self._req = request
        if not request.tag:
            request.tag = str(workflow.uuid4())[:4]
            request.deployed_at = workflow.now().timestamp()
            self._event(f"deployed: replicas {request.spec.replicas.min}..{request.spec.replicas.max}, "
                        f"autoscale on {request.spec.autoscale.metric} (target {request.spec.autoscale.target:g})")
        self._replicas = {r.id: r for r in request.replicas}
        memory = request.scale or ScaleMemory(desired=request.spec.replicas.min)
        self._scale = ScaleState(memory.desired, memory.above_since, memory.below_since, memory.highest_below,
                                 memory.last_request_at, list(memory.reasons))
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._dirty, timeout=self._next_wake())
            self._dirty = False
            await self._cancel_due()
            if self._deleting:
                await self._delete_all()
                self._deleted = True
                await workflow.wait_condition(workflow.all_handlers_finished)
                return self.status()
            self._note_ready()
            self._autoscale()
            await self._reconcile()
            self._forget_ended()
            workflow.set_current_details(self._details())
            info = workflow.info()
            if info.get_current_history_length() > request.history_limit or info.is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry())

    def _autoscale(self) -> None:
        assert self._req is not None
        spec = self._req.spec
        now = workflow.now().timestamp()
        fresh = [s for at, s in self._samples.values() if now - at <= SAMPLE_FRESH_S]
        if not fresh:
            # No gateway has spoken lately: nothing to scale on; keep the count within the range.
            if self._scale.desired > 0 or spec.scale_to_zero_after_s is None:
                self._scale.desired = min(spec.replicas.max, max(spec.replicas.min, self._scale.desired))
            return
        idle = [s.idle_s for s in fresh if s.idle_s is not None]
        p90 = [s.p90_latency_s for s in fresh if s.p90_latency_s is not None]
        last = max(now - min(idle) if idle else 0.0, self._req.deployed_at or 0.0)
        sample = Sample(at=now, in_flight=sum(s.in_flight for s in fresh), rps=sum(s.rps for s in fresh),
                        p90_latency_s=max(p90) if p90 else None, held=sum(s.held for s in fresh),
                        last_request_at=last or None)
        before = self._scale.desired
        self._scale, self._reason = recommend(spec, self._scale, sample)
        if self._scale.desired != before:
            self._event(f"desired {before} -> {self._scale.desired}: {self._scale.reasons[-1]}")

    async def _reconcile(self) -> None:
        assert self._req is not None
        spec = self._req.spec
        plan = plan_replicas(list(self._replicas.values()), self._req.version, self._scale.desired, self._ready(),
                             spec.update.max_surge)
        if self._crash_looping:
            plan.start, plan.start_homecoming = 0, False
            self._reason = (f"{CRASH_LOOP} replicas in a row failed before serving: no more are started until "
                            "`fabric endpoint update` (or `scale`)")
        for replica_id in plan.promote:
            self._replicas[replica_id].role = ReplicaRole.SERVING
        for replica_id, why in plan.stop:
            await self._stop(replica_id, why)
        # Started together: each start waits for its child's start event, one round trip for all of them.
        starts = [self._start(homecoming=False) for _ in range(plan.start)]
        if plan.start_homecoming:
            starts.append(self._start(homecoming=True))
        if starts:
            await asyncio.gather(*starts)

    async def _start(self, homecoming: bool) -> None:
        assert self._req is not None
        spec, request = self._req.spec, self._req
        replica_id = f"{spec.name}-{request.tag}-r{request.next_index}"
        request.next_index += 1
        workload = spec.replica_workload(replica_id, request.version, on_prem_only=homecoming)
        view = ReplicaView(id=replica_id, version=request.version,
                           role=ReplicaRole.HOMECOMING if homecoming else ReplicaRole.SERVING)
        self._replicas[replica_id] = view
        try:
            await workflow.start_child_workflow(
                "WorkloadWorkflow",
                WorkloadRequest(spec=workload, max_attempts=REPLICA_ATTEMPTS).model_dump(mode="json"),
                id=replica_id, task_queue=workflow.info().task_queue, parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=initial_search_attributes(spec.team, workload.total_gpus),
                static_summary=f"replica of endpoint {spec.name} (version {request.version})")
        except Exception as error:  # the id is taken (a replica of an earlier deployment still closing)
            view.state, view.message = "failed", f"could not start: {error}"
            self._event(f"{replica_id}: could not start: {error}")
            return
        self._event(f"{replica_id}: started" + (" (waits for on-prem room to bring a burst replica home)"
                                                 if homecoming else ""))

    async def _stop(self, replica_id: str, why: str) -> None:
        """Stop a replica: at once if it never served, after DRAIN_S if the gateway may be routing to it."""
        replica = self._replicas[replica_id]
        replica.stopping = True
        serving = replica.state == WorkloadState.RUNNING.value
        replica.stop_at = workflow.now().timestamp() + (DRAIN_S if serving else 0.0)
        self._event(f"{replica_id}: stopping: {why}" + (f" (drains for {DRAIN_S:.0f}s first)" if serving else ""))
        if not serving:
            await self._cancel_due()

    async def _cancel_due(self) -> None:
        now = workflow.now().timestamp()
        for replica in self._replicas.values():
            if replica.stop_at is not None and replica.stop_at <= now:
                replica.stop_at = None
                try:
                    await workflow.get_external_workflow_handle(replica.id).cancel()
                except Exception as error:  # already closed: its report says how it ended
                    self._event(f"{replica.id}: {error}")

    def _next_wake(self) -> timedelta:
        """The next moment something is due without news: a drained replica's stop, or the end of the
        autoscaler's scale-up or scale-down delay (decided then, not at the next sample)."""
        due = [r.stop_at for r in self._replicas.values() if r.stop_at is not None]
        if self._req is not None:
            scale = self._req.spec.autoscale
            if self._scale.above_since is not None:
                due.append(self._scale.above_since + scale.scale_up_delay_s)
            if self._scale.below_since is not None:
                due.append(self._scale.below_since + scale.scale_down_delay_s)
        if not due:
            return TICK
        return max(timedelta(milliseconds=100), min(TICK, timedelta(seconds=min(due) - workflow.now().timestamp())))

    async def _delete_all(self) -> None:
        self._event("deleting: every replica stops")
        for replica in list(self._replicas.values()):
            if replica.live and not replica.stopping:
                await self._stop(replica.id, "endpoint deleted")
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: not any(r.stop_at for r in self._replicas.values()),
                                          timeout=timedelta(seconds=DRAIN_S + 1))
        await self._cancel_due()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: not any(r.live for r in self._replicas.values()),
                                          timeout=DELETE_WAIT)
        self._scale.desired = 0

    # -- state ---------------------------------------------------------------------------------------
    @property
    def _crash_looping(self) -> bool:
        return self._req is not None and self._req.failures >= CRASH_LOOP

    def _ready(self) -> set[str]:
        now = workflow.now().timestamp()
        ready: set[str] = set()
        for at, sample in self._samples.values():
            if now - at <= SAMPLE_FRESH_S:
                ready.update(sample.ready)
        live = {r.id for r in self._replicas.values() if r.live and r.state == WorkloadState.RUNNING.value}
        return ready & live

    def _note_ready(self) -> None:
        """Remember which replicas have served (from the main loop only: a query must change nothing)."""
        assert self._req is not None
        for replica_id in self._ready():
            replica = self._replicas[replica_id]
            if not replica.served:
                replica.served = True
                self._req.failures = 0
                self._req.ever_ready = True

    def _view(self, replica: ReplicaView, ready: set[str]) -> ReplicaView:
        view = replica.model_copy()
        if replica.stopping and replica.live:
            view.state = "stopping"
        elif replica.id in ready:
            view.state = "ready"
        return view

    def _state(self, ready: set[str]) -> EndpointState:
        assert self._req is not None
        if self._deleted:
            return EndpointState.DELETED
        if self._crash_looping:
            return EndpointState.FAILED
        serving = [r for r in self._replicas.values() if r.live and r.id in ready]
        live = [r for r in self._replicas.values() if r.live]
        if self._scale.desired == 0 and not live:
            return EndpointState.SUSPENDED
        if not self._req.ever_ready:
            return EndpointState.DEPLOYING
        current = [r for r in serving if r.version == self._req.version]
        if len(current) == self._scale.desired and len(live) == len(current):
            return EndpointState.READY
        return EndpointState.SCALING

    def _forget_ended(self) -> None:
        """Replicas that ended stay in the status a while (what happened to them); the oldest go."""
        ended = [r for r in self._replicas.values() if not r.live]
        for replica in ended[: max(0, len(ended) - 20)]:
            del self._replicas[replica.id]

    def _event(self, text: str) -> None:
        assert self._req is not None
        self._req.events = [*self._req.events, f"{workflow.now().strftime('%H:%M:%S')} {text}"][-MAX_EVENTS:]

    def _details(self) -> str:
        status = self.status()
        lines = [f"**{status.state.value}**: {status.ready} ready of {status.desired} wanted "
                 f"(replicas {status.min}..{status.max}, version {status.version})", "", status.reason]
        lines += [f"- {r.id}: {r.state}" + (f" on {r.pool} ({r.location.value})" if r.pool and r.location else "")
                  for r in status.replicas if r.live]
        return "\n".join(lines)

    def _carry(self) -> EndpointCarry:
        assert self._req is not None
        state = self._scale
        return self._req.model_copy(update={
            "replicas": list(self._replicas.values()),
            "scale": ScaleMemory(desired=state.desired, above_since=state.above_since, below_since=state.below_since,
                                 highest_below=state.highest_below, last_request_at=state.last_request_at,
                                 reasons=state.reasons[-5:])})


def continues_itself(info: workflow.Info) -> bool:
    """This run was made by the endpoint's own continue-as-new, so its input is state the fabric
    carried. A retry or a cron run also has a `continued_run_id` but gets the person's first input
    again: those are never trusted (and a start that asks for either is refused, see `admit`)."""
    return info.continued_run_id is not None and info.attempt == 1 and not info.cron_schedule


def admit(raw: Any, info: workflow.Info) -> EndpointCarry:
    """The run's state from its input: the carried state of a continued run, or a person's deploy
    request (the spec and the history bound) with fresh state. A person's request that brings
    replicas, addresses or any other state of the fabric's is refused with InvalidInput."""
    def invalid(message: str) -> ApplicationError:
        return ApplicationError(message, type=FailureType.INVALID_INPUT, non_retryable=True)

    try:
        if continues_itself(info):
            return EndpointCarry.model_validate(raw)
        if not isinstance(raw, dict):
            raise invalid("an endpoint is deployed with {spec: ...} (EndpointRequest)")
        if info.retry_policy is not None or info.cron_schedule:
            raise invalid("an endpoint is deployed without a retry policy or cron schedule (the endpoint "
                          "itself keeps its replicas going)")
        request = EndpointRequest.model_validate({k: v for k, v in raw.items() if k in EndpointRequest.model_fields})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:3])
        raise invalid(f"invalid endpoint: {problems}") from None
    fresh = EndpointCarry(spec=request.spec, history_limit=request.history_limit)
    # Earlier clients sent every field of the state with its starting value: those are accepted (and
    # recorded histories replay); a value of the sender's own is refused.
    defaults = fresh.model_dump(mode="json")
    brought = sorted(k for k, v in raw.items()
                     if k not in EndpointRequest.model_fields and (k not in defaults or v != defaults[k]))
    if brought:
        raise invalid(f"an endpoint is deployed from its spec alone: replicas, their addresses and the "
                      f"endpoint's state come from the fabric, not the request (refused: {', '.join(brought)})")
    return fresh
