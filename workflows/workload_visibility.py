"""What the Temporal Web UI and `fabric list` see of a workload without asking the workflow: its
search attributes (filterable: `FabricState = 'running' AND FabricPool = 'dc1'`), its memo (the
columns `fabric list` shows beyond them) and its current details (the latest decision, and why
the other pools were rejected). Called from workflow code only (deterministic)."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

with workflow.unsafe.imports_passed_through():
    from inferofabric.models.common import WorkloadState
    from inferofabric.models.status import Decision, WorkloadStatus

SA_POOL = SearchAttributeKey.for_keyword("FabricPool")
SA_LOCATION = SearchAttributeKey.for_keyword("FabricLocation")
SA_TEAM = SearchAttributeKey.for_keyword("FabricTeam")
SA_STATE = SearchAttributeKey.for_keyword("FabricState")
SA_GPU_TYPE = SearchAttributeKey.for_keyword("FabricGpuType")
SA_GPUS = SearchAttributeKey.for_int("FabricGpus")
STARTED_WITH = {SA_TEAM.name, SA_STATE.name, SA_GPUS.name}  # what the SDK sets at start


def initial_search_attributes(team: str, gpus: int = 0) -> TypedSearchAttributes:
    """Set at start by the SDK so a workload is filterable from its first moment."""
    return TypedSearchAttributes([SearchAttributePair(SA_TEAM, team),
                                  SearchAttributePair(SA_STATE, WorkloadState.QUEUED.value),
                                  SearchAttributePair(SA_GPUS, gpus)])


def memo_of(status: WorkloadStatus) -> dict[str, Any]:
    """The memo: what `fabric list` shows beyond the search attributes."""
    return {"region": status.region or "", "attempts": status.attempts, "backend": status.backend or "",
            "message": status.message[:300]}


def upsert(status: WorkloadStatus | None, memo: dict[str, Any], state: WorkloadState | None = None,
           team: str | None = None, pool: str | None = None, location: str | None = None,
           gpu_type: str | None = None, gpus: int | None = None) -> dict[str, Any]:
    """Set the given search attributes, and the memo when it changed; returns the memo now set."""
    updates: list[SearchAttributeUpdate[Any]] = []
    if state is not None:
        updates.append(SA_STATE.value_set(state.value))
    if team is not None:
        updates.append(SA_TEAM.value_set(team))
    if pool is not None:
        updates.append(SA_POOL.value_set(pool))
    if location is not None:
        updates.append(SA_LOCATION.value_set(location))
    if gpu_type is not None:
        updates.append(SA_GPU_TYPE.value_set(gpu_type))
    if gpus is not None:
        updates.append(SA_GPUS.value_set(gpus))
    if not updates:
        return memo
    workflow.upsert_search_attributes(updates)
    if status is not None and memo_of(status) != memo:
        memo = memo_of(status)
        workflow.upsert_memo(memo)
    return memo


def show_decision(decision: Decision) -> None:
    """Current details in the Web UI: the latest decision and why other pools were rejected."""
    lines = [f"**{decision.mode}** -> **{decision.pool or 'waiting'}** (attempt {decision.attempt})",
             "", decision.reason, "", "Rejected:"]
    lines += [f"- {r.pool}: {r.reason}" for r in decision.rejected]
    workflow.set_current_details("\n".join(lines))
