"""Run the chaos scenario at any size, outside pytest:

    .venv/bin/python tests/chaos/run_chaos.py --workloads 500 --duration 300 --seed 3

Starts its own Temporal dev server (SQLite file) and worker process in a temporary folder, runs the
workloads while killing and restarting the worker and the server and failing and restoring pools at
random (seeded), then checks the invariants from the back ends' own records. Exits 1 on a violation.
It stops by itself: the chaos lasts --duration seconds and the drain after it at most --drain-timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, so `chaos` imports as a package

from chaos.scenario import ChaosConfig, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, default=300)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of chaos")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-job", type=float, default=10.0, help="longest simulated job, seconds")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--no-worker-kills", action="store_true")
    parser.add_argument("--no-server-restarts", action="store_true")
    parser.add_argument("--no-pool-failures", action="store_true")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (logs, databases)")
    args = parser.parse_args()
    config = ChaosConfig(workloads=args.workloads, duration=args.duration, seed=args.seed,
                         max_job=args.max_job, drain_timeout=args.drain_timeout,
                         worker_kills=not args.no_worker_kills,
                         server_restarts=not args.no_server_restarts, pool_failures=not args.no_pool_failures)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run_chaos(config, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="fabric-chaos-") as folder:
            result = asyncio.run(run_chaos(config, Path(folder)))
    report = result.report
    print(f"\n{report.summary()}")
    print(f"worker restarts {result.worker_restarts}, server restarts {result.server_restarts}, "
          f"pool outages {result.pool_outages}, wall {result.wall:.0f}s")
    for violation in report.violations:
        print(f"VIOLATION: {violation}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
