"""boto3 sessions for an AWS Batch pool's credentials, and the client settings of its calls.

One place decides how the pool's `aws.credentials` become a boto3 session (a profile, two keys
looked up by secret name, an STS role that refreshes itself, or boto3's default chain) and how
patient each client is: safe calls get two retries, submit_job none (a read timeout must not
submit a second copy). aws_batch.py builds its clients from these; no secret value is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials

from inferofabric.backends.aws_batch_config import AwsBatchConfig
from inferofabric.backends.aws_batch_errors import CREDENTIAL_ERRORS, translate_error
from inferofabric.backends.base import BackendConfigError

_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 5}
# Calls that are safe to repeat get two retries; submit_job gets none (see aws_batch.py's docstring).
CLIENT_CONFIG = Config(**_TIMEOUTS, retries={"max_attempts": 2, "mode": "standard"})
SUBMIT_CONFIG = Config(**_TIMEOUTS, retries={"total_max_attempts": 1, "mode": "standard"})


def build_session(
    pool_name: str, region: str, config: AwsBatchConfig, secret_resolver: Callable[[str], str]
) -> boto3.Session:
    """A boto3 session for the configured credentials method; never logs a secret value."""
    creds = config.credentials
    try:
        if creds.method == "profile":
            return boto3.Session(profile_name=creds.profile, region_name=region)
        if creds.method == "keys":
            assert creds.access_key_id_secret and creds.secret_access_key_secret
            return boto3.Session(
                aws_access_key_id=secret_resolver(creds.access_key_id_secret),
                aws_secret_access_key=secret_resolver(creds.secret_access_key_secret),
                region_name=region,
            )
        if creds.method == "role":
            return _assumed_role_session(pool_name, region, config)
        return boto3.Session(region_name=region)
    except CREDENTIAL_ERRORS as error:
        raise BackendConfigError(f"pool {pool_name!r}: AWS credentials: {error}") from None


def _assumed_role_session(pool_name: str, region: str, config: AwsBatchConfig) -> boto3.Session:
    """A session whose credentials come from STS AssumeRole and refresh themselves before expiry."""
    creds = config.credentials
    base = boto3.Session(region_name=region)
    sts = base.client("sts", region_name=region, endpoint_url=config.endpoint_url, config=CLIENT_CONFIG)

    def fetch() -> dict[str, str]:
        kwargs: dict[str, Any] = {
            "RoleArn": creds.role_arn,
            "RoleSessionName": f"inferofabric-{pool_name}"[:64],
        }
        if creds.external_id:
            kwargs["ExternalId"] = creds.external_id
        try:
            answer = sts.assume_role(**kwargs)["Credentials"]
        except Exception as error:
            raise translate_error(error, "assume role", refused=BackendConfigError) from None
        return {
            "access_key": answer["AccessKeyId"],
            "secret_key": answer["SecretAccessKey"],
            "token": answer["SessionToken"],
            "expiry_time": answer["Expiration"].isoformat(),
        }

    botocore_session = base._session
    botocore_session._credentials = DeferredRefreshableCredentials(
        refresh_using=fetch, method="sts-assume-role"
    )
    return boto3.Session(botocore_session=botocore_session, region_name=region)
