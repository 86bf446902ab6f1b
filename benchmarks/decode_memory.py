"""Peak memory and time to turn the largest accepted 16-bit PNG into model input.

    .venv/bin/python -m benchmarks.decode_memory [--side 6300] [--runs 3]

A 16-bit greyscale PNG of side x side pixels (6300² = 39.7 megapixels, just under the
handler's 40-megapixel limit) compresses to under 100 kB, so a small upload can make the
Lambda decode it. Each run is a fresh Python process calling model.images.load_square on it;
peak RSS comes from the operating system (ru_maxrss), so it counts everything the process
held. Writes benchmarks/results/decode_memory.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, percentile, save

PROBE = """
import json, resource, sys, time
from model.images import load_square
data = open(sys.argv[1], "rb").read()
started = time.perf_counter()
load_square(data, 128)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=6300)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        png = Path(folder) / "big16.png"
        Image.new("I;16", (args.side, args.side), 1000).save(png)
        runs = []
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-c", PROBE, str(png)], cwd=ROOT, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"error: the probe failed:\n{out.stderr.strip()[-2000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        file_bytes = png.stat().st_size
    result = {"side": args.side, "megapixels": round(args.side**2 / 1e6, 1), "png_bytes": file_bytes,
              "runs": args.runs, "median_seconds": round(percentile([r["seconds"] for r in runs], 50), 2),
              "max_peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs))}
    path = save("decode_memory", result)
    print(f"{result['megapixels']} MP 16-bit PNG ({file_bytes:,} bytes): median {result['median_seconds']} s, "
          f"peak RSS {result['max_peak_rss_mib']} MiB -> {path}")


if __name__ == "__main__":
    main()
