"""SIMULATED pool: a GPU cluster of declared size whose jobs only pretend to run.

For demos, benchmarks and trace replay; it is labelled as simulated everywhere it appears. A job
"runs" for the time in annotation `sim.inferofabric.io/duration` (default 10s) and ends with
`sim.inferofabric.io/outcome` (default succeeded; `failed` exits 1; `reclaimed` is a spot reclaim at
the end of the duration: the job is lost the way a cloud loses it). `reclaim_all` (`fabric pool
reclaim`) reclaims every job running there now. Its state lives under
$FABRIC_HOME/simulated/<pool>/, so jobs keep "running" while the control plane restarts, and an
outage (`fabric pool fail`) makes the pool stop answering the way a dead cluster would.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from inferofabric.backends._files import create_json_exclusive, read_json, write_json_atomic
from inferofabric.backends.base import (
    LOST_GONE,
    LOST_RECLAIMED,
    Backend,
    BackendUnavailable,
    JobRequest,
    JobState,
    JobStatus,
    PoolProbe,
    checked_job_id,
)
from inferofabric.models.common import Health, StrictModel, duration_seconds
from inferofabric.models.workload import (
    SIM_DURATION_ANNOTATION,
    SIM_LAUNCH_DELAY_ANNOTATION,
    SIM_OUTCOME_ANNOTATION,
    SIM_PENDING_ANNOTATION,
)

DEFAULT_DURATION = "10s"
RECENT_SECONDS = 600  # a snapshot also shows jobs that ended this recently (the watcher sees short jobs end)
SIMULATED_TAG = "[SIMULATED]"


def _pool_dir(home: Path, pool: str) -> Path:
    return home / "simulated" / pool


def set_outage(home: Path, pool: str, failed: bool) -> None:
    """Make a simulated pool stop answering (failed=True) or come back."""
    state = read_json(_pool_dir(home, pool) / "state.json") or {}
    state["failed"] = failed
    write_json_atomic(_pool_dir(home, pool) / "state.json", state)


def reclaim_all(home: Path, pool: str) -> int:
    """Take back every job running on a simulated pool now, as a spot reclaim would; how many."""
    jobs_dir = _pool_dir(home, pool) / "jobs"
    count = 0
    now = time.time()
    for path in sorted(jobs_dir.glob("*.json")) if jobs_dir.exists() else []:
        record = read_json(path)
        if record and not record.get("cancelled") and not record.get("reclaimed_at") \
                and now - record["started_at"] < record["duration"]:
            record["reclaimed_at"] = now
            write_json_atomic(path, record)
            count += 1
    return count


def set_health(home: Path, pool: str, health: Health, reason: str = "") -> None:
    """Make a simulated pool report a health (for tests and demos)."""
    state = read_json(_pool_dir(home, pool) / "state.json") or {}
    state["health"] = health.value
    state["reason"] = reason
    write_json_atomic(_pool_dir(home, pool) / "state.json", state)


class SimulatedSettings(StrictModel):
    """A simulated pool takes no settings of its own (each workload's `sim.inferofabric.io/*`
    annotations say how its job behaves): any key in a `simulated:` block is a typo, refused."""


class SimulatedBackend(Backend):
    kind = "simulated"
    config_model = SimulatedSettings
    # Calls this process made to simulated pools ("API calls", as a cloud would count them), by
    # pool: bench/running.py reports them per second.
    api_calls: ClassVar[Counter[str]] = Counter()

    @property
    def _dir(self) -> Path:
        return _pool_dir(self.home, self.pool.name)

    def _job_path(self, job_id: str) -> Path:
        return self._dir / "jobs" / f"{job_id}.json"

    def _answer_or_fail(self) -> None:
        SimulatedBackend.api_calls[self.pool.name] += 1
        state = read_json(self._dir / "state.json") or {}
        if state.get("failed"):
            raise BackendUnavailable(f"{SIMULATED_TAG} pool {self.pool.name} is not answering (simulated outage)")

    def probe(self) -> PoolProbe:
        self._answer_or_fail()
        state = read_json(self._dir / "state.json") or {}
        health = Health(state.get("health", Health.HEALTHY.value))
        return PoolProbe(health=health, reason=state.get("reason", "") or f"{SIMULATED_TAG} cluster answering",
                         gpus=None, details={"simulated": True})

    def launch(self, request: JobRequest) -> JobStatus:
        self._answer_or_fail()
        annotations = request.spec.annotations
        delay = duration_seconds(annotations.get(SIM_LAUNCH_DELAY_ANNOTATION, 0))
        if delay and not self._job_path(request.job_id).exists():
            time.sleep(delay)  # a slow cloud API: the launch is still on its way when a cancel comes
        pending = duration_seconds(annotations.get(SIM_PENDING_ANNOTATION, 0))
        record = {
            "job_id": request.job_id,
            "workload_id": request.workload_id,
            "attempt": request.attempt,
            "gpu_type": request.gpu_type,
            "gpus": request.gpus,
            "replicas": request.spec.replicas,
            "started_at": time.time(),
            "duration": pending + duration_seconds(annotations.get(SIM_DURATION_ANNOTATION, DEFAULT_DURATION)),
            "pending": pending,
            "outcome": annotations.get(SIM_OUTCOME_ANNOTATION, "succeeded"),
            "cancelled": False,
            "launches": 1,
        }
        if create_json_exclusive(self._job_path(request.job_id), record):
            # Append-only ledger of real launches: the chaos suite checks exactly-once from it.
            with (self._dir / "ledger.jsonl").open("a") as ledger:
                ledger.write(json.dumps({"job_id": request.job_id, "workload_id": request.workload_id,
                                         "attempt": request.attempt, "gpus": request.gpus,
                                         "at": record["started_at"]}) + "\n")
        return self.status(request.job_id)

    def status(self, job_id: str) -> JobStatus:
        self._answer_or_fail()
        return self._status_of(job_id, read_json(self._job_path(job_id)), time.time())

    def snapshot(self, known: list[str]) -> dict[str, JobStatus]:
        """Every job of the pool from one pass over its directory: the live ones and `known`."""
        self._answer_or_fail()
        now = time.time()
        jobs_dir = self._dir / "jobs"
        found: dict[str, JobStatus] = {}
        wanted = set(known)
        for job_id, record in _job_records(jobs_dir):
            if job_id in wanted or not _ended(record, now - RECENT_SECONDS, since=True):
                found[job_id] = self._status_of(job_id, record, now)
        for job_id in wanted - found.keys():
            found[job_id] = self._status_of(job_id, None, now)
        return found

    def _status_of(self, job_id: str, record: dict[str, Any] | None, now: float) -> JobStatus:
        if record is None:
            return JobStatus(job_id=job_id, state=JobState.LOST, message=f"{SIMULATED_TAG} no such job",
                             details={"class": LOST_GONE})
        # The container starts once the launch-pending time (an image pull) is over.
        started = datetime.fromtimestamp(record["started_at"] + record.get("pending", 0), UTC)
        if record.get("cancelled"):
            return JobStatus(job_id=job_id, state=JobState.CANCELLED, started_at=started,
                             message=f"{SIMULATED_TAG} cancelled")
        reclaimed_at = record.get("reclaimed_at")
        ends = record["started_at"] + record["duration"]
        if reclaimed_at is None and record.get("outcome") == "reclaimed" and now >= ends:
            reclaimed_at = ends
        if reclaimed_at is not None:
            return JobStatus(job_id=job_id, state=JobState.LOST, started_at=started,
                             finished_at=datetime.fromtimestamp(reclaimed_at, UTC), details={"class": LOST_RECLAIMED},
                             message=f"{SIMULATED_TAG} spot capacity reclaimed by the provider")
        elapsed = now - record["started_at"]
        if elapsed < record.get("pending", 0):
            return JobStatus(job_id=job_id, state=JobState.PENDING,
                             message=f"{SIMULATED_TAG} pending {elapsed:.0f}s: waiting for an image pull")
        if elapsed < record["duration"]:
            return JobStatus(job_id=job_id, state=JobState.RUNNING, started_at=started,
                             message=f"{SIMULATED_TAG} running {elapsed:.0f}s of {record['duration']:.0f}s")
        finished = datetime.fromtimestamp(record["started_at"] + record["duration"], UTC)
        failed = record.get("outcome") == "failed"
        return JobStatus(
            job_id=job_id, state=JobState.FAILED if failed else JobState.SUCCEEDED,
            exit_code=1 if failed else 0, started_at=started, finished_at=finished,
            message=f"{SIMULATED_TAG} {'failed (exit 1)' if failed else 'completed'}",
        )

    def cancel(self, job_id: str) -> None:
        self._answer_or_fail()
        path = self._job_path(job_id)
        record = read_json(path)
        if record is not None and not record.get("cancelled"):
            record["cancelled"] = True
            record["cancelled_at"] = time.time()
            write_json_atomic(path, record)

    def logs(self, job_id: str, tail: int = 200) -> str:
        status = self.status(checked_job_id(job_id))
        lines = [f"{SIMULATED_TAG} job {job_id} on pool {self.pool.name}: {status.state.value}", status.message]
        return "\n".join(lines[-tail:])

    def list_jobs(self) -> list[str]:
        self._answer_or_fail()
        jobs_dir = self._dir / "jobs"
        if not jobs_dir.exists():
            return []
        live = []
        for path in sorted(jobs_dir.glob("*.json")):
            record = read_json(path)
            if not _ended(record, time.time()):
                live.append(path.stem)
        return live

    def job_records(self) -> list[dict[str, Any]]:
        """Every job this pool ever ran (the chaos suite's ground truth)."""
        jobs_dir = self._dir / "jobs"
        return [r for p in sorted(jobs_dir.glob("*.json")) if (r := read_json(p)) is not None]

    def ledger(self) -> list[dict[str, Any]]:
        path = self._dir / "ledger.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# jobs folder -> {file name: ((inode, mtime, size), record)}: a look re-reads only the job files that
# changed since the last one. A cloud's list call costs the cloud, not the worker; a simulated
# pool's look should not cost the worker a read and a parse of every job file either (10 watchers
# over 2,000 jobs read 1,000 files a second otherwise).
_SEEN: dict[str, dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]]] = {}


