"""The dashboard in a real headless browser (Debian's chromium through its chromedriver; nothing is
downloaded): the page served by the stack loads, draws its charts, shows the very totals that
`fabric cost --json` prints, and logs no console error; `fabric cost --html` writes a file that
does the same offline. FABRIC_SCREENSHOT=docs/dashboard.png keeps the browser's screenshot (the
README's picture)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli.util import free_port
from store.test_ledger_live import cli

from inferofabric.models import WorkloadSpec, WorkloadState

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (make browser installs them as root)")

POLICY = """
placement:
  default: on-prem
  burst: {when: "on_prem_utilization > 0.4", target: cloud}
teams:
  vision: {budget: {cloud: {monthly: 500, alert_at: [0.5, 0.9]}}}
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1500"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def pool(name: str, location: str, gpus: int, price: float) -> dict[str, Any]:
    return {"name": name, "location": location, "backend": "simulated", "region": f"r-{name}",
            "gpus": {"A100": gpus}, "price_per_gpu_hour": {"A100": price}}


async def _spend(fabric: Any) -> None:
    """Finished work on-prem and in the cloud for two teams: the figures no longer move."""
    suffix = uuid.uuid4().hex[:6]
    client = fabric.client
    await client.register_pool(pool(f"dc-{suffix}", "on-prem", 4, 36.0))
    await client.register_pool(pool(f"cloud-{suffix}", "cloud", 16, 360.0))
    await client.set_policy(POLICY)
    specs = [("vision", 2, "3s"), ("nlp", 4, "2s"), ("vision", 2, "2s")]
    handles = []
    for index, (team, gpus, duration) in enumerate(specs):
        handles.append(await client.submit(WorkloadSpec.model_validate({
            "name": f"dash-{index}-{suffix}", "team": team, "image": "img", "max_runtime_seconds": 600,
            "resources": {"gpu": {"type": "A100", "count": gpus}},
            "annotations": {"sim.inferofabric.io/duration": duration}})))
        await asyncio.sleep(0.5)
    done = await asyncio.gather(*(h.result() for h in handles))
    assert all(s.state == WorkloadState.SUCCEEDED for s in done)
    assert {s.location for s in done} == {"on-prem", "cloud"}


def _read_page(driver: Any, url: str) -> dict[str, Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "total-cost_total").text and len(d.find_elements(By.CSS_SELECTOR,
                                                                                          ".js-plotly-plot")) == 4)
    cells = {}
    for cell in driver.find_elements(By.CSS_SELECTOR, "td[data-team]"):
        cells[(cell.get_attribute("data-team"), cell.get_attribute("data-column"))] = cell.text
    totals = {key: driver.find_element(By.ID, f"total-{key}").text for key in ("cost_on_prem", "cost_cloud",
                                                                                 "cost_total")}
    bars = len(driver.find_elements(By.CSS_SELECTOR, "#chart-spend .bars path"))
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return {"cells": cells, "totals": totals, "bars": bars, "errors": errors}


def _assert_same_as_cli(page: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    assert not page["errors"], page["errors"]
    assert page["bars"] > 0  # the daily-spend chart has drawn its bars
    for row in rows:
        for column in ("cost_on_prem", "cost_cloud", "cost_total"):
            assert page["cells"][(row["key"], column)] == f"${row[column]:.2f}", (row, page["cells"])
    total = sum(row["cost_total"] for row in rows)
    assert page["totals"]["cost_total"] == f"${total:.2f}"
    assert float(page["totals"]["cost_cloud"].strip("$")) > 0 and float(page["totals"]["cost_on_prem"].strip("$")) > 0


async def test_the_dashboard_shows_what_fabric_cost_prints(fabric: Any, browser: Any, tmp_path: Path) -> None:
    from inferofabric.dashboard.server import start

    await _spend(fabric)
    code, out, err = await cli(fabric, "cost", "--by", "team", "--json")
    assert code == 0, err
    rows = json.loads(out)
    port = free_port()
    runner = await start(fabric.client, port)
    try:
        page = await asyncio.to_thread(_read_page, browser, f"http://127.0.0.1:{port}/")
        _assert_same_as_cli(page, rows)
        shot = os.environ.get("FABRIC_SCREENSHOT")
        if shot:
            await asyncio.to_thread(browser.save_screenshot, shot)
    finally:
        await runner.cleanup()

    report = tmp_path / "report.html"
    started = time.monotonic()
    code, out, err = await cli(fabric, "cost", "--html", str(report))
    assert code == 0 and "opens offline" in out, err
    assert "cdn" not in report.read_text().lower()[:2000] and time.monotonic() - started < 60
    page = await asyncio.to_thread(_read_page, browser, report.as_uri())
    _assert_same_as_cli(page, rows)


def test_the_page_needs_no_network() -> None:
    """The live page loads Plotly from the stack itself, never from a CDN."""
    from inferofabric.dashboard.charts import plotly_js_path
    from inferofabric.dashboard.page import live_page

    page = live_page()
    assert 'src="static/plotly.min.js"' in page and "http" not in page.split("<body>")[0]
    assert plotly_js_path().stat().st_size > 1_000_000
    assert shutil.which("chromium") or not os.environ.get("CI")
