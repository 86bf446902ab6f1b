"""Through serverless-offline (API Gateway + Lambda emulation) over real HTTP."""
import base64
import io

import numpy as np
import requests
from PIL import Image

ORIGIN = {"Origin": "http://localhost:8000"}


def test_multipart_upload_over_http_returns_a_reconstruction(local_stack, real_photos):
    size = requests.get(f"{local_stack.api}/health", timeout=60).json()["model"]["image_size"]
    with open(real_photos[1], "rb") as photo:
        response = requests.post(f"{local_stack.api}/reconstruct", files={"image": ("car.jpg", photo, "image/jpeg")},
                                 headers=ORIGIN, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN["Origin"])
    body = response.json()
    recon = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["reconstruction"]))))
    assert recon.shape == (size, size, 3) and recon.std() > 5


def test_sample_and_interpolate_over_http(local_stack, real_photos):
    sample = requests.post(f"{local_stack.api}/sample", json={"n": 3, "seed": 11}, headers=ORIGIN, timeout=60)
    assert sample.status_code == 200 and len(sample.json()["images"]) == 3
    with open(real_photos[0], "rb") as a, open(real_photos[4], "rb") as b:
        morph = requests.post(f"{local_stack.api}/interpolate", files={"a": a, "b": b}, data={"steps": "4"},
                              headers=ORIGIN, timeout=60)
    assert morph.status_code == 200 and len(morph.json()["images"]) == 4


def test_errors_over_http_are_json_with_cors(local_stack):
    bad = requests.post(f"{local_stack.api}/reconstruct", files={"image": ("notes.txt", b"hello", "text/plain")},
                        headers=ORIGIN, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "not_an_image"
    assert bad.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN["Origin"])
    again = requests.post(f"{local_stack.api}/sample", json={"n": 0}, timeout=60)
    assert again.status_code == 400 and again.json()["request_id"] != bad.json()["request_id"], \
        "each request has its own id to find it in the log by"
    preflight = requests.options(f"{local_stack.api}/reconstruct", timeout=60,
                                 headers={**ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN["Origin"])


def test_a_port_in_use_is_named_before_anything_starts():
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.support.stack import free_port

    ports = {"--api-port": free_port(), "--lambda-port": free_port(), "--web-port": free_port()}
    with socket.socket() as busy:  # a forgotten `make run`'s page server, say
        busy.bind(("127.0.0.1", ports["--web-port"]))
        busy.listen()
        proc = subprocess.run([sys.executable, "-m", "scripts.local_stack",
                               *[str(v) for pair in ports.items() for v in pair]],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"already in use on 127.0.0.1: --web-port {ports['--web-port']}" in proc.stderr
    assert "API:" not in proc.stdout  # nothing was started, or claimed to be


def test_the_local_stack_serves_a_model_folder_of_ones_own(tmp_path, tiny_model_dir, real_photos):
    # The function's MODEL_DIR comes from serverless.yml, so the shell's would be ignored: --model-dir
    # reaches it through the modelDir parameter.
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.support.stack import LocalStack

    stack = LocalStack(tmp_path / "stack.log", extra_args=("--model-dir", str(tiny_model_dir)))
    try:
        stack.wait_ready()
        health = stack.get("/health")
        assert health["model"]["image_size"] == 64 and str(tiny_model_dir) in health["model"]["source"], health
        with open(real_photos[0], "rb") as photo:
            response = requests.post(f"{stack.api}/reconstruct", files={"image": ("car.jpg", photo, "image/jpeg")},
                                     timeout=60)
        assert response.status_code == 200, response.text
    finally:
        problems = stack.stop()
    assert not problems, f"{problems}\n{stack.log_tail()}"

    missing = subprocess.run([sys.executable, "-m", "scripts.local_stack", "--model-dir", str(tmp_path)],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and f"--model-dir {tmp_path}: no model.json there" in missing.stderr


def test_the_local_stack_serves_a_model_uploaded_to_s3(tmp_path, tiny_model_dir, monkeypatch):
    # The whole S3 path on this machine: training.upload to moto_server (a real S3 endpoint), then the
    # function under serverless-offline finds latest.json there and loads that version.
    import subprocess
    import sys

    import boto3

    from tests.conftest import ROOT
    from tests.support.stack import LocalStack, MotoServer

    moto = MotoServer()
    try:
        for key, value in {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="models")
        upload = subprocess.run([sys.executable, "-m", "training.upload", str(tiny_model_dir), "s3://models/cars"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert upload.returncode == 0, upload.stderr

        stack = LocalStack(tmp_path / "stack.log", extra_args=("--model-s3", "s3://models/cars"))
        try:
            stack.wait_ready()
            health = stack.get("/health")
            assert health["model"]["source"].startswith("s3://models/cars/versions/"), health
            assert health["model"]["image_size"] == 64
            status, body = stack.post_form("/interpolate", {"a": png_of_colour("red"), "b": png_of_colour("blue"),
                                                            "steps": "3"})
            assert status == 200 and len(body["images"]) == 3
        finally:
            problems = stack.stop()
        assert not problems, f"{problems}\n{stack.log_tail()}"

        # Nothing uploaded under that prefix: the launcher says why at once instead of waiting out --timeout.
        empty = LocalStack(tmp_path / "empty.log", extra_args=("--model-s3", "s3://models/nothing"))
        try:
            assert empty.process.wait(timeout=120) != 0
        finally:
            problems = empty.stop()
        log = empty.log_tail()
        assert "the API is up but" in log and "s3://models/nothing/latest.json (NoSuchKey): no model was uploaded" in log
        assert "Traceback" not in log, log
        assert not problems, f"{problems}\n{log}"
    finally:
        moto.stop()


def png_of_colour(colour: str) -> bytes:
    from PIL import Image

    from tests.conftest import png_of

    return png_of(Image.new("RGB", (96, 64), colour))
