"""AWS Lambda entry point behind API Gateway (REST API, Lambda proxy integration).

HTTP only: parse the event, call model.inference, shape the JSON response. The model
is loaded once per container (at cold start, and again on the next request if that
failed); everything about images and the model lives in model/.

    GET  /health       model metadata
    POST /reconstruct  multipart: image
    POST /sample       JSON: {n, seed, temperature}
    POST /interpolate  multipart: a, b, steps

Operations, with AWS Lambda Powertools (docs/operations.md): one JSON log line per request on
stderr carrying API Gateway's request id (and one per refused image or model failure, with the
detail a user is not shown), per-route latency and error counts as CloudWatch metrics in the
embedded metric format (EMF lines on stdout, namespace CarVae), and X-Ray subsegments for the
model load and the inference when TRACING=true.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import sys
import time
import uuid
from email.message import Message
from email.utils import collapse_rfc2231_value

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from requests_toolbelt.multipart import decoder as multipart

from model import inference
from model.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageError
from model.runtime import Model, ModelError
from model.store import open_model

SERVICE = "car-vae"
# The standard library's logger "car-vae", with Powertools' JSON formatter on stderr (what the handler
# has always logged to; on Lambda both streams go to the function's log group).
log = Logger(service=SERVICE, level=os.environ.get("LOG_LEVEL", "INFO"), stream=sys.stderr)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "CarVae"), service=SERVICE)
TRACING = os.environ.get("TRACING", "false").strip().lower() == "true"
if TRACING:  # aws-xray-sdk loads only when asked for: it adds to every cold start
    from aws_lambda_powertools import Tracer

    tracer = Tracer(service=SERVICE)
else:
    tracer = None

# Lambda accepts at most 6 MB of event JSON in a synchronous request, and API Gateway puts a
# binary body in it base64-encoded (4/3 larger) beside the headers: the largest upload that
# reaches the handler on AWS. Bigger ones are refused here too, so local runs behave like AWS.
LAMBDA_EVENT_BYTES = 6 * 1024 * 1024
EVENT_OVERHEAD_BYTES = 64 * 1024  # headers and request context, with room to spare
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", (LAMBDA_EVENT_BYTES - EVENT_OVERHEAD_BYTES) * 3 // 4))
MAX_PIXELS = int(os.environ.get("MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))
# A form here has at most four fields (a, b, steps; or image). Both bounds keep parsing linear:
# the email parser's parameter splitting is quadratic in a header's length (CPython gh-136063),
# and a 230 KB Content-Disposition would keep the function busy past API Gateway's 29 s.
MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 4096
BACKEND = os.environ.get("MODEL_BACKEND", "onnx")
ALLOWED_ORIGINS = [o.strip() for o in os.environ.get("CORS_ALLOW_ORIGIN", "*").split(",") if o.strip()]
IMAGE_ERROR_STATUS = {"image_too_large": 413, "unsupported_format": 415}

_model: Model | None = None


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


def traced(name: str):
    """An X-Ray subsegment when tracing is on, else nothing."""
    return tracer.provider.in_subsegment(name) if tracer is not None else contextlib.nullcontext()


def get_model() -> Model:
    """The container's model, loading it if this is the first request or the last load failed."""
    global _model
    if _model is None:
        started = time.perf_counter()
        with traced("## load model"):
            _model = open_model(BACKEND)
        log.info("model loaded", extra={"event": "model_loaded", "source": _model.source, "backend": _model.backend,
                                        "ms": round((time.perf_counter() - started) * 1000, 1)})
    return _model


def reset_model() -> None:
    global _model
    _model = None


# ---- request parsing -------------------------------------------------------------

def lower_headers(event: dict) -> dict[str, str]:
    headers = event.get("headers") or {}
    return {str(k).lower(): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}


