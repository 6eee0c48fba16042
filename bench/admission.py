"""Admission at scale: the figures of issue "one scheduler for all waiting work", in one run.

    .venv/bin/python bench/admission.py [--queued 10000] [--pools 100] [--live-waiting 2000]
                                        [--releases 20] [--drain 2000] [--drain-gpus 100]

1. **Cycle** (store + planner, no Temporal): `--queued` waiting workloads (mixed teams, classes,
   shapes) on `--pools` pools that are full; one admission cycle = the real transaction
   (`store.admission.run_cycle`) with the real planner. Cold (first parse of every row) and warm.
   Target: a warm cycle < 100 ms; placement evaluations per second.
2. **Live** on a real Temporal dev server with the fabric's worker in this process:
   `--live-waiting` workloads wait on a full 20-GPU pool. (a) idle: control-plane CPU (worker +
   server) over 10 s while nothing frees — target < 5 % of one core; (b) `--releases` running jobs
   end one by one: from the release of a GPU (the reservation's `released_at`) to the right workload
   (the head of the order) launching on the back end (its launch ledger) — target p99 < 1 s;
   (c) peak memory of worker and server — target < 2 GiB.
3. **Drain**: `--drain` zero-length jobs through `--drain-gpus` GPUs against a bare one-activity
   workflow, same server, same run — target >= 0.5x.

The live parts default to fewer workloads than the cycle (2,000 waiting, 2,000 drained) so the bench
fits a 2-core machine in a few minutes; pass the full sizes to measure them (`--live-waiting 10000
--drain 10000`). A waiting workload runs no timers, so idle CPU does not grow with the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from temporalio.service import RPCError
from throughput import Meter, start_server

from inferofabric.models import PoolSpec, WorkloadSpec, WorkloadState
from inferofabric.queue import SpecCache, compiled_policy, make_planner
from inferofabric.store import admission as queue_store
from inferofabric.store.db import Store
from inferofabric.store.tables import ReservationRow

POLICY = """
placement:
  default: on-prem
  burst: {when: on_prem_utilization > 0.85, target: cloud}
constraints:
  - {name: no-pii-in-cloud, deny: {location: cloud}, when: "workload.data_classification == 'pii'"}
priority_classes:
  - {name: production, value: 1000, preemption: never}
  - {name: research, value: 100, default: true}
  - {name: batch, value: 10}
fair_share: {half_life: 24h}
teams:
  vision: {weight: 2, cohort: ml, quota: {A100: {nominal: 400, borrowing_limit: 200}}}
  nlp: {weight: 1, cohort: ml, quota: {A100: {nominal: 300}}}
