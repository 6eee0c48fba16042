"""Reading the fabric's YAML files (pool, workload, policy, fabric.yaml) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from inferofabric import safe_yaml
from inferofabric.models.common import Location, validation_message
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.safe_yaml import FileError

__all__ = ["FabricConfig", "FileError", "default_fabric_config", "load_documents", "load_fabric_config", "parse",
           "validation_message"]


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every YAML document in the file ("-" reads stdin); a top-level list counts as several.

    Read with the limits of inferofabric/safe_yaml.py (size, nesting depth, alias expansion)."""
    import sys

    try:
        if str(path) == "-":
            text = sys.stdin.read(safe_yaml.MAX_BYTES + 1)
        else:
            with Path(path).expanduser().open(encoding="utf-8", errors="surrogateescape") as file:
                text = file.read(safe_yaml.MAX_BYTES + 1)  # never more than the limit into memory
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FileError(f"{path}: is a directory") from None
    except OSError as error:
        raise FileError(f"{path}: {error.strerror}") from None
    documents = [d for d in safe_yaml.load_all(text, str(path)) if d is not None]
    flat: list[Any] = []
    for document in documents:
        flat.extend(document if isinstance(document, list) else [document])
    for document in flat:
        if not isinstance(document, dict):
            raise FileError(f"{path}: expected a mapping, got {type(document).__name__}")
    if not flat:
        raise FileError(f"{path}: the file is empty")
    return flat


def parse(model: type[BaseModel], document: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise FileError(validation_message(error, source)) from None
    except ValueError as error:  # expression errors raised while validating a policy
        raise FileError(f"{source}: {error}") from None


class FabricConfig(BaseModel):
    """`fabric.yaml`, read by `fabric up` from the working directory."""

    pools: list[PoolSpec] = Field(default_factory=list)
    policy: PlacementPolicy | None = None


def load_fabric_config(path: Path) -> FabricConfig:
    documents = load_documents(path)
    if len(documents) != 1:
        raise FileError(f"{path}: expected one document with 'pools:' and 'policy:'")
    return parse(FabricConfig, documents[0], str(path))  # type: ignore[no-any-return]


def default_fabric_config() -> FabricConfig:
    """The documented default: a simulated on-prem pool and simulated cloud pools in two regions."""
    from inferofabric.policies.engine import default_policy

    return FabricConfig(
        pools=[
            PoolSpec(name="onprem-dc1", location=Location.ON_PREM, backend="simulated", region="dc1",
                     gpus={"A100": 8}, price_per_gpu_hour={"A100": 1.20}, labels={"site": "dc1"}),
            PoolSpec(name="cloud-use1", location=Location.CLOUD, backend="simulated", region="us-east-1",
                     gpus={"A100": 64, "H100": 16}, price_per_gpu_hour={"A100": 4.10, "H100": 6.98}),
            PoolSpec(name="cloud-euw1", location=Location.CLOUD, backend="simulated", region="eu-west-1",
                     gpus={"A100": 64}, price_per_gpu_hour={"A100": 4.30}),
        ],
        policy=default_policy(),
    )
