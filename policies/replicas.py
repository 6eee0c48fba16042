"""Which replicas an endpoint starts and stops to reach its desired count (pure: no I/O, no temporalio).

The endpoint workflow calls `plan_replicas` after every change (a replica's report, a gateway
sample, a scale or update request) with the replicas it owns and the ones the gateway saw answer
their readiness probe. The rules:

- **scale**: start replicas of the current version until there are `desired`; remove the surplus:
  not-ready ones first, burst (cloud) ones before on-prem, newest first — so load that drops sends
  the cloud replicas home first;
- **rolling update**: start new-version replicas, at most `max_surge` not ready at a time; an old
  replica goes only once a new one is ready (old ones kept = desired - new ready);
- **homecoming**: while a serving replica runs in the cloud and the count is steady, one extra
  replica waits for on-prem room (an on-prem-only workload: it queues like any other); once it
  answers, a cloud replica goes (ready first, then the cloud one removed). Steady state returns
  on-prem without ever serving with fewer replicas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inferofabric.models.common import Location
from inferofabric.models.endpoint_status import ReplicaRole, ReplicaView

STATE_RANK = {"queued": 0, "launching": 1, "running": 2}


@dataclass
class ReplicaPlan:
    start: int = 0  # new serving replicas of the current version
    start_homecoming: bool = False
    stop: list[tuple[str, str]] = field(default_factory=list)  # (replica id, why)
    promote: list[str] = field(default_factory=list)  # homecoming replicas that now serve

    @property
    def empty(self) -> bool:
        return not (self.start or self.start_homecoming or self.stop or self.promote)


def index_of(replica_id: str) -> int:
    tail = replica_id.rsplit("-r", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def removal_order(replicas: list[ReplicaView], ready: set[str]) -> list[ReplicaView]:
    """Which to remove first: not ready, then cloud before on-prem, then the least far along, newest first."""
    return sorted(replicas, key=lambda r: (r.id in ready, r.location == Location.ON_PREM,
                                           STATE_RANK.get(r.state, 2), -index_of(r.id)))


def plan_replicas(replicas: list[ReplicaView], version: int, desired: int, ready: set[str], max_surge: int,
                  homecoming: bool = True) -> ReplicaPlan:
    plan = ReplicaPlan()
    live = [r for r in replicas if r.live and not r.stopping]
    current = [r for r in live if r.version == version and r.role == ReplicaRole.SERVING]
    coming = [r for r in live if r.version == version and r.role == ReplicaRole.HOMECOMING]
    old = [r for r in live if r.version != version]
    stopped: set[str] = set()

    # A homecoming replica that answers takes a cloud replica's place.
    for home in coming:
        cloud = [r for r in removal_order(current, ready) if r.location == Location.CLOUD and r.id not in stopped]
        if home.id in ready:
            plan.promote.append(home.id)
            if cloud:
                victim = cloud[0]
                plan.stop.append((victim.id, f"{home.id} serves on-prem ({home.pool}): the burst replica goes home"))
                stopped.add(victim.id)
                current = [r for r in current if r.id != victim.id]
            current = [*current, home]
        elif not cloud or old or desired == 0:
            plan.stop.append((home.id, "no burst replica left to bring home"))
            stopped.add(home.id)
    coming = [r for r in coming if r.id not in plan.promote and r.id not in stopped]

    if old:
        new_ready = [r for r in current if r.id in ready]
        waiting = len(current) - len(new_ready)
        room = min(desired - len(current), max_surge - waiting)
        plan.start = max(0, room)
        keep_old = max(0, desired - len(new_ready))
        for replica in removal_order(old, ready)[: max(0, len(old) - keep_old)]:
            plan.stop.append((replica.id, f"replaced by version {version}"))
        surplus = len(current) - desired
        for replica in removal_order(current, ready)[: max(0, surplus)]:
            plan.stop.append((replica.id, f"more than the {desired} wanted"))
        return plan

    if len(current) < desired:
        plan.start = desired - len(current)
    elif len(current) > desired:
        for replica in removal_order(current, ready)[: len(current) - desired]:
            where = "burst replica" if replica.location == Location.CLOUD else "replica"
            plan.stop.append((replica.id, f"{where} no longer needed: {desired} wanted"))
    elif homecoming and not coming and desired > 0 and any(r.location == Location.CLOUD for r in current):
        plan.start_homecoming = True
    going = {replica_id for replica_id, _ in plan.stop}
    if coming and not any(r.location == Location.CLOUD and r.id not in going for r in current):
        for home in coming:  # the burst replicas it was to replace are going anyway
            plan.stop.append((home.id, "no burst replica left to bring home"))
    return plan
