"""OpenTelemetry tracing of workflows and activities (opt-in).

Set FABRIC_OTEL=console to print spans, or FABRIC_OTEL=/path/spans.jsonl to append them as JSON
lines; the Temporal interceptor then traces every workflow, activity and signal with the
workload id. Off by default: tracing costs a header per call and the fabric's throughput target
is measured without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

_configured = False


class _JsonLinesExporter:
    """A span exporter appending one JSON object per span to a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with open(self.path, "a") as handle:
            for span in spans:
                handle.write(json.dumps(json.loads(span.to_json())) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def interceptors() -> list[Any]:
    """Temporal interceptors to install on clients (and so on their workers); [] when tracing is off."""
    global _configured
    target = os.environ.get("FABRIC_OTEL")
    if not target:
        return []
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    from temporalio.contrib.opentelemetry import TracingInterceptor

    if not _configured:
        provider = TracerProvider(resource=Resource.create({"service.name": "inferofabric"}))
        exporter = ConsoleSpanExporter() if target == "console" else _JsonLinesExporter(target)
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
        trace.set_tracer_provider(provider)
        _configured = True
    return [TracingInterceptor()]