def read_body(event: dict) -> bytes:
    body = event.get("body")
    if body is None or body == "":
        return b""
    if not isinstance(body, str):
        raise HttpError(400, "bad_request", "the request body is not text or base64")
    if len(body) > MAX_BODY_BYTES * 4 // 3 + 4:
        raise _too_large()
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, "bad_request", "the request body is not valid base64") from None
    else:
        try:
            data = body.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800", which a JSON event can carry
            raise HttpError(400, "bad_request", "the request body is not valid UTF-8 text") from None
    if len(data) > MAX_BODY_BYTES:
        raise _too_large()
    return data


def _too_large() -> HttpError:
    return HttpError(413, "body_too_large",
                     f"the request body is over {MAX_BODY_BYTES / 2**20:.2f} MiB ({MAX_BODY_BYTES:,} bytes)")


def form_fields(event: dict, headers: dict[str, str]) -> dict[str, bytes]:
    """multipart/form-data fields by name (the first of each name wins)."""
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise HttpError(415, "unsupported_media_type", "send the image as multipart/form-data")
    if not content_type.isascii():  # the email parser cannot read non-ASCII header values
        raise HttpError(400, "bad_multipart", "the Content-Type header must be plain ASCII")
    params = Message()
    params["content-type"] = content_type
    boundary = params.get_param("boundary")
    if isinstance(boundary, tuple):  # RFC 2231 form: boundary*=utf-8''xyz
        boundary = collapse_rfc2231_value(boundary)
    if not boundary:
        raise HttpError(400, "bad_multipart", "the multipart Content-Type has no boundary")
    if not boundary.isascii():  # RFC 2046: a boundary is ASCII (an RFC 2231 one may decode to anything)
        raise HttpError(400, "bad_multipart", "the multipart boundary must be plain ASCII")
    body = read_body(event)
    if not body:
        raise HttpError(400, "empty_body", "the request body is empty")
    if body.count(b"--" + boundary.encode("latin-1")) > MAX_PARTS + 1:
        raise HttpError(400, "bad_multipart", f"the form has more than {MAX_PARTS} parts")
    try:
        # requests-toolbelt finds the boundary with a naive split of the header and crashes
        # when it finds none; hand it the boundary parsed above instead. Part headers are read as
        # latin-1, which any bytes are: a client may send a file name in its own code page.
        parts = multipart.MultipartDecoder(body, f"multipart/form-data; boundary={boundary}", "latin-1").parts
    except (multipart.ImproperBodyPartContentException, multipart.NonMultipartContentTypeException,
            ValueError, LookupError) as exc:
        raise HttpError(400, "bad_multipart", "the multipart body is malformed: its parts are not separated "
                        "and headed as multipart/form-data requires", f"{exc.__class__.__name__}: {exc}") from None
    fields: dict[str, bytes] = {}
    for part in parts:
        header = part.headers.get(b"Content-Disposition", b"")
        if len(header) > MAX_PART_HEADER_BYTES:
            raise HttpError(400, "bad_multipart", f"a part's Content-Disposition is over {MAX_PART_HEADER_BYTES} bytes")
        disposition = Message()
        disposition["content-disposition"] = header.decode("latin-1")
        name = disposition.get_param("name", header="content-disposition")
        if isinstance(name, str) and name not in fields:
            fields[name] = part.content
    return fields


def required_file(fields: dict[str, bytes], name: str) -> bytes:
    if name not in fields:
        raise HttpError(400, "missing_field", f"the form has no field '{name}' (a JPEG, PNG or WebP image)")
    if not fields[name]:
        raise HttpError(400, "empty_image", f"the field '{name}' is empty")
    return fields[name]


def form_int(fields: dict[str, bytes], name: str, default: int) -> int:
    if name not in fields:
        return default
    text = fields[name].decode("utf-8", "replace").strip()
    try:
        return int(text)
    except ValueError:
        raise HttpError(400, "bad_request", f"'{name}' must be a whole number, not '{text[:40]}'") from None


