"""Throw a large number of generated and mutated requests at handler.handler.

    python -m benchmarks.fuzz_handler                 # 12,000 requests (1,500 per target)
    python -m benchmarks.fuzz_handler --per-target 5000

Draws from the test suite's strategies (tests/test_fuzz.py TARGETS) with fresh random
seeds, calls the handler in-process with the bundled model, and checks every reply the
way the tests do (a JSON 2xx/4xx with CORS headers). Unlike the tests it does not stop
at the first bad reply: it counts them. Writes benchmarks/results/fuzz_handler.json.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings

from benchmarks.common import save
from tests import test_fuzz as fuzz


def fuzz_target(strategy, examples: int, failures: Counter) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def probe(event):
        try:
            fuzz.request(event)
        except AssertionError as exc:  # a malformed reply: 5xx, missing CORS, not JSON...
            failures[str(exc).splitlines()[0][:200]] += 1
        except Exception as exc:  # the handler itself raised
            failures[f"raised {type(exc).__name__}"] += 1

    probe()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_handler", description=__doc__.split("\n\n")[0])
    p.add_argument("--per-target", type=int, default=1500, help="examples drawn from each of the fuzz targets")
    args = p.parse_args(argv)
    logging.getLogger("car-vae").setLevel(logging.CRITICAL)  # one log line per request would drown the report
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # ...and so would one EMF metric line

    targets = {}
    started = time.perf_counter()
    for name, strategy in fuzz.TARGETS.items():
        before, failures = fuzz.TALLY.requests, Counter()
        t0 = time.perf_counter()
        fuzz_target(strategy, args.per_target, failures)
        targets[name] = {"requests": fuzz.TALLY.requests - before, "bad_replies": sum(failures.values()),
                         "seconds": round(time.perf_counter() - t0, 1), "failures": dict(failures.most_common(10))}
        print(f"{name:24s} {targets[name]['requests']:6d} requests, {targets[name]['bad_replies']} bad replies",
              flush=True)

    tally = fuzz.TALLY
    result = {
        "requests": tally.requests,
        "server_errors_5xx": tally.by_class.get("5xx", 0),
        "exceptions_raised": tally.by_class.get("exception", 0),
        "bad_replies": sum(t["bad_replies"] for t in targets.values()),
        "by_status": dict(sorted(tally.by_status.items())),
        "seconds": round(time.perf_counter() - started, 1),
        "targets": targets,
    }
    path = save("fuzz_handler", result)
    print(f"{result['requests']} requests: {result['server_errors_5xx']} 5xx, {result['exceptions_raised']} raised, "
          f"{result['bad_replies']} malformed replies; statuses {result['by_status']} -> {path}")


if __name__ == "__main__":
    main()
