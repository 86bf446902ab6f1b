"""The validation curves of finished runs, with their settings, in one results file.

    python -m experiments.curves runs/pilot64-base runs/pilot64-aug --name augment_pilot_64px

For each run folder: its config.json (the flags it was started with), the epoch, time and
metrics of its best validation PSNR and of its last weights, and every validation point
(epoch, seconds, PSNR, SSIM, KL) from the checkpoint's history. Writes
experiments/results/<name>.json and prints one line a run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.common import save
from training import checkpoint


def curve(run: Path) -> dict:
    state = checkpoint.load(checkpoint.checkpoint_path(run))
    points = [{"epoch": h["epoch"], "seconds": round(h["elapsed"]), "psnr": round(h["val_psnr"], 3),
               "ssim": round(h["val_ssim"], 4), "kl": round(h["val_kl"], 1)}
              for h in state["history"] if "val_psnr" in h]
    best = max(points, key=lambda p: p["psnr"])
    return {"config": json.loads((run / "config.json").read_text()), "best": best, "last": points[-1],
            "validation": points}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.curves", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (config.json + checkpoint.pt)")
    p.add_argument("--name", required=True, help="results file name (experiments/results/NAME.json)")
    args = p.parse_args(argv)
    runs = {run.name: curve(run) for run in args.runs}
    for name, r in runs.items():
        print(f"{name:20s} best {r['best']['psnr']:.2f} dB at epoch {r['best']['epoch']} ({r['best']['seconds']} s); "
              f"last {r['last']['psnr']:.2f} dB at epoch {r['last']['epoch']}")
    print(f"-> {save(args.name, {'runs': runs})}")


if __name__ == "__main__":
    main()
