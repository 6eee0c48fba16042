"""Running the `fabric` command line as a user does: a real process, with the test fabric's address,
task queue and home in its environment."""

from __future__ import annotations

import asyncio
import os
import sys
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
