"""The cycle's capacity model on its own: admissions, claims, backfill views, free GPUs, shadows."""

from __future__ import annotations

import math

from inferofabric.models.common import Health
from inferofabric.policies.capacity import Capacity, shadow

from .helpers import pool, running


def test_the_callers_pools_are_never_changed() -> None:
    given = [pool("a", gpus=8, used=2)]
    capacity = Capacity(given)
    capacity.take("a", "A100", 3)
    assert given[0].used == {"A100": 2}
    assert capacity.views["a"].used == {"A100": 5}
    assert capacity.base[0] is capacity.views["a"]  # updated in place: the base list stays valid


def test_take_and_claim_change_the_version_and_what_later_work_sees() -> None:
    capacity = Capacity([pool("a", gpus=8)])
    version = capacity.version
    capacity.take("a", "A100", 2)
    assert capacity.version == version + 1
    assert capacity.claim("a", "A100", 3, shadow=math.inf, claimant="big")
    assert capacity.version == version + 2
    assert not capacity.claim("a", "A100", 0, shadow=0.0)  # nothing kept: no change
    assert capacity.version == version + 2
    assert capacity.claimed("a", "A100") == 3
    assert capacity.free("a", "A100") == 3  # 8 - 2 taken - 3 claimed
    (view,) = capacity.for_entry(now=0, runtime_s=None)
    assert view.free("A100") == 3
    assert capacity.claims[("a", "A100")][0].claimant == "big"


def test_backfill_sees_a_claim_only_when_it_would_still_run_at_the_claims_start() -> None:
    capacity = Capacity([pool("a", gpus=8)])
    capacity.claim("a", "A100", 6, shadow=1000.0)
    assert capacity.for_entry(now=0, runtime_s=500)[0].free("A100") == 8  # ends at 500 < 1000: backfills
    assert capacity.for_entry(now=0, runtime_s=5000)[0].free("A100") == 2  # still running at 1000
    assert capacity.for_entry(now=0, runtime_s=None)[0].free("A100") == 2  # unknown end: never backfills
    # Views are cached per end time until the next change.
    assert capacity.for_entry(now=0, runtime_s=500) is capacity.for_entry(now=0, runtime_s=500)
    before = capacity.for_entry(now=0, runtime_s=500)
    capacity.take("a", "A100", 1)
    assert capacity.for_entry(now=0, runtime_s=500) is not before


def test_most_free_counts_in_service_pools_only() -> None:
    capacity = Capacity([pool("down", gpus=16, health=Health.UNHEALTHY), pool("a", gpus=8, used=6),
                         pool("h", gpus=4, gpu_type="H100")])
    base = capacity.base
    assert capacity.max_free(base, "A100") == (2, "a")
    assert capacity.max_free(base, "B200") == (0, None)
    assert capacity.most_free(base, ["A100", "H100"]) == (4, "h", "H100")
    assert [k.name for k in capacity.known] == ["down", "a", "h"]  # what could ever fit: health aside


def test_exhausted_only_when_nothing_is_free_and_no_claim_holds_gpus() -> None:
    capacity = Capacity([pool("a", gpus=4, used=3), pool("down", gpus=8, health=Health.CORDONED)])
    assert not capacity.exhausted()
    capacity.claim("a", "A100", 1, shadow=math.inf)
    assert not capacity.exhausted()  # the claimed GPU is there for backfill
    full = Capacity([pool("a", gpus=4, used=4), pool("down", gpus=8, health=Health.CORDONED)])
    assert full.exhausted()


def test_shadow_is_when_enough_running_work_has_ended() -> None:
    held = [running("r1", end=100, gpus=2), running("r2", end=300, gpus=2), running("r3", gpus=4),
            running("elsewhere", pool_name="b", end=10, gpus=8)]
    assert shadow(held, "dc1", "A100", 0, now=5) == 5
    assert shadow(held, "dc1", "A100", 2, now=5) == 100
    assert shadow(held, "dc1", "A100", 3, now=5) == 300
    assert math.isinf(shadow(held, "dc1", "A100", 5, now=5))  # r3 has no known end
    assert math.isinf(shadow(held, "dc1", "H100", 1, now=5))