"""
TEAMS = ["vision", "nlp", "ads", "search", "speech"]
CLASSES = ["production", "research", "batch"]
TYPES = [["A100"], ["H100"], ["A100", "H100"], ["L4"]]
DRAIN_IN_FLIGHT = 100  # workloads started and awaited at once in the drain runs
TARGETS = {"cycle_ms": 100.0, "idle_cpu": 0.05, "release_p99_s": 1.0, "memory_gib": 2.0, "drain_ratio": 0.5}


MISSES: list[str] = []


def verdict(ok: bool) -> str:
    if not ok:
        MISSES.append("miss")
    return "PASS" if ok else "MISS"


def pools(count: int) -> list[PoolSpec]:
    out = []
    for i in range(count):
        cloud = i % 4 == 3
        out.append(PoolSpec(name=f"pool-{i:03d}", location="cloud" if cloud else "on-prem", backend="simulated",
                            region=f"r{i % 5}", gpus={"A100": 16, "H100": 8, "L4": 8},
                            price_per_gpu_hour={"A100": 3.0 if cloud else 1.0, "H100": 5.0, "L4": 0.8}))
    return out


def spec(i: int, rng: random.Random) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": f"w-{i:05d}", "team": rng.choice(TEAMS), "image": "img", "priority_class": rng.choice(CLASSES),
        "data_classification": "pii" if rng.random() < 0.1 else "internal", "priority": rng.choice([10, 50, 90]),
        "resources": {"gpu": {"type": rng.choice(TYPES), "count": rng.choice([1, 2, 4, 8])}}})


# -- 1. the cycle ---------------------------------------------------------------------------------------
def bench_cycle(queued: int, pool_count: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-admission-"))
    store = Store(f"sqlite:///{home / 'fabric.db'}")
    store.migrate()
    from inferofabric.models.policy import PlacementPolicy

    store.set_policy(PlacementPolicy.from_yaml(POLICY))
    specs = pools(pool_count)
    for pool in specs:
        store.upsert_pool(pool)
    # Fill every pool: nothing fits, as when the estate is saturated and nothing frees.
    with store.session(write=True) as s:
        table = ReservationRow.__table__  # type: ignore[attr-defined]
        rows = []
        for pool in specs:
            for gpu_type, count in pool.gpus.items():
                rows.append({"workload_id": f"fill-{pool.name}-{gpu_type}", "attempt": 1, "pool": pool.name,
                             "gpu_type": gpu_type, "gpus": count, "active": True,
                             "created_at": datetime.now(UTC), "team": "ads", "location": str(pool.location),
                             "priority_class": "production", "class_value": 1000, "priority": 50,
                             "borrowing": False, "preempting": False})
        s.execute(table.insert(), rows)
        s.commit()
    rng = random.Random(7)
    started = time.perf_counter()
    for i in range(queued):
        item = spec(i, rng)
        queue_store.enqueue(store, item.name or "", 1, i, item.team, item.model_dump_json())
    fill_s = time.perf_counter() - started
    policy = compiled_policy(store)
    half_life = policy.policy.fair_share.half_life_seconds
    cache = SpecCache()

    def cycles(count: int, explain: int | bool, dry_run: bool) -> tuple[list[float], Any]:
        """Milliseconds of `count` cycles and the last one's plan."""
        times, plan = [], None
        for _ in range(count):
            started = time.perf_counter()
            plan = queue_store.run_cycle(store, make_planner(cache, policy, explain=explain), half_life,
                                         dry_run=dry_run, memo=cache.rows).plan
            times.append((time.perf_counter() - started) * 1000)
        return times, plan

    times, plan = cycles(6, 50, dry_run=False)  # the loop's own cycle: reasons for the head of the queue
    assert plan is not None and not plan.admitted, "the bench's pools should be full"
    full, full_plan = cycles(3, True, dry_run=True)  # `fabric queue`: every position and reason
    # Capacity frees on every pool: the same cycle now evaluates the policy for every shape that may fit.
    with store.session(write=True) as s:
        s.execute(table.update().where(table.c.workload_id.like("fill-%")).values(gpus=table.c.gpus // 2))
        s.commit()
    busy, busy_plan = cycles(3, 50, dry_run=True)
    warm = statistics.median(times[1:])
    busy_ms = statistics.median(busy)
    return {"cold_ms": times[0], "warm_ms": warm, "full_view_ms": statistics.median(full),
            "waiting": full_plan.waiting_total, "busy_ms": busy_ms, "busy_evaluations": busy_plan.evaluations,
            "busy_admitted": len(busy_plan.admitted),
            "evaluations_per_s": busy_plan.evaluations / (busy_ms / 1000), "fill_s": fill_s}


# -- 2. live --------------------------------------------------------------------------------------------
def _peak_rss_gib(pid: int | None = None) -> float:
    """VmHWM of this process (pid None) or of this process's children summed."""
    paths = [Path("/proc/self/status")] if pid is None else []
    if pid is not None:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                paths.append(stat.parent / "status")
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / (1024 * 1024)


async def bench_live(waiting: int, releases: int) -> dict[str, Any]:
    from inferofabric.activities.admission import admission_id
    from inferofabric.backends.simulated import SimulatedBackend
    from inferofabric.sdk.client import FabricClient
    from inferofabric.store.db import get_store
    from inferofabric.worker.main import build_worker

    env = await start_server()
    home = Path(tempfile.mkdtemp(prefix="bench-admission-live-"))
    os.environ["FABRIC_HOME"] = str(home)
    url = f"sqlite:///{home / 'fabric.db'}"
    store = get_store(url)
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {}
    try:
        async with build_worker(env.client, queue=queue, home=home, store_url=url):
            fabric = FabricClient(env.client, task_queue=queue, store_url=url)
            await fabric.register_pool({"name": "dc1", "location": "on-prem", "backend": "simulated",
                                        "region": "dc1", "gpus": {"A100": releases}})
            await fabric.set_policy("placement: {default: on-prem}\npriority_classes:\n"
                                    "  - {name: high, value: 100}\n  - {name: low, value: 10, default: true}\n")
            # Running work that holds the pool; the bench ends it one job at a time later.
            for i in range(releases):
                await fabric.submit({"name": f"run-{i:03d}", "team": "vision", "image": "img",
                                     "resources": {"gpu": {"type": "A100", "count": 1}},
                                     "annotations": {"sim.inferofabric.io/duration": "2h"}})
            while len(store.active_reservations()) < releases:
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)
            # Baseline: the same stack with nothing waiting (a pool monitor probing every second and
            # the running jobs' watchers), so the queue's own cost is the difference.
            wall, cpu, server = time.perf_counter(), time.process_time(), Meter.server_cpu()
            await asyncio.sleep(10)
            span = time.perf_counter() - wall
            result["base_worker_cpu"] = (time.process_time() - cpu) / span
            result["base_server_cpu"] = (Meter.server_cpu() - server) / span
            started = time.perf_counter()
            sem = asyncio.Semaphore(100)
            rng = random.Random(3)

            async def submit(i: int) -> None:
                async with sem:
                    await fabric.submit({"name": f"wait-{i:05d}", "team": rng.choice(TEAMS), "image": "img",
                                         "priority_class": "high" if i % 10 == 0 else "low",
                                         "resources": {"gpu": {"type": "A100", "count": 1}},
                                         "annotations": {"sim.inferofabric.io/duration": "1h"}})

            await asyncio.gather(*(submit(i) for i in range(waiting)))
            while (await fabric.queue()).total < waiting:
                await asyncio.sleep(1)
            result["enqueue_s"] = time.perf_counter() - started
            # Settle: the admission loop has run its last cycle for the submissions (no cycle for 3 s).
            loop = env.client.get_workflow_handle(admission_id(queue))
            last, quiet = -1, 0
            while quiet < 3:
                cycles = (await loop.query("state"))["cycles"]
                quiet = quiet + 1 if cycles == last else 0
                last = cycles
                await asyncio.sleep(1)
            # (a) idle: nothing frees for 10 s.
            wall, cpu, server = time.perf_counter(), time.process_time(), Meter.server_cpu()
            await asyncio.sleep(10)
            span = time.perf_counter() - wall
            result["idle_worker_cpu"] = (time.process_time() - cpu) / span
            result["idle_server_cpu"] = (Meter.server_cpu() - server) / span
            queue_read = time.perf_counter()
            view = await fabric.queue()
            result["queue_read_s"] = time.perf_counter() - queue_read
            pools_read = time.perf_counter()
            await fabric.pools()
            result["pool_list_s"] = time.perf_counter() - pools_read
            assert view.total >= waiting
            # (b) releases -> launches of the head of the queue: one running job ends every 1.5 s.
            # Each team's waiting work in its order: a release must go to the head of some team's list
            # (which team is fair share's call; near-ties between equal teams flip with decaying usage).
            team_order: dict[str, list[str]] = {}
            for entry in sorted(view.entries, key=lambda e: (e.team, e.team_position)):
                team_order.setdefault(entry.team, []).append(entry.id)
            classes = {e.id: e.priority_class for e in view.entries}
            for i in range(releases):
                await fabric.get(f"run-{i:03d}").cancel()
                await asyncio.sleep(1.5)
            deadline = time.monotonic() + 60
            backend = SimulatedBackend(store.pool_spec("dc1"), home)
            while time.monotonic() < deadline:
                launched = [e for e in backend.ledger() if e["workload_id"].startswith("wait-")]
                if len(launched) >= releases:
                    break
                await asyncio.sleep(0.5)
            launched = sorted((e for e in backend.ledger() if e["workload_id"].startswith("wait-")),
                              key=lambda e: e["at"])[:releases]
            released = sorted(r.released_at.replace(tzinfo=UTC).timestamp() for r in store.all_reservations()
                              if r.workload_id.startswith("run-") and r.released_at)
            latencies = [launch["at"] - free for launch, free in zip(launched, released, strict=False)]
            result["release_to_launch"] = latencies
            result["launched"] = [e["workload_id"] for e in launched]
            taken: dict[str, int] = {}
            right = True
            for workload_id in result["launched"]:
                team = next(t for t, ids in team_order.items() if workload_id in ids)
                right = right and team_order[team][taken.get(team, 0)] == workload_id
                right = right and classes[workload_id] == "high"
                taken[team] = taken.get(team, 0) + 1
            result["right_order"] = right
            result["worker_peak_gib"] = _peak_rss_gib()
            result["server_peak_gib"] = _peak_rss_gib(pid=0)
            for handle_id in [f"wait-{i:05d}" for i in range(waiting)]:
                with contextlib.suppress(RPCError):  # some have ended
                    await env.client.get_workflow_handle(handle_id).terminate()
    finally:
        await env.shutdown()
    return result


async def run_bare(client: Any, count: int) -> float:
    """bench/throughput.py's bare one-activity workflow; its module passes through the sandbox here
    (imported as `throughput`, not run as __main__)."""
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
    from throughput import BareWorkflow, bare_activity

    queue = f"bare-{uuid.uuid4().hex[:8]}"
    runner = SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "throughput", "inferofabric"))
    async with Worker(client, task_queue=queue, workflows=[BareWorkflow], activities=[bare_activity],
                      workflow_runner=runner, max_concurrent_activities=200, max_concurrent_local_activities=200):
        started = time.perf_counter()
        sem = asyncio.Semaphore(DRAIN_IN_FLIGHT)  # as the fabric's run

        async def one(i: int) -> None:
            async with sem:
                handle = await client.start_workflow(BareWorkflow.run, str(i), id=f"{queue}-{i}", task_queue=queue)
                await handle.result()

        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started


