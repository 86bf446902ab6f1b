"""Where the service's model comes from: S3 (cached under /tmp) or a local directory.

S3 layout, as written by `python -m training.upload`:

    s3://BUCKET/PREFIX/latest.json                 {"version": "...", ...}
    s3://BUCKET/PREFIX/versions/VERSION/model.json
    s3://BUCKET/PREFIX/versions/VERSION/<files listed in model.json>

A version is downloaded once into CACHE/VERSION and reused while the container lives.
Files go to a temporary folder first and are renamed into place when complete, so an
interrupted download is never mistaken for a model.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from model.runtime import Model, ModelError, model_files

log = logging.getLogger("car-vae")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "car-vae-models"
VERSION_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class Location:
    folder: Path  # a local model directory, ready to load
    source: str  # where it came from, for /health
    cached: bool = False  # a downloaded copy, to be dropped if it turns out bad


def version_prefix(prefix: str, version: str) -> str:
    return f"{prefix.strip('/')}/versions/{version}/"


def pointer_key(prefix: str) -> str:
    """The object naming the version to serve: moved only after a whole version is uploaded."""
    return f"{prefix.strip('/')}/latest.json"


# A cold start with S3 down or stalled must leave room for the answer: the init phase's load and the
# first request's retry together within 10 s (API Gateway gives up at 29 s). Each S3 call waits at most
# CONNECT_TIMEOUT_S to connect and READ_TIMEOUT_S for each read (a healthy S3 answers in milliseconds
# and never pauses that long mid-file), two attempts in all; the first call that fails ends the load.
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 1.5
ATTEMPTS = 2
# ...and a load that is still downloading after this long (an S3 that trickles) stops before its next file.
LOAD_BUDGET_S = 4.0


def s3_client():
    import boto3
    from botocore.config import Config

    # A request should get a 503, not wait out API Gateway's 29 s; the next request tries again.
    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    retries={"total_max_attempts": ATTEMPTS, "mode": "standard"})
    return boto3.client("s3", config=config)


def _one_attempt():
    from boto3.s3.transfer import TransferConfig

    # download_file would otherwise retry a broken transfer 5 times, each waiting out the read timeout.
    return TransferConfig(num_download_attempts=1)


def open_model(backend: str = "onnx", environ=os.environ, cache: Path | None = None, s3=None) -> Model:
    """Locate the configured model and load it; raises ModelError with a reason fit for users."""
    location = locate(backend, environ, cache, s3)
    try:
        return Model(location.folder, backend, location.source)
    except ModelError:
        if location.cached:
            # A bad download must not stick: the next attempt fetches it again.
            shutil.rmtree(location.folder, ignore_errors=True)
        raise


def locate(backend: str = "onnx", environ=os.environ, cache: Path | None = None, s3=None) -> Location:
    """MODEL_BUCKET + MODEL_PREFIX (+ optional MODEL_VERSION) -> S3; else MODEL_DIR or the bundled model."""
    bucket, prefix = environ.get("MODEL_BUCKET", ""), environ.get("MODEL_PREFIX", "")
    if bucket and prefix and prefix != prefix.strip("/"):
        # serverless.yml grants s3:GetObject on "<bucket>/<modelPrefix>/*" as the prefix is written:
        # with a slash at either end that matches none of the keys read here, and S3 says AccessDenied.
        raise ModelError(f"MODEL_PREFIX '{prefix}' starts or ends with '/', so the function's S3 permission "
                         f"matches no model key: deploy with --param=\"modelPrefix={prefix.strip('/')}\"")
    if bucket and prefix:
        version = environ.get("MODEL_VERSION") or None
        return fetch_from_s3(bucket, prefix, version, backend, cache, s3)
    folder = Path(environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR)
    if not folder.is_absolute():
        folder = Path(__file__).resolve().parent.parent / folder
    return Location(folder, f"local:{folder}")


def fetch_from_s3(bucket: str, prefix: str, version: str | None, backend: str = "onnx",
                  cache: Path | None = None, s3=None) -> Location:
    """Download model.json and the files the backend needs of one version (latest.json's, if None)
    into the cache."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = prefix.strip("/")
    cache = cache or DEFAULT_CACHE
    deadline = time.monotonic() + LOAD_BUDGET_S
    reading = pointer_key(prefix)  # the key an S3 error is about
    try:
        s3 = s3 or s3_client()
        if version is None:
            pointer = _get_json(s3, bucket, reading)
            version = pointer.get("version") if isinstance(pointer, dict) else None
        if not isinstance(version, str) or not set(version) <= VERSION_CHARS or version.strip(".") == "":
            raise ModelError(f"invalid model version {version!r} for s3://{bucket}/{prefix}")
        key = version_prefix(prefix, version)
        location = Location(cache / version, f"s3://{bucket}/{key}", cached=True)
        if _cached(location.folder, backend):
            return location
        reading = key + "model.json"
        meta = _get_json(s3, bucket, reading)
        if not isinstance(meta, dict):
            raise ModelError(f"s3://{bucket}/{key}model.json is not a JSON object")
        names = model_files(meta, backend)
        listed = meta.get("files", {})
        missing = [name for name in names if name not in listed]
        if missing:
            raise ModelError(f"model.json at s3://{bucket}/{key} lists no {', '.join(missing)}")
        location.folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if time.monotonic() > deadline:
                raise ModelError(f"S3 is too slow: s3://{bucket}/{key} did not download within {LOAD_BUDGET_S:g} s")
            # Download beside the target, then rename: a partial file never has the real name.
            partial = location.folder / f".{name}.part"
            reading = key + name
            s3.download_file(bucket, reading, str(partial), Config=_one_attempt())
            os.replace(partial, location.folder / name)
        partial = location.folder / ".model.json.part"
        partial.write_text(json.dumps(meta))
        os.replace(partial, location.folder / "model.json")  # written last: marks the copy complete
        return location
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        hint = ""
        if reading == pointer_key(prefix) and code in ("NoSuchKey", "404", "AccessDenied"):
            # Without s3:ListBucket (the deployed role has only GetObject) S3 answers a missing key AccessDenied.
            unsure = ", or the function may not read it" if code == "AccessDenied" else ""
            hint = f": no model was uploaded there{unsure} (python -m training.upload MODEL_DIR s3://{bucket}/{prefix})"
        raise ModelError(f"S3 refused the model download of s3://{bucket}/{reading} ({code}){hint}") from None
    except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: a transfer that broke off, e.g. RetriesExceededError
        log.warning("S3 failed reading s3://%s/%s: %s: %s", bucket, reading, exc.__class__.__name__, exc)
        raise ModelError(f"S3 is unreachable for s3://{bucket}/{prefix}: {_s3_failure(exc)}") from None
    except OSError as exc:
        log.warning("model cache write failed: %s: %s", exc.__class__.__name__, exc)
        reason = "the disk is full" if exc.errno == errno.ENOSPC else "it is not writable"
        raise ModelError(f"could not write the model cache under {cache}: {reason}") from None


def _s3_failure(exc: Exception) -> str:
    """What went wrong, in words (the exception's class and text go to the log)."""
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    cause = exc
    while cause is not None and not isinstance(cause, (ReadTimeoutError, ConnectTimeoutError,
                                                        EndpointConnectionError)):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ReadTimeoutError) or "timed out" in str(exc).lower():
        return f"it stopped answering (no data for {READ_TIMEOUT_S:g} s)"
    if isinstance(cause, (ConnectTimeoutError, EndpointConnectionError)):
        return "could not connect to it"
    return "the connection broke off"


def _cached(folder: Path, backend: str) -> bool:
    """model.json is written last, so with it present every file it names is complete."""
    try:
        meta = json.loads((folder / "model.json").read_text())
        return all((folder / name).is_file() for name in model_files(meta, backend))
    except (OSError, ValueError, AttributeError, ModelError):
        return False


def _get_json(s3, bucket: str, key: str):
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"s3://{bucket}/{key} is not valid JSON") from None
