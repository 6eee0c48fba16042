"""Processes the durability and chaos tests start, stop and kill: a Temporal dev server with its
own SQLite file (so it can stop and come back with its state on the same port) and the control
plane's worker. Also the invariants checked afterwards from the back ends' own records."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.connection import connect
from inferofabric.models import PoolSpec
from inferofabric.models.messages import SEARCH_ATTRIBUTES
from inferofabric.models.status import WorkloadStatus
from inferofabric.sdk.errors import FabricError
from inferofabric.store.db import Store

BIN = Path(sys.executable).parent
WORKER_SCRIPT = Path(__file__).with_name("worker_proc.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def restartable_port() -> int:
    """A free port outside the kernel's ephemeral range, for a server that is stopped and started
    again on the same port: while it is down, clients reconnecting take ephemeral source ports, and
    one of them can hold the server's own port at the moment it starts again ("address already in
    use"). A port below the range is never handed out as a source port."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]) \
        if Path("/proc/sys/net/ipv4/ip_local_port_range").exists() else 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


class DevServer:
    """`temporal server start-dev` on a fixed port with a SQLite file: stop it, start it again."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or restartable_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
                "--headless", "--db-filename", str(self.directory / "temporal.db"), "--log-level", "error",
                "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"]
        for name, kind in SEARCH_ATTRIBUTES.items():
            args += ["--search-attribute", f"{name}={kind}"]
        log = (self.directory / "temporal.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def wait_ready(self, timeout: float = 60) -> Client:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await connect(self.address)
                await client.count_workflows()  # the frontend answers and the namespace exists
                return client
            except Exception as error:  # unreachable, or up but not serving yet
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"dev server exited with {self.process.returncode}; "
                                       f"see {self.directory / 'temporal.log'}") from error
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    async def restart(self, kill: bool = False, down_for: float = 0.0) -> None:
        self.stop(kill=kill)
        await asyncio.sleep(down_for)
        self.start()
        self.restarts += 1
        await self.wait_ready()


@dataclass
class WorkerProcess:
    """The control plane's worker in a process of its own (see worker_proc.py)."""

    address: str
    queue: str
    home: Path
    store_url: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        env = {**os.environ, "FABRIC_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT), self.address, self.queue, str(self.home),
                 self.store_url],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while b"worker ready" not in self._log_tail():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after {timeout}s; see {self.log}")
            await asyncio.sleep(0.2)

    def _log_tail(self) -> bytes:
        # Only what the current process wrote: each start appends a marker first.
        data = self.log.read_bytes() if self.log.exists() else b""
        return data.rsplit(b"=== start", 1)[-1]

    async def begin(self) -> None:
        with self.log.open("ab") as log:
            log.write(b"\n=== start\n")
        self.start()
        await self.wait_ready()

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    async def restart(self, kill: bool = True, down_for: float = 0.0) -> None:
        self.stop(kill=kill)
        await asyncio.sleep(down_for)
        self.restarts += 1
        await self.begin()


def alive(process: subprocess.Popen[bytes] | None) -> bool:
    return process is not None and process.poll() is None


# -- invariants, from the back ends' and the store's own records ---------------------------------------------
@dataclass
class Report:
    workloads: int = 0
    launches: int = 0
    moved_attempts: int = 0
    unobserved_completions: int = 0  # moved copies that had ended before the move (nobody saw it)
    outage_completions: int = 0  # moved copies that ran on to their end while their pool was out
    max_attempts: int = 0
    peak_use: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.workloads} workloads, {self.launches} launches, {self.moved_attempts} moved attempts "
                f"(max {self.max_attempts} attempts); moved copies that ran to their end: "
                f"{self.unobserved_completions} before the move (not yet seen), {self.outage_completions} "
                f"during their pool's outage; peak GPUs in use {self.peak_use}; "
                f"{len(self.violations)} violations")


def completed(record: dict[str, Any]) -> bool:
    """The job ran to its end (a cancel that came after the end does not undo that)."""
    end = record["started_at"] + record["duration"]
    if record.get("cancelled"):
        return float(record.get("cancelled_at", 0)) >= end
    return time.time() >= end


