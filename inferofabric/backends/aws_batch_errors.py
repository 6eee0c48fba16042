"""How the AWS Batch back end sorts boto3/botocore errors into the fabric's (pure: no API calls).

Every error is one of: transient (BackendUnavailable, or BackendThrottled when AWS asks to slow
down), refused for good (JobRejected for a launch) or misconfigured (BackendConfigError: bad
credentials, a missing permission on a call the fabric makes for itself). Temporal's retry policy
retries the first kind only, so this sorting decides what is retried; it lives apart from
aws_batch.py so it can be read and tested on its own.
"""

from __future__ import annotations

import re

import botocore.exceptions

from inferofabric.backends.base import (
    BackendConfigError,
    BackendError,
    BackendThrottled,
    BackendUnavailable,
    JobRejected,
)

_THROTTLING_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure",
    "ServerException", "RequestTimeout", "RequestTimeoutException",
}
_AUTH_CODES = {
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "AuthFailure",
    "UnauthorizedOperation", "InvalidSignatureException", "MissingAuthenticationToken",
}
CONNECTION_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ProxyConnectionError,
    botocore.exceptions.HTTPClientError,
)
CREDENTIAL_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.ProfileNotFound,
    botocore.exceptions.NoRegionError,
)


def _client_error_kind(error: botocore.exceptions.ClientError) -> str:
    """'unavailable', 'auth' or 'invalid', from the error code and the HTTP status."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    http_status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _THROTTLING_CODES or http_status == 429:
        return "throttled"
    if http_status >= 500:
        return "unavailable"
    if code in _AUTH_CODES or http_status in (401, 403) or code in ("401", "403"):
        return "auth"
    return "invalid"


def translate_error(error: Exception, action: str, refused: type[BackendError] = JobRejected) -> BackendError:
    """Turn a boto3/botocore exception into the fabric's error types.

    `refused` is what a permanent refusal becomes: JobRejected for a launch, BackendConfigError
    where the request is the fabric's own (a status look-up refused for permissions means the pool's
    credentials are wrong, not the job).
    """
    if isinstance(error, BackendError):
        return error
    if isinstance(error, CONNECTION_ERRORS):
        return BackendUnavailable(f"AWS Batch {action}: endpoint unreachable: {error}")
    if isinstance(error, CREDENTIAL_ERRORS):
        return BackendConfigError(f"AWS Batch {action}: credentials: {error}")
    if isinstance(error, botocore.exceptions.ClientError):
        kind = _client_error_kind(error)
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        if kind == "throttled":
            return BackendThrottled(f"AWS Batch {action}: throttled: {_short(message)}")
        if kind == "unavailable":
            return BackendUnavailable(f"AWS Batch {action}: {message}")
        if kind == "auth":
            return refused(f"AWS Batch {action}: permission denied: {_short(message)}")
        return refused(f"AWS Batch {action}: {_short(message)}")
    if isinstance(error, botocore.exceptions.BotoCoreError):
        return BackendUnavailable(f"AWS Batch {action}: {error}")
    raise error


def _short(message: str) -> str:
    """moto (and some AWS front doors) put an XML document in the message; keep the readable part."""
    match = re.search(r"<Message>(.*?)</Message>", message, re.S)
    return match.group(1) if match else message


def error_code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
