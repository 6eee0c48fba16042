"""A thin synchronous wrapper over the async SDK, for scripts and notebooks.

    fabric = SyncFabricClient.connect("127.0.0.1:7233")
    handle = fabric.submit(spec)
    print(handle.status())

It runs the async client on an event loop in a background thread, so it also works where a loop
is already running (Jupyter).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from inferofabric.sdk.client import FabricClient, WorkloadHandle

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="inferofabric-sdk", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


class _SyncProxy:
    """Calls the wrapped object's coroutine methods and waits for them; wraps returned handles."""

    def __init__(self, target: Any, runner: _LoopThread) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = self._runner.run(result)
            if isinstance(result, WorkloadHandle):
                return _SyncProxy(result, self._runner)
            return result

        return call


class SyncFabricClient(_SyncProxy):
    @classmethod
    def connect(cls, address: str | None = None, namespace: str | None = None,
                task_queue: str | None = None) -> SyncFabricClient:
        runner = _LoopThread()
        client = runner.run(FabricClient.connect(address, namespace, task_queue))
        return cls(client, runner)
