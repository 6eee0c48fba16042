"""Reading the fabric's YAML files (pool, workload, policy, fabric.yaml) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from inferofabric.models.common import Location
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec


class FileError(ValueError):
    """A file that cannot be read or does not describe what it should (exit code 2 in the CLI)."""


def validation_message(error: ValidationError, source: str = "") -> str:
    parts = []
    for item in error.errors()[:6]:
        where = ".".join(str(p) for p in item["loc"]) or "document"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = f" (+{len(error.errors()) - 6} more)" if len(error.errors()) > 6 else ""
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(parts) + more


def load_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every YAML document in the file ("-" reads stdin); a top-level list counts as several."""
    import sys

    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).expanduser().read_text()
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except OSError as error:
        raise FileError(f"{path}: {error.strerror}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise FileError(f"{path}: not valid YAML{where}: {problem}") from None
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
