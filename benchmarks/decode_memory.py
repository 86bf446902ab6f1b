"""Peak memory and time to turn the largest accepted images into model input.

    .venv/bin/python -m benchmarks.decode_memory [--side 6300] [--runs 3]

Small files that decode to side x side pixels (6300² = 39.7 megapixels, just under the
handler's 40-megapixel limit), so a small upload can make the Lambda decode them:
- a 16-bit greyscale PNG (under 100 kB);
- an RGBA WebP (lossless, half-transparent) whose EXIF says to turn it upright (a few kB).
Each run is a fresh Python process calling model.images.load_square on one of them; peak RSS
comes from the operating system (ru_maxrss), so it counts everything the process held.
Writes benchmarks/results/decode_memory.json.
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


def write_cases(folder: Path, side: int) -> dict[str, Path]:
    from PIL import Image

    cases = {"16-bit greyscale PNG": folder / "big16.png", "RGBA WebP, EXIF orientation 6": folder / "rgba.webp"}
    Image.new("I;16", (side, side), 1000).save(cases["16-bit greyscale PNG"])
    rgba = Image.new("RGBA", (side, side), (200, 30, 30, 128))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° to view
    rgba.save(cases["RGBA WebP, EXIF orientation 6"], lossless=True, exif=exif)
    return cases


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decode_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=6300)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, path in write_cases(Path(folder), args.side).items():
            runs = []
            for _ in range(args.runs):
                out = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT, capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"error: the probe failed on the {name}:\n{out.stderr.strip()[-2000:]}")
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            results.append({"image": name, "file_bytes": path.stat().st_size,
                            "median_seconds": round(percentile([r["seconds"] for r in runs], 50), 2),
                            "max_peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs))})
            r = results[-1]
            print(f"{args.side}² {name} ({r['file_bytes']:,} bytes): median {r['median_seconds']} s, "
                  f"peak RSS {r['max_peak_rss_mib']} MiB")
    path = save("decode_memory", {"side": args.side, "megapixels": round(args.side**2 / 1e6, 1), "runs": args.runs,
                                  "cases": results})
    print(f"-> {path}")


if __name__ == "__main__":
    main()
