"""The chaos suite: workloads on simulated pools while the worker, the Temporal server and pools fail
at random (seeded). Invariants come from the back ends' own records, not from the workflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from .scenario import ChaosConfig, ChaosResult, run_chaos


def assert_invariants(result: ChaosResult, workloads: int) -> None:
    report = result.report
    detail = "\n".join(result.events[-40:] + report.violations[:40])
    assert report.violations == [], detail
    assert report.workloads == workloads
    # Everything finished exactly once: one succeeded attempt each, no job id launched twice (both
    # checked above); at least every workload was launched.
    assert report.launches >= workloads


async def test_chaos_ci_sized(tmp_path: Path) -> None:
    """120 workloads, 40 s of chaos (CI-sized: about a minute and a half on 2 cores)."""
    result = await run_chaos(ChaosConfig(workloads=120, duration=40, seed=7, min_disruptions=4), tmp_path)
    assert_invariants(result, 120)
    assert result.worker_restarts + result.server_restarts + result.pool_outages >= 4


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_chaos_large(tmp_path: Path) -> None:
    """400 workloads, 3 minutes of chaos."""
    result = await run_chaos(ChaosConfig(workloads=400, duration=180, seed=11, max_job=15), tmp_path)
    assert_invariants(result, 400)
