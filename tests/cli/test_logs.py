"""The long-running commands' terminal gets one line per event; the log file gets the traceback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from inferofabric.logs import setup_logging


def test_a_failure_is_one_line_on_the_terminal_and_whole_in_the_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    path = setup_logging(tmp_path)
    try:
        try:
            raise ValueError("no secret named 'db-password'\nsecond line")
        except ValueError:
            logging.getLogger("temporalio.activity").warning("Completing activity as failed", exc_info=True)
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    terminal = capsys.readouterr().err.strip().splitlines()
    assert len(terminal) == 1, terminal
    assert terminal[0].endswith("Completing activity as failed (ValueError: no secret named 'db-password')  "
                                "[details: fabric.log]")
    written = path.read_text()
    assert "Traceback (most recent call last)" in written and "second line" in written
    assert path == tmp_path / "logs" / "fabric.log"


# -- `fabric logs` reads the pool from the caller's side; nothing of it enters workflow history ----------
import base64  # noqa: E402
import json  # noqa: E402
import stat  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from inferofabric.auth.tokens import create_token, signing_key  # noqa: E402
from inferofabric.backends.base import JobRejected, checked_job_id  # noqa: E402
from inferofabric.models import WorkloadSpec, WorkloadState  # noqa: E402
from inferofabric.sdk.errors import InvalidInput  # noqa: E402

from .util import fabric_cli, fabric_up, free_port  # noqa: E402

MARK = "LOG-42-MARK"  # what the job prints; its command computes it, so the spec never holds it


def holds(node: Any, needle: str) -> bool:
    """`needle` anywhere in a JSON tree, base64-encoded payload data included."""
    if isinstance(node, dict):
        return any(holds(k, needle) or holds(v, needle) for k, v in node.items())
    if isinstance(node, list):
        return any(holds(item, needle) for item in node)
    if not isinstance(node, str):
        return False
    if needle in node:
        return True
    try:
        return needle.encode() in base64.b64decode(node, validate=True)
    except ValueError:
        return False


async def ran_on_local_pool(fabric: Any, name: str, team: str = "vision") -> Any:
    pool = f"local-{uuid.uuid4().hex[:6]}"
    await fabric.client.register_pool({"name": pool, "location": "on-prem", "backend": "local",
                                       "gpus": {"A100": 1}, "local": {"discover_gpus": False}})
    await fabric.client.set_policy({"placement": {"default": [pool]}})
    handle = await fabric.client.submit(WorkloadSpec.model_validate({
        "name": name, "team": team, "image": "busybox", "resources": {"gpu": {"type": "A100", "count": 1}},
        "command": ["sh", "-c", 'echo "LOG-$((6*7))-MARK"; echo second line']}))
    for _ in range(200):
        status = await handle.status()
        if status.state.terminal:
            break
        await asyncio.sleep(0.1)
    assert status.state == WorkloadState.SUCCEEDED, status
    return handle


async def test_fabric_logs_reads_the_pool_and_no_history_holds_the_text(fabric: Any) -> None:
    handle = await ran_on_local_pool(fabric, "chatty-local")
    env = {"FABRIC_DATABASE_URL": fabric.store.url}
    code, out, err = await fabric_cli(fabric, "logs", "chatty-local", env=env)
    assert code == 0 and out.splitlines() == [MARK, "second line"], out + err
    code, out, err = await fabric_cli(fabric, "logs", "chatty-local", "--json", env=env)
    assert code == 0 and json.loads(out)[0]["lines"] == [MARK, "second line"], err
    code, out, err = await fabric_cli(fabric, "logs", "chatty-local", "--all", env=env)
    assert code == 0 and "==> attempt 1 on" in out and MARK in out, err
    assert MARK in await handle.logs()

    # No workflow of this fabric (control calls included) carries the output in its history.
    seen = []
    async for execution in fabric.temporal.list_workflows(f"TaskQueue = '{fabric.task_queue}'"):
        seen.append(execution.id)
        history = await fabric.temporal.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        assert not holds(json.loads(history.to_json()), MARK), f"log text in the history of {execution.id}"
    assert "chatty-local" in seen

    # The control plane refuses to carry logs at all.
    spec = fabric.store.pool_spec((await handle.status()).pool)
    with pytest.raises(InvalidInput, match="not read through the control plane"):
        await fabric.client._control("logs", pool=spec.name, job_id=(await handle.status()).job_id)


async def test_logs_only_of_the_workloads_own_attempts_and_teams(fabric: Any) -> None:
    handle = await ran_on_local_pool(fabric, "quiet-local")
    status = await handle.status()
    assert status.pool is not None
    for crafted in ("../../../../var/log/dpkg", "quiet-local-a1/../../../etc/passwd", "other-a1"):
        with pytest.raises(InvalidInput, match="has no attempt"):
            await handle.job_logs(status.pool, crafted)
    member = create_token(signing_key(fabric.home), "member", team="ads", subject="eve", now=time.time())
    code, _, err = await fabric_cli(fabric, "logs", "quiet-local",
                                    env={"FABRIC_DATABASE_URL": fabric.store.url, "FABRIC_TOKEN": member})
    assert code == 3 and "may not read the output of workload 'quiet-local'" in err and MARK not in err, err
    code, _, err = await fabric_cli(fabric, "logs", "quiet-local",
                                    env={"FABRIC_DATABASE_URL": fabric.store.url, "FABRIC_TOKEN": "garbage"})
    assert code == 3 and "not a fabric token" in err, err


@pytest.mark.parametrize("job_id", ["../../../../var/log/dpkg", "a/b", "..", "a..b", "/etc/passwd", "", ".hidden",
                                    "x" * 300, "a\nb"])
def test_every_back_end_refuses_a_job_id_that_is_not_plain(tmp_path: Path, job_id: str) -> None:
    from inferofabric.backends.local import LocalBackend
    from inferofabric.backends.simulated import SimulatedBackend
    from inferofabric.models.pool import PoolSpec

    with pytest.raises(JobRejected, match="not a job id"):
        checked_job_id(job_id)
    (tmp_path / "var" / "log").mkdir(parents=True)
    (tmp_path / "var" / "log" / "dpkg.log").write_text("outside the pool\n")
    for backend_class, extra in ((LocalBackend, {"local": {"discover_gpus": False}}), (SimulatedBackend, {})):
        spec = PoolSpec.model_validate({"name": "p", "location": "on-prem", "backend": backend_class.__name__[:-7]
                                        .lower(), "gpus": {"A100": 1}, **extra})
        with pytest.raises(JobRejected, match="not a job id"):
            backend_class(spec, tmp_path / "home").logs(job_id)
    assert checked_job_id("train-7-a1") == "train-7-a1"


async def test_fabric_home_is_the_owners_alone_after_a_stack_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "fabric.db").touch(mode=0o644)  # what an older version left
    (home / "fabric.db").chmod(0o644)
    async with fabric_up(home, free_port()):
        await asyncio.sleep(0.5)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("fabric.db", "temporal.db", "logs/fabric.log", "auth.key", "admin.token"):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
        opened = [str(p.relative_to(home)) for p in home.rglob("*")
                  if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077]
        assert opened == [], opened
        assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700
