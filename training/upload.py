"""Upload an exported model directory to S3 as a new version, then point `latest` at it.

    python -m training.upload model/default s3://BUCKET/PREFIX

Writes PREFIX/versions/VERSION/<files> (model.json last), then PREFIX/latest.json.
The service reads latest.json at cold start, so a half-finished upload is never
served: the pointer moves only after every file of the version is in place.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from model.store import pointer_key, version_prefix


class UploadError(RuntimeError):
    pass


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if parsed.scheme != "s3" or not bucket or not prefix:
        raise UploadError(f"{uri}: expected s3://BUCKET/PREFIX")
    return bucket, prefix


def read_model_dir(folder: Path) -> dict:
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise UploadError(f"{folder}: no model.json (export a run with python -m training.export first)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UploadError(f"{meta_path}: unreadable ({exc})") from None
    for name, digest in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise UploadError(f"{path}: listed in model.json but missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise UploadError(f"{path}: does not match its hash in model.json")
    return meta


def new_version(meta_bytes: bytes) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{hashlib.sha256(meta_bytes).hexdigest()[:8]}"


def upload(folder: str | Path, uri: str, s3=None) -> str:
    """Returns the version written."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    folder = Path(folder)
    bucket, prefix = parse_s3_uri(uri)
    meta = read_model_dir(folder)
    meta_bytes = (folder / "model.json").read_bytes()
    version = new_version(meta_bytes)
    key = version_prefix(prefix, version)
    try:
        if s3 is None:
            import boto3

            s3 = boto3.client("s3")
        for name in sorted(meta["files"]):
            s3.upload_file(str(folder / name), bucket, key + name)
        s3.put_object(Bucket=bucket, Key=key + "model.json", Body=meta_bytes, ContentType="application/json")
        pointer = {"version": version, "uploaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "image_size": meta.get("image_size"), "latent_dim": meta.get("latent_dim")}
        s3.put_object(Bucket=bucket, Key=pointer_key(prefix), Body=json.dumps(pointer).encode(),
                      ContentType="application/json", CacheControl="no-cache")
    except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:  # upload_file wraps S3's refusals in Boto3Error
        raise UploadError(f"upload to s3://{bucket}/{prefix} failed ({exc.__class__.__name__}): {exc}; "
                          f"{pointer_key(prefix)} was not changed") from None
    return version


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.upload", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", help="exported model directory (holds model.json)")
    p.add_argument("destination", help="s3://BUCKET/PREFIX")
    args = p.parse_args(argv)
    try:
        version = upload(args.model_dir, args.destination)
    except UploadError as exc:
        sys.exit(f"error: {exc}")
    print(f"uploaded {args.model_dir} as version {version}; {args.destination.rstrip('/')}/latest.json points at it")


if __name__ == "__main__":
    main()
