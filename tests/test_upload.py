"""Upload to S3 under a versioned key with a latest pointer, then load it back (moto)."""
import json

import boto3
import pytest
from moto import mock_aws

from model.store import fetch_from_s3, open_model
from training.upload import UploadError, upload

BUCKET = "car-vae-models"


@pytest.fixture
def s3(monkeypatch):
    # moto's decorator is bypassed when a real endpoint is configured.
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def keys(s3, prefix=""):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def test_upload_writes_a_version_and_moves_the_pointer(s3, tiny_model_dir, tmp_path):
    v1 = upload(tiny_model_dir, f"s3://{BUCKET}/cars")
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    assert keys(s3, f"cars/versions/{v1}/") == sorted(f"cars/versions/{v1}/{n}" for n in [*meta["files"], "model.json"])
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="cars/latest.json")["Body"].read())
    assert pointer["version"] == v1

    location = fetch_from_s3(BUCKET, "cars", None, "onnx", tmp_path / "cache", s3)
    assert location.folder.name == v1 and location.source.endswith(f"cars/versions/{v1}/")
    assert (location.folder / "encoder.onnx").read_bytes() == (tiny_model_dir / "encoder.onnx").read_bytes()
    # The sampling prior travels with the ONNX files: without it the service would sample N(0, I).
    assert (location.folder / "latent_prior.npz").read_bytes() == (tiny_model_dir / "latent_prior.npz").read_bytes()
    assert not (location.folder / "encoder.pt").exists(), "the ONNX service downloads no TorchScript files"

    import time
    time.sleep(1.1)  # versions are time-stamped to the second
    v2 = upload(tiny_model_dir, f"s3://{BUCKET}/cars/")
    assert v2 != v1
    assert json.loads(s3.get_object(Bucket=BUCKET, Key="cars/latest.json")["Body"].read())["version"] == v2
    assert keys(s3, f"cars/versions/{v1}/"), "older versions stay for rollback"


def test_service_loads_the_uploaded_model(s3, tiny_model_dir, tmp_path):
    upload(tiny_model_dir, f"s3://{BUCKET}/prod")
    model = open_model("onnx", {"MODEL_BUCKET": BUCKET, "MODEL_PREFIX": "prod"}, tmp_path / "cache", s3)
    assert model.image_size == 64 and model.source.startswith(f"s3://{BUCKET}/prod/versions/")
    assert model.prior is not None


@pytest.mark.parametrize("uri", ["cars", "s3://", "s3://bucket-only", "https://x/y"])
def test_bad_destination_is_refused(uri, tiny_model_dir):
    with pytest.raises(UploadError, match="s3://BUCKET/PREFIX"):
        upload(tiny_model_dir, uri)


def test_a_folder_that_is_not_an_export_is_refused(tmp_path, tiny_model_dir, s3):
    with pytest.raises(UploadError, match="no model.json"):
        upload(tmp_path, f"s3://{BUCKET}/x")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "decoder.onnx").write_bytes(b"truncated")
    with pytest.raises(UploadError, match="decoder.onnx"):
        upload(broken, f"s3://{BUCKET}/x")
    assert keys(s3) == [], "nothing is uploaded from a broken export"


def test_cli_reports_errors_without_a_traceback(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "training.upload", str(tmp_path), "s3://b/p"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and str(tmp_path) in proc.stderr and "Traceback" not in proc.stderr


def test_a_refused_upload_is_an_error_that_leaves_the_pointer_alone(s3, tiny_model_dir):
    version = upload(tiny_model_dir, f"s3://{BUCKET}/cars")
    with pytest.raises(UploadError, match="s3://no-such-bucket/cars failed .*NoSuchBucket"):
        upload(tiny_model_dir, "s3://no-such-bucket/cars")
    # A version whose files stop halfway (S3 refusing the second one) never becomes the latest.
    real_upload = s3.upload_file
    calls = []

    def refuses_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            return real_upload(args[0], "no-such-bucket", *args[2:], **kwargs)
        return real_upload(*args, **kwargs)

    s3.upload_file = refuses_the_second
    with pytest.raises(UploadError, match="latest.json was not changed"):
        upload(tiny_model_dir, f"s3://{BUCKET}/cars", s3)
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="cars/latest.json")["Body"].read())
    assert pointer["version"] == version
