"""Admission decides on the kinds of reasons, never on their wording.

The `reworded` fixture rewrites every human-readable reason where it is made — every `Rejection`
(engine screening, fit, quota and budget refusals, ranking), every `Refusal`, every quota verdict,
every decision's reason — so that no phrase the old text matching looked for ("not enough free
GPUs", "team ", "project ", "denied") survives. Over the existing admission scenarios
(tests/admission/test_core.py, test_budget_core.py: each of their cycles is recorded and replayed),
random scenarios (scenarios.py) and a what-if simulation, admission must admit, claim, preempt and
order the waiting work exactly as it does with the real wording.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import pytest

from inferofabric.models.common import Health
from inferofabric.models.pool import PoolSpec
from inferofabric.models.status import Decision, Rejection, RejectionKind, WaitKind
from inferofabric.policies import simulation
from inferofabric.policies.admission import CycleInput, CyclePlan, plan_cycle
from inferofabric.policies.budget import BudgetBook, BudgetState
from inferofabric.policies.engine import CompiledPolicy, PlacementRequest
from inferofabric.policies.quota import QuotaVerdict
from inferofabric.policies.reasons import Refusal

from . import test_budget_core, test_core
from .helpers import policy, pool, running, waiting, with_used
from .scenarios import outcome, scenario

MARK = "\u2260"  # every reworded text starts with it


def reword(text: str) -> str:
    """Same information, other words: reversed and case-swapped, so no phrase of the original is left."""
    return text if not text or text.startswith(MARK) else MARK + text[::-1].swapcase()


def apply_rewording(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reword every reason where it is made (see the module's docstring)."""
    init_rejection = Rejection.__init__

    def rejection(self: Rejection, **data: Any) -> None:
        data["reason"] = reword(data["reason"])
        init_rejection(self, **data)

    init_refusal = Refusal.__init__

    def refusal(self: Refusal, kind: RejectionKind, reason: str) -> None:
        init_refusal(self, kind, reword(reason))

    init_verdict = QuotaVerdict.__init__

    def verdict(self: QuotaVerdict, allowed: bool, borrowing: bool = False, reason: str = "") -> None:
        init_verdict(self, allowed, borrowing, reword(reason))

    decide = CompiledPolicy.decide

    def decide_reworded(self: CompiledPolicy, request: PlacementRequest) -> Decision:
        decision = decide(self, request)
        decision.reason = reword(decision.reason)
        return decision

    monkeypatch.setattr(Rejection, "__init__", rejection)
    monkeypatch.setattr(Refusal, "__init__", refusal)
    monkeypatch.setattr(QuotaVerdict, "__init__", verdict)
    monkeypatch.setattr(CompiledPolicy, "decide", decide_reworded)


def reworded_plan(snapshot: CycleInput) -> CyclePlan:
    with pytest.MonkeyPatch.context() as patch:
        apply_rewording(patch)
        return plan_cycle(snapshot)


def _copy(snapshot: CycleInput) -> CycleInput:
    return copy.deepcopy(snapshot, {id(snapshot.policy): snapshot.policy})


def _record(monkeypatch: pytest.MonkeyPatch) -> list[CycleInput]:
    """Run the existing admission scenarios, keeping a copy of every cycle's snapshot as it was given."""
    recorded: list[CycleInput] = []

    def recording(snapshot: Any, *args: Any, **kwargs: Any) -> CyclePlan:
        if not isinstance(snapshot, CycleInput):
            snapshot = CycleInput(snapshot, *args, **kwargs)
        recorded.append(_copy(snapshot))
        return plan_cycle(snapshot)

    for module in (test_core, test_budget_core):  # the fair-share replay's cycles: see the simulation test
        monkeypatch.setattr(module, "plan_cycle", recording)
    for module in (test_core, test_budget_core):
        for name, test in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_") and not inspect.signature(test).parameters:
                test()
    monkeypatch.undo()
    return recorded


def _both(snapshot: CycleInput) -> tuple[CyclePlan, CyclePlan]:
    """The plan with the real wording and with every reason reworded, each from its own copy."""
    return plan_cycle(_copy(snapshot)), reworded_plan(_copy(snapshot))


def test_the_existing_scenarios_decide_the_same_whatever_the_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = _record(monkeypatch)
    assert len(recorded) > 30  # every cycle test_core and test_budget_core run
    seen: set[str] = set()
    for snapshot in recorded:
        plain, other = _both(snapshot)
        assert outcome(other) == outcome(plain)
        for admitted in other.admitted:
            assert all(r.reason.startswith(MARK) for r in admitted.decision.rejected)
        seen |= {f"wait {w.kind}" for w in plain.waiting}
        seen |= {f"rejection {r.kind}" for a in plain.admitted for r in a.decision.rejected}
        seen |= {"preemption" for _ in plain.preemptions} | {"claim" for _ in plain.claims}
    # The scenarios reach every decision that used to match text: claims and preemption (capacity
    # rejections), quota and budget refusals, denied approvals.
    assert {"claim", "preemption", "wait capacity", "wait quota", "wait preempting", "wait approval_pending",
            "wait approval_denied", "rejection budget", "rejection capacity"} <= seen, seen


