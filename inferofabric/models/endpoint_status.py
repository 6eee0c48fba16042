"""What moves between an endpoint's workflow, its replicas and the gateway, and what users read.

- `ReplicaReport`: a replica's workload tells its endpoint where it is and in what state (through
  the worker's own identity: a report is an internal signal, never taken from a user);
- `GatewaySample`: a gateway tells the endpoint what it measured (load, latency, which replicas
  answer their readiness probe);
- `EndpointStatus`: `fabric endpoint status NAME --json`, the SDK and the gateway's routing table.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from inferofabric.models.common import Location, WorkloadState
from inferofabric.models.endpoint import EndpointSpec, Readiness


class EndpointState(StrEnum):
    DEPLOYING = "deploying"  # no replica has served yet
    READY = "ready"  # as many replicas answer as are wanted
    SCALING = "scaling"  # replicas are being added, removed or replaced
    SUSPENDED = "suspended"  # scaled to zero: the next request wakes it
    FAILED = "failed"
    DELETED = "deleted"


class ReplicaRole(StrEnum):
    SERVING = "serving"
    HOMECOMING = "homecoming"  # waits for on-prem room; once it serves, a burst replica goes


class ReplicaReport(BaseModel):
    replica: str
    seq: int  # reports can arrive out of order: the highest wins
    state: WorkloadState
    pool: str | None = None
    location: Location | None = None
    backend: str | None = None
    address: str | None = None  # host:port where it listens, when the back end gives one
    message: str = ""


class GatewaySample(BaseModel):
    gateway: str = "embedded"
    in_flight: float = 0.0  # average requests being served over the last second
    rps: float = 0.0
    p90_latency_s: float | None = None
    held: int = 0  # requests waiting for a replica (scale from zero)
    idle_s: float | None = None  # seconds since the last request (None: none seen)
    ready: list[str] = Field(default_factory=list)  # replicas answering their readiness probe


class ReplicaView(BaseModel):
    id: str
    version: int
    role: ReplicaRole = ReplicaRole.SERVING
    state: str = "queued"  # queued, launching, running, ready, stopping, or how it ended
    pool: str | None = None
    location: Location | None = None
    backend: str | None = None
    address: str | None = None
    message: str = ""
    stopping: bool = False
    stop_at: float | None = None  # when its workload is cancelled (after the gateway stopped routing to it)
    served: bool = False  # it has answered its readiness probe at least once
    seq: int = -1

    @property
    def live(self) -> bool:
        return self.state not in ("succeeded", "failed", "cancelled")


class ScaleMemory(BaseModel):
    """policies.autoscale.ScaleState, carried across continue-as-new."""

    desired: int = 0
    above_since: float | None = None
    below_since: float | None = None
    highest_below: int = 0
    last_request_at: float | None = None
    reasons: list[str] = Field(default_factory=list)


class EndpointRequest(BaseModel):
    """What a person sends to deploy an endpoint (the workflow's input when a person starts it): the
    spec, and the history bound. Nothing else: which replicas exist, where they listen and the
    endpoint's memory come only from the fabric (its own child workloads and their reports), never
    from a request. The workflow refuses a start whose input carries any of `EndpointCarry`'s fields
    with a value of its own (workflows/endpoint.py)."""

    spec: EndpointSpec
    # Continue-as-new past this many events (a gateway sample costs about 4); at least 100, so that a
    # request cannot make the workflow continue as new on every step.
    history_limit: int = Field(default=2_000, ge=100, le=1_000_000)


class EndpointCarry(EndpointRequest):
    """What one run of an endpoint's workflow hands to the next (continue-as-new) and keeps as its
    state: read from the input only by a run that continues the endpoint's own earlier run."""

    version: int = 1
    tag: str = ""  # names this deployment's replicas; chosen by the first run
    deployed_at: float | None = None  # counts as a request for scale-to-zero (a new endpoint is not idle)
    next_index: int = 1
    replicas: list[ReplicaView] = Field(default_factory=list)
    scale: ScaleMemory | None = None
    ever_ready: bool = False
    events: list[str] = Field(default_factory=list)
    failures: int = 0  # replicas in a row that failed before ever serving (a crash loop stops at 3)


class EndpointStatus(BaseModel):
    name: str
    team: str
    url: str = ""
    state: EndpointState
    desired: int
    ready: int
    version: int = 1
    min: int = 0
    max: int = 1
    replicas: list[ReplicaView] = Field(default_factory=list)
    reason: str = ""  # the autoscaler's last word
    events: list[str] = Field(default_factory=list)
    spec: EndpointSpec | None = None
    updated_at: datetime | None = None


class ScaleRequest(BaseModel):
    min: int | None = Field(default=None, ge=0, le=1000)
    max: int | None = Field(default=None, ge=1, le=1000)


class RouteReplica(BaseModel):
    id: str
    state: str
    backend: str | None = None
    address: str | None = None
    stopping: bool = False


class EndpointRoutes(BaseModel):
    """What the gateway needs to route, and no more (query `routes`): it asks often, so the answer is
    small (the full status carries the spec and the last 60 events)."""

    state: EndpointState
    team: str = ""  # whose endpoint (a member's token serves only its own team's)
    access: str = "token"  # the spec's `access`: `token` (a fabric token or an endpoint key) or `public`
    desired: int
    ready: int
    readiness: Readiness
    sim_latency: str = "10ms"
    in_flight_target: float | None = None  # the autoscaler's target when it scales on in-flight requests
    replicas: list[RouteReplica] = Field(default_factory=list)
