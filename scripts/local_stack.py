"""Run the whole service on this machine: no AWS account, no login, no docker.

    python -m scripts.local_stack [--api-port 3000] [--lambda-port 3002] [--web-port 8000] [--model-dir DIR | --model-s3 s3://B/P]

Starts serverless-offline (API Gateway + Lambda emulation running handler.py on the
bundled model in model/default, or another) and a static server for the web page, waits until
both answer, prints the page's URL, and stops everything it started on Ctrl-C.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from scripts.website import site_files
from training.upload import UploadError, parse_s3_uri

ROOT = Path(__file__).resolve().parent.parent
STAGE = "dev"


class PageHandler(BaseHTTPRequestHandler):
    def __init__(self, *args, files: dict, **kwargs):
        self.files = files
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].lstrip("/") or "index.html"
        if path not in self.files:
            self.send_error(404)
            return
        body, kind = self.files[path]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):  # keep the terminal for the API's log
        pass


def serve_page(host: str, port: int, api_url: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), functools.partial(PageHandler, files=site_files(api_url)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def taken_ports(host: str, ports: dict[str, int]) -> list[str]:
    """The ports something already listens on (a forgotten `make run`, say), as 'NAME PORT'."""
    taken = []
    for name, port in ports.items():
        with socket.socket() as probe:
            # As the servers bind: a port left in TIME_WAIT by a stack just stopped is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                taken.append(f"{name} {port}")
    return taken


def start_offline(host: str, api_port: int, lambda_port: int, model_dir: Path | None = None,
                  model_s3: tuple[str, str] | None = None) -> subprocess.Popen:
    venv = ROOT / ".venv"
    env = {
        **os.environ,
        # serverless-offline runs `python3` from $VIRTUAL_ENV/bin: the project's own venv.
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLINE_HTTP_PORT": str(api_port),
        "OFFLINE_LAMBDA_PORT": str(lambda_port),
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
        "PYTHONUNBUFFERED": "1",
    }
    sls = ROOT / "node_modules" / ".bin" / "sls"
    if not sls.exists():
        sys.exit(f"error: {sls} is missing: run `npm ci` first")
    # A process group of its own, so stopping it stops the Python workers it spawned too.
    # serverless.yml sets the function's MODEL_DIR from this parameter (the environment would not reach it).
    model = [f"--param=modelDir={model_dir}"] if model_dir else []
    if model_s3:  # the S3 client takes AWS_* from this environment, which serverless-offline passes on
        model += [f"--param=modelBucket={model_s3[0]}", f"--param=modelPrefix={model_s3[1]}"]
    return subprocess.Popen([str(sls), "offline", "start", "--stage", STAGE, "--host", host, *model],
                            cwd=ROOT, env=env, start_new_session=True)


def wait_for(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serverless-offline exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # a request takes milliseconds
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # up, but the model cannot load: waiting would not help
                raise RuntimeError(f"the API is up but {unavailable_reason(exc)}") from None
            time.sleep(0.5)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def unavailable_reason(response: urllib.error.HTTPError) -> str:
    try:
        return json.load(response)["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return "the model is not available"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m scripts.local_stack", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, default=3000, help="the API (serverless-offline's HTTP port)")
    p.add_argument("--lambda-port", type=int, default=3002,
                   help="serverless-offline's Lambda invoke port (not used by the page, but it must be free)")
    p.add_argument("--web-port", type=int, default=8000, help="the page")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for the API to come up")
    p.add_argument("--model-dir", type=Path, help="serve this exported model folder (python -m training.export) "
                   "instead of the bundled model/default")
    p.add_argument("--model-s3", metavar="s3://BUCKET/PREFIX", help="serve the latest version uploaded there "
                   "(python -m training.upload) instead; AWS_* variables (AWS_ENDPOINT_URL, say) reach the function")
    args = p.parse_args(argv)
    if args.model_dir and args.model_s3:
        p.error("give --model-dir or --model-s3, not both")
    try:
        model_s3 = parse_s3_uri(args.model_s3) if args.model_s3 else None
    except UploadError as exc:
        p.error(f"--model-s3 {exc}")
    model_dir = args.model_dir.resolve() if args.model_dir else None
    if model_dir and not (model_dir / "model.json").is_file():
        sys.exit(f"error: --model-dir {args.model_dir}: no model.json there (python -m training.export RUN --out DIR "
                 "writes a model folder)")

    api_url = f"http://{args.host}:{args.api_port}/{STAGE}"
    taken = taken_ports(args.host, {"--api-port": args.api_port, "--lambda-port": args.lambda_port,
                                    "--web-port": args.web_port})
    if taken:
        sys.exit(f"error: already in use on {args.host}: {', '.join(taken)} (another `make run`?). "
                 "Stop it, or choose free ports with those flags.")
    offline = start_offline(args.host, args.api_port, args.lambda_port, model_dir, model_s3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # A shell starts background jobs with SIGINT ignored, and Python keeps that: Ctrl-C must stop us anyway.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        wait_for(f"{api_url}/health", offline, args.timeout)
        page = serve_page(args.host, args.web_port, api_url)
        print(f"\n  API:  {api_url}  (routes: /health /reconstruct /sample /interpolate)", flush=True)
        print(f"  Page: http://{args.host}:{args.web_port}/\n\n  Ctrl-C stops both.", flush=True)
        while offline.poll() is None:
            time.sleep(0.5)
        page.shutdown()
        sys.exit(f"error: serverless-offline stopped (code {offline.returncode})")
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    except (RuntimeError, OSError) as exc:  # OSError: the page's port taken after all (a race)
        sys.exit(f"error: {exc}")
    finally:
        stop(offline)


if __name__ == "__main__":
    main()
