"""Placement activities: release of an attempt's GPUs, and sealing of a workload's secrets.

Deciding and reserving is the admission cycle's (activities/admission.py). These run as local
activities in the control plane's worker, where the store is.
"""

from __future__ import annotations

from temporalio import activity

from inferofabric.activities.admission import wake_from_activity
from inferofabric.activities.errors import typed_errors
from inferofabric.models.messages import ReleaseInput, SealSecretsInput, StartedInput
from inferofabric.models.workload import SecretRef, WorkloadSpec
from inferofabric.secrets import check_use, seal, unseal
from inferofabric.store.db import Store, get_store
from inferofabric.threads import in_store


class PlacementActivities:
    def __init__(self, store_url: str | None = None) -> None:
        self._store_url = store_url

    @property
    def store(self) -> Store:
        return get_store(self._store_url)

    @activity.defn(name="release_capacity")
    @typed_errors
    async def release_capacity(self, request: ReleaseInput) -> int:
        """Give the attempt's GPUs back and wake the admission loop (freed GPUs go to the queue's head)."""
        released = await in_store(self.store.release, request.workload_id, request.attempt, request.ended_at,
                                  request.started_at)
        if released:
            await wake_from_activity(f"released {request.workload_id}")
        return released

    @activity.defn(name="ledger_started")
    @typed_errors
    async def ledger_started(self, request: StartedInput) -> None:
        """Record when the back end started the attempt's job (cost accrues from then, not admission)."""
        await in_store(self.store.ledger_started, request.workload_id, request.attempt, request.started_at)

    @activity.defn(name="seal_secrets")
    @typed_errors
    async def seal_secrets(self, request: SealSecretsInput) -> dict[str, str]:
        """Sealed values of the workload's secret env entries, for the pool that will run it."""
        return await in_store(self._seal, request.spec, request.pool)

    def _seal(self, spec: WorkloadSpec, pool: str) -> dict[str, str]:
        sealed: dict[str, str] = {}
        for name, value in spec.env.items():
            if not isinstance(value, SecretRef):
                continue
            row = self.store.get_secret(value.secret)
            check_use(value.secret, row.team, row.shared_with, spec.team)  # before anything is opened
            if row.pool and row.pool != pool:
                raise ValueError(f"secret {value.secret!r} is scoped to pool {row.pool!r}, not {pool!r}")
            # Re-seal for the pool so an agent holding only its pool's key can open it.
            sealed[name] = seal(unseal(row.ciphertext), pool=pool)
        return sealed
