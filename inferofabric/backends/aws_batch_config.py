"""The AWS Batch back end's configuration (pure: no API calls).

A pool's `aws:` section (AwsBatchConfig) and how it authenticates (AwsCredentials), plus the default
secret resolver that turns a credentials reference into a value. Kept apart from aws_batch.py so
the pool file's schema can be read, validated and documented without boto3's clients in view, the
way kubernetes_manifests.py holds KubernetesConfig.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field, model_validator

from inferofabric.backends.base import BackendConfigError
from inferofabric.models.common import StrictModel

DEFAULT_LOG_GROUP = "/aws/batch/job"


def env_secret_resolver(name: str) -> str:
    """Default secret resolver: the value of `FABRIC_SECRET_<NAME>` (upper case, non-alphanumerics -> `_`).

    It exists so a pool file can name a secret without the control plane being wired up yet; the
    control plane replaces it by setting `backend.secret_resolver`.
    """
    variable = "FABRIC_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    if variable == "FABRIC_SECRET_KEY" or variable.startswith("FABRIC_SECRET_KEY_"):
        # Those hold the keys of inferofabric.secrets (sealed secrets): never hand them out.
        raise BackendConfigError(f"secret name {name!r} is reserved (it maps to {variable})")
    try:
        return os.environ[variable]
    except KeyError:
        raise BackendConfigError(f"secret {name!r} is not set (expected variable {variable})") from None


class AwsCredentials(StrictModel):
    """How to authenticate: one of a profile, two secret references, a role to assume, or nothing.

    Nothing at all means boto3's default chain (environment, instance profile, SSO, ...).
    """

    profile: str | None = None
    access_key_id_secret: str | None = None
    secret_access_key_secret: str | None = None
    role_arn: str | None = None
    external_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one_method(self) -> AwsCredentials:
        keys = (self.access_key_id_secret, self.secret_access_key_secret)
        if any(keys) and not all(keys):
            raise ValueError("access_key_id_secret and secret_access_key_secret go together")
        methods = [bool(self.profile), all(keys), bool(self.role_arn)]
        if sum(methods) > 1:
            raise ValueError("credentials: use one of profile, access_key_id_secret/..., role_arn")
        if self.external_id and not self.role_arn:
            raise ValueError("credentials.external_id only applies with role_arn")
        return self

    @property
    def method(self) -> Literal["profile", "keys", "role", "default"]:
        if self.profile:
            return "profile"
        if self.access_key_id_secret:
            return "keys"
        if self.role_arn:
            return "role"
        return "default"


class AwsBatchConfig(StrictModel):
    """The pool file's `aws:` sub-document. Unknown keys are errors (a typo must not go unnoticed)."""

    job_queue: str = Field(min_length=1)
    compute_environment: str | None = None
    credentials: AwsCredentials = Field(default_factory=AwsCredentials)
    endpoint_url: str | None = None
    job_role_arn: str | None = None
    log_group: str = DEFAULT_LOG_GROUP