async def bench_drain(count: int, gpus: int) -> dict[str, float]:
    """Each side on a server of its own (a stopped worker's long polls linger on the server), with
    the same number of workloads in flight (DRAIN_IN_FLIGHT: each `result()` is a long poll too)."""
    from inferofabric.sdk.client import FabricClient
    from inferofabric.worker.main import build_worker

    env = await start_server()
    try:
        bare_s = await run_bare(env.client, count)
    finally:
        await env.shutdown()
    env = await start_server()
    home = Path(tempfile.mkdtemp(prefix="bench-admission-drain-"))
    os.environ["FABRIC_HOME"] = str(home)
    url = f"sqlite:///{home / 'fabric.db'}"
    queue = f"drain-{uuid.uuid4().hex[:6]}"
    try:
        async with build_worker(env.client, queue=queue, home=home, store_url=url):
            fabric = FabricClient(env.client, task_queue=queue)
            await fabric.register_pool({"name": "dc1", "location": "on-prem", "backend": "simulated",
                                        "region": "dc1", "gpus": {"A100": gpus}})
            started = time.perf_counter()
            sem = asyncio.Semaphore(DRAIN_IN_FLIGHT)

            async def one(i: int) -> WorkloadState:
                async with sem:
                    handle = await fabric.submit({"name": f"{queue}-{i:05d}", "team": TEAMS[i % len(TEAMS)],
                                                  "image": "img", "resources": {"gpu": {"type": "A100", "count": 1}},
                                                  "annotations": {"sim.inferofabric.io/duration": "0s"}})
                    return (await handle.result()).state

            states = await asyncio.gather(*(one(i) for i in range(count)))
            fabric_s = time.perf_counter() - started
        assert all(s == WorkloadState.SUCCEEDED for s in states)
    finally:
        await env.shutdown()
    return {"bare_per_s": count / bare_s, "fabric_per_s": count / fabric_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--live-waiting", type=int, default=2_000)
    parser.add_argument("--releases", type=int, default=20)
    parser.add_argument("--drain", type=int, default=2_000)
    parser.add_argument("--drain-gpus", type=int, default=100)
    parser.add_argument("--skip-live", action="store_true", help="only the cycle figures")
    parser.add_argument("--skip-cycle", action="store_true", help="only the live and drain figures")
    parser.add_argument("--only-drain", action="store_true", help="only the drain figures")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, Any] = {}

    if not args.skip_cycle and not args.only_drain:
        print_cycle(figures, args)
    if args.skip_live:
        return 1 if MISSES else 0
    print_live(figures, args)
    if args.json:
        print(json.dumps(figures, default=str))
    return 1 if MISSES else 0


