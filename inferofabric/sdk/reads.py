"""The SDK's reads: pools, queue, policy, audit, cost and budgets. A client with the store
(`store_url`: the fabric's host) reads it directly, after checking the caller's token; any other
asks the control plane. Also what a submit checks first: could any registered pool run the work."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from inferofabric.errors import InvalidInput, NoAnswer, PermissionDenied
from inferofabric.models.status import PoolStatus, QueueView
from inferofabric.models.workload import WorkloadSpec
from inferofabric.sdk.core import FabricCore

POOLS_SEEN_FOR = 5.0  # seconds a submit's feasibility check reuses the registered pools it saw


class FabricReads(FabricCore):
    """Reads from the store or through the control plane (FabricClient has them all)."""

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

    async def policy(self) -> dict[str, Any]:
        """{"version": int | None, "default": bool, "policy": {...}}"""
        if self.store_url:
            from inferofabric.policies.engine import policy_document

            self._reader()
            return policy_document(*await asyncio.to_thread(lambda: self._store().active_policy()))
        return dict(await self._control("get_policy"))

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
