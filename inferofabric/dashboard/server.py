"""The dashboard's HTTP server, inside `fabric up` (aiohttp: a well-kept async web framework that
runs on the stack's own event loop; no HTTP code of ours). Read only; it binds to 127.0.0.1 — in
production put it behind the same access control as the Temporal Web UI (docs/cost.md)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from inferofabric.dashboard.charts import plotly_js_path
from inferofabric.dashboard.data import summary
from inferofabric.dashboard.page import live_page, view
from inferofabric.sdk.client import FabricClient

log = logging.getLogger(__name__)
DEFAULT_PORT = 8234


def application(fabric: FabricClient) -> web.Application:
    app = web.Application()
    page = live_page()

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def api_view(_: web.Request) -> web.Response:
        try:
            current = view(await summary(fabric))
        except Exception as error:  # the page says it could not refresh; the log has the rest
            log.exception("dashboard: could not gather the summary")
            return web.json_response({"error": str(error)}, status=503)
        return web.json_response(current)

    async def api_summary(_: web.Request) -> web.Response:
        return web.json_response(await summary(fabric))

    async def plotly(_: web.Request) -> web.FileResponse:
        return web.FileResponse(plotly_js_path(), headers={"Cache-Control": "max-age=86400"})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.add_routes([web.get("/", index), web.get("/api/view", api_view), web.get("/api/summary", api_summary),
                    web.get("/static/plotly.min.js", plotly), web.get("/healthz", healthz)])
    return app


async def start(fabric: FabricClient, port: int, host: str = "127.0.0.1") -> Any:
    """Serve the dashboard; returns the runner (`await runner.cleanup()` stops it)."""
    runner = web.AppRunner(application(fabric), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    await asyncio.sleep(0)
    return runner