def print_cycle(figures: dict[str, Any], args: argparse.Namespace) -> None:
    cycle = bench_cycle(args.queued, args.pools)
    figures["cycle"] = cycle
    print(f"1. one admission cycle over {args.queued:,} waiting workloads on {args.pools} full pools "
          f"(store transaction + planner):")
    print(f"   cold (every row parsed) {cycle['cold_ms']:.1f} ms; warm {cycle['warm_ms']:.1f} ms "
          f"(target < {TARGETS['cycle_ms']:.0f} ms, ratio {cycle['warm_ms'] / TARGETS['cycle_ms']:.2f}) "
          f"{verdict(cycle['warm_ms'] < TARGETS['cycle_ms'])}")
    print(f"   every position and reason (what `fabric queue` computes): {cycle['full_view_ms']:.1f} ms "
          f"for {cycle['waiting']:,} waiting")
    print(f"   with half of every pool freed: {cycle['busy_ms']:.1f} ms, {cycle['busy_admitted']:,} admitted, "
          f"{cycle['busy_evaluations']} placement evaluations = {cycle['evaluations_per_s']:,.0f} evaluations/s "
          f"(the rest skipped as known misfits)")


def print_live(figures: dict[str, Any], args: argparse.Namespace) -> None:
    if args.only_drain:
        print_drain(figures, args)
        return
    live = asyncio.run(bench_live(args.live_waiting, args.releases))
    figures["live"] = live
    base = live["base_worker_cpu"] + live["base_server_cpu"]
    idle = live["idle_worker_cpu"] + live["idle_server_cpu"] - base
    latencies = live["release_to_launch"]
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = max(latencies) if len(latencies) < 100 else sorted(latencies)[int(0.99 * len(latencies))]
    print(f"2. live, {args.live_waiting:,} workloads waiting on a full pool (enqueued in {live['enqueue_s']:.0f} s):")
    print(f"   idle, nothing frees: worker {live['idle_worker_cpu']:.1%} + server {live['idle_server_cpu']:.1%} of one "
          f"core; without the queue (monitor probing every 1 s, {args.releases} job watchers) "
          f"{base:.1%}: the queue's own cost {max(idle, 0):.1%} (target < {TARGETS['idle_cpu']:.0%}) "
          f"{verdict(idle < TARGETS['idle_cpu'])}")
    print(f"   release -> the right workload launching, {len(latencies)} releases: p50 {p50:.3f} s, p99 {p99:.3f} s "
          f"(target p99 < {TARGETS['release_p99_s']:.0f} s) {verdict(p99 < TARGETS['release_p99_s'])}; "
          f"each went to the highest class and the head of its team's order: {live['right_order']}")
    peak = max(live["worker_peak_gib"], live["server_peak_gib"])
    print(f"   peak memory: worker {live['worker_peak_gib']:.2f} GiB, server {live['server_peak_gib']:.2f} GiB "
          f"(target < {TARGETS['memory_gib']:.0f} GiB each) {verdict(peak < TARGETS['memory_gib'])}")
    if not live["right_order"]:
        print(f"   launched: {live['launched']}")
    print(f"   reads with the queue full: fabric queue {live['queue_read_s']:.3f} s, pool list "
          f"{live['pool_list_s']:.3f} s (target well under 1 s)")

    print_drain(figures, args)


def print_drain(figures: dict[str, Any], args: argparse.Namespace) -> None:
    if args.drain <= 0:
        return
    drain = asyncio.run(bench_drain(args.drain, args.drain_gpus))
    figures["drain"] = drain
    ratio = drain["fabric_per_s"] / drain["bare_per_s"]
    print(f"3. drain {args.drain:,} zero-length jobs through {args.drain_gpus} GPUs: "
          f"fabric {drain['fabric_per_s']:.1f} wl/s, bare one-activity workflow {drain['bare_per_s']:.1f} wf/s, "
          f"ratio {ratio:.2f} "
          f"(target >= {TARGETS['drain_ratio']}) {verdict(ratio >= TARGETS['drain_ratio'])}")


if __name__ == "__main__":
    sys.exit(main())
