"""Errors the SDK raises for user mistakes and unreachable servers (the CLI prints them in one line).

They live in `inferofabric.errors` (the fabric's one failure vocabulary, at the bottom of the
package); this module keeps `from inferofabric.sdk.errors import ...` working."""

from inferofabric.errors import (
    AlreadyExists,
    FabricError,
    FabricNotFound,
    FabricUnreachable,
    InvalidInput,
    NoAnswer,
    PermissionDenied,
    WorkloadExists,
    WorkloadNotFound,
)

__all__ = [
    "AlreadyExists", "FabricError", "FabricNotFound", "FabricUnreachable", "InvalidInput", "NoAnswer",
    "PermissionDenied", "WorkloadExists", "WorkloadNotFound",
]
