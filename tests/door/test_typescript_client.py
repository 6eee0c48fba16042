"""The TypeScript SDK through the front door: a Node script using nothing but `@temporalio/client`
(tests/door/ts/start_and_query.mjs) dials the door over TLS with a member's token as Temporal's API
key, starts a WorkloadWorkflow for the member's team and queries its status. Judged from Temporal
itself: the workload exists with the member's identity stamped by the door. A garbage key starts
nothing. `@temporalio/client` is installed with `npm ci` from the committed lock file into
tests/door/ts/node_modules (not committed; kept between runs, reinstalled when the lock changes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError

from inferofabric.sdk.client import FabricClient

from .conftest import Doorway

TS = Path(__file__).parent / "ts"
SCRIPT = TS / "start_and_query.mjs"
RECIPES = Path(__file__).resolve().parents[2] / "docs" / "door-recipes.md"
STAMP = TS / "node_modules" / ".inferofabric-lock.sha256"  # the lock file node_modules was installed from


def node() -> str:
    found = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)
    if found is None:
        pytest.skip("node is not installed (Node >= 20.3 runs @temporalio/client): apt-get install nodejs npm")
    return found


@pytest.fixture(scope="session")
def ts_client() -> str:
    """`node`, with tests/door/ts/node_modules installed from package-lock.json (once per lock file)."""
    found = node()
    lock = hashlib.sha256((TS / "package-lock.json").read_bytes()).hexdigest()
    installed = (TS / "node_modules" / "@temporalio" / "client" / "package.json").exists()
    if installed and STAMP.exists() and STAMP.read_text().strip() == lock:
        return found
    npm = shutil.which("npm") or str(Path(found).parent / "npm")
    assert Path(npm).exists(), f"node is at {found} but npm is not: install npm to fetch @temporalio/client"
    # --ignore-scripts: the client is plain JavaScript (grpc-js); nothing it needs runs at install.
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=TS,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"npm ci in {TS} failed:\n{done.stdout}\n{done.stderr}"
    STAMP.write_text(lock + "\n")
    return found


def workload_spec(name: str, team: str) -> dict[str, Any]:
    return {"name": name, "team": team, "image": "img", "resources": {"gpu": {"type": "A100", "count": 1}},
            "annotations": {"sim.inferofabric.io/duration": "600s"}}


async def run_script(node_path: str, doorway: Doorway, ca_file: Path, api_key: str, workflow_id: str,
                     spec: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    """Run the script (without blocking the event loop: the fabric's worker runs on it); its exit
    code, its JSON report and its stderr."""
    env = {**os.environ, "DOOR_ADDRESS": doorway.address, "DOOR_CA_FILE": str(ca_file), "DOOR_API_KEY": api_key,
           "DOOR_NAMESPACE": doorway.namespace, "DOOR_TASK_QUEUE": doorway.queue,
           "DOOR_WORKFLOW_ID": workflow_id, "DOOR_SPEC": json.dumps(spec)}
    process = await asyncio.create_subprocess_exec(node_path, str(SCRIPT), cwd=TS, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    lines = stdout.decode().strip().splitlines()
    assert lines, f"the script printed nothing (exit {process.returncode}):\n{stderr.decode()}"
    return process.returncode or 0, json.loads(lines[-1]), stderr.decode()


@pytest.fixture
def ca_file(doorway: Doorway, tmp_path: Path) -> Path:
    path = tmp_path / "door-ca.pem"
    path.write_bytes(doorway.ca)
    return path


async def test_a_typescript_client_starts_and_queries_a_workload_through_the_door(
        ts_client: str, doorway: Doorway, pool: None, ca_file: Path) -> None:
    workflow_id = f"ts-{uuid.uuid4().hex[:8]}"
    token = doorway.token("member", "ads", subject="ts-alice")
    code, report, stderr = await run_script(ts_client, doorway, ca_file, token, workflow_id,
                                            workload_spec(workflow_id, "ads"))
    assert code == 0, (report, stderr)
    assert report["started"]["workflowId"] == workflow_id
    status = report["status"]
    assert (status["id"], status["team"]) == (workflow_id, "ads")
    # Temporal itself holds the workload, started with the identity the door verified and stamped.
    described = await doorway.engine.get_workflow_handle(workflow_id).describe()
    assert described.workflow_type == "WorkloadWorkflow" and described.task_queue == doorway.queue
    history = await doorway.engine.get_workflow_handle(workflow_id).fetch_history()
    start = history.events[0].workflow_execution_started_event_attributes
    stamped = json.loads(start.header.fields["fabric-identity"].data)
    assert (stamped["sub"], stamped["role"], stamped["team"], stamped["door"]) == ("ts-alice", "member", "ads", True)
    assert token.split("~", 1)[-1] not in history.to_json()  # the credential never reaches history
    # And the fabric's own client (through the door) sees the same workload.
    fabric: FabricClient = await doorway.fabric(token)
    assert (await fabric.get(workflow_id).status()).team == "ads"


async def test_a_typescript_client_with_a_garbage_key_is_unauthenticated_and_starts_nothing(
        ts_client: str, doorway: Doorway, pool: None, ca_file: Path) -> None:
    workflow_id = f"ts-garbage-{uuid.uuid4().hex[:8]}"
    for key in ("garbage", doorway.token("member", "ads", subject="ts-mallory") + "x"):
        code, report, stderr = await run_script(ts_client, doorway, ca_file, key, workflow_id,
                                                workload_spec(workflow_id, "ads"))
        assert code == 1, (report, stderr)
        error = report["error"]
        assert error["code"] == "UNAUTHENTICATED" or "unauthenticated" in error["message"].lower(), error
        assert error["stage"] in ("connect", "start"), error
        with pytest.raises(RPCError):
            await doorway.engine.get_workflow_handle(workflow_id).describe()


async def test_a_typescript_client_of_another_team_is_refused_by_the_door(
        ts_client: str, doorway: Doorway, pool: None, ca_file: Path) -> None:
    workflow_id = f"ts-other-team-{uuid.uuid4().hex[:8]}"
    bob = doorway.token("member", "vision", subject="bob")
    code, report, stderr = await run_script(ts_client, doorway, ca_file, bob, workflow_id,
                                            workload_spec(workflow_id, "ads"))
    assert code == 1, (report, stderr)
    assert (report["error"]["code"], report["error"]["stage"]) == ("PERMISSION_DENIED", "start"), report
    assert "ads" in report["error"]["message"], report  # the door says why
    with pytest.raises(RPCError):
        await doorway.engine.get_workflow_handle(workflow_id).describe()


async def test_the_typescript_recipe_runs_as_written(ts_client: str, doorway: Doorway, pool: None,
                                                    ca_file: Path) -> None:
    """docs/door-recipes.md's TypeScript block, run as written (from inside node_modules so that it
    resolves @temporalio/client) with the variables the doc tells a user to set."""
    [block] = [b for b in re.findall(r"```js\n(.*?)```", RECIPES.read_text(), re.DOTALL) if "Connection.connect" in b]
    folder = TS / "node_modules" / ".recipes"
    folder.mkdir(exist_ok=True)
    script = folder / f"recipe-{uuid.uuid4().hex[:8]}.mjs"
    script.write_text(block)
    token = doorway.token("member", "vision", subject="recipe-ts-user")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "TEMPORAL_"))} | {
        "FABRIC_DOOR": doorway.address, "FABRIC_TOKEN": token, "FABRIC_TLS_CA": str(ca_file),
        "FABRIC_NAMESPACE": doorway.namespace, "FABRIC_TASK_QUEUE": doorway.queue}
    try:
        process = await asyncio.create_subprocess_exec(ts_client, str(script), env=env,
                                                       stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    finally:
        script.unlink()
    assert process.returncode == 0, (stdout.decode(), stderr.decode())
    assert stdout.decode().split()[:2] == ["recipe-ts", "vision"], stdout.decode()
    history = await doorway.engine.get_workflow_handle("recipe-ts").fetch_history()
    header = history.events[0].workflow_execution_started_event_attributes.header.fields["fabric-identity"]
    assert json.loads(header.data)["sub"] == "recipe-ts-user"
