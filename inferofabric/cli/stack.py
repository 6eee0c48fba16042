"""The long-running commands: `fabric up` (embedded stack) and `fabric worker`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from inferofabric.cli import render


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(home: Path, port: int, ui_port: int, config: Path | None, reapply: bool,
                dashboard_port: int = 8234, gateway_port: int = 8235, temporal_port: int | None = None) -> None:
    from inferofabric.embedded import embedded_stack

    stop = _stop_on_signals()
    async with embedded_stack(home, port, ui_port, config, log=lambda m: render.console.print(m),
                              reapply=reapply, dashboard_port=dashboard_port, gateway_port=gateway_port,
                              temporal_port=temporal_port) as stack:
        source = stack.config_source
        render.console.print(render.pools_table(await stack.fabric.pools()))
        dashboard = (f"  dashboard [link={stack.dashboard_url}]{stack.dashboard_url}[/link]"
                     if stack.dashboard_url else "")
        gateway = f"  endpoints {stack.gateway_url}/e/NAME/" if stack.gateway_url else ""
        render.console.print(
            f"\n[bold green]fabric is up[/]  door {stack.address} (TLS, API keys)  "
            f"Web UI [link={stack.ui_url}]{stack.ui_url}[/link]{dashboard}{gateway}"
            f"\n  engine: Temporal on {stack.temporal_address} (loopback: the control plane's only)"
            f"\n  config: {source}\n  state:  {home}\n  log:    {home / 'logs' / 'fabric.log'}\n"
            f"  try: fabric submit -f workload.yaml --wait   (export FABRIC_TEMPORAL_ADDRESS={stack.address})\n"
            "  Ctrl-C stops everything; state survives restarts.")
        await stop.wait()
        render.console.print("stopping...")


async def run_worker(address: str | None, task_queue: str) -> None:
    from inferofabric.connection import connect, ensure_search_attributes
    from inferofabric.stack_guard import ensure_queue_is_ours
    from inferofabric.store.db import get_store
    from inferofabric.store.meta import instance_id
    from inferofabric.worker.main import build_worker

    stop = _stop_on_signals()
    client = await connect(address)
    await ensure_search_attributes(client)
    store = await asyncio.to_thread(get_store)
    await ensure_queue_is_ours(client, task_queue, await asyncio.to_thread(instance_id, store))
    worker = build_worker(client, queue=task_queue)
    render.console.print(f"worker polling task queue {task_queue} on {address or 'the default address'}")
    async with worker:
        await stop.wait()
