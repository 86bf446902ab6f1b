"""Faults in serving: the model missing, corrupt or of an unknown format version; S3
unreachable or denying access. Each gives a clear 503 JSON error naming the cause, and
the first request after the cause is gone succeeds: same process, no restart.

S3 here is a real HTTP endpoint (moto's server on loopback), reached through the same
boto3 client the Lambda uses, with IAM checks switched on for the access-denied case.
"""
import json
import shutil

import boto3
import pytest
import requests

import handler
from tests.conftest import BUNDLED_MODEL
from tests.support.stack import MotoServer, free_port
from tests.support.events import Context, json_event, rest_event


def call(event):
    response = handler.handler(event, Context())
    assert response["headers"]["Access-Control-Allow-Origin"]
    return response["statusCode"], json.loads(response["body"])


def health():
    return call(rest_event("GET", "/health"))


def assert_unavailable(reply, *words):
    status, body = reply
    assert status == 503 and body["error"]["code"] == "model_unavailable", body
    assert body["request_id"] and "Traceback" not in body["error"]["message"]
    for word in words:
        assert word in body["error"]["message"], body


def assert_serving(source_prefix: str):
    status, body = health()
    assert status == 200 and body["model"]["source"].startswith(source_prefix), body
    status, body = call(json_event("/sample", {"n": 2, "seed": 3}))
    assert status == 200 and len(body["images"]) == 2