def json_object(event: dict, headers: dict[str, str]) -> dict:
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    body = read_body(event)
    if not body:
        return {}
    if content_type != "application/json":
        raise HttpError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "bad_json", "the JSON body is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError):
        raise HttpError(400, "bad_json", "the body is not valid JSON") from None
    except ValueError:  # an integer over Python's 4300-digit limit (int_max_str_digits)
        raise HttpError(400, "bad_json", "a number in the JSON body has too many digits") from None
    if not isinstance(value, dict):
        raise HttpError(400, "bad_json", "the JSON body must be an object like {\"n\": 8}")
    return value


# ---- routes -----------------------------------------------------------------------

def health(event, headers) -> dict:
    model = get_model()
    meta = model.metadata
    return {
        "status": "ok",
        "model": {
            "format_version": meta["format_version"], "image_size": model.image_size,
            "latent_dim": model.latent_dim, "source": model.source, "backend": model.backend,
            "exported_at": meta.get("exported_at"), "metrics": meta.get("metrics", {}),
            "sampling": ("standard normal" if model.prior is None else "fitted gaussian" if model.prior.components == 1
                         else f"fitted mixture of {model.prior.components} gaussians"),
        },
        "limits": {"max_body_bytes": MAX_BODY_BYTES, "max_pixels": MAX_PIXELS, "max_side": DEFAULT_MAX_SIDE,
                   "max_samples": inference.MAX_SAMPLES, "steps": [inference.MIN_STEPS, inference.MAX_STEPS]},
    }


def reconstruct(event, headers) -> dict:
    image = required_file(form_fields(event, headers), "image")
    model = get_model()
    with traced("## reconstruct"):
        return inference.reconstruct(model, image, MAX_PIXELS)


def sample(event, headers) -> dict:
    body = json_object(event, headers)
    unknown = sorted(set(body) - {"n", "seed", "temperature"})
    if unknown:
        raise HttpError(400, "bad_request", f"unknown field(s): {', '.join(unknown)[:200]}")
    model = get_model()
    with traced("## sample"):
        return inference.sample(model, body.get("n", 8), body.get("seed"), body.get("temperature", 1.0))


def interpolate(event, headers) -> dict:
    fields = form_fields(event, headers)
    a, b = required_file(fields, "a"), required_file(fields, "b")
    steps = form_int(fields, "steps", 8)
    model = get_model()
    with traced("## interpolate"):
        return inference.interpolate(model, a, b, steps, MAX_PIXELS)


ROUTES = {
    ("GET", "/health"): health,
    ("POST", "/reconstruct"): reconstruct,
    ("POST", "/sample"): sample,
    ("POST", "/interpolate"): interpolate,
}
PATHS = {path for _, path in ROUTES}


# ---- responses ------------------------------------------------------------------

def cors_headers(headers: dict[str, str]) -> dict[str, str]:
    if not ALLOWED_ORIGINS:  # no browser origin may call the API ("null" would admit sandboxed pages)
        return {}
    if "*" in ALLOWED_ORIGINS:
        origin = "*"
    else:
        requested = headers.get("origin", "")
        origin = requested if requested in ALLOWED_ORIGINS else ALLOWED_ORIGINS[0]
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "GET,POST,OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Vary": "Origin",
    }


def respond(status: int, body: dict | None, headers: dict[str, str]) -> dict:
    out = {"Content-Type": "application/json", **cors_headers(headers)}
    return {"statusCode": status, "headers": out, "body": "" if body is None else json.dumps(body),
            "isBase64Encoded": False}


def error(status: int, code: str, message: str, request_id: str, headers: dict[str, str]) -> dict:
    return respond(status, {"error": {"code": code, "message": message}, "request_id": request_id}, headers)


def gateway_request_id(event: dict) -> str | None:
    """API Gateway's id for the request: on AWS the caller also gets it as x-amzn-RequestId, and it is unique
    under serverless-offline too, whose Lambda context gives every request the id 1234567890. (On AWS
    the Python runtime puts the Lambda's own id on every log line beside it.)"""
    context = event.get("requestContext")
    request_id = context.get("requestId") if isinstance(context, dict) else None
    return request_id if isinstance(request_id, str) and request_id else None


