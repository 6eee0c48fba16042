"""The chaos run shared by tests/chaos/test_chaos.py and tests/chaos/run_chaos.py.

Hundreds of workloads on four simulated pools (two on-prem, two cloud) under a burst + failover +
no-pii-in-cloud policy, while a seeded random schedule kills (-9) and restarts the worker, kills or
stops and restarts the Temporal server, and fails and restores pools. Then the invariants are
checked from the back ends' own records (see harness.check_invariants). Bounded: the chaos phase
lasts `duration` seconds, the drain after it at most `drain_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failover.util import BURST_AND_FAILOVER_POLICY

from inferofabric.auth.client import find_token
from inferofabric.auth.tokens import signing_key
from inferofabric.backends.simulated import SimulatedBackend
from inferofabric.models import PoolSpec, WorkloadSpec
from inferofabric.models.status import WorkloadStatus
from inferofabric.sdk.client import FabricClient
from inferofabric.sdk.errors import WorkloadExists
from inferofabric.store.db import get_store

from .harness import DevServer, Report, WorkerProcess, check_invariants, final_status, retrying

POOLS = [
    {"name": "onprem-a", "location": "on-prem", "backend": "simulated", "region": "dc1", "gpus": {"A100": 8},
     "price_per_gpu_hour": {"A100": 1.0}},
    {"name": "onprem-b", "location": "on-prem", "backend": "simulated", "region": "dc2", "gpus": {"A100": 8},
     "price_per_gpu_hour": {"A100": 1.1}},
    {"name": "cloud-east", "location": "cloud", "backend": "simulated", "region": "us-east-1",
     "gpus": {"A100": 16}, "price_per_gpu_hour": {"A100": 4.0}},
    {"name": "cloud-west", "location": "cloud", "backend": "simulated", "region": "eu-west-1",
     "gpus": {"A100": 16}, "price_per_gpu_hour": {"A100": 4.2}},
]


@dataclass
class ChaosConfig:
    workloads: int = 120
    duration: float = 40.0  # seconds of chaos (submissions are spread over its first 60 %)
    # Chaos goes on past `duration` (up to twice it) until this many disruptions happened: how many
    # fit in the time depends on how fast the stack comes back after each one on this machine.
    min_disruptions: int = 0
    seed: int = 1
    min_job: float = 2.0
    max_job: float = 8.0
    pii_share: float = 0.2
    worker_kills: bool = True
    server_restarts: bool = True
    pool_failures: bool = True
    drain_timeout: float = 300.0


@dataclass
class ChaosResult:
    report: Report
    events: list[str] = field(default_factory=list)
    wall: float = 0.0
    worker_restarts: int = 0
    server_restarts: int = 0
    pool_outages: int = 0


def workload_specs(config: ChaosConfig, rng: random.Random) -> list[WorkloadSpec]:
    specs = []
    for i in range(config.workloads):
        pii = rng.random() < config.pii_share
        specs.append(WorkloadSpec.model_validate({
            "name": f"chaos-{i:04d}", "team": rng.choice(["vision", "nlp", "speech"]),
            "image": "ghcr.io/acme/train:1.0", "data_classification": "pii" if pii else "internal",
            "resources": {"gpu": {"type": "A100", "count": rng.choice([1, 1, 1, 2, 2, 4])}},
            "annotations": {
                "sim.inferofabric.io/duration": f"{rng.uniform(config.min_job, config.max_job):.1f}s"},
        }))
    return specs


async def run_chaos(config: ChaosConfig, directory: Path, log: Any = print) -> ChaosResult:
    rng = random.Random(config.seed)
    started = time.monotonic()
    home = directory / "home"
    home.mkdir(parents=True, exist_ok=True)
    store_url = f"sqlite:///{directory / 'fabric.db'}"
    store = get_store(store_url)
    server = DevServer(directory)
    server.start()
    client = await server.wait_ready()
    queue = f"chaos-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(server.address, queue, home, store_url, directory / "worker.log")
    result = ChaosResult(report=Report())
    events = result.events

    def note(text: str) -> None:
        line = f"{time.monotonic() - started:6.1f}s {time.strftime('%H:%M:%S')} {text}"
        events.append(line)
        log(line)

    try:
        await worker.begin()
        # The worker wrote the fabric's first admin token under its home: the operator's token here.
        fabric = FabricClient(client, task_queue=queue, token=find_token(home), key=signing_key(home))
        for pool in POOLS:
            await fabric.register_pool(pool)  # default monitor settings: 1 s period, 2 failures
        await fabric.set_policy(BURST_AND_FAILOVER_POLICY)
        specs = workload_specs(config, rng)
        classification = {s.name: s.data_classification.value for s in specs if s.name}
        outages: dict[str, list[tuple[float, float]]] = {p["name"]: [] for p in POOLS}
        failed_at: dict[str, float] = {}
        note(f"{len(specs)} workloads, chaos for {config.duration:.0f}s, seed {config.seed}")

        async def submit_all() -> None:
            spread = config.duration * 0.6
            for index, spec in enumerate(specs):
                await asyncio.sleep(max(0.0, started + 5 + spread * index / len(specs) - time.monotonic()))

                async def submit(spec: WorkloadSpec = spec) -> None:
                    with contextlib.suppress(WorkloadExists):  # an earlier try got through
                        await fabric.submit(spec)

                await retrying(submit, attempts=240)

        async def restore(pool: str) -> None:
            await retrying(lambda: fabric.restore_pool(pool), attempts=240)
            outages[pool].append((failed_at.pop(pool), time.time()))
            note(f"restored pool {pool}")

        async def chaos() -> None:
            actions = [a for a, on in (("worker", config.worker_kills), ("server", config.server_restarts),
                                       ("pool", config.pool_failures)) if on]
            pending: list[asyncio.Task[None]] = []
            end, cap = started + config.duration, started + 2 * config.duration
            await asyncio.sleep(8)

            def disruptions() -> int:
                return worker.restarts + server.restarts + result.pool_outages

            while actions and (time.monotonic() < end
                               or (disruptions() < config.min_disruptions and time.monotonic() < cap)):
                action = rng.choice(actions)
                if action == "worker":
                    down = rng.uniform(0.5, 2.0)
                    note(f"kill -9 worker, back in {down:.1f}s")
                    await worker.restart(kill=True, down_for=down)
                elif action == "server":
                    kill = rng.random() < 0.5
                    down = rng.uniform(0.5, 3.0)
                    note(f"{'kill -9' if kill else 'stop'} Temporal server, back in {down:.1f}s")
                    await server.restart(kill=kill, down_for=down)
                else:
                    candidates = [p["name"] for p in POOLS if p["name"] not in failed_at]
                    if candidates:
                        pool = rng.choice(candidates)
                        await retrying(lambda pool=pool: fabric.fail_pool(pool), attempts=240)
                        failed_at[pool] = time.time()
                        result.pool_outages += 1
                        outage = rng.uniform(3.0, 12.0)
                        note(f"fail pool {pool} for {outage:.1f}s")

                        async def later(pool: str = pool, outage: float = outage) -> None:
                            await asyncio.sleep(outage)
                            await restore(pool)

                        pending.append(asyncio.create_task(later()))
                await asyncio.sleep(rng.uniform(3.0, 8.0))
            await asyncio.gather(*pending)

        await asyncio.gather(submit_all(), chaos())
        for pool in list(failed_at):
            await restore(pool)
        note("chaos over; waiting for every workload to finish")

        async def finish(name: str) -> WorkloadStatus:
            return await final_status(fabric.temporal, name)

        finals_list = await asyncio.wait_for(asyncio.gather(*(finish(s.name or "") for s in specs)),
                                             timeout=config.drain_timeout)
        finals = {s.id: s for s in finals_list}
        note("all workloads ended; waiting for the monitors to clear orphans")
        backends = [SimulatedBackend(PoolSpec.model_validate(p), home) for p in POOLS]
        deadline = time.monotonic() + 60
        while any(b.list_jobs() for b in backends) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        result.report = check_invariants(home, store, POOLS, classification, finals, outages)
        result.worker_restarts = worker.restarts
        result.server_restarts = server.restarts
        result.wall = time.monotonic() - started
        note(result.report.summary())
        return result
    finally:
        worker.stop(kill=True)
        server.stop(kill=True)