@pytest.fixture
def fresh_handler(monkeypatch, tmp_path):
    """The handler as a new container sees it: no model loaded, no S3 settings, an empty /tmp cache."""
    for key in ("MODEL_BUCKET", "MODEL_PREFIX", "MODEL_VERSION", "MODEL_DIR", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr("model.store.DEFAULT_CACHE", tmp_path / "model-cache")
    handler.reset_model()
    yield monkeypatch
    handler.reset_model()  # later tests load the bundled model again


@pytest.fixture
def local_model(tmp_path, fresh_handler):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.json", "encoder.onnx", "decoder.onnx", "latent_prior.npz"):  # what the ONNX service reads
        shutil.copy(BUNDLED_MODEL / name, folder / name)
    fresh_handler.setenv("MODEL_DIR", str(folder))
    return folder


# ---- a local model directory ---------------------------------------------------------

def test_a_missing_model_file_is_a_503_until_it_is_back(local_model):
    saved = (local_model / "decoder.onnx").read_bytes()
    (local_model / "decoder.onnx").unlink()
    assert_unavailable(health(), "decoder.onnx", "missing")
    assert_unavailable(call(json_event("/sample", {"n": 1})), "decoder.onnx")  # every request retries
    (local_model / "decoder.onnx").write_bytes(saved)
    assert_serving("local:")


def test_a_missing_model_directory_is_a_503(fresh_handler, tmp_path):
    fresh_handler.setenv("MODEL_DIR", str(tmp_path / "nowhere"))
    assert_unavailable(health(), "no model.json")


def test_a_corrupt_model_file_is_a_503_until_it_is_replaced(local_model):
    path = local_model / "encoder.onnx"
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(damaged))
    assert_unavailable(health(), "encoder.onnx", "corrupt")
    path.write_bytes(good[: len(good) // 3])  # truncated, as by an interrupted copy
    assert_unavailable(health(), "encoder.onnx", "corrupt")
    path.write_bytes(good)
    assert_serving("local:")


def test_an_unreadable_model_json_is_a_503(local_model):
    meta = local_model / "model.json"
    good = meta.read_text()
    meta.write_text(good[:100])
    assert_unavailable(health(), "model.json", "unreadable")
    meta.write_text(good)
    assert_serving("local:")


def test_an_unknown_format_version_is_a_503_until_a_supported_model_is_back(local_model):
    meta = local_model / "model.json"
    good = meta.read_text()
    meta.write_text(json.dumps({**json.loads(good), "format_version": 99}))
    assert_unavailable(health(), "format version 99", "not supported")
    meta.write_text(good)
    assert_serving("local:")


def rehash(folder, meta: dict | None = None) -> None:
    """model.json with the hashes of the files as they are now: what a careless re-export would write."""
    import hashlib

    meta = meta or json.loads((folder / "model.json").read_text())
    meta["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in meta["files"]
                     if (folder / name).exists()}
    (folder / "model.json").write_text(json.dumps(meta))


def test_encoder_and_decoder_swapped_is_a_503_until_they_are_put_back(local_model):
    # Hashes updated, so every file "matches": before issue 20 the load succeeded, /health said 200,
    # and every request answered 500, even after the files were put right (the model stayed loaded).
    good = {name: (local_model / name).read_bytes() for name in ("model.json", "encoder.onnx", "decoder.onnx")}
    (local_model / "encoder.onnx").write_bytes(good["decoder.onnx"])
    (local_model / "decoder.onnx").write_bytes(good["encoder.onnx"])
    rehash(local_model)
    assert_unavailable(health(), "the encoder's inputs are z", "do not fit model.json")
    assert_unavailable(call(json_event("/sample", {"n": 1})), "do not fit model.json")  # not a 500
    for name, data in good.items():
        (local_model / name).write_bytes(data)
    assert_serving("local:")


@pytest.mark.parametrize("change, words", [
    ({"image_size": 64}, ["input image is Nx3x128x128", "says Nx3x64x64"]),
    ({"latent_dim": 128, "latent": {}}, ["output mu is Nx256", "says Nx128"]),  # (no prior: it would say so first)
    ({"latent": {"encoder_outputs": ["mean", "log_variance"]}}, ["outputs are mu, logvar", "mean, log_variance"]),
])
def test_a_model_json_that_does_not_describe_the_files_is_a_503(local_model, change, words):
    good = (local_model / "model.json").read_text()
    (local_model / "model.json").write_text(json.dumps({**json.loads(good), **change}))
    assert_unavailable(health(), *words)
    (local_model / "model.json").write_text(good)
    assert_serving("local:")


def test_a_decoder_whose_output_leaves_the_declared_range_is_a_503(local_model):
    good = (local_model / "model.json").read_text()
    meta = json.loads(good)
    (local_model / "model.json").write_text(json.dumps({**meta, "output": {**meta["output"], "range": [0.4, 0.6]}}))
    assert_unavailable(health(), "outside the range 0.4..0.6 of model.json")
    (local_model / "model.json").write_text(good)
    assert_serving("local:")


def test_the_torchscript_backend_is_checked_by_its_trial_run(local_model):
    pytest.importorskip("torch")
    for name in ("encoder.pt", "decoder.pt"):
        shutil.copy(BUNDLED_MODEL / name, local_model / name)
    (local_model / "encoder.pt").write_bytes((BUNDLED_MODEL / "decoder.pt").read_bytes())
    (local_model / "decoder.pt").write_bytes((BUNDLED_MODEL / "encoder.pt").read_bytes())
    rehash(local_model, json.loads((BUNDLED_MODEL / "model.json").read_text()))
    from model.runtime import Model, ModelError

    with pytest.raises(ModelError, match="do not fit model.json"):
        Model(local_model, "torchscript")


# ---- S3 --------------------------------------------------------------------------------

BUCKET, PREFIX = "car-vae-models", "prod"


@pytest.fixture
def s3_settings(fresh_handler):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    fresh_handler.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    fresh_handler.setenv("AWS_ENDPOINT_URL_IAM", endpoint)
    fresh_handler.setenv("AWS_ACCESS_KEY_ID", "testing")
    fresh_handler.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    fresh_handler.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fresh_handler.setenv("MODEL_BUCKET", BUCKET)
    fresh_handler.setenv("MODEL_PREFIX", PREFIX)
    return port, endpoint


@pytest.fixture
def moto_server():
    """Starts MotoServer on a given port when a test says so; stops them all at the end."""
    servers = []

    def start(port: int) -> MotoServer:
        servers.append(MotoServer(port))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def publish_bundled_model() -> str:
    """`python -m training.upload model/default s3://BUCKET/PREFIX`, against the endpoint in the environment."""
    from training.upload import upload

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return upload(BUNDLED_MODEL, f"s3://{BUCKET}/{PREFIX}", s3)


def test_s3_unreachable_is_a_503_until_it_answers(s3_settings, moto_server):
    port, endpoint = s3_settings
    assert_unavailable(health(), "S3 is unreachable", f"s3://{BUCKET}/{PREFIX}")  # nothing listens on the port
    moto_server(port)
    version = publish_bundled_model()
    assert_serving(f"s3://{BUCKET}/{PREFIX}/versions/{version}/")


def test_a_model_prefix_with_slashes_is_named_rather_than_denied(fresh_handler):
    # The IAM statement is written from the prefix as given: "car-vae/" would grant "car-vae//*", and every
    # read would be an AccessDenied that points at the wrong cause.
    fresh_handler.setenv("MODEL_BUCKET", BUCKET)
    for prefix in ("car-vae/", "/car-vae"):
        fresh_handler.setenv("MODEL_PREFIX", prefix)
        handler.reset_model()
        assert_unavailable(health(), f"MODEL_PREFIX '{prefix}'", 'modelPrefix=car-vae"')


def test_s3_denying_access_is_a_503_until_the_role_may_read_the_model(s3_settings, moto_server):
    port, endpoint = s3_settings
    moto_server(port)
    version = publish_bundled_model()
    iam = boto3.client("iam")
    keys = {}
    for user in ("admin", "lambda"):
        iam.create_user(UserName=user)
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    # From here on, moto checks every request's credentials and IAM policies.
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()

    lambda_credentials = {"AWS_ACCESS_KEY_ID": keys["lambda"]["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": keys["lambda"]["SecretAccessKey"]}
    with pytest.MonkeyPatch.context() as env:
        for key, value in lambda_credentials.items():
            env.setenv(key, value)
        env.setattr(boto3, "DEFAULT_SESSION", None)  # boto3's default session caches the first credentials
        assert_unavailable(health(), "S3 refused", "latest.json (AccessDenied): no model was uploaded there, or the "
                           "function may not read it")

        # The statement serverless.yml gives the function's role: GetObject on the model prefix only.
        admin = boto3.client("iam", aws_access_key_id=keys["admin"]["AccessKeyId"],
                             aws_secret_access_key=keys["admin"]["SecretAccessKey"])
        admin.put_user_policy(UserName="lambda", PolicyName="read-model", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"],
                           "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"}]}))
        assert_serving(f"s3://{BUCKET}/{PREFIX}/versions/{version}/")


