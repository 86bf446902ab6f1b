"""Item 5 of issue 20: operations the ecosystem's way (AWS Lambda Powertools). A fresh handler process,
as a cold Lambda container: structured JSON log lines on stderr carrying API Gateway's request id,
per-route latency and error metrics as CloudWatch EMF records on stdout, and X-Ray behind TRACING."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import json, sys
from tests.support.events import Context, json_event, multipart_event, rest_event
import handler
events = [rest_event("GET", "/health"), json_event("/sample", {"n": 1, "seed": 2}), json_event("/sample", {"n": 99}),
          rest_event("GET", "/nope"), multipart_event("/reconstruct", {"image": b"\\x89PNG\\r\\n\\x1a\\n" + b"0" * 40})]
ids = []
for event in events:
    handler.handler(event, Context())
    ids.append(event["requestContext"]["requestId"])
print("IDS " + json.dumps(ids))
print("TRACER " + type(handler.tracer).__name__)
"""


def run_probe(**env):
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MODEL_PRELOAD": "1", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    ids = json.loads(next(line for line in out if line.startswith("IDS "))[4:])
    tracer = next(line for line in out if line.startswith("TRACER "))[7:]
    emf = [json.loads(line) for line in out if line.startswith('{"_aws"')]
    logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return ids, tracer, emf, logs


def test_logs_are_json_with_the_request_id_and_metrics_are_emf_per_route():
    ids, tracer, emf, logs = run_probe()
    assert tracer == "NoneType"  # X-Ray off unless TRACING=true (tracing param)
    requests = [entry for entry in logs if entry.get("event") == "request"]
    assert [entry["request_id"] for entry in requests] == ids
    for entry in requests:  # Powertools' structured fields beside the handler's own
        assert entry["service"] == "car-vae" and entry["level"] == "INFO" and entry["timestamp"]
    assert [entry["status"] for entry in requests] == [200, 200, 400, 404, 400]
    assert [entry["route"] for entry in requests] == ["GET /health", "POST /sample", "POST /sample", "other",
                                                      "POST /reconstruct"]
    loaded = [entry for entry in logs if entry.get("event") == "model_loaded"]
    assert len(loaded) == 1 and "request_id" not in loaded[0]  # loaded once, in the init phase
    # The decoder's own words are in the log, under the request's id; the user got plain ones.
    (refused,) = [entry for entry in logs if entry.get("event") == "refused"]
    assert refused["request_id"] == ids[-1] and refused["code"] == "corrupt_image" and "Error" in refused["detail"]

    assert len(emf) == len(ids)
    for record, status, route in zip(emf, [200, 200, 400, 404, 400], [r["route"] for r in requests]):
        (directive,) = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "CarVae"
        assert ["route", "service"] == sorted(directive["Dimensions"][0])
        names = {m["Name"]: m.get("Unit") for m in directive["Metrics"]}
        assert names["Latency"] == "Milliseconds" and {"Requests", "ClientErrors", "ServerErrors"} <= set(names)
        assert record["route"] == route and record["service"] == "car-vae" and record["Latency"][0] >= 0
        assert record["ClientErrors"] == [int(400 <= status < 500)] and record["ServerErrors"] == [0]
    assert emf[0].get("ColdStart") == [1] and all("ColdStart" not in r for r in emf[1:])


def test_tracing_is_behind_a_switch():
    ids, tracer, emf, logs = run_probe(TRACING="true")
    assert tracer == "Tracer"  # Powertools' Tracer (it sends nothing outside Lambda)
    assert [entry["status"] for entry in logs if entry.get("event") == "request"] == [200, 200, 400, 404, 400]
