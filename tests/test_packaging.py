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

# AWS allows 250 MB unzipped; the project's own bound leaves room to grow (issue 20: powertools in).
LAMBDA_UNZIPPED_LIMIT = 180 * 1024 * 1024
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
                   "numpy/__init__.py", "PIL/Image.py", "requests_toolbelt/__init__.py",
                   "aws_lambda_powertools/__init__.py", "aws_xray_sdk/__init__.py"):
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


def api_function(template: dict) -> dict:
    """The service's function (the framework adds one of its own for the access logs' CloudWatch role)."""
    (function,) = [f for f in resources_of(template, "AWS::Lambda::Function")
                   if f["Properties"]["Handler"] == "handler.handler"]
    return function


def test_template_declares_binary_multipart_python312_and_least_privilege(template):
    (api,) = resources_of(template, "AWS::ApiGateway::RestApi")
    assert "multipart/form-data" in api["Properties"]["BinaryMediaTypes"]
    function = api_function(template)
    assert function["Properties"]["Runtime"] == "python3.12"
    assert function["Properties"]["Handler"] == "handler.handler"
    assert function["Properties"]["ReservedConcurrentExecutions"] == 20  # --param=maxConcurrency=20 caps it
    assert function["Properties"]["Environment"]["Variables"]["MODEL_BUCKET"] == {"Ref": "ModelBucket"}
    role = template["Resources"][function["Properties"]["Role"]["Fn::GetAtt"][0]]
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


# ---- issue 20: throttled by default, observable, the model bucket TLS-only -------------------------

def gateway_response(template: dict, kind: str) -> dict:
    (properties,) = [r["Properties"] for r in resources_of(template, "AWS::ApiGateway::GatewayResponse")
                     if r["Properties"]["ResponseType"] == kind]
    return properties


def test_the_stage_is_throttled_by_default_and_a_throttled_client_gets_a_429_with_cors(template):
    (deployment,) = resources_of(template, "AWS::ApiGateway::Deployment")
    stage = deployment["Properties"]["StageDescription"]
    assert (stage["ThrottlingRateLimit"], stage["ThrottlingBurstLimit"]) == (10, 20)  # the params' defaults
    throttled = gateway_response(template, "THROTTLED")
    assert throttled["StatusCode"] == "429"
    headers = {k: evaluate(v) for k, v in throttled["ResponseParameters"].items()}
    assert headers["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
    body = throttled["ResponseTemplates"]["application/json"]
    assert '"code": "throttled"' in body and "$context.requestId" in body


def test_access_logs_a_5xx_alarm_and_a_tls_only_model_bucket_with_expiring_old_versions(template):
    (log_group,) = [r for r in resources_of(template, "AWS::Logs::LogGroup")
                    if r["Properties"]["LogGroupName"] == "/aws/api-gateway/car-vae-ci"]
    assert log_group["Properties"]["RetentionInDays"] == 14
    (alarm,) = resources_of(template, "AWS::CloudWatch::Alarm")
    alarm = alarm["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"], alarm["Period"]) == (
        "AWS/ApiGateway", "5XXError", 5, 300)
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {"ApiName": "ci-car-vae", "Stage": "ci"}
    (topic_subscription,) = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::SNS::Subscription"]
    assert template["Resources"][topic_subscription]["Condition"] == "AlarmHasEmail"  # only with alarmEmail
    policies = [r["Properties"] for r in resources_of(template, "AWS::S3::BucketPolicy")
                if r["Properties"]["Bucket"] == {"Ref": "ModelBucket"}]
    (statement,) = policies[0]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket = template["Resources"]["ModelBucket"]["Properties"]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30 and rule["Status"] == "Enabled"
    function = api_function(template)
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "CarVae" and variables["TRACING"] == "false"
    assert "TracingConfig" not in function["Properties"]  # X-Ray only when asked for


def test_the_params_tune_throttling_alarm_retention_and_tracing():
    env = {**os.environ, "SLS_TELEMETRY_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off"}
    proc = subprocess.run([str(SLS), "print", "--stage", "ci", "--format", "json", "--param=throttleRate=50",
                           "--param=throttleBurst=100", "--param=tracing=true", "--param=alarmEmail=ops@example.com",
                           "--param=noncurrentVersionDays=7", "--param=accessLogs=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads(proc.stdout)
    throttling = config["custom"]["stageThrottling"]  # (command-line params arrive as text; the plugin reads numbers)
    assert (str(throttling["rateLimit"]), str(throttling["burstLimit"])) == ("50", "100")
    assert config["provider"]["tracing"] == {"apiGateway": True, "lambda": True}
    assert config["provider"]["environment"]["TRACING"] == "true"
    # Nothing may switch Powertools' Tracer off behind the param's back (POWERTOOLS_TRACE_DISABLED did, inverted).
    assert "POWERTOOLS_TRACE_DISABLED" not in config["provider"]["environment"]
    assert config["provider"]["logs"]["restApi"]["accessLogging"] is False
    resources = config["resources"]["Resources"]
    assert config["resources"]["Parameters"]["AlarmEmail"]["Default"] == "ops@example.com"
    rule = resources["ModelBucket"]["Properties"]["LifecycleConfiguration"]["Rules"][0]
    assert str(rule["NoncurrentVersionExpiration"]["NoncurrentDays"]) == "7"
