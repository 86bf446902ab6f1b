"""The files of the web page as served: web/, jQuery from node_modules, and config.js.

Shared by the local server (scripts/local_stack.py) and the publisher
(scripts/publish_web.py), so the page is the same locally and on S3.
"""
from __future__ import annotations

import json
import mimetypes
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
JQUERY = ROOT / "node_modules" / "jquery" / "dist" / "jquery.min.js"
# What a page is made of. Anything else in web/ (an .env, an editor's backup or swap file, notes)
# stays private: the website bucket makes every object public.
SITE_SUFFIXES = {".html", ".js", ".css", ".png", ".svg", ".ico", ".webp", ".jpg", ".woff2"}


def config_js(api_url: str) -> bytes:
    """The page reads its API address from here (a ?api= query parameter overrides it)."""
    return f"window.CAR_VAE_CONFIG = {json.dumps({'apiBaseUrl': api_url.rstrip('/')})};\n".encode()


def site_files(api_url: str) -> dict[str, tuple[bytes, str]]:
    """Site path (no leading slash) -> (content, content type)."""
    if not JQUERY.exists():
        raise FileNotFoundError(f"{JQUERY} is missing: run `npm ci` first")
    files = {}
    for path in sorted(WEB.rglob("*")):
        relative = path.relative_to(WEB).as_posix()
        hidden = any(part.startswith(".") for part in path.relative_to(WEB).parts)
        if path.is_file() and path.suffix in SITE_SUFFIXES and not hidden and relative != "config.js" \
                and not relative.startswith("vendor/"):
            files[relative] = (path.read_bytes(), content_type(path.name))
    files["vendor/jquery.min.js"] = (JQUERY.read_bytes(), "text/javascript; charset=utf-8")
    files["config.js"] = (config_js(api_url), "text/javascript; charset=utf-8")
    return files


def content_type(name: str) -> str:
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind.endswith("javascript") else kind
