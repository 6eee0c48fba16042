"""A `local` job runs with least privilege: the workload's env and the fabric's FABRIC_* variables,
a minimal PATH/HOME — never the worker's environment (its keys, the database URL, cloud credentials)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inferofabric.activities.jobs import fabric_env
from inferofabric.backends.base import JobRequest, JobState
from inferofabric.backends.local import LocalBackend
from inferofabric.models import WorkloadSpec
from inferofabric.models.messages import LaunchInput
from inferofabric.models.pool import PoolSpec


def test_a_local_job_cannot_read_the_workers_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_SECRET_KEY", "worker-sealing-key")
    monkeypatch.setenv("FABRIC_DATABASE_URL", "postgresql://fabric:pw@db/fabric")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-credential")
    pool = PoolSpec(name="here", location="on-prem", backend="local", local={"discover_gpus": False})
    spec = WorkloadSpec.model_validate({"name": "peek", "team": "ads", "image": "none", "command": ["env"]})
    launch = LaunchInput(pool=pool, workload_id="peek", attempt=3, job_id="peek-a3", spec=spec)
    env = {"MODEL": "small", **fabric_env(launch, tmp_path)}
    backend = LocalBackend(pool, tmp_path)
    backend.launch(JobRequest(job_id="peek-a3", workload_id="peek", attempt=3, spec=spec, env=env))
    deadline = time.monotonic() + 10
    while backend.status("peek-a3").state != JobState.SUCCEEDED:
        assert time.monotonic() < deadline, backend.status("peek-a3")
        time.sleep(0.1)
    seen = dict(line.split("=", 1) for line in backend.logs("peek-a3").splitlines() if "=" in line)
    assert "worker-sealing-key" not in str(seen) and "postgresql://" not in str(seen)
    assert "cloud-credential" not in str(seen)
    assert not {"FABRIC_SECRET_KEY", "FABRIC_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"} & seen.keys()
    assert seen["MODEL"] == "small" and seen["FABRIC_WORKLOAD_ID"] == "peek" and seen["FABRIC_ATTEMPT"] == "3"
    assert seen["FABRIC_CHECKPOINT_DIR"] == f"{tmp_path}/checkpoints/ads/peek"
    assert seen["PATH"] == "/usr/local/bin:/usr/bin:/bin"