def handler(event, context):
    started = time.perf_counter()
    event = event if isinstance(event, dict) else {}
    request_id = gateway_request_id(event) or getattr(context, "aws_request_id", None) or str(uuid.uuid4())
    headers = lower_headers(event)
    method = str(event.get("httpMethod") or "").upper()
    path = str(event.get("resource") or event.get("path") or "")
    refused = None  # (code, detail) of a client error whose cause the user is not shown
    try:
        if method == "OPTIONS":
            response = respond(204, None, headers)
        elif (method, path) in ROUTES:
            response = respond(200, ROUTES[method, path](event, headers), headers)
        elif path in PATHS:
            raise HttpError(405, "method_not_allowed", f"{method or 'this method'} is not allowed on {path}")
        else:
            raise HttpError(404, "not_found", f"no route {path or '/'}; see GET /health")
    except HttpError as exc:
        response = error(exc.status, exc.code, exc.message, request_id, headers)
        refused = (exc.code, exc.detail) if exc.detail else None
    except ImageError as exc:
        response = error(IMAGE_ERROR_STATUS.get(exc.code, 400), exc.code, str(exc), request_id, headers)
        refused = (exc.code, exc.detail) if exc.detail else None
    except inference.InputError as exc:
        response = error(400, exc.code, str(exc), request_id, headers)
    except ModelError as exc:
        log.error("model unavailable", extra={"event": "model_unavailable", "request_id": request_id,
                                              "reason": str(exc)})
        response = error(503, "model_unavailable", f"the model is not available: {exc}", request_id, headers)
    except Exception:
        log.exception(f"unhandled error, request_id={request_id}", extra={"event": "internal_error",
                                                                          "request_id": request_id})
        response = error(500, "internal_error", "the server failed; quote the request_id when reporting it",
                         request_id, headers)
    if refused is not None:
        log.info("request refused", extra={"event": "refused", "request_id": request_id, "code": refused[0],
                                           "detail": refused[1]})
    status = response["statusCode"]
    ms = round((time.perf_counter() - started) * 1000, 1)
    route = f"{method} {path}" if (method, path) in ROUTES else "other"
    log.info("request", extra={"event": "request", "request_id": request_id, "method": method, "path": path,
                               "route": route, "status": status, "ms": ms})
    record_metrics(route, status, ms)
    return response


_cold_start = True


def record_metrics(route: str, status: int, ms: float) -> None:
    """One EMF record per request: its latency and whether it failed, by route (a bounded set: an unknown
    path counts as "other"). CloudWatch turns the log line into metrics; nothing is called over the network."""
    global _cold_start
    try:
        metrics.add_dimension("route", route)
        metrics.add_metric("Latency", MetricUnit.Milliseconds, ms)
        metrics.add_metric("Requests", MetricUnit.Count, 1)
        metrics.add_metric("ClientErrors", MetricUnit.Count, int(400 <= status < 500))
        metrics.add_metric("ServerErrors", MetricUnit.Count, int(status >= 500))
        metrics.add_metric("ModelUnavailable", MetricUnit.Count, int(status == 503))
        if _cold_start:
            metrics.add_metric("ColdStart", MetricUnit.Count, 1)
            _cold_start = False
        metrics.flush_metrics()
    except Exception:  # noqa: BLE001 - metrics must never fail a request
        log.warning("metrics not recorded", exc_info=True)
        metrics.clear_metrics()


if tracer is not None:
    # The handler as an X-Ray segment of its own (annotated with cold start and errors), but not its
    # response: images would overflow X-Ray's 64 KB documents.
    handler = tracer.capture_lambda_handler(handler, capture_response=False)


# Cold start: load the model during the Lambda init phase. A failure here is not fatal:
# requests answer 503 with the reason, and each one tries the load again.
if os.environ.get("MODEL_PRELOAD", "1") != "0":
    try:
        get_model()
    except ModelError as exc:
        log.error("model unavailable", extra={"event": "model_unavailable", "reason": str(exc)})
    except Exception:  # noqa: BLE001 - an init failure would take the whole function down; a request retries
        log.exception("model preload failed", extra={"event": "model_preload_failed"})
