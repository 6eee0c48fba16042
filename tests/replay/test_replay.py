"""Replay every recorded history (tests/histories/*.json) against the current workflow code.

A change to WorkloadWorkflow, ControlWorkflow or PoolMonitorWorkflow that would break workflows
already running (a non-deterministic change) fails here. The histories come from real runs on the
dev server: tests/replay/record_histories.py regenerates them, for intentional changes only.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from inferofabric.auth.gate import AuthGate
from inferofabric.worker.main import WORKFLOWS, workflow_runner

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
# The key the histories were recorded with (record_histories.py): replay runs the auth gate too, so
# the recorded requests' stamped identities are checked again (and the activities' marks made
# again), and a change to the gate that would refuse them (or let through what it refused) fails here.
REPLAY_AUTH_KEY = b"replay-histories-signing-key-not-a-secret-0123456789"
FILES = sorted(HISTORIES.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    data = json.loads(path.read_text())
    started = data["events"][0]["workflowExecutionStartedEventAttributes"]
    workflow_id = started.get("workflowId") or path.stem
    return WorkflowHistory.from_json(workflow_id, data)


def workflow_type(path: Path) -> str:
    return str(json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
               ["workflowType"]["name"])


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_history_replays(path: Path) -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter,
                        workflow_runner=workflow_runner(), interceptors=[AuthGate(REPLAY_AUTH_KEY)])
    result = await replayer.replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


def test_every_recorded_start_carries_a_stamped_identity_and_no_credential() -> None:
    """The paths new workflows take: a start (a person's, a child's, a continued run's) carries the
    identity the door or the control plane stamped, and no token or proof is anywhere in history."""
    for path in FILES:
        data = json.loads(path.read_text())
        fields = data["events"][0]["workflowExecutionStartedEventAttributes"].get("header", {}).get("fields", {})
        assert "fabric-identity" in fields, f"{path.name}: a start without an identity"
        identity = json.loads(base64.b64decode(fields["fabric-identity"]["data"]))
        assert set(identity) <= {"sub", "role", "team", "pool", "tid", "exp", "door"}, identity
        assert "fabric-auth" not in path.read_text(), f"{path.name}: a proof in history"


def test_every_workflow_type_and_scenario_is_recorded() -> None:
    names = {p.stem for p in FILES}
    assert {"workload-succeeded", "workload-failed-over", "workload-cancelled",
            "workload-queued-then-placed", "workload-drained", "workload-pii-waits",
            "workload-preempted", "workload-preemptor", "workload-reclaimed", "workload-step-failed",
            "workload-approved", "workload-denied", "watcher-onprem"} <= names
    assert {"control-register-pool", "control-drain", "control-simulate"} <= names
    assert Counter(workflow_type(p) for p in FILES).keys() == {
        "WorkloadWorkflow", "ControlWorkflow", "PoolMonitorWorkflow", "AdmissionWorkflow", "PoolWatcherWorkflow",
        "EndpointWorkflow"}
    # The paths of the admission design: sleeping until `admitted`, a class change while waiting, a
    # preemption and the re-queue, and the admission loop's continue-as-new.
    signals = Counter(e["workflowExecutionSignaledEventAttributes"]["signalName"]
                      for p in FILES if p.stem.startswith("workload-")
                      for e in json.loads(p.read_text())["events"] if "workflowExecutionSignaledEventAttributes" in e)
    assert signals["admitted"] >= 8 and signals["preempt"] >= 1 and signals["relocate"] >= 2
    assert signals["job_state"] >= 8  # the pool watcher's news (running, ended, reclaimed)
    updates = [e for e in json.loads((HISTORIES / "workload-queued-then-placed.json").read_text())["events"]
               if e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED"]
    assert updates, "the recorded class change (update set_priority) is missing"
    for name in ("workload-approved", "workload-denied"):  # a person's answer (update approve) replays too
        answers = [e for e in json.loads((HISTORIES / f"{name}.json").read_text())["events"]
                   if e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED"]
        assert answers, f"{name}: the recorded approval answer is missing"
    loop = [e["eventType"] for p in FILES if p.stem.startswith("admission-")
            for e in json.loads(p.read_text())["events"]]
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW" in loop
    # The monitor's recorded runs cover a transition both ways and a continue-as-new.
    monitor_events = [e for p in FILES if p.stem.startswith("monitor-")
                      for e in json.loads(p.read_text())["events"]]
    events = Counter(e["eventType"] for e in monitor_events)
    assert events["EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"] >= 1
    activities = Counter(e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
                         for e in monitor_events if "activityTaskScheduledEventAttributes" in e)
    assert activities["control_move_off"] >= 1  # every workload told to move, by one activity
    # ...the copies left behind stopped in one batch, and the reconciler on recovery: the pool's
    # jobs, the comparison, the orphans removed (one batch again).
    assert activities["pool_job_states"] >= 1 and activities["control_reconcile"] >= 1
    assert activities["cancel_jobs"] >= 1 and activities["cancel_job"] == 0


def test_the_failover_s_requeue_path_is_recorded() -> None:
    """A failover re-queues the pool's work itself: the recorded moved workload is told (`relocate`
    naming the attempt queued for it) and sends no enqueue of its own after that."""
    events = json.loads((HISTORIES / "workload-failed-over.json").read_text())["events"]
    relocate = next(i for i, e in enumerate(events)
                    if e.get("workflowExecutionSignaledEventAttributes", {}).get("signalName") == "relocate")
    payload = events[relocate]["workflowExecutionSignaledEventAttributes"]["input"]["payloads"][0]["data"]
    told = json.loads(base64.b64decode(payload))
    assert told["attempt"] == 1 and told["requeued_attempt"] == 2, told
    markers = [e for e in events[relocate:] if e["eventType"] == "EVENT_TYPE_MARKER_RECORDED"
               and "enqueue_workload" in json.dumps(e)]
    assert not markers, "the moved workload enqueued its next attempt itself"


def test_the_endpoint_s_paths_are_recorded() -> None:
    """Deployed, scaled by the gateway's samples, the replicas' reports, scale / update / delete (updates),
    replicas started as children and stopped by cancel, and a continue-as-new."""
    events = [e for p in FILES if p.stem.startswith("endpoint-") for e in json.loads(p.read_text())["events"]]
    kinds = Counter(e["eventType"] for e in events)
    signals = Counter(e["workflowExecutionSignaledEventAttributes"]["signalName"] for e in events
                      if "workflowExecutionSignaledEventAttributes" in e)
    updates = Counter(e["workflowExecutionUpdateAcceptedEventAttributes"]["acceptedRequest"]["input"]["name"]
                      for e in events if "workflowExecutionUpdateAcceptedEventAttributes" in e)
    assert signals["metrics"] >= 5 and signals["replica"] >= 5
    assert {"scale", "update", "delete"} <= set(updates)
    assert kinds["EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED"] >= 3
    assert kinds["EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED"] >= 2
    assert kinds["EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW"] >= 1
    replica = [e["eventType"] for e in json.loads((HISTORIES / "workload-endpoint-replica.json").read_text())["events"]]
    assert "EVENT_TYPE_MARKER_RECORDED" in replica  # its reports to the endpoint (local activities)
    assert replica[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED"  # stopped by its endpoint
