"""The control plane's worker as a process of its own, so the chaos tests can kill it (-9) and start
another on the same task queue: `python tests/chaos/worker_proc.py ADDRESS QUEUE HOME STORE_URL`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path


async def main(address: str, queue: str, home: str, store_url: str) -> None:
    os.environ["FABRIC_HOME"] = home
    from inferofabric.connection import connect
    from inferofabric.store.db import get_store
    from inferofabric.worker.main import build_worker

    client = await connect(address)
    await asyncio.to_thread(get_store, store_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = build_worker(client, queue=queue, home=Path(home), store_url=store_url)
    async with worker:
        print("worker ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