def _job_records(jobs_dir: Path) -> list[tuple[str, dict[str, Any] | None]]:
    """(job id, record) of every job file in the folder, sorted by job id."""
    try:
        with os.scandir(jobs_dir) as entries:
            files = sorted((e for e in entries if e.name.endswith(".json")), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    before = _SEEN.get(str(jobs_dir), {})
    now: dict[str, tuple[tuple[int, int, int], dict[str, Any] | None]] = {}
    out = []
    for entry in files:
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        hit = before.get(entry.name)
        record = hit[1] if hit is not None and hit[0] == version else read_json(Path(entry.path))
        now[entry.name] = (version, record)
        out.append((entry.name[:-5], record))
    _SEEN[str(jobs_dir)] = now
    return out


def _ended(record: dict[str, Any] | None, now: float, since: bool = False) -> bool:
    """A simulated job no longer occupies its GPUs at `now` (cancelled, reclaimed or past its
    duration). since=True: it had ended by `now` already (a moment in the past)."""
    if record is None:
        return True
    ends = [record["started_at"] + record["duration"]]
    if record.get("cancelled"):
        ends.append(record.get("cancelled_at", record["started_at"]) if since else float("-inf"))
    if record.get("reclaimed_at") is not None:
        ends.append(record["reclaimed_at"] if since else float("-inf"))
    return min(ends) <= now
