"""Real API Gateway REST (v1) Lambda-proxy events, as API Gateway sends them."""
from __future__ import annotations

import base64
import json
import time
import uuid

from requests_toolbelt.multipart.encoder import MultipartEncoder


class Context:
    """The parts of the Lambda context object the handler reads."""

    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "car-vae-dev-api"
        self.memory_limit_in_mb = 2048

    def get_remaining_time_in_millis(self):
        return 29_000


def rest_event(method: str, path: str, body: bytes | str | None = None, headers: dict | None = None,
               base64_encoded: bool | None = None) -> dict:
    headers = dict(headers or {})
    headers.setdefault("Host", "abc123.execute-api.us-east-1.amazonaws.com")
    headers.setdefault("User-Agent", "pytest")
    headers.setdefault("X-Forwarded-Proto", "https")
    if isinstance(body, bytes):
        # API Gateway base64-encodes bodies whose Content-Type is a binary media type.
        encoded = base64_encoded if base64_encoded is not None else True
        body = base64.b64encode(body).decode("ascii") if encoded else body.decode("utf-8", "surrogateescape")
    else:
        encoded = bool(base64_encoded)
    now = time.time()
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123", "resourcePath": path, "httpMethod": method, "path": f"/dev{path}",
            "stage": "dev", "requestId": str(uuid.uuid4()), "extendedRequestId": "x-1=",
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000), "protocol": "HTTP/1.1", "accountId": "123456789012",
            "apiId": "abc123", "domainName": headers["Host"], "domainPrefix": "abc123",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": headers["User-Agent"], "accessKey": None,
                         "accountId": None, "caller": None, "user": None, "userArn": None},
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def multipart_body(fields: dict, boundary: str | None = None) -> tuple[bytes, str]:
    """fields: name -> bytes (sent as a file) or str (sent as a text field); a random boundary unless given."""
    encoder = MultipartEncoder(fields={
        name: (f"{name}.jpg", value, "image/jpeg") if isinstance(value, bytes) else value
        for name, value in fields.items()
    }, boundary=boundary)
    return encoder.to_string(), encoder.content_type


def multipart_event(path: str, fields: dict, **header_overrides) -> dict:
    body, content_type = multipart_body(fields)
    return rest_event("POST", path, body, {"Content-Type": content_type, **header_overrides})


def json_event(path: str, payload, content_type: str = "application/json") -> dict:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return rest_event("POST", path, body, {"Content-Type": content_type}, base64_encoded=False)
