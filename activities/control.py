"""Control-plane operations (register pools, set the policy, cordon...) run as activities.

The SDK and CLI reach them through ControlWorkflow, so a client needs only a Temporal connection:
the store stays inside the control plane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.activities.admission import wake_from_activity as _wake
from inferofabric.activities.errors import typed_errors
from inferofabric.activities.reconcile import reconcile_pool
from inferofabric.auth.readers import authorize_put_secret, caller_identity, scoped_cost_view, visible_secrets
from inferofabric.auth.tokens import AuthError, Identity
from inferofabric.backends import simulated
from inferofabric.backends.base import job_id_for
from inferofabric.backends.registry import backend_class
from inferofabric.errors import FailureType
from inferofabric.models.common import Health
from inferofabric.models.messages import (
    CordonInput,
    MoveOffInput,
    ReconcileInput,
    ReconcileReport,
    RecordHealthInput,
    RelocateInput,
    RelocateSignal,
)
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import HealthEvent, PoolStatus, QueueView
from inferofabric.store.db import Store, get_store
from inferofabric.threads import in_store


class ControlActivities:
    def __init__(self, home: Path, store_url: str | None = None) -> None:
        self.home = home
        self._store_url = store_url

    @property
    def store(self) -> Store:
        return get_store(self._store_url)

    @activity.defn(name="control_register_pool")
    @typed_errors
    async def register_pool(self, spec: PoolSpec) -> PoolStatus:
        backend_class(spec.backend).parse_config(spec)  # the back end's own config checks, before storing
        await in_store(self.store.upsert_pool, spec)
        await _wake(f"pool {spec.name} registered")
        return next(p for p in await in_store(self.store.pool_statuses) if p.name == spec.name)

    @activity.defn(name="control_remove_pool")
    @typed_errors
    async def remove_pool(self, name: str) -> None:
        await in_store(self.store.delete_pool, name)
        await _wake(f"pool {name} removed")

    @activity.defn(name="control_list_pools")
    @typed_errors
    async def list_pools(self) -> list[PoolStatus]:
        return await in_store(self.store.pool_statuses)

    @activity.defn(name="control_pool_spec")
    @typed_errors
    async def pool_spec(self, name: str) -> PoolSpec:
        return await in_store(self.store.pool_spec, name)

    @activity.defn(name="control_set_policy")
    @typed_errors
    async def set_policy(self, policy: PlacementPolicy, force: bool | None = None) -> int:
        if not force:
            from inferofabric.policies.feasibility import known_pools, target_problems

            pools = await in_store(self.store.pool_statuses)
            # With no pool registered yet only what is surely a typo of a location is refused.
            problems = target_problems(policy, known_pools(pools) if pools else None)
            if problems:
                raise ValueError("; ".join(problems) + " (nothing changed; `fabric policy set --force` sets it "
                                 "anyway, e.g. before its pools are registered)")
        version = await in_store(self.store.set_policy, policy)
        await _wake(f"policy version {version}")
        return version

    @activity.defn(name="control_get_policy")
    @typed_errors
    async def get_policy(self) -> dict[str, Any]:
        from inferofabric.policies.engine import policy_document

        return policy_document(*await in_store(self.store.active_policy))

    @activity.defn(name="control_cordon")
    @typed_errors
    async def cordon(self, request: CordonInput) -> HealthEvent | None:
        event = await in_store(self.store.set_cordoned, request.pool, request.cordoned)
        if event is not None:
            await _wake(f"pool {request.pool} {'cordoned' if request.cordoned else 'uncordoned'}")
        return event

    @activity.defn(name="control_simulate")
    @typed_errors
    async def simulate(self, name: str, action: str) -> str:
        """Simulated pools only: `fail` (stop answering), `restore`, or a health to report."""
        spec = await in_store(self.store.pool_spec, name)
        if spec.backend != "simulated":
            raise ValueError(f"pool {name!r} is a {spec.backend} pool; only simulated pools can be failed on purpose")
        if action == "reclaim":
            return f"reclaimed {simulated.reclaim_all(self.home, name)} jobs"
        if action in ("fail", "restore"):
            simulated.set_outage(self.home, name, failed=action == "fail")
        else:
            simulated.set_health(self.home, name, Health(action), reason=f"set to {action} by operator")
        return action

    @activity.defn(name="control_record_health")
    @typed_errors
    async def record_health(self, request: RecordHealthInput) -> HealthEvent | None:
        event, capacity_changed = await in_store(self.store.record_probe, request.pool, request.health,
                                                 request.reason, request.gpus)
        if event is not None or capacity_changed:  # either can change what the queue may admit
            await _wake(f"pool {request.pool}: {event.to_health.value if event else 'capacity changed'}")
        return event

    @activity.defn(name="control_workloads_on_pool")
    @typed_errors
    async def workloads_on_pool(self, name: str) -> list[dict[str, Any]]:
        rows = await in_store(self.store.active_reservations, name)
        return [{"workload_id": r.workload_id, "attempt": r.attempt} for r in rows]

    @activity.defn(name="control_relocate")
    @typed_errors
    async def relocate(self, request: RelocateInput) -> list[str]:
        """Tell every workload on the pool to move (a drain: each stops its own copy gracefully).
        Signals are sent concurrently from here, not one by one from workflow code, so 1,000 moves
        take seconds and no workflow's history grows with the pool's size. Returns the workloads told."""
        told = await self._tell_all(request.pool, RelocateSignal(pool=request.pool, reason=request.reason,
                                                                 health=request.health))
        return sorted(workload_id for workload_id, _ in told)  # one signal per workload

    @activity.defn(name="control_move_off")
    @typed_errors
    async def move_off(self, request: MoveOffInput) -> list[str]:
        """A failover: re-queue every workload on the pool in one store transaction and wake the
        admission loop, then tell each workload (signal `relocate`, naming its next attempt when the
        store queued it). The loop places the moved work while the workflows take in the news. The
        copies on the pool are left to the caller, which stops them all in one batched call. Returns
        the job ids of the attempts told.

        The re-queue is written once: a retry of this activity (a worker died mid-way) finds it in
        its heartbeat and tells the workloads again, instead of finding nothing held on the pool."""
        from inferofabric.store.admission import Requeued, requeue_off_pool

        name, reason, health = request.pool, request.reason, request.health
        details = activity.info().heartbeat_details
        if details and isinstance(details[0], list):
            moved = [Requeued(str(w), int(a), int(n) if n is not None else None) for w, a, n in details[0]]
        else:
            moved = await in_store(requeue_off_pool, self.store, name, health.value)
        plain = [[m.workload_id, m.attempt, m.next_attempt] for m in moved]
        activity.heartbeat(plain)
        next_of = {(m.workload_id, m.attempt): m.next_attempt for m in moved}
        waking = asyncio.ensure_future(_wake(f"{sum(m.next_attempt is not None for m in moved)} re-queued off {name}"))
        told = await self._signal_all(
            [(m.workload_id, m.attempt) for m in moved],
            lambda workload_id, attempt: RelocateSignal(
                pool=name, reason=reason, health=health, copies_stopped_by_sender=True, attempt=attempt,
                requeued_attempt=next_of[(workload_id, attempt)]),
            heartbeat=lambda count: activity.heartbeat(plain, count))
        await waking
        return sorted(job_id_for(workload_id, attempt) for workload_id, attempt in told)

    async def _tell_all(self, name: str, signal: RelocateSignal) -> list[tuple[str, int]]:
        rows = await in_store(self.store.active_reservations, name)
        latest = {r.workload_id: r.attempt for r in rows}
        return await self._signal_all(list(latest.items()), lambda _w, _a: signal,
                                      heartbeat=lambda count: activity.heartbeat(count))

    @staticmethod
    async def _signal_all(targets: list[tuple[str, int]], signal_for: Callable[[str, int], RelocateSignal],
                          heartbeat: Callable[[int], None]) -> list[tuple[str, int]]:
        """Send `relocate` to each (workload, attempt), 64 at a time; the ones told (a workload that
        has ended needs no telling)."""
        gate = asyncio.Semaphore(64)
        client = activity.client()
        told: list[tuple[str, int]] = []

        async def one(workload_id: str, attempt: int) -> None:
            async with gate:
                try:
                    await client.get_workflow_handle(workload_id).signal("relocate", signal_for(workload_id, attempt))
                    told.append((workload_id, attempt))
                except RPCError as error:
                    if error.status != RPCStatusCode.NOT_FOUND:
                        raise
                heartbeat(len(told))

        await asyncio.gather(*(one(workload_id, attempt) for workload_id, attempt in targets))
        return told

    @activity.defn(name="control_reconcile")
    @typed_errors
    async def reconcile(self, request: ReconcileInput) -> ReconcileReport:
        """Compare the store's reservations on the pool, the back end's jobs there (`states`, from
        the pool's side) and the workflows: release reservations whose workflow is gone, and name
        the fabric jobs no live attempt owns (the caller cancels them on the pool)."""
        return await reconcile_pool(self.store, activity.client(), request.pool, request.states)

    @activity.defn(name="control_audit")
    @typed_errors
    async def audit(self, limit: int = 50, identity: str | None = None) -> list[dict[str, Any]]:
        """Everyone's rows for operators and admins; a member's own team's for a member."""
        from inferofabric.auth.audit import audit_entries
        from inferofabric.auth.readers import audit_scope

        try:
            team = audit_scope(await self._caller())
        except AuthError as error:
            raise ApplicationError(f"permission denied: {error}", type=FailureType.PERMISSION_DENIED,
                                   non_retryable=True) from None
        return await in_store(audit_entries, self.store, limit, identity, team)

    @activity.defn(name="control_put_secret")
    @typed_errors
    async def put_secret(self, name: str, sealed_value: str, pool: str | None = None, team: str | None = None,
                         shared_with: list[str] | None = None, fabric: bool | None = None) -> None:
        """Store an already-sealed value (the clear text never crosses Temporal), owned by `team`, or the
        fabric's own with `fabric`. An admin sets any; a member its own team's only (the gate let it
        through for this check), and its team is the default owner."""
        identity = await self._caller()
        if team is None and not fabric:
            if identity.role != "member" or not identity.team:
                raise ValueError(f"secret {name!r}: say whose it is: --team T (team=...), or --fabric "
                                 "(fabric=True: the fabric's own, for pools' credentials)")
            team = identity.team
        existing = await in_store(self.store.find_secret, name)
        try:
            authorize_put_secret(identity, name, team, existing.team if existing else None, existing is not None)
        except AuthError as error:
            await in_store(self._audit_refusal, identity, "put_secret", name, str(error))
            raise ApplicationError(f"permission denied: {error}", type=FailureType.PERMISSION_DENIED,
                                   non_retryable=True) from None
        await in_store(self.store.put_secret, name, sealed_value, pool, team, shared_with or [])

    @activity.defn(name="control_list_secrets")
    @typed_errors
    async def list_secrets(self) -> list[dict[str, Any]]:
        """Names, pool scope, owner and sharing (never values); a member sees its team's and those
        shared with it."""
        identity = await self._caller()
        return visible_secrets(await in_store(self.store.secret_rows), identity)

    async def _caller(self) -> Identity:
        """Who started this activity's ControlWorkflow: the identity the gate checked at its start."""
        info = activity.info()
        workflow_id = info.workflow_id or ""
        handle = activity.client().get_workflow_handle(workflow_id, run_id=info.workflow_run_id)
        async for event in handle.fetch_history_events():
            started = event.workflow_execution_started_event_attributes
            try:
                return caller_identity(dict(started.header.fields))
            except AuthError as error:
                raise ApplicationError(f"permission denied: {error}", type=FailureType.PERMISSION_DENIED,
                                       non_retryable=True) from None
        raise ApplicationError("permission denied: no start event", type=FailureType.PERMISSION_DENIED,
                               non_retryable=True)

    def _audit_refusal(self, identity: Identity, action: str, target: str, detail: str) -> None:
        """The gate let the request through to this activity's finer check; record that check's refusal."""
        from inferofabric.store.tables import AuditRow

        info = activity.info()
        with self.store.session(write=True) as session:
            if session.exec(select(AuditRow).where(AuditRow.dedupe == f"{info.workflow_run_id}:{action}:refused")
                            ).first() is None:
                session.add(AuditRow(identity=identity.subject, role=identity.role, team=identity.team,
                                     action=action, target=target, result="refused", detail=detail[:2000],
                                     dedupe=f"{info.workflow_run_id}:{action}:refused"))
                session.commit()

    @activity.defn(name="control_decisions")
    @typed_errors
    async def decisions(self, workload_id: str) -> list[dict[str, Any]]:
        return [d.model_dump(mode="json") for d in await in_store(self.store.decisions, workload_id)]

    @activity.defn(name="control_queue")
    @typed_errors
    async def queue(self, team: str | None = None, workload_id: str | None = None) -> QueueView:
        """For clients without read access to the store (the SDK reads it directly when it has)."""
        from inferofabric.queue import snapshot

        return await in_store(snapshot, self.store, team, workload_id)

    @activity.defn(name="control_cost")
    @typed_errors
    async def cost(self, by: str | None = None, start: str | None = None, end: str | None = None,
                   step: str | None = None, workload_id: str | None = None, idle: bool = False) -> dict[str, Any]:
        """Cost report rows or one workload's ledger lines, for clients without the store."""
        identity = await self._caller()  # a member's report holds its own team's lines only
        return await in_store(scoped_cost_view, self.store, identity, by or "team", start, end, step, workload_id,
                              idle)

    @activity.defn(name="control_budgets")
    @typed_errors
    async def budgets(self) -> list[dict[str, Any]]:
        """Every budget's limit, spent, reserved and remaining (`fabric budget list`)."""
        from inferofabric.queue import compiled_policy
        from inferofabric.store.budget import budget_view

        policy = await in_store(compiled_policy, self.store)
        return await in_store(budget_view, self.store, policy.policy)

    def all(self) -> list[Callable[..., Any]]:
        return [self.cost, self.budgets, self.register_pool, self.remove_pool, self.list_pools, self.pool_spec,
                self.set_policy, self.get_policy, self.cordon, self.simulate, self.record_health,
                self.workloads_on_pool, self.relocate, self.move_off, self.reconcile, self.audit,
                self.put_secret, self.list_secrets, self.decisions, self.queue]
