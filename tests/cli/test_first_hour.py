"""The first hour with the CLI: the mistakes a new user makes get one line, the documented exit code
and an answer within seconds; nothing hangs, nothing is half done without saying so."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .util import fabric_cli

NOBODY = {"FABRIC_TASK_QUEUE": "nobody-polls-this-queue", "FABRIC_DATABASE_URL": ""}
JOB = "team: vision\nimage: busybox\nresources: {gpu: {type: A100, count: 1}}\n"


def one_line(err: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    return "Traceback" not in err and len(lines) == 1


async def test_no_worker_behind_the_address_is_said_at_once(fabric: Any, tmp_path: Path) -> None:
    """The Temporal server answers but no fabric worker polls the task queue (the fabric is not up, or
    FABRIC_TASK_QUEUE points elsewhere): reads say so within seconds instead of hanging."""
    for args in (["pool", "list"], ["policy", "show"], ["queue"], ["secret", "list"]):
        started = time.monotonic()
        code, _, err = await fabric_cli(fabric, *args, env=NOBODY, timeout=30)
        assert code == 4, (args, err)
        assert "no fabric worker polls task queue 'nobody-polls-this-queue'" in err and one_line(err), err
        assert time.monotonic() - started < 15, args

    job = tmp_path / "job.yaml"
    job.write_text("name: nobody-runs-me\n" + JOB)
    code, _, err = await fabric_cli(fabric, "submit", "-f", str(job), env=NOBODY, timeout=30)
    assert code == 0 and err.startswith("warning: submitted nobody-runs-me; it starts once a fabric worker runs")
    code, _, err = await fabric_cli(fabric, "status", "nobody-runs-me", env=NOBODY, timeout=30)
    assert code == 4 and "no fabric worker polls" in err and one_line(err), err
    code, _, err = await fabric_cli(fabric, "status", "never-submitted", env=NOBODY, timeout=30)
    assert code == 3 and "no workload named 'never-submitted'" in err
    await fabric.temporal.get_workflow_handle("nobody-runs-me").terminate("test over")


async def test_names_already_taken_and_filters_that_name_nothing(fabric: Any, tmp_path: Path) -> None:
    pools = tmp_path / "pool.yaml"
    pools.write_text("name: taken-dc\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 2}\n")
    code, out, err = await fabric_cli(fabric, "pool", "add", "-f", str(pools))
    assert code == 0 and "registered pool taken-dc" in out, err
    pools.write_text("name: taken-dc\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 6}\n")
    code, _, err = await fabric_cli(fabric, "pool", "add", "-f", str(pools))
    assert code == 2 and "pool taken-dc is already registered: pass --replace" in err and one_line(err), err
    assert fabric.store.pool_spec("taken-dc").gpus == {"A100": 2}  # nothing replaced
    code, out, err = await fabric_cli(fabric, "pool", "add", "-f", str(pools), "--replace")
    assert code == 0 and "updated pool taken-dc" in out, err
    assert fabric.store.pool_spec("taken-dc").gpus == {"A100": 6}

    job = tmp_path / "job.yaml"
    job.write_text("name: nightly\n" + JOB + "annotations: {sim.inferofabric.io/duration: 1s}\n")
    code, _, err = await fabric_cli(fabric, "schedule", "add", "nightly-x", "-f", str(job), "--cron", "0 2 * * *")
    assert code == 0, err
    code, _, err = await fabric_cli(fabric, "schedule", "add", "nightly-x", "-f", str(job), "--cron", "0 2 * * *")
    assert code == 2 and "a schedule named 'nightly-x' already exists" in err and one_line(err), err
    code, _, err = await fabric_cli(fabric, "schedule", "remove", "nightly-x")
    assert code == 0, err
    code, _, err = await fabric_cli(fabric, "schedule", "remove", "nightly-x")
    assert code == 3 and "no schedule named 'nightly-x'" in err

    for args, message in ((["list", "--state", "done"], "unknown state 'done': one of queued, launching"),
                          (["list", "--location", "onprem"], "unknown location 'onprem': one of on-prem, cloud")):
        code, out, err = await fabric_cli(fabric, *args)
        assert code == 2 and message in err and "no workloads" not in out, err


async def test_a_multi_document_submit_says_what_was_submitted(fabric: Any, tmp_path: Path) -> None:
    pools = tmp_path / "pool.yaml"
    pools.write_text("name: md-dc\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 4}\n")
    assert (await fabric_cli(fabric, "pool", "add", "-f", str(pools)))[0] == 0
    first = "name: md-one\n" + JOB + "annotations: {sim.inferofabric.io/duration: 60s}\n"
    (tmp_path / "one.yaml").write_text(first)
    assert (await fabric_cli(fabric, "submit", "-f", str(tmp_path / "one.yaml")))[0] == 0
    batch = tmp_path / "batch.yaml"
    batch.write_text(first.replace("md-one", "md-zero") + "---\n" + first + "---\n" + first.replace("md-one", "md-two"))
    code, _, err = await fabric_cli(fabric, "submit", "-f", str(batch))
    assert code == 2 and one_line(err), err
    assert "md-one: a workload named 'md-one' already exists (submitted before it: md-zero)" in err, err

    bad = tmp_path / "bad.yaml"
    bad.write_text(first.replace("md-one", "md-three") + "---\n" + "name: md-four\nteam: Bad Team\nimage: x\n")
    code, _, err = await fabric_cli(fabric, "submit", "-f", str(bad))
    assert code == 2 and "(document 2)" in err and one_line(err), err
    code, _, _ = await fabric_cli(fabric, "status", "md-three")
    assert code == 3  # every document is checked before any is submitted
    for name in ("md-zero", "md-one"):
        await fabric.client.get(name).cancel()


async def test_version_help_examples_and_completion(fabric: Any) -> None:
    code, out, _ = await fabric_cli(fabric, "--version")
    assert code == 0 and out.startswith("fabric ")
    code, out, _ = await fabric_cli(fabric, "--help")
    assert code == 0 and "Examples:" in out and "Exit codes:" in out and "--install-completion" in out
    code, out, _ = await fabric_cli(fabric, "submit", "--help")
    assert code == 0 and "Example: fabric submit -f" in out


async def test_logs_follow_prints_every_attempt_until_the_end(fabric: Any, tmp_path: Path) -> None:
    pools = tmp_path / "pool.yaml"
    pools.write_text("name: logs-dc\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 1}\n")
    assert (await fabric_cli(fabric, "pool", "add", "-f", str(pools)))[0] == 0
    job = tmp_path / "job.yaml"
    job.write_text("name: chatty\n" + JOB + "annotations: {sim.inferofabric.io/duration: 3s}\n")
    assert (await fabric_cli(fabric, "submit", "-f", str(job)))[0] == 0
    started = time.monotonic()
    store = {"FABRIC_DATABASE_URL": fabric.store.url}  # logs are read from the pool on the fabric's host
    code, out, err = await fabric_cli(fabric, "logs", "chatty", "--follow", timeout=60, env=store)
    assert code == 0, err
    assert "==> attempt 1 on logs-dc" in out
    status = await fabric.client.get("chatty").status()
    assert status.state.terminal  # --follow returned because the workload ended
    assert time.monotonic() - started < 45
    code, out, _ = await fabric_cli(fabric, "logs", "chatty", "--json", env=store)
    attempts = json.loads(out)
    assert code == 0 and [a["attempt"] for a in attempts] == [1] and attempts[0]["pool"] == "logs-dc"


async def test_a_workload_naming_a_missing_secret_ends_and_holds_nothing(fabric: Any, tmp_path: Path) -> None:
    """Once the first-hour wedge: `launching` for ever, --wait never returning, 4 GPUs reserved, the
    pool impossible to remove."""
    pools = tmp_path / "pool.yaml"
    pools.write_text("name: wedge-dc\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 4}\n")
    assert (await fabric_cli(fabric, "pool", "add", "-f", str(pools)))[0] == 0
    job = tmp_path / "job.yaml"
    job.write_text("name: wedged\nteam: vision\nimage: busybox\nresources: {gpu: {type: A100, count: 4}}\n"
                   "env: {PW: {secret: no-such-secret}}\n")
    code, _, err = await fabric_cli(fabric, "submit", "-f", str(job), "--wait", timeout=60)
    assert code == 1 and "no secret named 'no-such-secret'" in err, err
    code, out, _ = await fabric_cli(fabric, "status", "wedged", "--json")
    status = json.loads(out)
    assert status["state"] == "failed" and "no secret named 'no-such-secret'" in status["message"]
    assert not fabric.store.active_reservations()
    code, out, _ = await fabric_cli(fabric, "pool", "list", "--json")
    assert {p["name"]: p["used"] for p in json.loads(out)}["wedge-dc"] in ({}, {"A100": 0})
    code, out, err = await fabric_cli(fabric, "pool", "remove", "wedge-dc")
    assert code == 0 and "removed pool wedge-dc" in out, err


async def test_impossible_work_is_refused_or_queued_with_a_warning(fabric: Any, tmp_path: Path) -> None:
    pools = tmp_path / "pool.yaml"
    pools.write_text("name: door-dc\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 8}\n")
    assert (await fabric_cli(fabric, "pool", "add", "-f", str(pools)))[0] == 0
    cases = {"a100": (1, "GPU type 'a100' is not known: did you mean 'A100'?"),
             "T4": (1, "no registered pool has GPU type 'T4' (known: A100)"),
             "A100": (9, "needs 9 x A100 on one pool, but the largest pool with it has 8 (door-dc)")}
    for gpu_type, (count, message) in cases.items():
        job = tmp_path / "job.yaml"
        job.write_text(f"name: door-{gpu_type.lower()}-{count}\nteam: vision\nimage: busybox\n"
                       f"resources: {{gpu: {{type: {gpu_type}, count: {count}}}}}\n")
        code, _, err = await fabric_cli(fabric, "submit", "-f", str(job))
        assert code == 2 and message in err and "nothing submitted" in err and one_line(err), err
        code, _, _ = await fabric_cli(fabric, "status", f"door-{gpu_type.lower()}-{count}")
        assert code == 3

    job = tmp_path / "job.yaml"
    job.write_text("name: door-later\nteam: vision\nimage: busybox\nresources: {gpu: {type: T4, count: 1}}\n")
    code, _, err = await fabric_cli(fabric, "submit", "-f", str(job), "--if-impossible", "warn")
    assert code == 0 and err.startswith("warning: door-later: no registered pool has GPU type 'T4'"), err

    async def says_never() -> str | None:
        code, out, _ = await fabric_cli(fabric, "status", "door-later", "--json")
        reason = json.loads(out).get("reason") or "" if code == 0 else ""
        return reason if "cannot run on any registered pool" in reason else None

    reason = await _eventually(says_never)
    assert "no registered pool has GPU type 'T4'" in reason  # and it keeps saying so while it waits
    code, out, _ = await fabric_cli(fabric, "queue", "--json")
    assert any("cannot run on any registered pool" in e["reason"] for e in json.loads(out) if e["id"] == "door-later")
    await fabric.client.get("door-later").cancel()


async def test_policy_targets_that_name_nothing(fabric: Any, tmp_path: Path) -> None:
    pools = tmp_path / "pool.yaml"
    pools.write_text("name: tgt-dc\nlocation: on-prem\nbackend: simulated\nregion: dc1\ngpus: {A100: 8}\n")
    assert (await fabric_cli(fabric, "pool", "add", "-f", str(pools)))[0] == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text("placement:\n  default: onprem\n  burst: {when: 'on_prem_utilization > 0.85', target: clouds}\n")
    code, _, err = await fabric_cli(fabric, "policy", "check", "-f", str(policy))
    assert code == 2 and "target 'onprem' is not a location (on-prem, cloud): did you mean 'on-prem'?" in err, err
    code, _, err = await fabric_cli(fabric, "policy", "set", "-f", str(policy))
    assert code == 2 and "target 'clouds' names no location (on-prem, cloud) and no registered pool" in err, err
    assert "nothing changed" in err and one_line(err)
    code, out, _ = await fabric_cli(fabric, "policy", "show", "--json")
    assert json.loads(out)["default"] is True  # still the built-in default
    code, _, err = await fabric_cli(fabric, "policy", "set", "-f", str(policy), "--force")
    assert code == 0, err


async def _eventually(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.3)


EVERY_COMMAND_MISTAKE = [
    # (arguments, exit code the README documents, words of the one-line message)
    (["status", "ghost"], 3, "no workload named 'ghost'"),
    (["explain", "ghost"], 3, "no workload named 'ghost'"),
    (["cancel", "ghost"], 3, "no workload named 'ghost'"),
    (["logs", "ghost"], 3, "no workload named 'ghost'"),
    (["priority", "ghost", "production"], 3, "no workload named 'ghost'"),
    (["pool", "remove", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "cordon", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "uncordon", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "drain", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "fail", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "restore", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "reclaim", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "reconcile", "ghost"], 3, "no pool named 'ghost'"),
    (["pool", "add", "-f", "/nonexistent.yaml"], 2, "no such file"),
    (["policy", "set", "-f", "/nonexistent.yaml"], 2, "no such file"),
    (["policy", "simulate", "-f", "/nonexistent.yaml", "--trace", "/nonexistent.csv"], 2, "no such file"),
    (["submit", "-f", "/nonexistent.yaml"], 2, "no such file"),
    (["schedule", "add", "s", "-f", "/nonexistent.yaml", "--cron", "0 2 * * *"], 2, "no such file"),
    (["schedule", "remove", "ghost"], 3, "no schedule named 'ghost'"),
    (["list", "--state", "finished"], 2, "unknown state 'finished'"),
    (["token", "create", "--role", "root"], 2, "unknown role 'root'"),
    (["secret", "set", "s", "--from-env", "FABRIC_NO_SUCH_VARIABLE"], 2, "FABRIC_NO_SUCH_VARIABLE is not set"),
    (["up", "-c", "/nonexistent.yaml", "--port", "1"], 2, "no such file"),
]


async def test_every_command_answers_a_mistake_with_its_documented_exit_code(fabric: Any) -> None:
    for args, expected, words in EVERY_COMMAND_MISTAKE:
        code, _, err = await fabric_cli(fabric, *args)
        assert code == expected and words in err and one_line(err), (args, code, err)