def check_invariants(home: Path, store: Store, pools: list[dict[str, Any]], classification: dict[str, str],
                     finals: dict[str, Any], outages: dict[str, list[tuple[float, float]]],
                     grace: float = 15.0) -> Report:
    """`finals`: workload id -> final WorkloadStatus; `outages`: pool -> [(failed at, restored at)].

    A moved copy (an attempt that is not the succeeded one) that ran to its end is a duplicate run
    the fabric could not prevent only if it had already ended when the workload moved (the end was
    not seen yet: the pool went silent, or the watch was between workers), or if it ended while its
    pool could not be reached (before the monitor saw it back, within `grace`). Any other is an
    orphan the fabric should have stopped: a violation.
    """
    report = Report(workloads=len(finals))
    bad = report.violations
    specs = {p["name"]: PoolSpec.model_validate(p) for p in pools}
    records: dict[str, dict[str, Any]] = {}
    job_pool: dict[str, str] = {}
    for name, spec in specs.items():
        backend = SimulatedBackend(spec, home)
        ledger = backend.ledger()
        report.launches += len(ledger)
        seen: set[str] = set()
        for entry in ledger:
            if entry["job_id"] in seen:
                bad.append(f"{entry['job_id']} launched twice on {name}")
            seen.add(entry["job_id"])
            if classification.get(entry["workload_id"]) == "pii" and spec.location == "cloud":
                bad.append(f"compliance: pii workload {entry['workload_id']} launched on cloud pool {name}")
        for record in backend.job_records():
            if record["job_id"] in job_pool:
                bad.append(f"{record['job_id']} exists on {job_pool[record['job_id']]} and {name}")
            records[record["job_id"]] = record
            job_pool[record["job_id"]] = name
        if backend.list_jobs():
            bad.append(f"jobs still running on {name} after the run: {backend.list_jobs()}")

    by_workload: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records.values():
        by_workload[record["workload_id"]].append(record)
    for workload_id, final in finals.items():
        if final.state != "succeeded":
            bad.append(f"{workload_id} ended {final.state}: {final.message}")
            continue
        report.max_attempts = max(report.max_attempts, final.attempts)
        succeeded = [a for a in final.history if a.outcome == "succeeded"]
        if len(succeeded) != 1 or succeeded[0].attempt != final.attempts:
            bad.append(f"{workload_id}: {len(succeeded)} succeeded attempts in its history")
            continue
        winner = succeeded[0].job_id
        if winner not in records or not completed(records[winner]):
            bad.append(f"{workload_id}: its succeeded job {winner} did not run to its end on the pool")
        for record in by_workload[workload_id]:
            if record["job_id"] == winner:
                continue
            if record["attempt"] > final.attempts:
                bad.append(f"{record['job_id']} belongs to no attempt of {workload_id}")
            report.moved_attempts += 1
            if not completed(record):
                continue
            end = record["started_at"] + record["duration"]
            pool = job_pool[record["job_id"]]
            attempt = next((a for a in final.history if a.attempt == record["attempt"]), None)
            moved_at = attempt.ended_at.timestamp() if attempt and attempt.ended_at else None
            if moved_at is not None and end <= moved_at:
                report.unobserved_completions += 1
            elif any(failed <= end <= restored + grace for failed, restored in outages.get(pool, [])):
                report.outage_completions += 1
            else:
                bad.append(f"{record['job_id']} (a moved copy of {workload_id}) ran to its end on {pool} "
                           "outside any outage: an orphan nobody stopped")
    for workload_id in by_workload:
        if workload_id not in finals:
            bad.append(f"jobs of unknown workload {workload_id}")

    # No pool ever ran more GPUs than it has, judged from the jobs the back ends actually ran (their job
    # records), not from the store's reservations: sweep each job's running interval. A moved copy
    # counts until its workload left it (its reservation was released); one that ran on past that is
    # judged above, as an orphan.
    now = time.time()
    left_at = {(row.workload_id, row.attempt): row.released_at.timestamp() if row.released_at else now
               for row in store.all_reservations()}
    for row in store.all_reservations():
        if row.active:
            bad.append(f"reservation of {row.workload_id} attempt {row.attempt} still active on {row.pool}")
    last_attempt = {w: max(r["attempt"] for r in rs) for w, rs in by_workload.items()}
    events: dict[tuple[str, str | None], list[tuple[float, int]]] = defaultdict(list)
    for job_id, record in records.items():
        start = record["started_at"]
        end = min(start + record["duration"], record.get("cancelled_at") or now, record.get("reclaimed_at") or now,
                  now)
        if record["attempt"] < last_attempt[record["workload_id"]]:
            end = min(end, left_at.get((record["workload_id"], record["attempt"]), end))
        gpus = int(record.get("gpus") or 0) * int(record.get("replicas") or 1)
        if gpus and end > start:
            events[(job_pool[job_id], record.get("gpu_type"))] += [(start, gpus), (end, -gpus)]
    for (pool, gpu_type), points in events.items():
        capacity = specs[pool].gpus.get(gpu_type or "", 0)
        in_use = peak = 0
        for _, delta in sorted(points, key=lambda p: (p[0], p[1])):  # ends before starts at a tie
            in_use += delta
            peak = max(peak, in_use)
        report.peak_use[pool] = max(report.peak_use.get(pool, 0), peak)
        if peak > capacity:
            bad.append(f"pool {pool} overcommitted: {peak} {gpu_type} running of {capacity} (its job records)")
    return report


async def final_status(client: Client, workload_id: str) -> WorkloadStatus:
    """The workload's result, waiting through restarts (the SDK's WorkloadHandle.result() is broken on
    temporalio 1.35: it passes result_type to WorkflowHandle.result())."""
    handle = client.get_workflow_handle(workload_id, result_type=WorkloadStatus)
    return await retrying(handle.result, attempts=600)  # type: ignore[no-any-return]


async def retrying(call: Any, attempts: int = 60, delay: float = 0.5) -> Any:
    """Run a client call, riding out a Temporal server restart (or a query while no worker is up)."""
    for attempt in range(attempts):
        try:
            return await call()
        except (TimeoutError, RPCError, FabricError, WorkflowQueryFailedError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
    return None


