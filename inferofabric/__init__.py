"""InferoFabric: one control plane, API and policy over on-prem and cloud GPU pools, on Temporal."""

from inferofabric.models import (
    DataClassification,
    Health,
    Location,
    PlacementPolicy,
    PoolSpec,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)

__version__ = "0.1.0"
__all__ = [
    "DataClassification", "FabricClient", "Health", "Location", "PlacementPolicy", "PoolSpec", "SyncFabricClient",
    "WorkloadHandle", "WorkloadSpec", "WorkloadState", "WorkloadStatus", "__version__",
]


def __getattr__(name: str) -> object:
    # The client pulls in the Temporal SDK; import it on first use so `import inferofabric` stays light.
    if name in ("FabricClient", "WorkloadHandle"):
        from inferofabric.sdk import client

        return getattr(client, name)
    if name == "SyncFabricClient":
        from inferofabric.sdk.sync import SyncFabricClient

        return SyncFabricClient
    raise AttributeError(name)
