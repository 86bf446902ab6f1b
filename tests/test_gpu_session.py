"""scripts/gpu_session.sh, the one command a GPU session runs, smoke-run on the CPU: what it
leaves in $OUT must fit what the device tool brings back, and must export here."""
import csv
import json
import os
import re
import subprocess
import sys
import tarfile
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


def assert_fits_the_device_tool(out: Path) -> list[Path]:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= MAX_FILES, files
    for f in files:
        rel = f.relative_to(out)
        assert len(rel.parts) - 1 <= MAX_FOLDERS_DOWN and f.stat().st_size <= MAX_FILE_BYTES, rel
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel
    return files


def test_gpu_session_speed_takes_the_fastest_variant_further_in_the_same_call(tmp_path):
    """The step the next GPU session runs, on the CPU at a toy size and eager: the variants, then the
    fastest one at another batch size, with no one reading the winner in between."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PY": sys.executable, "CARRY": str(tmp_path / "carry"),
           "SPEED_TESTS": "0", "SPEED_COMPILE": "", "SPEED_BATCHES": "2", "SPEED_SECONDS": "0.1",
           "SPEED_FLAGS": "--variants model s2d-ends", "THEN_BATCHES": "3", "THEN_FLAGS": "--precision fp32"}
    done = subprocess.run(["bash", "scripts/gpu_session.sh", "speed"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first = json.loads((out / "train_speed_cpu.json").read_text())["runs"]
    assert [r["variant"] for r in first] == ["model", "s2d-ends"] and all("images_per_second" in r for r in first)
    fastest = max(first, key=lambda r: r["images_per_second"])["variant"]
    assert f"fastest variant: {fastest}" in done.stdout
    then = json.loads((out / "then" / "train_speed_cpu.json").read_text())["runs"]
    assert [(r["variant"], r["batch"], r["precision"]) for r in then] == [(fastest, 3, "fp32")]
    assert {f.relative_to(out).as_posix() for f in assert_fits_the_device_tool(out)} == {
        "session.log", "train_speed_cpu.json", "then/train_speed_cpu.json"}


def test_gpu_session_train_output_fits_the_device_tool_and_exports(tmp_path, synthetic_dir, tiny_run):
    import torch

    from training.export import export

    out, runs = tmp_path / "out", tmp_path / "runs"
    tiny = " ".join(TINY_MODEL_FLAGS)
    # Two runs side by side, as on the GPU: one from scratch, one fine-tuning a carried checkpoint file.
    configs = f"scratch {tiny}\nfinetune {tiny} --init {tiny_run / 'checkpoint.pt'} --lr 3e-4 --kl-warmup 0"
    env = {**os.environ, "OUT": str(out), "RUNS": str(runs), "PY": sys.executable, "TRAIN_SECONDS": "3",
           "DATA": str(synthetic_manifest(synthetic_dir)), "COMPILE": "", "CONFIGS": configs,
           "CARRY": str(tmp_path / "carry")}
    done = subprocess.run(["bash", "scripts/gpu_session.sh", "train"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "[scratch] validation: PSNR" in done.stdout and "[finetune] validation: PSNR" in done.stdout

    files = assert_fits_the_device_tool(out)
    assert {f.name for f in files} == {"session.log", "scratch.pt", "scratch.tar.gz", "finetune.pt",
                                       "finetune.tar.gz"}

    for name in ("scratch", "finetune"):  # what the README says to do here with what came back
        run = tmp_path / "back" / name
        run.mkdir(parents=True)
        with tarfile.open(out / f"{name}.tar.gz") as tar:
            tar.extractall(run, filter="data")
        assert {p.name for p in run.iterdir()} == {"config.json", "metrics.json", "loss.png", "samples.png"}
        (run / "checkpoint.pt").write_bytes((out / f"{name}.pt").read_bytes())
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert "optimizer" not in state and "train_model" not in state  # weights only: a third the size
        full = torch.load(runs / name / "checkpoint.pt", weights_only=True)
        assert state["final_step"] == full["step"]  # so export knows metrics.json describes this run
        assert all(torch.equal(state["model"][k], full["best"]["model"][k]) for k in state["model"])
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["validation"]["psnr"] == full["best"]["validation"]["psnr"] >= metrics["final_validation"]["psnr"]
        # On every photo, validated on the catalogue val rows; fine-tuning took the carried weights.
        config = json.loads((run / "config.json").read_text())
        assert config["filter"] == [] and config["val_filter"] == ["white_background=1"]
        assert config["init"] == (str(tiny_run / "checkpoint.pt") if name == "finetune" else None)
        meta = export(run, tmp_path / "model" / name)
        assert meta["metrics"] == metrics["validation"] and meta["image_size"] == 64
        assert meta["latent"]["prior_file"] == "latent_prior.npz"


def test_one_run_failing_does_not_cost_the_others_their_results(tmp_path, synthetic_dir):
    # A run that dies without a word (killed for memory, say), listed first: the one after it still comes back.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\ncase " $* " in *"/broken "*) exit 1 ;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    tiny = " ".join(TINY_MODEL_FLAGS)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "RUNS": str(tmp_path / "runs"), "PY": str(python), "TRAIN_SECONDS": "2",
           "DATA": str(synthetic_manifest(synthetic_dir)), "COMPILE": "", "CONFIGS": f"broken {tiny}\ngood {tiny}",
           "CARRY": str(tmp_path / "carry")}
    done = subprocess.run(["bash", "scripts/gpu_session.sh", "train"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0 and "== broken FAILED" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {"session.log", "good.pt", "good.tar.gz"}
