"""Deploy readiness without an AWS account: `sls package`, its size, cfn-lint, and the
packaged handler running under Python 3.12 (the Lambda runtime) without torch."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
SLS = ROOT / "node_modules" / ".bin" / "sls"
VENV312 = ROOT / ".venv312" / "bin" / "python"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sls-package")
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
           "SLS_PYTHON": os.environ.get("SLS_PYTHON", sys.executable)}
    # Any credentials lying around must not matter: packaging needs no AWS account.
    for key in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(key, None)
    proc = subprocess.run([str(SLS), "package", "--stage", "ci", "--package", str(out), "--param=maxConcurrency=20"],
                          cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def template(package) -> dict:
    return json.loads((package / "cloudformation-template-update-stack.json").read_text())


@pytest.fixture(scope="module")
def unzipped(package, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("lambda-root")
    with zipfile.ZipFile(package / "car-vae.zip") as archive:
        archive.extractall(target)
    return target


def test_package_fits_in_lambda_without_torch(package, unzipped):
    with zipfile.ZipFile(package / "car-vae.zip") as archive:
        names = archive.namelist()
        unpacked = sum(info.file_size for info in archive.infolist())
    print(f"\nLambda package: {unpacked / 2**20:.1f} MiB unzipped "
          f"({(package / 'car-vae.zip').stat().st_size / 2**20:.1f} MiB zipped)")
    assert unpacked <= LAMBDA_UNZIPPED_LIMIT
    assert not any(n.startswith("torch/") for n in names), "torch must not be in the package"
    assert not any(n.endswith(".pt") for n in names), "TorchScript files are useless without torch"
    for needed in ("handler.py", "model/default/model.json", "model/default/encoder.onnx",
                   "model/default/decoder.onnx", "model/default/latent_prior.npz", "onnxruntime/__init__.py",
                   "numpy/__init__.py", "PIL/Image.py", "requests_toolbelt/__init__.py"):
        assert needed in names, needed
    for unwanted in ("tests/", "training/", "node_modules/", ".venv/", "web/", "boto3/", "botocore/"):
        assert not any(n.startswith(unwanted) for n in names), unwanted


def test_cloudformation_passes_cfn_lint(package):
    template = package / "cloudformation-template-update-stack.json"
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run([str(cfn_lint), str(template)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def resources_of(template: dict, kind: str) -> list[dict]:
    return [r for r in template["Resources"].values() if r["Type"] == kind]


def test_template_declares_binary_multipart_python312_and_least_privilege(template):
    (api,) = resources_of(template, "AWS::ApiGateway::RestApi")
    assert "multipart/form-data" in api["Properties"]["BinaryMediaTypes"]
    (function,) = resources_of(template, "AWS::Lambda::Function")
    assert function["Properties"]["Runtime"] == "python3.12"
    assert function["Properties"]["Handler"] == "handler.handler"
    assert function["Properties"]["ReservedConcurrentExecutions"] == 20  # --param=maxConcurrency=20 caps it
    assert function["Properties"]["Environment"]["Variables"]["MODEL_BUCKET"] == {"Ref": "ModelBucket"}
    (role,) = resources_of(template, "AWS::IAM::Role")
    statements = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    s3 = [s for s in statements if any(str(a).startswith("s3:") for a in s["Action"])]
    assert len(s3) == 1 and s3[0]["Action"] == ["s3:GetObject"], "read-only model access, nothing else on S3"
    # ...and only under the model prefix of the stack's own bucket (empty by default: nothing at all).
    assert s3[0]["Resource"] == {"Fn::Join": ["", ["arn:aws:s3:::", {"Ref": "ModelBucket"}, "//*"]]}
    methods = resources_of(template, "AWS::ApiGateway::Method")
    routes = {(m["Properties"]["HttpMethod"]) for m in methods}
    assert {"GET", "POST", "OPTIONS"} <= routes, "CORS preflight is declared"


def test_a_model_bucket_other_than_the_stacks_gets_the_read_permission_too():
    # --param=modelBucket (the local stack's --model-s3, or a bucket of one's own): the function reads
    # that bucket, and its one S3 permission follows, still only under the model prefix.
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off"}
    proc = subprocess.run([str(SLS), "print", "--stage", "ci", "--format", "json", "--param=modelBucket=my-models",
                           "--param=modelPrefix=car-vae"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    provider = json.loads(proc.stdout)["provider"]
    assert provider["environment"]["MODEL_BUCKET"] == "my-models"
    (statement,) = provider["iam"]["role"]["statements"]
    assert statement["Action"] == ["s3:GetObject"]
    assert statement["Resource"] == {"Fn::Join": ["", ["arn:aws:s3:::", "my-models", "/car-vae/*"]]}


@pytest.mark.skipif(not VENV312.exists(), reason="no Python 3.12 found by scripts/setup.sh")
def test_handler_tests_pass_on_python312_from_the_package(unzipped):
    """The deployable zip, on the Lambda's Python, with no torch anywhere: the handler suite passes."""
    env = {**os.environ, "HANDLER_ROOT": str(unzipped), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([str(VENV312), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_handler.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    probe = subprocess.run([str(VENV312), "-c", "import sys, handler; print(sys.version_info[:2], handler.__file__);"
                            "import importlib.util; print(importlib.util.find_spec('torch'))"],
                           cwd=unzipped, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert "(3, 12)" in probe.stdout and str(unzipped) in probe.stdout and probe.stdout.strip().endswith("None")


def evaluate(value):
    """The few CloudFormation functions the gateway responses use, evaluated as AWS would."""
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        args = [evaluate(a) for a in args] if isinstance(args, list) else evaluate(args)
        if name == "Fn::Join":
            return args[0].join(args[1])
        if name == "Fn::Split":
            return args[1].split(args[0])
        if name == "Fn::Select":
            return args[1][int(args[0])]
        raise AssertionError(f"unexpected {name}")
    return [evaluate(v) for v in value] if isinstance(value, list) else value


def test_errors_api_gateway_answers_itself_carry_cors(template):
    responses = {r["Properties"]["ResponseType"]: r["Properties"] for r in
                 resources_of(template, "AWS::ApiGateway::GatewayResponse")}
    assert {"DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    for properties in responses.values():
        headers = {k: evaluate(v) for k, v in properties["ResponseParameters"].items()}
        assert headers["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"  # corsOrigin's default
        assert "Content-Type" in headers["gatewayresponse.header.Access-Control-Allow-Headers"]
        assert properties["RestApiId"] == {"Ref": "ApiGatewayRestApi"}
