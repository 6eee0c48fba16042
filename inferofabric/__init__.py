"""InferoFabric: one control plane, API and policy over on-prem and cloud GPU pools, on Temporal."""

__version__ = "0.1.0"
__all__ = [
    "DataClassification", "FabricClient", "Health", "Location", "PlacementPolicy", "PoolSpec", "SyncFabricClient",
    "WorkloadHandle", "WorkloadSpec", "WorkloadState", "WorkloadStatus", "__version__", "run",
]


_MODELS = ("DataClassification", "Health", "Location", "PlacementPolicy", "PoolSpec", "WorkloadSpec", "WorkloadState",
           "WorkloadStatus")


def __getattr__(name: str) -> object:
    # Imported on first use so `import inferofabric` (and with it every `fabric` command, `--help`
    # included) stays light: the models pull in pydantic's schema building, the client the Temporal SDK.
    if name in _MODELS:
        from inferofabric import models

        return getattr(models, name)
    if name in ("FabricClient", "WorkloadHandle"):
        from inferofabric.sdk import client

        return getattr(client, name)
    if name == "run":
        from inferofabric.sdk.script import run

        return run
    if name == "SyncFabricClient":
        from inferofabric.sdk.sync import SyncFabricClient

        return SyncFabricClient
    raise AttributeError(name)
