"""Publishing the page to S3, against moto_server as a real local S3/CloudFormation endpoint."""
import json
import os
import subprocess
import sys

import boto3
import pytest

from tests.conftest import ROOT
from tests.support.stack import MotoServer


@pytest.fixture(scope="module")
def moto_endpoint():
    server = MotoServer()
    yield server.url
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch):
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}


def run_publish(env, *args):
    return subprocess.run([sys.executable, "-m", "scripts.publish_web", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_publish_with_explicit_bucket(aws_env):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="site-explicit")
    s3.put_object(Bucket="site-explicit", Key="old-feature.js", Body=b"from an earlier publish")
    s3.put_object(Bucket="site-explicit", Key="car-vae/latest.json", Body=b"{}")  # a bucket shared with models
    proc = run_publish(aws_env, "--bucket", "site-explicit", "--api-url", "https://api.example/dev/")
    assert proc.returncode == 0, proc.stderr
    kept = {o["Key"] for o in s3.list_objects_v2(Bucket="site-explicit")["Contents"]}
    assert {"old-feature.js", "car-vae/latest.json"} <= kept, "a bucket named with --bucket keeps what it held"
    s3.delete_object(Bucket="site-explicit", Key="car-vae/latest.json")
    proc = run_publish(aws_env, "--bucket", "site-explicit", "--api-url", "https://api.example/dev/", "--delete-stale")
    assert proc.returncode == 0, proc.stderr
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="site-explicit")["Contents"]}
    assert {"index.html", "config.js", "vendor/jquery.min.js"} <= keys
    assert not any(k.endswith(".py") for k in keys)
    assert "old-feature.js" not in keys, "what the page no longer has does not stay public"
    config = s3.get_object(Bucket="site-explicit", Key="config.js")
    assert b'"apiBaseUrl": "https://api.example/dev"' in config["Body"].read()
    assert config["CacheControl"] == "no-cache"
    assert s3.head_object(Bucket="site-explicit", Key="index.html")["ContentType"].startswith("text/html")
    jquery = s3.get_object(Bucket="site-explicit", Key="vendor/jquery.min.js")["Body"].read()
    assert jquery == (ROOT / "node_modules/jquery/dist/jquery.min.js").read_bytes()


def test_publish_reads_the_stack_outputs(aws_env):
    boto3.client("s3").create_bucket(Bucket="site-from-stack")
    boto3.client("s3").put_object(Bucket="site-from-stack", Key="old-feature.js", Body=b"from an earlier publish")
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "WebBucketName": {"Value": "site-from-stack"},
            "ServiceEndpoint": {"Value": "https://abc.execute-api.us-east-1.amazonaws.com/test"},
            "WebsiteURL": {"Value": "http://site-from-stack.s3-website-us-east-1.amazonaws.com"},
        },
    }
    boto3.client("cloudformation").create_stack(StackName="car-vae-test", TemplateBody=json.dumps(template))
    proc = run_publish(aws_env, "--stage", "test")
    assert proc.returncode == 0, proc.stderr
    assert "open http://site-from-stack.s3-website" in proc.stdout
    body = boto3.client("s3").get_object(Bucket="site-from-stack", Key="config.js")["Body"].read()
    assert b"abc.execute-api.us-east-1.amazonaws.com/test" in body
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="site-from-stack")["Contents"]}
    assert "old-feature.js" not in keys, "the stack's own website bucket holds the current page only"


def test_publish_errors_are_clear(aws_env):
    proc = run_publish(aws_env, "--bucket", "no-such-bucket", "--api-url", "https://x/dev")
    assert proc.returncode != 0 and "NoSuchBucket" in proc.stderr and "Traceback" not in proc.stderr
    missing = run_publish(aws_env, "--stage", "nope")
    assert missing.returncode != 0 and "car-vae-nope" in missing.stderr


def test_only_the_pages_own_files_are_published(tmp_path, monkeypatch):
    from scripts import website

    for name in ("index.html", "app.js", "style.css", ".env", "index.html~", ".app.js.swp", "notes.md",
                 "tool.py", ".git/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    monkeypatch.setattr(website, "WEB", tmp_path)
    assert set(website.site_files("https://api.example/dev")) == {
        "index.html", "app.js", "style.css", "vendor/jquery.min.js", "config.js"}
