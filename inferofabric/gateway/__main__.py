"""The gateway as a process of its own: `python -m inferofabric.gateway --port 8235`.

`fabric up` runs it this way (a child that dies with it), so requests never wait behind the
worker's workflow tasks on one event loop; in production it is the measuring side of a Gateway API
or cloud load balancer (docs/endpoints.md). It reaches Temporal like the CLI does
(FABRIC_TEMPORAL_ADDRESS, FABRIC_NAMESPACE, FABRIC_TASK_QUEUE, FABRIC_TOKEN or FABRIC_HOME's token).
To serve endpoints with `access: token` it needs the fabric's signing key (FABRIC_AUTH_KEY, or
FABRIC_HOME/auth.key of `fabric up`) to check fabric tokens, and the store (FABRIC_DATABASE_URL, or
the `fabric up` stack's under FABRIC_HOME) to check endpoint keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any


async def serve(port: int, host: str, hold_timeout: float, header_timeout: float, body_timeout: float) -> None:
    from inferofabric.gateway.server import start
    from inferofabric.sdk.client import FabricClient
    from inferofabric.settings import read_store_url

    fabric = await FabricClient.connect()
    gateway = await start(fabric, port, host, hold_timeout=hold_timeout, header_timeout=header_timeout,
                          body_timeout=body_timeout, store_url=read_store_url(None))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"gateway serving http://{host}:{port}/e/NAME/", flush=True)
    try:
        await stop.wait()
    finally:
        await gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m inferofabric.gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8235)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--hold-timeout", type=float, default=60.0,
                        help="seconds a request waits for a replica while an endpoint scales from zero")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a connection has to send a request's head (from connect or the last answer)")
    parser.add_argument("--body-timeout", type=float, default=30.0, help="seconds a request has to send its body")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s gateway %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(options.port, options.host, options.hold_timeout, options.header_timeout, options.body_timeout))


def run(coroutine: Any) -> None:
    """On uvloop where it is installed (libuv's event loop: a proxy's per-request cost and its tail
    latency drop with it), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


if __name__ == "__main__":
    main()
