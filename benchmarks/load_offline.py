"""A bounded load test against the local stack (serverless-offline on loopback).

    python -m benchmarks.load_offline                       # 800 requests, 4 clients, 300 s limit
    python -m benchmarks.load_offline --requests 1000 --clients 8 --time-limit 600

Starts `python -m scripts.local_stack` on free ports (API Gateway + Lambda emulation
running handler.py on the bundled model), sends a fixed number of requests from several
concurrent clients, cycling through the routes with real car photos, and stops early at
the time limit. Reports throughput, p50/p99 latency per route and overall, and every
error (any non-2xx reply or failed connection). Writes benchmarks/results/load_offline.json.

serverless-offline is an emulator: the numbers say the service holds up under
concurrent use, not how fast AWS serves it (see serve_latency for the handler's own time).
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from benchmarks.common import percentile, save
from tests.support.photos import real_photo_paths
from tests.support.stack import LocalStack


def workload(photos: list[bytes]):
    """Endless (route name, requests.Session -> Response) pairs, cycling through the routes."""
    def reconstruct(api, session, i):
        return session.post(f"{api}/reconstruct", files={"image": ("car.jpg", photos[i % len(photos)], "image/jpeg")},
                            timeout=60)

    def sample(api, session, i):
        return session.post(f"{api}/sample", json={"n": 4, "seed": i}, timeout=60)

    def interpolate(api, session, i):
        a, b = photos[i % len(photos)], photos[(i + 1) % len(photos)]
        return session.post(f"{api}/interpolate", files={"a": ("a.jpg", a, "image/jpeg"), "b": ("b.jpg", b, "image/jpeg")},
                            data={"steps": "4"}, timeout=60)

    def health(api, session, i):
        return session.get(f"{api}/health", timeout=60)

    routes = [("POST /reconstruct", reconstruct), ("POST /sample (n=4)", sample),
              ("POST /interpolate (steps=4)", interpolate), ("GET /health", health)]
    return itertools.cycle(routes)


def summary(values: list[float]) -> dict:
    return {"requests": len(values), "p50_ms": round(percentile(values, 50), 1),
            "p99_ms": round(percentile(values, 99), 1), "max_ms": round(max(values), 1)}


def run_load(api: str, photos: list[bytes], total: int, clients: int, time_limit: float) -> dict:
    jobs = workload(photos)
    lock = threading.Lock()
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    issued = itertools.count()
    local = threading.local()
    deadline = time.monotonic() + time_limit

    def one(_):
        if time.monotonic() > deadline:
            return
        with lock:
            i = next(issued)
            name, send = next(jobs)
        if not hasattr(local, "session"):  # one keep-alive connection per client, calling as the page does
            local.session = requests.Session()
            local.session.headers["Origin"] = "http://127.0.0.1:8000"
        session = local.session
        started = time.perf_counter()
        try:
            response = send(api, session, i)
            ok = response.status_code < 300 and response.headers.get("Access-Control-Allow-Origin")
            problem = None if ok else f"{name}: HTTP {response.status_code} {response.text[:120]}"
        except requests.RequestException as exc:
            problem = f"{name}: {type(exc).__name__}"
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            latencies[name].append(elapsed)
            if problem:
                errors[problem] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(total)))
    wall = time.perf_counter() - started

    everything = [ms for values in latencies.values() for ms in values]
    return {
        "requests_planned": total,
        "requests_sent": len(everything),
        "clients": clients,
        "time_limit_s": time_limit,
        "stopped_by_time_limit": len(everything) < total,
        "seconds": round(wall, 1),
        "throughput_rps": round(len(everything) / wall, 2),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(10)),
        "overall": summary(everything),
        "routes": {name: summary(values) for name, values in sorted(latencies.items())},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load_offline", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=800)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds; no new request starts after this")
    args = p.parse_args(argv)

    photos = [path.read_bytes() for path in real_photo_paths()]
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="load-")) / "local_stack.log")
    try:
        stack.wait_ready()
        model = stack.get("/health")["model"]
        # serverless-offline starts a Python worker (and loads the model) whenever all of its workers
        # are busy: warm up with as many concurrent clients as the measurement, or it pays those starts.
        for _ in range(2):
            run_load(stack.api, photos, 4 * args.clients, args.clients, 120)
        result = run_load(stack.api, photos, args.requests, args.clients, args.time_limit)
    finally:
        problems = stack.stop()
    result["model"] = {"image_size": model["image_size"], "backend": model["backend"]}
    result["shutdown_problems"] = problems
    path = save("load_offline", result)
    print(f"{result['requests_sent']} requests from {args.clients} clients in {result['seconds']} s: "
          f"{result['throughput_rps']} req/s, p50 {result['overall']['p50_ms']} ms, p99 {result['overall']['p99_ms']} ms, "
          f"{result['errors']} errors -> {path}")
    for name, r in result["routes"].items():
        print(f"  {name:30s} {r['requests']:5d}  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms")
    if result["errors"] or problems:
        raise SystemExit(f"errors: {result['error_kinds']} {problems}")


if __name__ == "__main__":
    main()
