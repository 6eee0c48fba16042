"""Replay real GPU demand (Alibaba cluster-trace-gpu-v2023) through the fabric's placement policy.

Source: the `openb` node and pod lists published with "Beware of Fragmentation: Scheduling
GPU-Sharing Workloads with Fragmentation Gradient Descent" (Weng et al., USENIX ATC'23), kept in
shared/traces/alibaba-gpu-2023/.

A discrete-event simulation on SIMULATED pools: tasks arrive at `creation_time` and run for
`deletion_time - scheduled_time`; a slice of the trace's GPU nodes is the on-prem pool (GPU count
by model), and cloud pools with prices are the burst targets. Every placement is a real call of
the policy engine (`CompiledPolicy.decide`), so the figures show what the fabric's policy does
with this demand: how long work queues with on-prem only versus with bursting, how much goes to
the cloud and what it costs, and how long a decision takes. The recorded
`scheduled_time - creation_time` is the production cluster's own queueing delay, printed as a
reference; note the fabric allocates whole GPUs and leaves node-level packing to the pool
(Kubernetes), so GPU-sharing and fragmentation effects of the original cluster are not modelled.

    python bench/trace_replay.py --nodes 40
"""

from __future__ import annotations

import argparse
import csv
import heapq
import itertools
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from inferofabric.models import PlacementPolicy, PoolView, WorkloadSpec
from inferofabric.policies.engine import CompiledPolicy, PlacementRequest

TRACE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "traces" / "alibaba-gpu-2023"
CLOUD_PRICES = {"T4": 0.53, "P100": 1.46, "V100M16": 2.48, "V100M32": 3.06, "A10": 1.10,
                "G1": 2.0, "G2": 2.0, "G3": 2.5}


