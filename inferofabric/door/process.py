"""The door in a process of its own (`python -m inferofabric.door`): a call through the door never
waits behind the worker's workflow tasks on one event loop, and the worker's CPU is its own.
`fabric up` starts it and it dies with `fabric up`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from inferofabric.auth.audit import AuditSink
from inferofabric.auth.tokens import signing_key
from inferofabric.door.server import Door
from inferofabric.door.tls import ensure_door_tls
from inferofabric.settings import database_url, fabric_home, task_queue, temporal_namespace
from inferofabric.store.db import get_store

log = logging.getLogger("inferofabric.door")


async def serve(port: int, host: str, upstream: str, home: Path, namespace: str, queue: str,
                stop: asyncio.Event) -> None:
    tls = ensure_door_tls(home)
    sink = AuditSink(get_store(database_url()))
    door = Door(upstream, signing_key(home), namespace, queue, sink)
    bound = await door.start(port, host, tls.cert_pem, tls.key_pem)
    log.info("door on %s:%d in front of Temporal at %s", host, bound, upstream)
    try:
        await stop.wait()
    finally:
        await door.stop()
        sink.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inferofabric.door", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the port users dial (TLS)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--upstream", required=True, help="Temporal's frontend (host:port), the engine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.port, args.host, args.upstream, fabric_home(), temporal_namespace(), task_queue(), stop)

    asyncio.run(run())
