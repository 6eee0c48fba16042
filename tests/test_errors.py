"""The fabric's one failure vocabulary (inferofabric/errors.py): every ApplicationError type it raises
is a FailureType, NON_RETRYABLE is derived from it, and the SDK turns each type into its error
class through one table, and back."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, WorkflowAlreadyStartedError

import inferofabric.sdk.errors as sdk_errors
from inferofabric import errors
from inferofabric.activities.errors import backend_failure, typed_errors
from inferofabric.backends import base
from inferofabric.errors import ERROR_CLASSES, NON_RETRYABLE, FabricError, FailureType, error_for
from inferofabric.sdk.failures import failure_error, raise_if_denied, root_message, root_type

ROOT = Path(__file__).resolve().parents[1]


def test_non_retryable_is_the_enums_final_members_in_the_order_retry_policies_always_had() -> None:
    assert [kind.value for kind in FailureType if kind.final] == NON_RETRYABLE
    assert NON_RETRYABLE == ["JobRejected", "BackendConfigError", "InvalidInput", "NotFound", "SecretError"]
    assert all(type(kind) is str for kind in NON_RETRYABLE)  # what a RetryPolicy records, as before


def test_the_table_maps_every_failure_type_to_a_class_and_back() -> None:
    assert set(ERROR_CLASSES) == set(FailureType)
    for kind in FailureType:
        error = error_for(kind.value, "the message")
        assert type(error) is ERROR_CLASSES[kind] and issubclass(type(error), FabricError)
        assert str(error) == "the message" and error.failure_type is kind
    assert type(error_for("InvalidInput", "m")) is errors.InvalidInput
    assert type(error_for("NotFound", "m")) is errors.FabricNotFound
    assert type(error_for("PermissionDenied", "m")) is errors.PermissionDenied
    for unknown in (None, "Boom", "WorkflowAlreadyStartedError"):
        error = error_for(unknown, "m")
        assert type(error) is FabricError and error.failure_type is None


def test_the_errors_module_is_a_leaf_and_the_sdk_re_exports_its_classes() -> None:
    tree = ast.parse((ROOT / "inferofabric" / "errors.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith("inferofabric")], imported
    for name in sdk_errors.__all__:
        assert getattr(sdk_errors, name) is getattr(errors, name)
    from inferofabric.connection import FabricUnreachable
    from inferofabric.store.db import NotFound

    assert FabricUnreachable is errors.FabricUnreachable and NotFound is errors.NotFound


def test_every_application_error_the_fabric_raises_names_a_failure_type() -> None:
    """No bare type strings: each `ApplicationError(..., type=...)` in the package uses the enum."""
    bare = []
    folders = ["inferofabric", "workflows", "activities", "worker", "policies"]
    for path in sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == \
                    "ApplicationError":
                for keyword in node.keywords:
                    if keyword.arg == "type" and isinstance(keyword.value, ast.Constant):
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare, bare


def test_every_back_end_error_class_is_a_failure_type_and_keeps_its_name() -> None:
    classes, todo = [], [base.BackendError]
    while todo:
        cls = todo.pop()
        classes.append(cls)
        todo.extend(cls.__subclasses__())
    for cls in classes:
        assert backend_failure(cls("x")) == cls.__name__  # what typed_errors always sent
        assert FailureType(cls.__name__).final == (not cls.retryable)

    class Unnamed(base.JobRejected):
        pass

    assert backend_failure(Unnamed("x")) is FailureType.JOB_REJECTED


@pytest.mark.parametrize(("raised", "kind", "non_retryable"), [
    (base.JobRejected("bad image"), "JobRejected", True),
    (base.BackendUnavailable("503"), "BackendUnavailable", False),
    (errors.NotFound("no pool named 'x'"), "NotFound", True),
    (ValueError("bad"), "InvalidInput", True),
])
def test_typed_errors_sends_the_same_type_strings(raised: Exception, kind: str, non_retryable: bool) -> None:
    @typed_errors
    async def activity() -> None:
        raise raised

    with pytest.raises(ApplicationError) as caught:
        asyncio.run(activity())
    assert caught.value.type == kind and caught.value.non_retryable is non_retryable


def _failed(kind: str, message: str) -> WorkflowFailureError:
    cause = ActivityError("activity failed", scheduled_event_id=1, started_event_id=2, identity="w",
                          activity_type="a", activity_id="1", retry_state=RetryState.NON_RETRYABLE_FAILURE)
    cause.__cause__ = ApplicationError(message, type=kind, non_retryable=True)
    return WorkflowFailureError(cause=cause)


def test_the_sdk_reads_a_failure_at_its_root_through_the_table() -> None:
    failed = _failed("NotFound", "no pool named 'x'")
    assert root_type(failed) == "NotFound" and root_message(failed) == "no pool named 'x'"
    assert isinstance(failure_error(failed), errors.FabricNotFound)
    raise_if_denied(failed)  # not a refusal: nothing raised
    with pytest.raises(errors.PermissionDenied, match="permission denied: no"):
        raise_if_denied(_failed("PermissionDenied", "permission denied: no"))
    assert issubclass(WorkflowAlreadyStartedError, Exception)  # what submit and deploy catch by class


def test_the_sdk_modules_import_each_other_in_no_circle() -> None:
    sdk = ROOT / "inferofabric" / "sdk"
    imports: dict[str, set[str]] = {}
    for path in sdk.glob("*.py"):
        tree = ast.parse(path.read_text())
        imports[path.stem] = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                              if isinstance(node, ast.ImportFrom) and node.module
                              and node.module.startswith("inferofabric.sdk.")}
    for module, names in imports.items():
        for name in names:
            assert module not in imports.get(name, set()), f"sdk.{module} <-> sdk.{name}"
    assert "client" not in imports["endpoints"] and "client" not in imports["workloads"]
    for path in sdk.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 650, path
