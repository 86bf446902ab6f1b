"""scripts/gpu_session.sh, the one command a GPU session runs, smoke-run on the CPU: what it
leaves in $OUT must fit what the device tool brings back, and must export here."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_MODEL_FLAGS, needs_torch

pytestmark = needs_torch
ROOT = Path(__file__).resolve().parent.parent
# The device tool's limits on what comes back from $OUT (../.library/device/README.md).
MAX_FILES, MAX_FILE_BYTES, MAX_FOLDERS_DOWN = 8, 16 * 2**20, 2


def synthetic_manifest(folder: Path) -> Path:
    """A manifest like ../shared/data's over the synthetic cars: half 'catalogue', a sixth val."""
    manifest = folder.parent / f"{folder.name}-manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "white_background", "split"])
        for i, f in enumerate(sorted(folder.iterdir())):
            writer.writerow([f"{folder.name}/{f.name}", int(i % 2 == 0), "val" if i % 6 == 0 else "train"])
    return manifest


def test_gpu_session_train_output_fits_the_device_tool_and_exports(tmp_path, synthetic_dir):
    import torch

    from training.export import export

    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "RUN": str(tmp_path / "run"), "PY": sys.executable,
           "DATA": str(synthetic_manifest(synthetic_dir)), "PRETRAIN_SECONDS": "2", "FINETUNE_SECONDS": "2",
           "COMPILE": "", "TRAIN_FLAGS": " ".join(TINY_MODEL_FLAGS)}
    done = subprocess.run(["bash", "scripts/gpu_session.sh", "train"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= MAX_FILES, files
    for f in files:
        rel = f.relative_to(out)
        assert len(rel.parts) - 1 <= MAX_FOLDERS_DOWN and f.stat().st_size <= MAX_FILE_BYTES, rel
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel
    assert {"session.log", "run/checkpoint.pt", "run/metrics.json", "run/loss.png", "run/samples.png",
            "run/pretrain_metrics.json"} <= {str(f.relative_to(out)) for f in files}
    pretrain = json.loads((out / "run" / "pretrain_metrics.json").read_text())
    assert pretrain["training"]["images"] > 2 * json.loads((out / "run" / "metrics.json").read_text())[
        "training"]["images"]  # every photo, then the catalogue half
    assert json.loads((out / "run" / "config.json").read_text())["init"] == str(tmp_path / "run") + "-all"

    state = torch.load(out / "run" / "checkpoint.pt", weights_only=True)
    assert "optimizer" not in state  # weights only: the optimizer state would double the size
    meta = export(out / "run", tmp_path / "model")
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert meta["metrics"] == metrics["validation"] and meta["image_size"] == 64
    # The sampling distribution comes back too, fitted on the catalogue photos the last stage trained on.
    assert meta["latent"]["prior_file"] == "latent_prior.npz"
    assert meta["latent"]["prior_fitted_on"]["filter"] == ["white_background=1"]
