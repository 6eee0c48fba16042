"""Public data models (pydantic v2) shared by the SDK, CLI, workflows and back ends."""

from inferofabric.models.common import DataClassification, Health, Location, WorkloadState
from inferofabric.models.policy import Constraint, Placement, PlacementPolicy, PoolSelector, Rule
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import (
    AttemptRecord,
    Decision,
    Explanation,
    HealthEvent,
    JobRef,
    PoolStatus,
    PoolView,
    Rejection,
    WorkloadStatus,
)
from inferofabric.models.workload import GpuRequest, PlacementHints, Resources, SecretRef, WorkloadSpec

__all__ = [
    "AttemptRecord", "Constraint", "DataClassification", "Decision", "Explanation", "GpuRequest", "Health",
    "HealthEvent", "JobRef", "Location", "Placement", "PlacementHints", "PlacementPolicy", "PoolSelector",
    "PoolSpec", "PoolStatus", "PoolView", "Rejection", "Resources", "Rule", "SecretRef", "WorkloadSpec",
    "WorkloadState", "WorkloadStatus",
]
