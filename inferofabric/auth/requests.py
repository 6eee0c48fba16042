"""What a workflow start asks for, read from its input as the gate and the front door both see it
(the door from the JSON payload, the gate from the decoded arguments): one reading, two checks."""

from __future__ import annotations

from typing import Any

from inferofabric.auth.roles import Request


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def start_request(workflow_type: str, workflow_id: str, args: Any) -> Request:
    first = args[0] if args else None
    if workflow_type == "ControlWorkflow":
        arguments = _field(first, "args") or {}
        if not isinstance(arguments, dict):
            arguments = {}
        spec: Any = arguments.get("spec") if isinstance(arguments.get("spec"), dict) else {}
        subject = arguments.get("name") or spec.get("name") or arguments.get("pool") or ""
        op = _field(first, "op") or "?"
        team = None
        if op == "put_secret":  # whose secret it is: a team's (a member may set its own), or the fabric's ("")
            owner = arguments.get("team")
            team = "" if arguments.get("fabric") else owner if isinstance(owner, str) else None
        return Request(action=f"control:{op}", target=workflow_id, subject=str(subject), team=team)
    workload: Any = _field(first, "spec") if workflow_type in ("WorkloadWorkflow", "EndpointWorkflow") else None
    team = _field(workload, "team")
    return Request(action=f"start:{workflow_type}", target=workflow_id, team=team if isinstance(team, str) else None)
