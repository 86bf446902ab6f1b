"""Publish the web page to the website bucket of a deployed stack.

    python -m scripts.publish_web --stage dev [--region us-east-1]
    python -m scripts.publish_web --bucket NAME --api-url https://.../dev

With --stage, the bucket and the API's URL come from the CloudFormation outputs of
`sls deploy` (WebBucketName, ServiceEndpoint). Uploads web/, jQuery and a config.js
that points the page at the API, then prints the website's URL. Into the stack's own
website bucket (--stage), or with --delete-stale, it also deletes what an earlier publish left
that the page no longer has; a bucket named with --bucket may hold other things, kept otherwise.
"""
from __future__ import annotations

import argparse
import sys

from scripts.website import site_files

SERVICE = "car-vae"
# Revalidated on every load: the page's files are not versioned by name, so a cached app.js could
# pair with a newer index.html (their ETags keep the revalidation cheap).
CACHE_CONTROL = "no-cache"
DEFAULT_REGION = "us-east-1"  # serverless.yml's default


def stack_outputs(stage: str, region: str | None) -> dict[str, str]:
    import boto3

    stack = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=f"{SERVICE}-{stage}")
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Stacks"][0].get("Outputs", [])}


def publish(bucket: str, api_url: str, region: str | None = None, delete_stale: bool = False) -> list[str]:
    import boto3

    s3 = boto3.client("s3", region_name=region)
    keys = []
    for key, (body, kind) in site_files(api_url).items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=kind, CacheControl=CACHE_CONTROL)
        keys.append(key)
    if delete_stale:  # a file the page no longer has would otherwise stay public (and stale) forever
        stale = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                 for obj in page.get("Contents", []) if obj["Key"] not in keys]
        for start in range(0, len(stale), 1000):
            reply = s3.delete_objects(Bucket=bucket,
                                      Delete={"Objects": [{"Key": k} for k in stale[start:start + 1000]]})
            if reply.get("Errors"):
                failed = ", ".join(f"{e['Key']} ({e.get('Code')})" for e in reply["Errors"][:5])
                raise RuntimeError(f"s3://{bucket}: could not delete stale files: {failed}")
    return keys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m scripts.publish_web", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", help="read bucket and API URL from the car-vae-STAGE stack's outputs")
    p.add_argument("--region", default=DEFAULT_REGION, help="the stack's region (default %(default)s, as serverless.yml)")
    p.add_argument("--bucket", help="website bucket (instead of --stage)")
    p.add_argument("--api-url", help="API base URL, e.g. https://abc.execute-api.us-east-1.amazonaws.com/dev")
    p.add_argument("--delete-stale", action="store_true",
                   help="delete every other object in the bucket (done anyway for the stack's own bucket)")
    args = p.parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        website, own_bucket = None, False
        if args.stage:
            outputs = stack_outputs(args.stage, args.region)
            bucket = args.bucket or outputs.get("WebBucketName")
            own_bucket = bucket == outputs.get("WebBucketName")  # the stack's website bucket holds the site only
            api_url = args.api_url or outputs.get("ServiceEndpoint")
            website = outputs.get("WebsiteURL")
        else:
            bucket, api_url = args.bucket, args.api_url
        if not bucket or not api_url:
            p.error("give --stage, or both --bucket and --api-url")
        keys = publish(bucket, api_url, args.region, delete_stale=own_bucket or args.delete_stale)
    except (BotoCoreError, ClientError, FileNotFoundError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    print(f"published {len(keys)} files to s3://{bucket} (API {api_url})")
    if website:
        print(f"open {website}")


if __name__ == "__main__":
    main()