@pytest.mark.parametrize("block", range(8))
def test_random_scenarios_decide_the_same_whatever_the_wording(block: int) -> None:
    seen: set[str] = set()
    for seed in range(block * 50, block * 50 + 50):
        plain, other = _both(scenario(seed))
        assert outcome(other) == outcome(plain), seed
        seen |= {f"wait {w.kind}" for w in plain.waiting} | {"preemption" for _ in plain.preemptions}
        seen |= {f"rejection {r.kind}" for a in plain.admitted for r in a.decision.rejected}
    assert {"preemption", "wait capacity", "wait quota", "wait infeasible", "wait preempting",
            "rejection quota", "rejection capacity", "rejection compliance"} <= seen, seen


def test_a_simulation_comes_out_the_same_whatever_the_wording() -> None:
    jobs = [simulation.TraceJob(f"{team}{i}", float(i * 30), 1 + i % 4, ["A100"], 900.0, team,
                                ("production", "research", "batch")[i % 3], "pii" if i % 5 == 0 else "internal")
            for i in range(120) for team in ("vision", "nlp")]
    pools = [PoolSpec(name="dc1", location="on-prem", backend="simulated", region="dc1", gpus={"A100": 8}),
             PoolSpec(name="aws", location="cloud", backend="simulated", region="us-east-1", gpus={"A100": 8},
                      price_per_gpu_hour={"A100": 3.0})]
    document = policy().policy

    def figures() -> tuple[Any, ...]:
        result = simulation.simulate(document, pools, jobs)
        return result.teams, result.total, result.cycles, result.evaluations, result.never_admitted, result.gpu_seconds

    plain = figures()
    with pytest.MonkeyPatch.context() as patch:
        apply_rewording(patch)
        other = figures()
    assert other == plain
    assert plain[1]["preemptions"] > 0 and plain[1]["gpu_hours_cloud"] > 0


def test_rejections_carry_their_kind() -> None:
    compiled = policy()
    pools = [pool("full", gpus=4, used=4), pool("down", health=Health.UNHEALTHY),
             pool("cloud", 8, "cloud", price=2.0), pool("h100", gpu_type="H100"), pool("roomy", gpus=8)]
    pii = waiting(compiled, "pii", classification="pii")
    decision = compiled.decide(PlacementRequest("pii", 1, pii.spec, pools, exclude={"roomy": "failed there"}))
    kinds = {r.pool: r.kind for r in decision.rejected}
    assert kinds == {"full": RejectionKind.CAPACITY, "down": RejectionKind.UNHEALTHY,
                     "cloud": RejectionKind.COMPLIANCE, "h100": RejectionKind.NO_GPU_TYPE,
                     "roomy": RejectionKind.EXCLUDED}
    assert decision.mode == "wait" and decision.wait_kind == WaitKind.CAPACITY
    placed = compiled.decide(PlacementRequest("w", 1, waiting(compiled, "w").spec, [*pools, pool("spare", gpus=8)]))
    kinds = {r.pool: r.kind for r in placed.rejected}
    assert placed.pool == "roomy"  # on-prem has room and the burst condition is false
    assert kinds["spare"] == RejectionKind.RANKED_LOWER and kinds["cloud"] == RejectionKind.OUTSIDE_TARGET
    assert placed.wait_kind is None


def test_waits_carry_their_kind() -> None:
    compiled = policy()
    held = [running(f"v{i}", team="vision") for i in range(8)]
    queue = [waiting(compiled, "quota", team="vision"), waiting(compiled, "huge", gpus=64),
             waiting(compiled, "big", team="nlp", gpus=12, cls="batch")]
    plan = plan_cycle(CycleInput(queue, held, [with_used(pool(gpus=16), held)], compiled, {}, now=0, explain=True))
    kinds = {w.workload_id: w.kind for w in plan.waiting}
    assert kinds == {"quota": WaitKind.QUOTA, "huge": WaitKind.INFEASIBLE, "big": WaitKind.CAPACITY}


def test_payloads_recorded_before_kinds_still_load() -> None:
    old = {"workload_id": "w", "attempt": 1, "pool": "dc1", "rejected": [{"pool": "aws", "reason": "whatever"}]}
    decision = Decision.model_validate(old)
    assert decision.rejected[0].kind == RejectionKind.OTHER and decision.wait_kind is None
    assert Decision.model_validate_json(decision.model_dump_json()) == decision


def test_budget_refusals_are_of_kind_budget() -> None:
    book = BudgetBook([BudgetState("project", "atlas", "cloud", "monthly", 10.0, spent=9.0)])
    refusal = book.refusal("vision", "atlas", "cloud", 5.0)
    assert refusal is not None and refusal.kind == RejectionKind.BUDGET
    assert book.check("vision", "atlas", "cloud", 5.0) == refusal.reason
