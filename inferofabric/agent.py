"""The pool agent: runs one pool's back-end activities from inside that pool's network.

    fabric agent --pool dc1-gpu          # the CLI calls run_agent("dc1-gpu")

The agent only dials out. It opens one outbound gRPC connection to the fabric's front door
(`FABRIC_TEMPORAL_ADDRESS`, or `address`; TLS, its pool's agent token as the API key) and
long-polls the pool's task queue `pool.<name>` for launch, watch, status, cancel, logs and probe
activities. It listens on no port, so the cluster needs no inbound firewall rule, load balancer or
ingress: egress to the door is enough.

It needs no database either: every activity carries the pool's full spec (`LaunchInput.pool`,
`JobInput.pool`, ...), from which the agent builds the back end (for Kubernetes: the in-cluster
service account or the kubeconfig named in the pool file). Secret values reach it sealed; it opens
them with `FABRIC_SECRET_KEY` (or the pool's own `FABRIC_SECRET_KEY_<POOL>`), which must match the
control plane's key.

While no agent polls the queue, the pool's work simply waits (workloads stay `launching`) and the
pool's health monitor sees its probes go unanswered; nothing fails on the control plane's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from inferofabric.auth.client import find_token, with_token
from inferofabric.connection import connect, door_tls
from inferofabric.settings import temporal_address
from inferofabric.worker.main import build_agent_worker

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_agent(pool: str, address: str | None = None, namespace: str | None = None,
                    stop: asyncio.Event | None = None, home: Path | None = None) -> None:
    """Serve pool `pool`'s task queue until `stop` is set or the process gets SIGTERM/SIGINT.

    `address`/`namespace` default to FABRIC_TEMPORAL_ADDRESS/FABRIC_NAMESPACE, `home` to
    FABRIC_HOME (where the local secret key file and job logs live). Raises
    `connection.FabricUnreachable` when no Temporal server answers at the address. On stop, the
    worker shuts down: activities in flight are cancelled and Temporal retries them on the next
    agent (launch is idempotent, so no job is started twice).
    """
    stop = stop or asyncio.Event()
    address = address or temporal_address()
    tls = door_tls(address)
    token = find_token(home)
    if tls is not None:  # through the door: the agent token is the API key; the door stamps the identity
        client = await connect(address, namespace, api_key=token, tls=tls)
    else:  # straight to Temporal (an agent on the control plane's own host)
        client = with_token(await connect(address, namespace), token)
    worker = build_agent_worker(client, pool, home)
    installed = _install_signal_handlers(stop)
    try:
        async with worker:
            log.info("agent for pool %s polling task queue %s", pool, worker.task_queue)
            await stop.wait()
            log.info("agent for pool %s stopping", pool)
    finally:
        _restore_signal_handlers(installed)


def _install_signal_handlers(stop: asyncio.Event) -> dict[signal.Signals, Any]:
    """SIGTERM/SIGINT set `stop` (a clean shutdown); skipped where the loop cannot take handlers
    (not the main thread, Windows). Returns the handlers they replace."""
    loop = asyncio.get_running_loop()
    installed: dict[signal.Signals, Any] = {}
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed[sig] = previous
    return installed


def _restore_signal_handlers(installed: dict[signal.Signals, Any]) -> None:
    loop = asyncio.get_running_loop()
    for sig, previous in installed.items():
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)
