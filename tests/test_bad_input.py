"""Bad input ends, it does not loop: hostile YAML and hostile payloads are refused at once, in one line,
through real processes (the `fabric` CLI) and a real Temporal server and worker.

An attack review found that a YAML alias bomb cost `fabric submit` hundreds of MB, deep YAML printed a
traceback, and a payload nested 100,000 deep, `memory: "9" * 400` or `cpu: .inf` made a workflow task
or an activity retry for ever (the workload showed "queued" but never was in the queue)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowFailureError
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker

from inferofabric import safe_yaml
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import WorkloadSpec
from inferofabric.worker.input_errors import INVALID_INPUT, InvalidInputFailureConverter, with_input_errors
from inferofabric.workflows.decode_failures import WorkflowInputDecodeError

# "Billion laughs": nine levels of nine aliases, 9^9 (387 million) strings once anything walks it.
ALIAS_BOMB = "".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n']
    + [f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)])
DEEP_FLOW = "team: " + "[" * 500 + "]" * 500 + "\n"
VERY_DEEP_FLOW = "team: " + "[" * 100_000 + "]" * 100_000 + "\n"  # libyaml's own limit (1,000) speaks first
DEEP_BLOCK = "team: t\nlabels:\n" + "".join("  " * depth + "a:\n" for depth in range(1, 300)) + "  " * 300 + "b\n"


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float
    max_rss_mb: float


def fabric_cli(tmp_path: Path, *args: str) -> Run:
    """The real `fabric` process, as a user runs it; its exit code, output, wall time and peak memory.
    Its Temporal address is one nothing listens on: a refusal must come before any connection (4)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    env.update(FABRIC_HOME=str(tmp_path / "home"), FABRIC_TEMPORAL_ADDRESS="127.0.0.1:1")
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "inferofabric.cli.main", *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.read(), process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Run(process.returncode, out.decode(), err.decode(), time.monotonic() - started, usage.ru_maxrss / 1024)


def one_line_refusal(run: Run) -> str:
    assert run.code == 2, (run.code, run.err[-2000:])
    assert "Traceback" not in run.err and run.out == "", run.err[-2000:]
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), run.err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """`fabric submit` of a small file that is refused: what starting the CLI and failing costs."""
    tmp_path = tmp_path_factory.mktemp("baseline")
    path = tmp_path / "bad.yaml"
    path.write_text("team: Bad Team\nimage: x\n")
    runs = [fabric_cli(tmp_path, "submit", "-f", str(path)) for _ in range(2)]
    for run in runs:
        assert "is not a valid name" in one_line_refusal(run)
    return min(runs, key=lambda r: r.seconds)