# ---- S3 that breaks off or stalls mid-download ----------------------------------------

class BrokenTransferS3:
    """Just enough of S3 (path-style GET and HEAD) to serve the bundled model as version v1,
    except that while `fault` is set, each model file's body stops halfway: "drop" closes the
    connection, "stall" keeps it open and sends nothing more; "silent" accepts every connection
    and never answers at all (an S3 endpoint that hangs)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        files = {f"/{BUCKET}/{PREFIX}/latest.json": json.dumps({"version": "v1"}).encode()}
        for path in BUNDLED_MODEL.iterdir():
            files[f"/{BUCKET}/{PREFIX}/versions/v1/{path.name}"] = path.read_bytes()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _headers(self) -> bytes | None:
                body = files.get(self.path.split("?")[0])
                status = 200 if body is not None else 404
                ranged = self.headers.get("Range", "")  # s3transfer fetches big files in parts
                if body is not None and ranged.startswith("bytes="):
                    first, last = ranged[len("bytes="):].split("-")
                    size = len(body)
                    body = body[int(first): int(last) + 1 if last else None]
                    status = 206
                    self.send_response(status)
                    self.send_header("Content-Range", f"bytes {first}-{int(first) + len(body) - 1}/{size}")
                else:
                    self.send_response(status)
                self.send_header("Content-Length", str(len(body) if body is not None else 0))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return body

            def do_HEAD(self):
                if server.fault == "silent":
                    server.released.wait(60)
                    return
                self._headers()

            def do_GET(self):
                if server.fault == "silent":
                    server.released.wait(60)
                    self.close_connection = True
                    return
                body = self._headers()
                if body is None:
                    return
                if server.fault and not self.path.endswith(".json"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if server.fault == "stall":
                        server.released.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        import threading

        self.fault, self.released = "drop", threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def broken_s3(s3_settings, fresh_handler):
    server = BrokenTransferS3()
    fresh_handler.setenv("AWS_ENDPOINT_URL_S3", server.url)
    yield server
    server.stop()


@pytest.mark.parametrize("fault", ["drop", "stall", "silent"])
def test_a_download_that_breaks_off_is_a_quick_503_until_s3_recovers(broken_s3, fault):
    import time

    broken_s3.fault = fault
    started = time.monotonic()
    assert_unavailable(health(), "S3 is unreachable", f"s3://{BUCKET}/{PREFIX}")
    # Within API Gateway's 29 s, or the caller gets AWS's bare 504 instead of this 503; and within half
    # of 10 s, as a cold start makes two tries (the init phase's, then the first request's).
    assert time.monotonic() - started < 5
    assert "Error" not in health()[1]["error"]["message"]  # said in words; the log names the exception
    broken_s3.fault = None
    assert_serving(f"s3://{BUCKET}/{PREFIX}/versions/v1/")


@pytest.mark.parametrize("fault", ["drop", "stall", "silent"])
def test_a_broken_download_at_cold_start_does_not_stop_the_function_starting(broken_s3, tmp_path, fault):
    import os
    import subprocess
    import sys
    import time

    broken_s3.fault = fault
    # A fresh interpreter imports the handler, which loads the model during Lambda's init phase.
    env = {**os.environ, "MODEL_PRELOAD": "1", "TMPDIR": str(tmp_path)}
    probe = ("import time; started = time.monotonic(); import handler, json; from tests.support.events import Context, "
             "rest_event; status = handler.handler(rest_event('GET', '/health'), Context())['statusCode'];"
             "print(status, time.monotonic() - started)")
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          cwd=BUNDLED_MODEL.parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status, seconds = proc.stdout.strip().splitlines()[-1].split()  # (EMF metric lines come before it)
    assert status == "503"
    # Init-phase load plus the first request's retry: the caller has its 503 within 10 s (a stalled S3
    # took 15.3 s + 15.1 s before issue 20, past API Gateway's 29 s).
    assert float(seconds) < 10, seconds
    logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    unavailable = [entry for entry in logged if entry.get("event") == "model_unavailable"]
    # First the load at import (Lambda's init phase, no request yet), then the request's own retry.
    assert len(unavailable) == 2 and "request_id" not in unavailable[0] and unavailable[1]["request_id"]
