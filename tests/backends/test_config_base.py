"""Every back end's pool settings share one base, StrictModel, and refuse a key they do not know.

A typo in a pool file (`job_qeue:`, `namspace:`) must not silently change where or how work runs:
each back end's `<backend>:` block, and every block nested in it (credentials, ...), forbids extra
keys, and the refusal reads as one line naming the key (what `fabric pool set` prints).
"""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from inferofabric.backends.base import BackendConfigError
from inferofabric.backends.registry import BACKENDS, backend_class
from inferofabric.config_file import validation_message
from inferofabric.models.common import StrictModel
from inferofabric.models.pool import BACKEND_CONFIG_FIELD, PoolSpec

# The smallest valid block of each back end, and a nested block (path of keys) to put a typo into.
VALID: dict[str, dict[str, Any]] = {
    "local": {"discover_gpus": False},
    "simulated": {},
    "kubernetes": {"namespace": "gpu"},
    "aws-batch": {"job_queue": "gpu-queue", "credentials": {"profile": "default"}},
    "gcp-batch": {"project": "p", "credentials": {"anonymous": True}},
    "azure-batch": {
        "account_url": "https://acct.westeurope.batch.azure.com", "pool_id": "gpu",
        "credentials": {"entra": {"tenant_id": "t", "client_id": "c", "client_secret_secret": "s"}},
    },
}
NESTED: dict[str, tuple[str, ...]] = {
    "aws-batch": ("credentials",),
    "gcp-batch": ("credentials",),
    "azure-batch": ("credentials", "entra"),
}
def _kinds(**marks: pytest.MarkDecorator) -> list[Any]:
    return [pytest.param(kind, marks=marks[kind.replace("-", "_")]) if kind.replace("-", "_") in marks else kind
            for kind in sorted(BACKENDS)]


def _pool(kind: str, block: dict[str, Any]) -> dict[str, Any]:
    return {"name": "typo", "location": "on-prem" if kind in ("local", "kubernetes") else "cloud",
            "backend": kind, "region": "local" if kind in ("local", "simulated", "kubernetes") else "us-east-1",
            "gpus": {"A100": 1}, BACKEND_CONFIG_FIELD[kind]: block}


def _refusal(kind: str, block: dict[str, Any]) -> str:
    """The one message an operator sees when the pool (or its back end's block) is refused."""
    try:
        backend_class(kind).parse_config(PoolSpec.model_validate(_pool(kind, block)))
    except ValidationError as error:
        return validation_message(error)
    except BackendConfigError as error:
        return str(error)
    pytest.fail(f"{kind}: a block with an unknown key was accepted: {block}")


def _with_typo(kind: str, nested: tuple[str, ...] = ()) -> dict[str, Any]:
    block = {**VALID[kind]}
    where = block
    for key in nested:
        where[key] = {**where[key]}
        where = where[key]
    where["colour_of_the_bikeshed"] = "green"
    return block


def _models(model: type[BaseModel]) -> set[type[BaseModel]]:
    """The model and every model its fields hold (through unions, lists and dicts)."""
    found = {model}

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.update(_models(annotation))
            return
        for argument in typing.get_args(annotation):
            walk(argument)

    for field in model.model_fields.values():
        walk(field.annotation)
    return found


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_valid_blocks_are_accepted(kind: str) -> None:
    """The blocks the other tests put typos into are valid as they stand."""
    backend_class(kind).parse_config(PoolSpec.model_validate(_pool(kind, VALID[kind])))


@pytest.mark.parametrize("kind", _kinds())
def test_every_settings_model_is_a_strict_model(kind: str) -> None:
    model = backend_class(kind).config_model
    assert model is not None, f"{kind} has no settings model"
    loose = sorted(m.__name__ for m in _models(model) if not issubclass(m, StrictModel))
    assert not loose, f"{kind}: {loose} do not derive from StrictModel"
    assert model.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("kind", _kinds())
def test_an_unknown_key_is_refused(kind: str) -> None:
    assert "colour_of_the_bikeshed" in _refusal(kind, _with_typo(kind))


@pytest.mark.parametrize("kind", sorted(NESTED))
def test_an_unknown_key_in_a_nested_block_is_refused(kind: str) -> None:
    assert "colour_of_the_bikeshed" in _refusal(kind, _with_typo(kind, NESTED[kind]))


@pytest.mark.parametrize("kind", _kinds())
def test_the_refusal_is_one_line(kind: str) -> None:
    message = _refusal(kind, _with_typo(kind))
    assert "\n" not in message, message
    assert "colour_of_the_bikeshed" in message


def test_the_strict_base_forbids_extras_and_non_finite_numbers() -> None:
    """What every settings model inherits (a union of credential blocks relies on `extra=forbid`)."""
    config = StrictModel.model_config
    assert config.get("extra") == "forbid" and config.get("allow_inf_nan") is False
