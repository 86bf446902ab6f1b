"""Cold start and warm latency of the Lambda handler on this CPU, ONNX vs TorchScript.

    .venv/bin/python -m benchmarks.serve_latency [--requests 200] [--cold-starts 5]

Cold start: a fresh Python process importing handler.py, which loads the model (what
the Lambda init phase does), timed from inside that process. Warm: handler.handler
called with real API Gateway events (real multipart bodies of a real photo), timed
around the call, per route. Writes benchmarks/results/serve_latency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import ROOT, percentile, save

COLD_PROBE = """
import json, time
t0 = time.perf_counter()
import handler
t1 = time.perf_counter()
from tests.support.events import Context, rest_event
handler.handler(rest_event("GET", "/health"), Context())
print(json.dumps({"import_and_load_ms": (t1 - t0) * 1000, "first_request_ms": (time.perf_counter() - t1) * 1000}))
"""


def _run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """A measuring child process; if it fails, its own error is what the user needs to see."""
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"error: {' '.join(command[1:3])} failed:\n{out.stderr.strip()[-2000:]}")
    return out


def cold_starts(backend: str, count: int) -> dict:
    runs = []
    for _ in range(count):
        env = {**os.environ, "MODEL_BACKEND": backend}
        out = _run([sys.executable, "-c", COLD_PROBE], env)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ms = [r["import_and_load_ms"] for r in runs]
    return {"runs": count, "median_ms": round(percentile(ms, 50), 1), "max_ms": round(max(ms), 1)}


def warm(backend: str, requests: int) -> dict:
    os.environ["MODEL_BACKEND"] = backend
    sys.path.insert(0, str(ROOT))
    import handler
    from tests.support.photos import catalogue_rows, SHARED_DATA
    from tests.support.events import Context, json_event, multipart_event, rest_event

    handler.BACKEND = backend
    handler.reset_model()
    rows = catalogue_rows()
    photo_a = (SHARED_DATA / rows[0]["file"]).read_bytes()
    photo_b = (SHARED_DATA / rows[-1]["file"]).read_bytes()
    routes = {
        "GET /health": lambda: rest_event("GET", "/health"),
        "POST /reconstruct": lambda: multipart_event("/reconstruct", {"image": photo_a}),
        "POST /sample (n=8)": lambda: json_event("/sample", {"n": 8, "seed": 1}),
        "POST /interpolate (steps=8)": lambda: multipart_event("/interpolate", {"a": photo_a, "b": photo_b, "steps": "8"}),
    }
    results = {}
    for name, make_event in routes.items():
        times = []
        for i in range(requests + 5):
            event = make_event()
            start = time.perf_counter()
            response = handler.handler(event, Context())
            elapsed = (time.perf_counter() - start) * 1000
            assert response["statusCode"] == 200, response["body"][:300]
            if i >= 5:  # the first calls warm caches and thread pools
                times.append(elapsed)
        results[name] = {"p50_ms": round(percentile(times, 50), 2), "p99_ms": round(percentile(times, 99), 2),
                         "mean_ms": round(sum(times) / len(times), 2)}
    return {"image_size": handler.get_model().image_size, "routes": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--cold-starts", type=int, default=5)
    p.add_argument("--backend", choices=("onnx", "torchscript"), help="one backend only (internal)")
    args = p.parse_args()
    if args.backend:  # each backend's warm run in its own process: no cross-talk between runtimes
        print(json.dumps(warm(args.backend, args.requests)))
        return
    result = {"requests_per_route": args.requests, "backends": {}}
    for backend in ("onnx", "torchscript"):
        out = _run([sys.executable, "-m", "benchmarks.serve_latency", "--backend", backend,
                    "--requests", str(args.requests)])
        result["backends"][backend] = {"cold_start": cold_starts(backend, args.cold_starts),
                                       **json.loads(out.stdout.strip().splitlines()[-1])}
    path = save("serve_latency", result)
    for backend, r in result["backends"].items():
        print(f"{backend}: cold start median {r['cold_start']['median_ms']} ms")
        for route, t in r["routes"].items():
            print(f"  {route:30s} p50 {t['p50_ms']:7.2f} ms   p99 {t['p99_ms']:7.2f} ms")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
