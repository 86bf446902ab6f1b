"""Peak memory of a cold handler answering one adversarial upload: every shape, mode and chunk.

    .venv/bin/python -m benchmarks.decode_memory [--runs 1] [--only NAME ...]

Small files (a few bytes to a few hundred kB) that decode to as many pixels as the service
accepts, or claim more: tall, wide and square PNGs (RGB and palette with a tRNS colour key,
16-bit with and without alpha, 1-bit, interlaced), RGBA WebP with an EXIF rotation, baseline,
progressive and CMYK JPEG, and truncated files. Each run is a fresh Python process, as a new
Lambda container is: it imports handler.py (which loads the model, as the Lambda init phase
does), then answers one POST /reconstruct carrying the image. Peak RSS comes from the operating
system (VmHWM, the high-water mark of the process's resident memory), so it counts everything the process ever held, the model included.

The bound (BOUND_MIB, tests/test_decode_memory.py): every case is answered, 200 or a 4xx,
within 1 GiB, half of the function's 2,048 MB. Writes benchmarks/results/decode_memory.json.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from benchmarks.common import ROOT, save

BOUND_MIB = 1024
SQUARE = 6324  # 6324² = 39.99 megapixels: just under the 40-megapixel cap
LONG = 20_000  # the longest side accepted (model.images.DEFAULT_MAX_SIDE)

PROBE = """
import base64, json, resource, sys, time, uuid
from requests_toolbelt.multipart.encoder import MultipartEncoder
def peak_mib():
    # VmHWM: this process's own high-water mark. ru_maxrss would do, but it survives exec, so a child
    # forked from a big parent starts with the parent's size (the file-making process here).
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import handler
loaded = peak_mib()
data = open(sys.argv[1], "rb").read()
encoder = MultipartEncoder(fields={"image": ("upload", data, "application/octet-stream")})
event = {"httpMethod": "POST", "resource": "/reconstruct", "path": "/reconstruct", "isBase64Encoded": True,
         "headers": {"Content-Type": encoder.content_type}, "requestContext": {"requestId": str(uuid.uuid4())},
         "body": base64.b64encode(encoder.to_string()).decode("ascii")}
started = time.perf_counter()
response = handler.handler(event, None)
body = json.loads(response["body"])
print(json.dumps({"status": response["statusCode"], "code": body.get("error", {}).get("code"),
                  "seconds": round(time.perf_counter() - started, 2), "loaded_rss_mib": round(loaded),
                  "peak_rss_mib": round(peak_mib())}))
