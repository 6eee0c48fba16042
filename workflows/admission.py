"""AdmissionWorkflow: the fabric's one admission loop (workflow id `fabric-admission-<task queue>`).

It sleeps until a `wake` signal says something changed that can change the answer (a submission,
a release, a pool's health or capacity, a policy or a class change), then runs one admission cycle
as a local activity (activities/admission.py) and sleeps again. Signals that arrive during a cycle
mark it dirty, so the next cycle runs at once: no wake is lost, and a burst of a thousand wakes
costs a handful of cycles. Temporal keeps exactly one run of this id open, so exactly one loop acts
at a time; a cycle is one store transaction, so a worker killed mid-cycle loses and duplicates
nothing. It never polls: the only timers are a short retry while an admitted workload could not be told,
and one for the moment a waiting workload's exclusion of a failed pool ends.

History bound: continue-as-new after `history_limit` events (default 4,000) or when the server
suggests it; a cycle adds about 6 events and a wake 1.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from inferofabric.models.messages import AdmissionInput, CycleSummary
    from inferofabric.workflows.decode_failures import DECODE_FAILURES  # undecodable input fails the workflow

CYCLE_TIMEOUT = timedelta(seconds=120)
CYCLE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5))
RETRY_UNWOKEN = timedelta(seconds=2)


@workflow.defn(name="AdmissionWorkflow", failure_exception_types=DECODE_FAILURES, sandboxed=False)
class AdmissionWorkflow:
    def __init__(self) -> None:
        self._dirty = True  # a new run (first start, continue-as-new) always looks once
        self._state = AdmissionInput()
        self._last: CycleSummary | None = None
        self._wakes = 0

    @workflow.signal(name="wake")
    def wake(self, reason: str = "") -> None:
        self._dirty = True
        self._wakes += 1

    @workflow.query(name="state")
    def state(self) -> dict[str, object]:
        return {"cycles": self._state.cycles, "admitted": self._state.admitted, "preempted": self._state.preempted,
                "wakes_this_run": self._wakes, "last": self._last.model_dump() if self._last else None}

    @workflow.run
    async def run(self, state: AdmissionInput) -> None:
        self._state = state
        while True:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: self._dirty, timeout=self._timeout())
            self._dirty = False
            summary: CycleSummary = await workflow.execute_local_activity(
                "admission_cycle", workflow.now().timestamp(), result_type=CycleSummary,
                start_to_close_timeout=CYCLE_TIMEOUT, retry_policy=CYCLE_RETRY, summary="admission cycle")
            self._last = summary
            state.cycles += 1
            state.admitted += summary.admitted
            state.preempted += summary.preempted
            workflow.set_current_details(_details(summary, state))
            info = workflow.info()
            if info.get_current_history_length() > state.history_limit or info.is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(state)


    def _timeout(self) -> timedelta | None:
        """No timer while nothing can change by itself; a short one to retry telling an admitted
        workload, or until a pool exclusion of a waiting workload ends."""
        last = self._last
        if last is None:
            return None
        waits = []
        if last.unwoken:
            waits.append(RETRY_UNWOKEN)
        if last.next_expiry is not None:
            waits.append(timedelta(seconds=max(0.05, last.next_expiry - workflow.now().timestamp())))
        return min(waits) if waits else None


def _details(summary: CycleSummary, state: AdmissionInput) -> str:
    lines = [f"**{summary.waiting} waiting**; last cycle admitted {summary.admitted}, preempted {summary.preempted} "
             f"in {summary.duration_ms:.1f} ms ({summary.evaluations} decisions, {summary.skipped} skipped as "
             f"known misfits)", "", f"since start: {state.cycles} cycles, {state.admitted} admitted", ""]
    lines += [f"- {line}" for line in summary.head]
    return "\n".join(lines)
