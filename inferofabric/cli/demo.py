"""`fabric demo`: the product in one minute, on its own embedded stack.

On-prem fills up to the burst threshold, the rest bursts to cloud regions, a `pii` workload takes
on-prem's last GPU instead of bursting, a second one waits, and one placement is explained. All
pools are SIMULATED (no GPUs needed); every workload is a real durable Temporal workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from typing import Any

import yaml
from rich.table import Table

from inferofabric.cli import render
from inferofabric.models.workload import WorkloadSpec
from inferofabric.settings import fabric_home

console = render.console


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError("no free port")


def _job(name: str, classification: str = "internal", **placement: list[str]) -> WorkloadSpec:
    return WorkloadSpec.model_validate({
        "name": name, "team": "vision" if classification != "pii" else "health", "project": "demo",
        "image": "ghcr.io/acme/resnet:1.4", "command": ["python", "train.py", "--epochs", "90"],
        "resources": {"gpu": {"type": ["A100", "H100"], "count": 1}, "cpu": 8, "memory": "32Gi"},
        "data_classification": classification, "placement": placement,
        "annotations": {"sim.inferofabric.io/duration": "300s"},
    })


async def _placed(handle: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = await handle.status()
        if status.pool or status.state.terminal:
            return status
        explanation = await handle.explain()
        if explanation.decisions and explanation.decisions[-1].mode == "wait":
            return status
        if time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.15)


async def _in_queue(fabric: Any, workload_id: str, timeout: float = 15.0) -> Any:
    """The workload's queue entry once it has joined the queue (None if it has not in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = await fabric.queue(workload_id=workload_id)
        if view.entries:
            return view.entries[0]
        await asyncio.sleep(0.2)
    return None


async def run_demo(keep: bool) -> None:
    from inferofabric.embedded import embedded_stack

    started = time.monotonic()
    home = fabric_home() / "demo"
    shutil.rmtree(home, ignore_errors=True)  # a fresh story every time
    home.mkdir(parents=True)
    port, ui_port, dashboard_port = _free_port(7233), _free_port(8233), _free_port(8234)
    console.rule("[bold]InferoFabric demo[/]")
    async with embedded_stack(home, port, ui_port, None, log=lambda m: console.print(f"[dim]{m}[/]"),
                              look_here=False, dashboard_port=dashboard_port) as stack:
        fabric = stack.fabric
        console.print(render.pools_table(await fabric.pools()))
        policy = (await fabric.policy())["policy"]
        console.print("[bold]Active policy[/] (policy.yaml):")
        console.print(yaml.safe_dump(policy, sort_keys=False).rstrip(), highlight=False)

        console.rule("1. Ten one-GPU training jobs, submitted one after another")
        table = Table("workload", "on-prem utilization seen", "decision", "pool", "region")
        first_burst = None
        for i in range(10):
            spec = _job(f"train-{i}", regions=["eu-west-1"]) if i == 9 else _job(f"train-{i}")
            status = await _placed(await fabric.submit(spec))
            decision = (await fabric.get(spec.name).explain()).decisions[-1]  # type: ignore[arg-type]
            seen = float(decision.inputs["on_prem_utilization"])
            if decision.mode == "burst" and first_burst is None:
                first_burst = spec.name
            style = "green" if decision.mode == "default" else "cyan"
            table.add_row(spec.name, f"{seen:.3f}" + (" > 0.85" if seen > 0.85 else ""),
                          f"[{style}]{decision.mode}[/]", status.pool or "-", status.region or "-")
        console.print(table)
        console.print("On-prem takes work while utilization is at most 0.85; from 7/8 = 0.875 on, work bursts to "
                      "the cheapest allowed cloud region (train-9 asked for eu-west-1).")

        console.rule("2. pii workloads: never in the cloud")
        pii_1 = await _placed(await fabric.submit(_job("patients-0", "pii")))
        console.print(f"patients-0 (pii) -> [bold]{pii_1.pool}[/]: burst is on, but the constraint keeps pii out "
                      "of the cloud, so it takes on-prem's last free GPU")
        pii_2 = await _placed(await fabric.submit(_job("patients-1", "pii")))
        entry = await _in_queue(fabric, "patients-1")
        console.print(f"patients-1 (pii) -> [yellow]{pii_2.state.value}[/]: waits durably in the queue "
                      f"(position {entry.position if entry else '?'}) until on-prem has room")
        if entry is not None:
            console.print(f"   why: {entry.reason}", highlight=False)

        console.rule("3. Where everything is")
        console.print(render.workloads_table(await fabric.list(limit=50)))
        console.print(render.pools_table(await fabric.pools()))

        if first_burst:
            console.rule(f"4. Why did {first_burst} burst?  (fabric explain {first_burst})")
            console.print(render.explanation_text(await fabric.get(first_burst).explain()), highlight=False)

        console.rule("5. What it cost so far  (fabric cost: on-prem vs burst per team, from the ledger)")
        await asyncio.sleep(2)  # let the jobs run a moment: cost accrues from each job's own start
        rows = await fabric.cost(by="team")
        if rows:
            from inferofabric.cli.cost import _table

            console.print(_table(rows, "team", False))
        console.print("Running work accrues cost to date; `fabric cost --by workload`, `--explain ID`, `--step day`.")
        from inferofabric.dashboard.data import summary
        from inferofabric.dashboard.page import report_page

        report = home / "cost-report.html"
        report.write_text(report_page(await summary(fabric)), encoding="utf-8")
        console.print(f"Dashboard: [link={stack.dashboard_url}]{stack.dashboard_url}[/link]  (pools, queue, "
                      "daily spend on-prem vs burst, budgets; live while the stack runs: `fabric demo --keep`)\n"
                      f"Report:    {report}  (the same charts in one file that opens offline: "
                      "`fabric cost --html FILE`)", highlight=False)

        console.rule("Explore")
        console.print(
            f"Dashboard: [link={stack.dashboard_url}]{stack.dashboard_url}[/link]\n"
            f"Web UI:  [link={stack.ui_url}]{stack.ui_url}[/link]  (search attributes FabricPool, FabricLocation, "
            "FabricTeam, FabricState, FabricGpuType, FabricGpus)\n"
            f"CLI:     FABRIC_HOME={stack.home} fabric list --location cloud   (through the door {stack.address})\n"
            f"         temporal workflow list --address {stack.address} --api-key \"$(cat {stack.home}/admin.token)\" "
            f"--tls-ca-path {stack.home}/tls/ca.pem --query \"FabricLocation='cloud'\"\n"
            "Next:    fabric demo endpoints  (an inference endpoint: replicas scale out on-prem, burst, come home, "
            "scale to zero)\n"
            f"story told in {time.monotonic() - started:.0f}s"
        )
        if keep:
            console.print("\nThe demo stack keeps running; press Ctrl-C to stop it.")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        else:
            for item in await fabric.list(limit=100):
                if not item.state.terminal:
                    await fabric.get(item.id).cancel()
            console.print("[dim]demo workloads cancelled; stack stopped (run `fabric up` for a lasting one)[/]")

