"""How fast the `fabric` command answers, next to the `temporal` CLI in the same run.

    .venv/bin/python bench/cli.py [--runs 7]

Starts `fabric up` on free ports with a fresh FABRIC_HOME (its SQLite store, the default pools),
submits one workload, then times, as a user runs them (a new process each time, wall clock):
`fabric --help`, `fabric status ID`, `fabric list`, and `temporal --help` for comparison. Prints the
median and the slowest of each next to its target (issue 11: < 0.3 s, < 0.5 s, < 0.5 s) and the ratio
to `temporal --help`. The machine is shared and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGETS = {"fabric --help": 0.3, "fabric status ID": 0.5, "fabric list": 0.5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode()[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fabric-bench-cli-") as folder:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        env.update(FABRIC_HOME=folder, FABRIC_TEMPORAL_ADDRESS=f"127.0.0.1:{port}")
        up = subprocess.Popen([str(BIN / "fabric"), "up", "--port", str(port), "--ui-port", str(free_port())],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert up.stdout is not None
            for line in up.stdout:
                if "fabric is up" in line:
                    break
            else:
                raise SystemExit("fabric up ended before it was up")
            job = Path(folder) / "job.yaml"
            job.write_text("name: bench-cli\nteam: vision\nimage: busybox\nresources: {gpu: {type: A100, count: 1}}\n"
                           "annotations: {sim.inferofabric.io/duration: 600s}\n")
            timed([str(BIN / "fabric"), "submit", "-f", str(job)], env)
            commands = {"fabric --help": [str(BIN / "fabric"), "--help"],
                        "fabric status ID": [str(BIN / "fabric"), "status", "bench-cli"],
                        "fabric list": [str(BIN / "fabric"), "list"],
                        "temporal --help": [str(BIN / "temporal"), "--help"]}
            for args in commands.values():
                timed(args, env)  # warm the page cache once
            results = {name: [timed(args, env) for _ in range(options.runs)] for name, args in commands.items()}
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=30)
    reference = statistics.median(results["temporal --help"])
    print(f"{'command':<20}{'median':>9}{'slowest':>9}{'target':>9}  verdict  vs temporal --help")
    for name, times in results.items():
        median, slowest = statistics.median(times), max(times)
        target = TARGETS.get(name)
        verdict = ("PASS" if median < target else "FAIL") if target else "-"
        limit = f"< {target:.1f}s" if target else "-"
        print(f"{name:<20}{median:>8.3f}s{slowest:>8.3f}s{limit:>9}  {verdict:<7}  {median / reference:.1f}x")


if __name__ == "__main__":
    main()
