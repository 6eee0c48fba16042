"""A pool's cloud credentials can come from the fabric's sealed secret store, not only from the
worker's environment (the environment still wins where it is set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferofabric.activities.jobs import JobActivities
from inferofabric.backends.base import BackendConfigError
from inferofabric.models.pool import PoolSpec
from inferofabric.secrets import seal
from inferofabric.store.db import get_store


def test_aws_keys_from_the_sealed_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'fabric.db'}"
    store = get_store(url)
    store.put_secret("aws-key-id", seal("AKIA-FROM-STORE", home=tmp_path))
    pool = PoolSpec.model_validate({
        "name": "aws-east", "location": "cloud", "backend": "aws-batch", "region": "us-east-1",
        "aws": {"job_queue": "q", "credentials": {"access_key_id_secret": "aws-key-id",
                                                  "secret_access_key_secret": "aws-secret"}}})
    backend = JobActivities(tmp_path, url, store=True)._backend(pool)
    assert backend.secret_resolver("aws-key-id") == "AKIA-FROM-STORE"
    monkeypatch.setenv("FABRIC_SECRET_AWS_KEY_ID", "AKIA-FROM-ENV")
    assert backend.secret_resolver("aws-key-id") == "AKIA-FROM-ENV"
    with pytest.raises(BackendConfigError, match="neither in the environment nor in the fabric's secret store"):
        backend.secret_resolver("aws-secret")
