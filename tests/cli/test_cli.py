"""The `fabric` command line as a person or a script uses it: real processes against the real dev
server, checking output, JSON fields and exit codes (0 ok, 1 failed, 2 bad input, 3 not found,
4 unreachable), and that user mistakes never print a traceback."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from .util import EXAMPLES, fabric_cli


async def test_a_session_with_the_cli(fabric: Any, tmp_path: Path) -> None:
    code, out, err = await fabric_cli(fabric, "pool", "add", "-f", str(EXAMPLES / "pools.yaml"))
    assert code == 0, err
    assert "registered pool onprem-a (SIMULATED)" in out

    code, out, _ = await fabric_cli(fabric, "pool", "list", "--json")
    pools = {p["name"]: p for p in json.loads(out)}
    assert code == 0 and pools["onprem-a"]["simulated"] and pools["cloud-use1"]["location"] == "cloud"

    code, out, _ = await fabric_cli(fabric, "policy", "set", "-f", str(EXAMPLES / "policy.yaml"), "--json")
    assert code == 0 and json.loads(out)["version"] >= 1

    workload = tmp_path / "job.yaml"
    workload.write_text("name: cli-job\nteam: vision\nimage: busybox\nresources: {gpu: {type: A100, count: 1}}\n"
                        "annotations: {sim.inferofabric.io/duration: 1s}\n")
    code, out, err = await fabric_cli(fabric, "submit", "-f", str(workload), "--wait", "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "succeeded"

    code, out, _ = await fabric_cli(fabric, "status", "cli-job", "--json")
    status = json.loads(out)
    assert code == 0
    assert {k: status[k] for k in ("id", "state", "pool", "location", "region", "attempts")} == {
        "id": "cli-job", "state": "succeeded", "pool": "onprem-a", "location": "on-prem", "region": "dc1",
        "attempts": 1}

    code, out, _ = await fabric_cli(fabric, "list", "--json", "--pool", "onprem-a")
    assert code == 0 and "cli-job" in {item["id"] for item in json.loads(out)}

    code, out, _ = await fabric_cli(fabric, "explain", "cli-job")
    assert code == 0 and "onprem-a" in out and "cloud-use1" in out  # the chosen pool and a rejected one


@pytest.mark.parametrize(("args", "content", "expected_code", "message"), [
    (["status", "no-such-workload"], None, 3, "no workload named 'no-such-workload'"),
    (["pool", "cordon", "no-such-pool"], None, 3, "no pool named 'no-such-pool'"),
    (["policy", "check", "-f", "{file}"], "placement:\n  burst: {when: 'on_prem_utilization >', target: cloud}\n",
     2, "syntax error at column"),
    (["submit", "-f", "{file}"], "team: Bad Team\nimage: x\n", 2, "team: 'Bad Team' is not a valid name"),
    (["pool", "add", "-f", "{file}"], "name: p\nlocation: moon\nbackend: simulated\n", 2, "location"),
    (["submit", "-f", "{file}"], "name: [unclosed\n", 2, "not valid YAML"),
    (["policy", "check", "-f", "/nonexistent/policy.yaml"], None, 2, "no such file"),
])
async def test_user_mistakes_are_one_line_errors(fabric: Any, tmp_path: Path, args: list[str],
                                                 content: str | None, expected_code: int, message: str) -> None:
    path = tmp_path / "input.yaml"
    if content is not None:
        path.write_text(content)
    code, _, err = await fabric_cli(fabric, *[a.replace("{file}", str(path)) for a in args])
    assert code == expected_code, err
    assert message in err and err.startswith("error:") and "Traceback" not in err


async def test_an_unreachable_fabric_is_exit_code_4(fabric: Any) -> None:
    code, _, err = await fabric_cli(fabric, "list", address="127.0.0.1:1")
    assert code == 4 and "cannot reach the fabric at 127.0.0.1:1" in err and "Traceback" not in err


@pytest.mark.parametrize("raw", [{"spec": {"team": "Bad Team", "image": "x"}}, "not a mapping", {"max_attempts": 0}])
async def test_a_workflow_started_with_bad_input_fails_at_once(fabric: Any, raw: Any) -> None:
    """As if started from the `temporal` CLI (with a valid token): a clear, non-retryable failure
    instead of retrying forever."""
    handle = await fabric.client.temporal.start_workflow(
        "WorkloadWorkflow", raw, id=f"bad-input-{abs(hash(json.dumps(raw))) % 10**8}", task_queue=fabric.task_queue)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 20)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidWorkloadSpec" and cause.non_retryable
    assert "invalid workload" in cause.message


async def test_the_queue_a_class_change_and_a_what_if_from_the_cli(fabric: Any, tmp_path: Path) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("name: q-dc1\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 1}\n")
    assert (await fabric_cli(fabric, "pool", "add", "-f", str(pools)))[0] == 0
    code, _, err = await fabric_cli(fabric, "policy", "set", "-f", str(EXAMPLES / "admission-policy.yaml"))
    assert code == 0, err
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("\n---\n".join(
        f"name: {name}\nteam: nlp\nimage: busybox\npriority_class: {cls}\n"
        "resources: {gpu: {type: A100, count: 1}}\nannotations: {sim.inferofabric.io/duration: 60s}\n"
        for name, cls in (("q-holder", "research"), ("q-batch", "batch"), ("q-later", "batch"))))
    code, _, err = await fabric_cli(fabric, "submit", "-f", str(jobs))
    assert code == 0, err

    async def two_waiting() -> list[dict[str, Any]]:
        code, out, _ = await fabric_cli(fabric, "queue", "--json")
        entries = json.loads(out) if code == 0 else []
        return entries if len(entries) == 2 else []

    entries = await _eventually(two_waiting)
    assert [(e["id"], e["team"], e["priority_class"], e["position"]) for e in entries] == [
        ("q-batch", "nlp", "batch", 1), ("q-later", "nlp", "batch", 2)]
    assert "q-dc1 has 0 of 1 A100 free" in entries[0]["reason"], entries[0]["reason"]
    code, out, _ = await fabric_cli(fabric, "status", "q-later", "--json")
    status = json.loads(out)
    assert code == 0 and status["state"] == "queued" and status["position"] == 2 and status["reason"]

    code, out, err = await fabric_cli(fabric, "priority", "q-later", "research")
    assert code == 0, err
    code, out, _ = await fabric_cli(fabric, "queue", "--json")
    assert [e["id"] for e in json.loads(out)] == ["q-later", "q-batch"]
    code, out, _ = await fabric_cli(fabric, "queue")
    assert code == 0 and "q-later" in out and "fair share" in out

    code, _, err = await fabric_cli(fabric, "priority", "q-later", "no-such-class")
    assert code == 2 and "unknown priority class 'no-such-class'" in err and "Traceback" not in err

    code, out, err = await fabric_cli(fabric, "policy", "simulate", "-f", str(EXAMPLES / "admission-policy.yaml"),
                                      "--trace", str(EXAMPLES / "trace.csv"), "--pools",
                                      str(EXAMPLES / "pools.yaml"), "--json")
    assert code == 0, err
    report = json.loads(out)
    keys = {"wait_p50_s", "wait_p99_s", "gpu_hours_on_prem", "gpu_hours_cloud", "cloud_cost", "preemptions"}
    assert keys <= set(report["total"]) and {"vision", "nlp"} <= set(report["teams"])
    assert report["total"]["gpu_hours_on_prem"] > 0
    bad = tmp_path / "trace.csv"
    bad.write_text("arrival_s,gpus\n1,2\n")
    code, _, err = await fabric_cli(fabric, "policy", "simulate", "-f", str(EXAMPLES / "policy.yaml"),
                                    "--trace", str(bad), "--pools", str(EXAMPLES / "pools.yaml"))
    assert code == 2 and "missing column(s)" in err and "Traceback" not in err
    for name in ("q-holder", "q-batch", "q-later"):
        await fabric.client.get(name).cancel()


async def _eventually(check: Any, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.3)


async def test_tokens_roles_and_the_audit_log_from_the_cli(fabric: Any, tmp_path: Path) -> None:
    code, member, err = await fabric_cli(fabric, "token", "create", "--role", "member", "--team", "ads",
                                         "--name", "alice", "--ttl", "1d")
    assert code == 0, err
    code, _, err = await fabric_cli(fabric, "token", "create", "--role", "member")
    assert code == 2 and "needs --team" in err

    pools = tmp_path / "pool.yaml"
    pools.write_text("name: dc9\nlocation: on-prem\nbackend: simulated\nregion: dc9\ngpus: {A100: 2}\n")
    os.environ["FABRIC_TOKEN"] = member.strip()
    try:
        code, _, err = await fabric_cli(fabric, "pool", "add", "-f", str(pools))
    finally:
        del os.environ["FABRIC_TOKEN"]
    assert code == 3 and "alice (member of ads) may not register_pool: that needs the admin role" in err
    assert "Traceback" not in err

    os.environ["FABRIC_TOKEN"] = "not-a-token"
    try:
        code, _, err = await fabric_cli(fabric, "pool", "drain", "dc9")
    finally:
        del os.environ["FABRIC_TOKEN"]
    assert code == 3 and "not a fabric token" in err and "Traceback" not in err

    code, out, err = await fabric_cli(fabric, "audit", "--json")
    assert code == 0, err
    refused = [e for e in json.loads(out) if e["result"] == "refused"]
    assert {(e["identity"], e["role"], e["action"], e["target"]) for e in refused} >= {
        ("alice", "member", "register_pool", "dc9")}