# -- the CLI: hostile YAML ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "reason"), [
    (ALIAS_BOMB, "aliases expand to more than"),
    (DEEP_FLOW, "nested more than 64 levels deep"),
    (VERY_DEEP_FLOW, "nesting depth"),
    (DEEP_BLOCK, "nested more than 64 levels deep"),
    ("team: [" + "1," * 200_000 + "]\n", "larger than 256 KiB"),
], ids=["alias-bomb", "deep-flow", "very-deep-flow", "deep-block", "too-large"])
def test_hostile_yaml_is_one_line_quickly_and_in_little_memory(tmp_path: Path, baseline: Run, content: str,
                                                               reason: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(content)
    run = fabric_cli(tmp_path, "submit", "-f", str(path))
    line = one_line_refusal(run)
    assert reason in line and str(path) in line
    assert run.seconds < baseline.seconds + 1.0, (run.seconds, baseline.seconds)
    assert run.max_rss_mb < baseline.max_rss_mb + 40, (run.max_rss_mb, baseline.max_rss_mb)


def test_the_alias_bomb_is_small_and_would_be_huge() -> None:
    assert len(ALIAS_BOMB) < 400  # the review's file was 395 bytes
    import yaml

    unlimited = yaml.safe_load(ALIAS_BOMB)  # shares its lists: cheap to load, ruinous to walk

    def expanded(value: Any) -> int:
        return 1 + sum(expanded(v) for v in value) if isinstance(value, list) else 1

    assert expanded(unlimited["e"]) > 9**5  # and "i" is 9**4 times that
    with pytest.raises(safe_yaml.FileError, match="aliases expand"):
        safe_yaml.load(ALIAS_BOMB)


@pytest.mark.parametrize(("command", "content", "reason"), [
    ("submit", 'team: t\nimage: x\nresources: {memory: "' + "9" * 400 + '"}\n',
     "resources.memory: '999999999999'... (400 characters) is not a memory quantity"),
    ("submit", "team: t\nimage: x\nresources: {cpu: .inf}\n", "resources.cpu: Input should be a finite number"),
    ("submit", "team: t\nimage: x\nresources: {cpu: .nan}\n", "resources.cpu: Input should be a finite number"),
    ("submit", "team: t\nimage: x\nresources: {memory: 1e400}\n", "resources.memory"),
    ("submit", "team: t\nimage: x\nmax_runtime_seconds: 1" + "0" * 40 + "\n", "max_runtime_seconds"),
    ("submit", "team: t\nimage: x\nannotations: {sim.inferofabric.io/duration: '" + "9" * 400 + "'}\n",
     "is not a duration"),
    ("submit", "team: t\nimage: x\npriority: " + "9" * 5000 + "\n", "not valid YAML"),
    ("pool add", "name: p\nlocation: cloud\nbackend: simulated\ngpus: {A100: 1}\nprice_per_gpu_hour: {A100: .inf}\n",
     "price_per_gpu_hour.A100: Input should be a finite number"),
    ("pool add", "name: p\nlocation: cloud\nbackend: simulated\ngpus: {A100: 1" + "0" * 30 + "}\n",
     "GPU count for A100 must be at most"),
    ("policy check", "teams:\n  a:\n    budget: {cloud: {weekly: .inf}}\n",
     "teams.a.budget.cloud.weekly: Input should be a finite number"),
], ids=["memory-400-nines", "cpu-inf", "cpu-nan", "memory-1e400", "runtime-huge", "duration-400-nines",
        "int-5000-digits", "price-inf", "gpus-huge", "budget-inf"])
def test_numbers_out_of_range_are_one_line(tmp_path: Path, command: str, content: str, reason: str) -> None:
    path = tmp_path / "input.yaml"
    path.write_text(content)
    line = one_line_refusal(fabric_cli(tmp_path, *command.split(), "-f", str(path)))
    assert reason in line and len(line) < 400, line


def test_a_deep_payload_is_refused_by_the_models() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(100_000):
        inner["a"] = {}
        inner = inner["a"]
    for field, value in [("labels", deep), ("annotations", deep), ("env", deep), ("args", [deep]),
                         ("command", [deep])]:
        with pytest.raises(ValidationError, match=f"{field} is nested more than 64 levels deep"):
            WorkloadSpec.model_validate({"team": "t", "image": "x", field: value})
    with pytest.raises(ValidationError, match="simulated is nested more than 64 levels deep"):
        PoolSpec.model_validate({"name": "p", "location": "cloud", "backend": "simulated", "simulated": deep})
    shallow: dict[str, Any] = {"a": {"b": [1, {"c": "d"}]}}
    assert PoolSpec.model_validate({"name": "p", "location": "cloud", "backend": "simulated",
                                    "simulated": shallow}).simulated == shallow


def test_good_input_still_passes() -> None:
    spec = WorkloadSpec.model_validate({"team": "t", "image": "x", "args": ["--lr", 0.1, 3],
                                        "resources": {"cpu": 0.5, "memory": "32Gi"}, "max_runtime_seconds": 86400})
    assert spec.args == ["--lr", "0.1", "3"] and spec.resources.memory_bytes == 32 * 2**30
    assert safe_yaml.load("base: &base {cpu: 1}\njob: {<<: *base, memory: 4Gi}\n") == {
        "base": {"cpu": 1}, "job": {"cpu": 1, "memory": "4Gi"}}


# -- workflows: a start whose input cannot be decoded fails at once -----------------------------------------
def raw_json(data: bytes, encoding: bytes = b"json/plain") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


DEEP_JSON = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize(("workflow_type", "payload", "reason"), [
    ("WorkloadWorkflow", raw_json(DEEP_JSON), "recursion limit exceeded"),
    ("WorkloadWorkflow", raw_json(b'{"spec": {"team": '), "EOF while parsing"),
    ("WorkloadWorkflow", raw_json(b"\xff\xfe garbage"), "Invalid JSON"),
    ("WorkloadWorkflow", raw_json(b"x", encoding=b"binary/hostile"), "binary/hostile"),
    ("ControlWorkflow", raw_json(b'"not a request"'), "invalid input: input: Input should be an object"),
    ("AdmissionWorkflow", raw_json(DEEP_JSON), "recursion limit exceeded"),
], ids=["workload-100000-deep", "workload-truncated", "workload-garbage", "workload-unknown-encoding",
        "control-wrong-shape", "admission-100000-deep"])
async def test_an_undecodable_start_fails_the_workflow_at_once(fabric: Any, workflow_type: str, payload: RawValue,
                                                              reason: str) -> None:
    handle = await fabric.client.temporal.start_workflow(
        workflow_type, payload, id=f"bad-payload-{uuid.uuid4().hex[:8]}", task_queue=fabric.task_queue)
    started = time.monotonic()
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 20)
    assert time.monotonic() - started < 20
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert reason in cause.message, cause.message
    # It failed once, in its first task: no task retried for ever.
    history = await handle.fetch_history()
    failed_tasks = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    assert failed_tasks == []