@dataclass
class Task:
    name: str
    arrival: int
    runtime: int
    gpus: int
    types: list[str]
    recorded_delay: int | None
    classification: str


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(trace: Path, nodes: int, tasks: int) -> tuple[Counter[str], list[Task]]:
    with (trace / "openb_node_list_gpu_node.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["gpu"]) > 0][:nodes]
    inventory: Counter[str] = Counter()
    for row in rows:
        inventory[row["model"]] += int(row["gpu"])
    models = sorted(inventory)
    out = []
    with (trace / "openb_pod_list_gpuspec33.csv").open() as handle:
        for row in csv.DictReader(handle):
            if int(row["num_gpu"]) == 0 or not row["deletion_time"]:
                continue
            start = int(row["scheduled_time"]) if row["scheduled_time"] else int(row["creation_time"])
            spec = [t for t in row["gpu_spec"].split("|") if t] or models
            out.append(Task(
                name=row["name"], arrival=int(row["creation_time"]),
                runtime=max(1, int(row["deletion_time"]) - start), gpus=int(row["num_gpu"]), types=spec,
                recorded_delay=(int(row["scheduled_time"]) - int(row["creation_time"])
                                if row["scheduled_time"] else None),
                # Latency-sensitive services stand in for data that must stay on-prem.
                classification="confidential" if row["qos"] in ("LS", "Guaranteed") else "internal",
            ))
            if len(out) >= tasks:
                break
    return inventory, sorted(out, key=lambda t: t.arrival)


def policy(burst: bool, keep_ls_on_prem: bool) -> CompiledPolicy:
    document: dict = {"placement": {"default": "on-prem"}}
    if burst:
        document["placement"]["burst"] = {"when": "on_prem_utilization > 0.85", "target": "cloud",
                                          "regions": ["us-east-1", "eu-west-1"]}
    if keep_ls_on_prem:
        document["constraints"] = [{"name": "confidential-on-prem", "deny": {"location": "cloud"},
                                    "when": "workload.data_classification == 'confidential'"}]
    return CompiledPolicy(PlacementPolicy.model_validate(document))


def simulate(inventory: Counter[str], tasks: list[Task], compiled: CompiledPolicy) -> dict[str, float]:
    pools = {
        "onprem": PoolView(name="onprem", location="on-prem", backend="simulated", region="dc1",
                           gpus=dict(inventory), price_per_gpu_hour={t: 0.0 for t in inventory}),
        "cloud-use1": PoolView(name="cloud-use1", location="cloud", backend="simulated", region="us-east-1",
                               gpus={t: 4096 for t in CLOUD_PRICES}, price_per_gpu_hour=CLOUD_PRICES),
        "cloud-euw1": PoolView(name="cloud-euw1", location="cloud", backend="simulated", region="eu-west-1",
                               gpus={t: 4096 for t in CLOUD_PRICES},
                               price_per_gpu_hour={t: p * 1.08 for t, p in CLOUD_PRICES.items()}),
    }
    order = itertools.count()
    events: list[tuple[int, int, str, Task, str | None, str | None]] = [
        (t.arrival, next(order), "arrive", t, None, None) for t in tasks]
    heapq.heapify(events)
    queue: list[Task] = []
    delays: list[float] = []
    decide_times: list[float] = []
    placed_on: Counter[str] = Counter()
    cloud_gpu_hours = 0.0
    cloud_cost = 0.0

    def try_place(task: Task, now: int) -> bool:
        nonlocal cloud_gpu_hours, cloud_cost
        spec = WorkloadSpec.model_construct(
            name=task.name, team="trace", project="alibaba", image="trace", command=[], args=[], env={},
            resources=_resources(task), data_classification=_classification(task.classification),
            priority=50, labels={}, annotations={}, placement=_hints())
        started = time.perf_counter()
        decision = compiled.decide(PlacementRequest(task.name, 1, spec, list(pools.values())))
        decide_times.append(time.perf_counter() - started)
        if decision.pool is None:
            return False
        pool = pools[decision.pool]
        assert decision.gpu_type is not None
        pool.used[decision.gpu_type] = pool.used.get(decision.gpu_type, 0) + task.gpus
        placed_on[pool.location.value] += 1
        delays.append(now - task.arrival)
        if pool.location.value == "cloud":
            hours = task.runtime * task.gpus / 3600
            cloud_gpu_hours += hours
            cloud_cost += hours * pool.price_per_gpu_hour[decision.gpu_type]
        heapq.heappush(events, (now + task.runtime, next(order), "finish", task, decision.pool, decision.gpu_type))
        return True

    end = 0
    while events:
        now, _, kind, task, pool_name, gpu_type = heapq.heappop(events)
        end = now
        if kind == "arrive":
            if not try_place(task, now):
                queue.append(task)
            continue
        assert pool_name is not None and gpu_type is not None
        pools[pool_name].used[gpu_type] -= task.gpus
        freed = pools[pool_name].free(gpu_type)
        waiting = []
        for queued in queue:  # FIFO; skip work the freed GPUs cannot serve
            if freed >= queued.gpus and gpu_type in queued.types and try_place(queued, now):
                freed = pools[pool_name].free(gpu_type)
            else:
                waiting.append(queued)
        queue = waiting
    return {
        "placed": len(delays), "never_placed": len(queue), "on_prem": placed_on["on-prem"],
        "cloud": placed_on["cloud"], "delay_p50_s": _percentile(delays, 0.5), "delay_p99_s": _percentile(delays, 0.99),
        "delay_mean_s": statistics.fmean(delays) if delays else float("nan"),
        "cloud_gpu_hours": cloud_gpu_hours, "cloud_cost_usd": cloud_cost,
        "decide_p50_us": _percentile(decide_times, 0.5) * 1e6, "decide_p99_us": _percentile(decide_times, 0.99) * 1e6,
        "decisions": len(decide_times), "span_days": end / 86400,
    }


def _resources(task: Task) -> object:
    from inferofabric.models.workload import GpuRequest, Resources

    return Resources.model_construct(gpu=GpuRequest.model_construct(type=task.types, count=task.gpus), cpu=1,
                                     memory="1Gi")


def _hints() -> object:
    from inferofabric.models.workload import PlacementHints

    return PlacementHints()


def _classification(value: str) -> object:
    from inferofabric.models.common import DataClassification

    return DataClassification(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE_DIR)
    parser.add_argument("--nodes", type=int, default=40, help="GPU nodes of the trace used as the on-prem pool")
    parser.add_argument("--tasks", type=int, default=8000, help="GPU tasks replayed (in arrival order)")
    args = parser.parse_args()
    if not args.trace.exists():
        print(f"trace not found at {args.trace}", file=sys.stderr)
        return 2
    inventory, tasks = load(args.trace, args.nodes, args.tasks)
    recorded = [t.recorded_delay for t in tasks if t.recorded_delay is not None]
    print("Alibaba cluster-trace-gpu-v2023 (Weng et al., USENIX ATC'23), SIMULATED pools")
    print(f"on-prem pool: {args.nodes} nodes, {sum(inventory.values())} GPUs {dict(inventory)}; "
          f"{len(tasks)} GPU tasks; cloud pools us-east-1/eu-west-1 (prices per GPU-hour {CLOUD_PRICES})")
    print(f"recorded production queueing delay (full cluster of 6,212 GPUs, node packing): "
          f"p50 {_percentile(recorded, 0.5):.0f}s p99 {_percentile(recorded, 0.99):.0f}s; "
          f"{sum(t.recorded_delay is None for t in tasks)} tasks never scheduled")
    scenarios = [("on-prem only", policy(False, False)),
                 ("burst > 0.85 to cloud", policy(True, False)),
                 ("burst, LS tasks kept on-prem", policy(True, True))]
    header = f"{'scenario':32} {'on-prem':>8} {'cloud':>7} {'waiting':>8} {'delay p50':>10} {'delay p99':>10} " \
             f"{'cloud GPU-h':>12} {'cloud $':>10} {'decide p99':>11}"
    print(header)
    results = defaultdict(dict)
    for name, compiled in scenarios:
        result = simulate(inventory, tasks, compiled)
        results[name] = result
        print(f"{name:32} {result['on_prem']:>8} {result['cloud']:>7} {result['never_placed']:>8} "
              f"{result['delay_p50_s']:>9.0f}s {result['delay_p99_s']:>9.0f}s {result['cloud_gpu_hours']:>12.0f} "
              f"{result['cloud_cost_usd']:>10.0f} {result['decide_p99_us']:>9.0f}us")
    base, burst = results["on-prem only"], results["burst > 0.85 to cloud"]
    print(f"p99 queueing delay: on-prem only {base['delay_p99_s']:.0f}s, with burst {burst['delay_p99_s']:.0f}s; "
          f"burst sent {burst['cloud'] / max(1, burst['placed']):.1%} of tasks to the cloud for "
          f"${burst['cloud_cost_usd']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
