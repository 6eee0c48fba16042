"""The pool watcher: one long-running activity per pool follows every fabric job there.

It replaces one activity slot held per running job (`watch_job`, gone): once per period it takes
one batched look at the pool (`Backend.snapshot`: a Kubernetes list of Jobs and pods,
`describe_jobs` 100 ids at a time, one GCP list...) and tells each workload whose job changed state
(signal `job_state`). The states already delivered travel in its heartbeat, so a watcher restarted
after a worker crash re-attaches where it was and re-tells nothing; a throttled API makes it slow
down (the period doubles, up to a minute), an unreachable one is the health monitor's business.
It runs where the back end is reachable: the control plane's monitor queue, or the agent's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from inferofabric.backends.base import BackendThrottled, BackendUnavailable, JobState, JobStatus, parse_job_id
from inferofabric.backends.registry import backend_for
from inferofabric.models.messages import JobUpdate, WatchPoolInput, WatchPoolResult
from inferofabric.threads import in_monitor

MAX_PERIOD = 60.0
SIGNALS_IN_FLIGHT = 64


async def deliver(client: Client, changes: list[JobStatus]) -> set[str]:
    """Signal each job's workload; the job ids that were delivered (or need no delivery: the workload
    is gone, which makes the job an orphan for the reconciler). A Temporal outage leaves the rest
    for the next look."""
    gate = asyncio.Semaphore(SIGNALS_IN_FLIGHT)
    done: set[str] = set()

    async def one(status: JobStatus) -> None:
        parsed = parse_job_id(status.job_id)
        if parsed is None:
            done.add(status.job_id)
            return
        workload_id, attempt = parsed
        async with gate:
            try:
                await client.get_workflow_handle(workload_id).signal(
                    "job_state", JobUpdate(attempt=attempt, status=status))
                done.add(status.job_id)
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    done.add(status.job_id)  # the workload finished: nothing to tell
                else:
                    activity.logger.warning("could not tell %s about %s: %s", workload_id, status.job_id, error)

    await asyncio.gather(*(one(status) for status in changes))
    return done


class PoolWatchActivities:
    def __init__(self, home: Path) -> None:
        self.home = home

    @activity.defn(name="watch_pool")
    async def watch_pool(self, request: WatchPoolInput) -> WatchPoolResult:
        info = activity.info()
        known: dict[str, str] = dict(request.known)
        if info.heartbeat_details:  # a retry after a crash: carry on from the last heartbeat
            known = _known_from(info.heartbeat_details[0]) or known
        backend = backend_for(request.pool, self.home)
        client = activity.client()
        result = WatchPoolResult()
        base = request.settings.period_seconds
        period = base
        deadline = time.monotonic() + request.settings.run_seconds
        while time.monotonic() < deadline:
            live = [job_id for job_id, state in known.items() if not JobState(state).terminal]
            fresh = backend.launched - known.keys()
            live += sorted(fresh)
            try:
                snapshot = await in_monitor(backend.snapshot, live)
            except BackendThrottled as error:
                period = min(period * 2, MAX_PERIOD)
                result.throttled += 1
                activity.logger.info("pool %s throttled the watcher (%s); next look in %.0fs",
                                     request.pool.name, error, period)
            except BackendUnavailable as error:
                activity.logger.info("pool %s unreachable for the watcher: %s", request.pool.name, error)
            else:
                result.looks += 1
                period = base
                # A job this process just launched and never saw may not be listed yet (eventually
                # consistent APIs): "not found" is news only about a job seen before.
                changes = [status for job_id, status in snapshot.items() if known.get(job_id) != status.state.value
                           and not (job_id not in known and status.state.value == "lost")]
                delivered = await deliver(client, changes) if changes else set()
                result.delivered += len(delivered)
                for status in changes:
                    if status.job_id in delivered:
                        known[status.job_id] = status.state.value
                backend.launched -= fresh & known.keys()
                # Forget what the pool forgot once it was reported (a terminal job stays while listed,
                # so a finished Kubernetes Job is not reported again at every look).
                known = {job_id: state for job_id, state in known.items() if job_id in snapshot}
            activity.heartbeat(known)
            await asyncio.sleep(period)
        result.known = known
        return result


def _known_from(details: Any) -> dict[str, str] | None:
    if isinstance(details, dict):
        return {str(k): str(v) for k, v in details.items()}
    return None
