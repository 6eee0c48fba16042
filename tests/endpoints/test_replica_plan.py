"""policies/replicas.plan_replicas on its own: which replicas an endpoint starts and stops."""

from __future__ import annotations

from inferofabric.models.common import Location
from inferofabric.models.endpoint_status import ReplicaRole, ReplicaView
from inferofabric.policies.replicas import plan_replicas


def replica(index: int, where: str | None, state: str = "running", version: int = 1,
            role: ReplicaRole = ReplicaRole.SERVING) -> ReplicaView:
    location = {"on-prem": Location.ON_PREM, "cloud": Location.CLOUD, None: None}[where]
    return ReplicaView(id=f"e-ab12-r{index}", version=version, state=state, location=location,
                       pool=None if where is None else f"{where}-pool", role=role)


def test_scale_up_starts_what_is_missing() -> None:
    plan = plan_replicas([replica(1, "on-prem")], 1, 3, {"e-ab12-r1"}, max_surge=1)
    assert plan.start == 2 and not plan.stop


def test_scale_down_removes_cloud_first_then_newest() -> None:
    replicas = [replica(1, "on-prem"), replica(2, "on-prem"), replica(3, "cloud"), replica(4, "cloud")]
    ready = {r.id for r in replicas}
    plan = plan_replicas(replicas, 1, 2, ready, max_surge=1)
    assert [i for i, _ in plan.stop] == ["e-ab12-r4", "e-ab12-r3"]
    plan = plan_replicas(replicas, 1, 1, ready, max_surge=1)
    assert [i for i, _ in plan.stop] == ["e-ab12-r4", "e-ab12-r3", "e-ab12-r2"]


def test_not_ready_replicas_go_before_serving_ones() -> None:
    replicas = [replica(1, "cloud"), replica(2, None, state="queued")]
    plan = plan_replicas(replicas, 1, 1, {"e-ab12-r1"}, max_surge=1)
    assert [i for i, _ in plan.stop] == ["e-ab12-r2"]


def test_a_steady_endpoint_with_a_burst_replica_waits_for_on_prem_room() -> None:
    replicas = [replica(1, "on-prem"), replica(2, "cloud")]
    plan = plan_replicas(replicas, 1, 2, {"e-ab12-r1", "e-ab12-r2"}, max_surge=1)
    assert plan.start_homecoming and not plan.start and not plan.stop
    coming = replica(3, None, state="queued", role=ReplicaRole.HOMECOMING)
    assert plan_replicas([*replicas, coming], 1, 2, {"e-ab12-r1", "e-ab12-r2"}, max_surge=1).empty


def test_a_homecoming_replica_that_answers_replaces_the_burst_one() -> None:
    replicas = [replica(1, "on-prem"), replica(2, "cloud"), replica(3, "on-prem", role=ReplicaRole.HOMECOMING)]
    plan = plan_replicas(replicas, 1, 2, {r.id for r in replicas}, max_surge=1)
    assert plan.promote == ["e-ab12-r3"] and [i for i, _ in plan.stop] == ["e-ab12-r2"] and not plan.start


def test_a_homecoming_replica_with_nothing_left_to_replace_goes() -> None:
    replicas = [replica(1, "on-prem"), replica(3, None, state="queued", role=ReplicaRole.HOMECOMING)]
    plan = plan_replicas(replicas, 1, 1, {"e-ab12-r1"}, max_surge=1)
    assert [i for i, _ in plan.stop] == ["e-ab12-r3"]


def test_rolling_update_surges_then_replaces_only_ready_ones() -> None:
    old = [replica(1, "on-prem"), replica(2, "on-prem")]
    ready = {"e-ab12-r1", "e-ab12-r2"}
    plan = plan_replicas(old, 2, 2, ready, max_surge=1)
    assert plan.start == 1 and not plan.stop  # one new one at a time; nothing old goes yet
    new = replica(3, "on-prem", version=2)
    plan = plan_replicas([*old, new], 2, 2, ready, max_surge=1)
    assert plan.start == 0 and not plan.stop  # the new one is not ready yet
    plan = plan_replicas([*old, new], 2, 2, ready | {"e-ab12-r3"}, max_surge=1)
    assert plan.start == 1 and len(plan.stop) == 1  # one old one goes, the next new one starts


def test_scale_to_zero_stops_everything() -> None:
    replicas = [replica(1, "on-prem"), replica(2, "cloud")]
    plan = plan_replicas(replicas, 1, 0, {r.id for r in replicas}, max_surge=1)
    assert len(plan.stop) == 2 and not plan.start and not plan.start_homecoming


def test_scaling_in_the_burst_replicas_also_stops_the_one_meant_to_replace_them() -> None:
    coming = replica(3, None, state="queued", role=ReplicaRole.HOMECOMING)
    replicas = [replica(1, "on-prem"), replica(2, "cloud"), coming]
    plan = plan_replicas(replicas, 1, 1, {"e-ab12-r1", "e-ab12-r2"}, max_surge=1)
    assert sorted(i for i, _ in plan.stop) == ["e-ab12-r2", "e-ab12-r3"]