"""


# ---- PNG written by hand: any header, any chunk, rows that compress to almost nothing -------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def png(width: int, height: int, colour_type: int, depth: int, extra: bytes = b"", interlaced: bool = False) -> bytes:
    """A PNG of zero-valued rows (filter 0), streamed through zlib so no full image is ever held."""
    def row_bytes(w: int) -> int:
        return (w * CHANNELS[colour_type] * depth + 7) // 8

    passes = ([(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
              if interlaced else [(0, 0, 1, 1)])
    z, out = zlib.compressobj(9), []
    for x0, y0, dx, dy in passes:
        w, h = math.ceil(max(0, width - x0) / dx), math.ceil(max(0, height - y0) / dy)
        if not w or not h:
            continue
        row = b"\x00" * (1 + row_bytes(w))
        batch = max(1, (1 << 20) // len(row))
        for top in range(0, h, batch):
            out.append(z.compress(row * min(batch, h - top)))
    out.append(z.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", b"".join(out))
            + _chunk(b"IEND", b""))


RGB_KEY = _chunk(b"tRNS", b"\x00\x00" * 3)
GREY_KEY = _chunk(b"tRNS", b"\x00\x00")
PALETTE_KEY = _chunk(b"PLTE", bytes(range(256)) * 3) + _chunk(b"tRNS", bytes(256))


def _pillow(save_as: str, image_mode: str, size: tuple[int, int], colour, **save_args) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(image_mode, size, colour).save(out, format=save_as, **save_args)
    return out.getvalue()


def _rotated_exif() -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° to view
    return exif.tobytes()


def cases() -> dict[str, callable]:
    """name -> a function making the file's bytes (made only when the case runs)."""
    wide = (LONG, 40_000_000 // LONG)
    return {
        # The two: one row of 40 million pixels (refused: no side may be that long).
        "PNG 1x40,000,000 RGB + tRNS": lambda: png(1, 40_000_000, 2, 8, RGB_KEY),
        "PNG 40,000,000x1 palette + tRNS": lambda: png(40_000_000, 1, 3, 8, PALETTE_KEY),
        # As thin and as long as accepted.
        f"PNG 1x{LONG} greyscale": lambda: png(1, LONG, 0, 8),
        f"PNG {wide[0]}x{wide[1]} RGB + tRNS": lambda: png(*wide, 2, 8, RGB_KEY),
        f"PNG {wide[1]}x{wide[0]} palette + tRNS": lambda: png(wide[1], wide[0], 3, 8, PALETTE_KEY),
        f"PNG {wide[1]}x{wide[0]} 16-bit RGBA": lambda: png(wide[1], wide[0], 6, 16),
        # Square, at the pixel cap, every PNG mode.
        f"PNG {SQUARE}² palette + tRNS": lambda: png(SQUARE, SQUARE, 3, 8, PALETTE_KEY),
        f"PNG {SQUARE}² RGB + tRNS": lambda: png(SQUARE, SQUARE, 2, 8, RGB_KEY),
        f"PNG {SQUARE}² RGB + tRNS, interlaced": lambda: png(SQUARE, SQUARE, 2, 8, RGB_KEY, interlaced=True),
        f"PNG {SQUARE}² 16-bit greyscale + tRNS": lambda: png(SQUARE, SQUARE, 0, 16, GREY_KEY),
        f"PNG {SQUARE}² 16-bit RGB": lambda: png(SQUARE, SQUARE, 2, 16),
        f"PNG {SQUARE}² 16-bit RGBA": lambda: png(SQUARE, SQUARE, 6, 16),
        f"PNG {SQUARE}² 1-bit": lambda: png(SQUARE, SQUARE, 0, 1),
        f"PNG {SQUARE}² greyscale + alpha": lambda: png(SQUARE, SQUARE, 4, 8),
        f"PNG {SQUARE}² palette + tRNS, truncated": lambda: png(SQUARE, SQUARE, 3, 8, PALETTE_KEY)[:-2000],
        # WebP: libwebp decodes the whole picture, and Pillow copies it.
        f"WebP {SQUARE}² RGBA lossless, EXIF rotated": lambda: _pillow("WEBP", "RGBA", (SQUARE, SQUARE),
                                                                       (200, 30, 30, 128), lossless=True,
                                                                       exif=_rotated_exif()),
        "WebP 16383x2441 RGBA lossless": lambda: _pillow("WEBP", "RGBA", (16383, 2441), (30, 30, 200, 100),
                                                         lossless=True),
        # JPEG: draft mode decodes at 1/8 scale, but a progressive one keeps every coefficient.
        f"JPEG {SQUARE}² baseline": lambda: _pillow("JPEG", "RGB", (SQUARE, SQUARE), (90, 90, 90), quality=50),
        f"JPEG {SQUARE}² progressive": lambda: _pillow("JPEG", "RGB", (SQUARE, SQUARE), (90, 90, 90), quality=50,
                                                      progressive=True),
        f"JPEG {SQUARE}² CMYK progressive": lambda: _pillow("JPEG", "CMYK", (SQUARE, SQUARE), (0, 90, 90, 0),
                                                           quality=50, progressive=True),
        f"JPEG {SQUARE}² progressive, truncated": lambda: _pillow("JPEG", "RGB", (SQUARE, SQUARE), (90, 90, 90),
                                                                 quality=50, progressive=True)[:5000],
    }


def measure(path: Path) -> dict:
    """One fresh handler process answering the image at path."""
    env = {"MODEL_PRELOAD": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    if out.returncode:
        # Killed or crashed: exactly what this measures. Say so rather than stop the table.
        return {"status": None, "code": None, "failed": out.stderr.strip()[-500:] or f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(names: list[str] | None = None, runs: int = 1, quiet: bool = False) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, make in cases().items():
            if names and name not in names:
                continue
            path = Path(folder) / "upload"
            path.write_bytes(make())
            samples = [measure(path) for _ in range(runs)]
            worst = max(samples, key=lambda r: r.get("peak_rss_mib", float("inf")))
            results.append({"image": name, "file_bytes": path.stat().st_size, **worst})
            if not quiet:
                r = results[-1]
                print(f"{name:48s} {r['file_bytes']:>9,} B  -> {r['status']} {r.get('code') or '':16s} "
                      f"{r.get('seconds', '-')!s:>5} s  peak {r.get('peak_rss_mib', '?')} MiB", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1, help="fresh processes per case (the highest peak is kept)")
    p.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = p.parse_args(argv)
    results = run(args.only, args.runs)
    worst = max(results, key=lambda r: r.get("peak_rss_mib", float("inf")))
    print(f"worst: {worst['image']} at {worst.get('peak_rss_mib')} MiB (bound {BOUND_MIB} MiB)")
    if not args.only:
        path = save("decode_memory", {"bound_mib": BOUND_MIB, "runs": args.runs, "probe": "fresh process: import "
                                      "handler (model loaded), one POST /reconstruct; peak = VmHWM",
                                      "cases": results})
        print(f"-> {path}")


if __name__ == "__main__":
    main()
