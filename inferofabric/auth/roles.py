"""Who may do what. One table, read by the gate (workers) and by the docs (docs/security.md).

- `admin`: everything: pools, policy (quotas live there), secrets, and all the rest;
- `operator`: drain, cordon, reclaim, reconcile, fail/restore simulated pools, cancel anyone's work;
- `member` of team T: submit, cancel and re-prioritise T's workloads, and deploy, scale, update and
  delete T's endpoints, only;
- `system`: the fabric's own workers (admission, watchers, monitors): the internal signals;
- `agent` of pool P: its watcher's `job_state` reports (the door lets it poll `pool.P` only).
Reads (status, list, queue, pool list, logs) need any valid identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferofabric.auth.tokens import AGENT, SYSTEM, AuthError, Identity

ADMIN_OPS = {"register_pool", "remove_pool", "set_policy", "put_secret"}
OPERATOR_OPS = {"cordon", "drain", "simulate", "reconcile"}
# A member may ask for these; the control activity then allows its own team's only (a member stores
# its team's secrets: activities/control.py, auth/readers.py authorize_put_secret).
MEMBER_CONTROL_OPS = {"put_secret"}
# Reads (not written to the audit log). `audit`: everyone's rows for operators and admins, a member
# its own team's (the control activity scopes it: auth/readers.py audit_scope).
READ_OPS = {"list_pools", "pool_spec", "get_policy", "list_secrets", "decisions", "queue", "logs", "cost",
            "budgets", "audit"}
UNAUDITED_OPS = READ_OPS
INTERNAL_WORKFLOWS = {"PoolMonitorWorkflow", "PoolWatcherWorkflow", "AdmissionWorkflow"}
# `replica`: a replica's report to its endpoint; `metrics`: the gateway's measurements (it runs with
# the fabric's own identity: in `fabric up`, the stack's).
INTERNAL_SIGNALS = {"relocate", "admitted", "preempt", "waiting", "job_state", "replica", "metrics"}
AGENT_SIGNALS = {"signal:job_state"}  # what a pool's agent sends (its watcher: a job's state changed)
OPEN_SIGNALS = {"wake"}  # only makes the admission loop look again: harmless from anyone
TEAM_ACTIONS = {"signal:request_cancel", "update:cancel", "update:set_priority", "update:scale", "update:update",
                "update:delete"}
TEAM_STARTS = {"start:WorkloadWorkflow", "start:EndpointWorkflow"}  # a team's own work: its members may


@dataclass(frozen=True)
class Request:
    """One request as the gate sees it: `action` like `start:WorkloadWorkflow`, `signal:relocate`,
    `update:cancel`, or `control:drain`; `team` the workload's team where there is one."""

    action: str
    target: str  # the workflow the request goes to (what the proof is bound to)
    team: str | None = None
    subject: str = ""  # what it acts on, for the audit log (a pool, a secret); the target when empty

    @property
    def mutating(self) -> bool:
        return not (self.action.startswith("control:") and self.action.removeprefix("control:") in UNAUDITED_OPS)


def authorize(identity: Identity, request: Request) -> None:
    """Raise AuthError unless `identity` may make `request`."""
    role, action = identity.role, request.action
    if role in ("admin", SYSTEM):
        return
    if role == AGENT:  # a pool's agent: its watcher's reports on the jobs of its pool, nothing else
        if action in AGENT_SIGNALS:
            return
        raise AuthError(f"{identity.describe()} may not {action}: an agent token serves its pool only")
    if action.startswith("control:"):
        op = action.removeprefix("control:")
        if op in MEMBER_CONTROL_OPS and role == "member":
            if request.team in (None, identity.team):
                return
            whose = "the fabric's own secret" if request.team == "" else f"a secret of team {request.team!r}"
            raise AuthError(f"{identity.describe()} may not set {whose}")
        if op in READ_OPS or (op in OPERATOR_OPS and role == "operator"):
            return
        needed = "admin" if op in ADMIN_OPS else "operator or admin"
        raise AuthError(f"{identity.describe()} may not {op}: that needs the {needed} role")
    if action in TEAM_STARTS:
        if role == "member" and identity.team == request.team:
            return
        what = "deploy endpoints" if action == "start:EndpointWorkflow" else "submit work"
        raise AuthError(f"{identity.describe()} may not {what} for team {request.team!r}")
    if action in ("signal:reconcile", "update:approve") and role == "operator":
        return
    if action in TEAM_ACTIONS:
        if role == "operator" or (role == "member" and identity.team == request.team):
            return
        raise AuthError(f"{identity.describe()} may not {action.split(':', 1)[1].replace('_', ' ')} "
                        f"workload {request.target!r} of team {request.team!r}")
    raise AuthError(f"{identity.describe()} may not {action} (the fabric's internal request)")
