"""cel-python (what the policy engine uses) against the compiled CEL runtime `common-expression-language`.

    python bench/cel_runtimes.py          # in an environment that has both packages

The fabric's conditions are small (a comparison or two over a few variables) and evaluated once per
decision per condition, memoized on the values they read (inferofabric/models/expressions.py), so what matters
is the cost of one uncached evaluation. Prints microseconds per evaluation for each runtime over the
same expressions and inputs, and the ratio. The other candidate named in the admission issue,
`cel-expr-python`, is not measured here (its 0.1 release has no prebuilt wheel for this machine).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

EXPRESSIONS = [
    "on_prem_utilization > 0.85",
    "pool_health != 'healthy'",
    "workload.data_classification == 'pii'",
    "'residency' in workload.labels && workload.labels.residency == 'eu'",
]
ROUNDS = 20_000


def inputs(i: int) -> dict[str, Any]:
    return {"on_prem_utilization": (i % 100) / 100, "pool_health": "healthy" if i % 7 else "degraded",
            "workload": {"data_classification": "pii" if i % 10 == 0 else "internal",
                         "labels": {"residency": "eu"} if i % 3 == 0 else {}}}


def time_celpy() -> float:
    import celpy

    env = celpy.Environment()
    programs = [env.program(env.compile(text)) for text in EXPRESSIONS]
    values = [{k: celpy.json_to_cel(v) for k, v in inputs(i).items()} for i in range(100)]
    started = time.perf_counter()
    for i in range(ROUNDS):
        programs[i % len(programs)].evaluate(values[i % 100])
    return (time.perf_counter() - started) / ROUNDS * 1e6


def time_compiled() -> float:
    import cel

    programs = [cel.compile(text) for text in EXPRESSIONS]
    values = [inputs(i) for i in range(100)]
    started = time.perf_counter()
    for i in range(ROUNDS):
        programs[i % len(programs)].execute(values[i % 100])
    return (time.perf_counter() - started) / ROUNDS * 1e6


def main() -> int:
    try:
        celpy_us = statistics.median(time_celpy() for _ in range(3))
        compiled_us = statistics.median(time_compiled() for _ in range(3))
    except ImportError as error:
        print(f"skipped: needs both cel-python and common-expression-language installed ({error})")
        return 0
    print(f"cel-python: {celpy_us:.1f} us per evaluation; common-expression-language: {compiled_us:.1f} us "
          f"({celpy_us / compiled_us:.0f}x faster) over {len(EXPRESSIONS)} conditions, {ROUNDS:,} evaluations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
