"""Cold start and warm latency of the Lambda handler on this CPU, ONNX against TorchScript.

    .venv/bin/python -m benchmarks.serve_latency [--requests 100] [--cold-starts 5]

Warm: one process holds both backends' models and calls handler.handler with real API Gateway
events (real multipart bodies of real catalogue photos), route by route, each request going
to both backends in a fresh random order: a busy machine (a training run beside it) slows both
alike, and the ratio to TorchScript is what to read. "onnx" is the service's session as the
2,048 MB function makes it (one thread, no spin-waiting). A second process does the same for
"onnx, spinning", the session the service made before issue 20 (a thread per core, spinning
while idle: ORT_ALLOW_SPINNING=1, ORT_THREADS), against TorchScript again: in one process
with the others, its threads' spinning after each run would slow whatever runs next.
TorchScript runs with OMP_WAIT_POLICY=PASSIVE, its own best setting on a shared CPU (spinning
OpenMP threads made it 20x slower here), on a thread per core (its default), and in a third
process on one thread, like for like with the service's ONNX session.

Cold start: fresh Python processes, backends alternating, each importing handler.py (which
loads the model, as the Lambda init phase does), timed from inside the process.
Writes benchmarks/results/serve_latency.json.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import random
import subprocess
import sys
import time
import uuid

from benchmarks.common import MANIFEST, ROOT, percentile, save

BACKENDS = {  # name -> (MODEL_BACKEND, extra environment while the model loads)
    # The service as the 2,048 MB function runs it: one thread, no spinning (model.runtime.onnx_threads).
    "onnx": ("onnx", {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}),
    # Before issue 20: a thread per core, spinning while idle.
    "onnx, spinning": ("onnx", {"ORT_ALLOW_SPINNING": "1", "ORT_THREADS": str(os.cpu_count() or 1)}),
    "torchscript": ("torchscript", {}),  # torch's own default: a thread per core
}
ENV = {"OMP_WAIT_POLICY": "PASSIVE"}  # read when torch loads: set before anything imports it

COLD_PROBE = """
import json, time
t0 = time.perf_counter()
import handler
t1 = time.perf_counter()
response = handler.handler({"httpMethod": "GET", "resource": "/health", "headers": {}}, None)
assert response["statusCode"] == 200, response["body"]
print(json.dumps({"import_and_load_ms": (t1 - t0) * 1000, "first_request_ms": (time.perf_counter() - t1) * 1000}))
"""


def _run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """A measuring child process; if it fails, its own error is what the user needs to see."""
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"error: {' '.join(command[1:3])} failed:\n{out.stderr.strip()[-2000:]}")
    return out


def cold_starts(count: int) -> dict:
    runs = {name: [] for name in ("onnx", "torchscript")}
    for _ in range(count):
        for name in runs:  # alternating, so a burst of load hits both
            env = {**os.environ, **ENV, "MODEL_BACKEND": name}
            out = _run([sys.executable, "-c", COLD_PROBE], env)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1])["import_and_load_ms"])
    return {name: {"runs": count, "median_ms": round(percentile(ms, 50), 1), "max_ms": round(max(ms), 1)}
            for name, ms in runs.items()}


# ---- API Gateway events, as tests/events.py makes them (benchmarks do not import tests) ------------

def _event(method: str, path: str, body: bytes = b"", content_type: str = "") -> dict:
    return {"httpMethod": method, "resource": path, "path": path, "isBase64Encoded": bool(body),
            "headers": {"Content-Type": content_type} if content_type else {},
            "requestContext": {"requestId": str(uuid.uuid4())},
            "body": base64.b64encode(body).decode("ascii") if body else None}


def _multipart(path: str, fields: dict) -> dict:
    from requests_toolbelt.multipart.encoder import MultipartEncoder

    encoder = MultipartEncoder(fields={name: (f"{name}.jpg", value, "image/jpeg") if isinstance(value, bytes)
                                       else value for name, value in fields.items()})
    return _event("POST", path, encoder.to_string(), encoder.content_type)


def catalogue_photos() -> tuple[bytes, bytes]:
    with open(MANIFEST, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["white_background"] == "1" and r["split"] == "val"]
    return (MANIFEST.parent / rows[0]["file"]).read_bytes(), (MANIFEST.parent / rows[-1]["file"]).read_bytes()


def warm(requests: int, names: list[str], seed: int = 0) -> dict:
    os.environ["MODEL_PRELOAD"] = "0"
    sys.path.insert(0, str(ROOT))
    import handler
    from model.store import open_model

    models = {}
    for name in names:
        backend, env = BACKENDS[name]
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            models[name] = open_model(backend)
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    photo_a, photo_b = catalogue_photos()
    routes = {
        "GET /health": lambda: _event("GET", "/health"),
        "POST /reconstruct": lambda: _multipart("/reconstruct", {"image": photo_a}),
        "POST /sample (n=8)": lambda: _event("POST", "/sample", json.dumps({"n": 8, "seed": 1}).encode(),
                                             "application/json"),
        "POST /interpolate (steps=8)": lambda: _multipart("/interpolate", {"a": photo_a, "b": photo_b, "steps": "8"}),
    }
    order = random.Random(seed)
    results = {name: {} for name in models}
    for route, make_event in routes.items():
        times = {name: [] for name in models}
        names = list(models)
        for i in range(requests + 5):
            order.shuffle(names)
            for name in names:
                handler._model = models[name]
                event = make_event()
                start = time.perf_counter()
                response = handler.handler(event, None)
                elapsed = (time.perf_counter() - start) * 1000
                assert response["statusCode"] == 200, response["body"][:300]
                if i >= 5:  # the first calls warm caches and thread pools
                    times[name].append(elapsed)
        for name, ms in times.items():
            results[name][route] = {"p50_ms": round(percentile(ms, 50), 2), "p90_ms": round(percentile(ms, 90), 2),
                                    "mean_ms": round(sum(ms) / len(ms), 2)}
    handler.reset_model()
    return {"image_size": next(iter(models.values())).image_size, "routes": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100, help="timed requests per route and backend")
    p.add_argument("--cold-starts", type=int, default=5)
    p.add_argument("--warm-only", nargs="+", choices=sorted(BACKENDS), help="(internal) one warm run, as JSON")
    args = p.parse_args()
    if args.warm_only:
        print(json.dumps(warm(args.requests, args.warm_only)))
        return
    load_before = os.getloadavg()
    warm_result = {"routes": {}}
    groups = [(["onnx", "torchscript"], {}, ""),
              (["onnx, spinning", "torchscript"], {}, " (beside onnx, spinning)"),
              # Like for like, as a 2,048 MB Lambda's one vCPU: TorchScript on one thread too.
              (["onnx", "torchscript"], {"OMP_NUM_THREADS": "1"}, ", 1 thread each")]
    for group, env, suffix in groups:
        out = _run([sys.executable, "-m", "benchmarks.serve_latency", "--requests", str(args.requests),
                    "--warm-only", *group], {**os.environ, **ENV, **env})
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        warm_result["image_size"] = measured["image_size"]
        for name, routes in measured["routes"].items():
            warm_result["routes"][name if name not in warm_result["routes"] else name + suffix] = routes
    cold = cold_starts(args.cold_starts)
    load_after = os.getloadavg()
    def ratios_of(name: str, torch_name: str) -> dict:
        return {route: round(warm_result["routes"][name][route]["p50_ms"]
                             / warm_result["routes"][torch_name][route]["p50_ms"], 2)
                for route in warm_result["routes"][name] if not route.startswith("GET")}

    ratios = ratios_of("onnx", "torchscript")
    result = {
        "requests_per_route": args.requests,
        "method": "warm: one process, every request sent to each backend in random order, p50 of the timed ones; "
                  "cold: fresh processes alternating backends, median",
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "cores": os.cpu_count(),
        "onnx_over_torchscript_p50": ratios,
        "onnx_spinning_over_torchscript_p50": ratios_of("onnx, spinning", "torchscript (beside onnx, spinning)"),
        "onnx_over_torchscript_p50_1_thread_each": ratios_of("onnx, 1 thread each", "torchscript, 1 thread each"),
        "cold_start": cold,
        **warm_result,
    }
    if max(load_before[0], load_after[0]) > 1.0:
        result["note"] = (f"measured on a loaded machine (load average {load_before[0]:.1f} to {load_after[0]:.1f} on "
                          f"{os.cpu_count()} cores, a training run beside it): absolute times are inflated and noisy; "
                          "compare the backends by their ratio, measured side by side")
    path = save("serve_latency", result)
    print(f"cold start median: onnx {cold['onnx']['median_ms']} ms, torchscript {cold['torchscript']['median_ms']} ms")
    for route in warm_result["routes"]["onnx"]:
        line = "  ".join(f"{name}: {r[route]['p50_ms']:.2f}" for name, r in warm_result["routes"].items())
        print(f"  {route:28s} p50 ms  {line}")
    print(f"onnx / torchscript p50: {ratios}")
    print(f"onnx / torchscript p50, 1 thread each: {result['onnx_over_torchscript_p50_1_thread_each']}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
