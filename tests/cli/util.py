"""Running the `fabric` command line as a user does: a real process, with the test fabric's address,
task queue and home in its environment."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def fabric_cli(fabric: Any, *args: str, address: str | None = None, env: dict[str, str] | None = None,
                     timeout: float = 60) -> tuple[int, str, str]:
    env = {**os.environ, "FABRIC_TASK_QUEUE": fabric.task_queue, "FABRIC_HOME": str(fabric.home),
           "FABRIC_TEMPORAL_ADDRESS": address or fabric.temporal.service_client.config.target_host,
           "FABRIC_NAMESPACE": fabric.temporal.namespace, **(env or {})}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inferofabric.cli.main", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- a `fabric up` of its own (FABRIC_HOME, ports, SQLite store) -------------------------------------------
STARTED = "fabric is up"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(home: Path, port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env["FABRIC_HOME"] = str(home)
    if port is not None:
        env["FABRIC_TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
    return env


async def fabric_in(home: Path, *args: str, port: int | None = None, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inferofabric.cli.main", *args, env=stack_env(home, port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@asynccontextmanager
async def fabric_up(home: Path, port: int, *extra: str) -> AsyncIterator[str]:
    """A running `fabric up`; yields what it printed until it was up."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inferofabric.cli.main", "up", "--port", str(port), "--ui-port", str(free_port()),
        "--dashboard-port", str(free_port()), "--gateway-port", str(free_port()), *extra, env=stack_env(home),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    printed = ""
    try:
        while STARTED not in printed:
            line = await asyncio.wait_for(process.stdout.readline(), 90)
            assert line, f"fabric up ended before it was up:\n{printed}"
            printed += line.decode()
        yield printed
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 30)