# -- activities: arguments that cannot be decoded are not retried -------------------------------------------
class Order(BaseModel):
    item: str
    count: int


@activity.defn(name="bad_input_take_order")
async def take_order(order: Order) -> str:
    return f"{order.count} x {order.item}"


@workflow.defn(name="BadInputOrders", sandboxed=False)
class OrdersWorkflow:
    @workflow.run
    async def run(self, data: str) -> list[Any]:
        try:
            await workflow.execute_activity(
                "bad_input_take_order", raw_json(data.encode()), start_to_close_timeout=timedelta(seconds=5),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=50))
        except ActivityError as error:
            cause = error.cause
            assert isinstance(cause, ApplicationError)
            return [cause.type, cause.non_retryable, cause.message, error.retry_state.name if error.retry_state else ""]
        return ["ok"]


@pytest.mark.parametrize(("data", "reason"), [
    ('{"item": "tea", "count": ' + "9" * 5000 + "}", "number out of range"),
    ('{"item": ' * 50_000, "recursion limit exceeded"),
    ('{"item": "tea"}', "count: Field required"),
], ids=["huge-int", "deep", "missing-field"])
async def test_an_undecodable_activity_input_is_not_retried(fabric: Any, data: str, reason: str) -> None:
    client = with_input_errors(fabric.temporal)
    assert isinstance(client.data_converter.failure_converter, InvalidInputFailureConverter)
    queue = f"bad-input-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[OrdersWorkflow], activities=[take_order]):
        started = time.monotonic()
        result = await asyncio.wait_for(
            client.execute_workflow(OrdersWorkflow.run, data, id=f"orders-{uuid.uuid4().hex[:8]}", task_queue=queue),
            20)
    kind, non_retryable, message, retry_state = result
    assert (kind, non_retryable, retry_state) == (INVALID_INPUT, True, "NON_RETRYABLE_FAILURE"), result
    assert message.startswith("invalid input: ") and reason in message, message
    assert time.monotonic() - started < 10


def test_only_input_decoding_matches_the_failure_type() -> None:
    """A ValidationError a workflow's own code raises later is not a decode failure: it fails only its
    task (a bug to fix and redeploy), never ends a running workload."""
    try:
        Order.model_validate({"item": "tea"})
    except ValidationError as error:
        assert not isinstance(error, WorkflowInputDecodeError)
    assert not issubclass(ValidationError, WorkflowInputDecodeError)
