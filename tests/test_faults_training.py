"""The trainer killed with SIGKILL, mid-epoch and mid-checkpoint-write, resumes cleanly."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT, TINY_MODEL_FLAGS, needs_torch

pytestmark = needs_torch


def trainer(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "training.train", *args, *TINY_MODEL_FLAGS], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_epoch_leaves_a_loadable_checkpoint_and_resume_finishes(tmp_path, synthetic_dir):
    from training import checkpoint

    run = tmp_path / "run"
    proc = trainer("--data", str(synthetic_dir), "--out", str(run), "--epochs", "500")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # let it write a few checkpoints, then kill it mid-epoch
            if (run / "checkpoint.pt").exists() and checkpoint.load(run / "checkpoint.pt")["epoch"] >= 3:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(0.35)  # a fraction of an epoch: the kill lands between epoch boundaries
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = checkpoint.load(run / "checkpoint.pt")  # weights_only load of whatever is on disk
    killed_at = state["epoch"]
    assert killed_at >= 3 and len(state["history"]) == killed_at

    done = subprocess.run([sys.executable, "-m", "training.train", "--out", str(run), "--resume",
                           "--epochs", str(killed_at + 2)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed {run} at epoch {killed_at}" in done.stdout
    final = checkpoint.load(run / "checkpoint.pt")
    assert final["epoch"] == killed_at + 2
    assert [h["epoch"] for h in final["history"]] == list(range(1, killed_at + 3))
    assert json.loads((run / "metrics.json").read_text())["training"]["epochs"] == killed_at + 2


def test_ctrl_c_stops_the_run_cleanly_and_resume_trains_what_was_left(tmp_path, synthetic_dir):
    # No interval checkpoint will come: what --resume finds is what Ctrl-C saved. Wherever the stop
    # lands (mid-epoch, likely, at 10 steps an epoch), the resumed run must end with the weights of
    # one never interrupted.
    import torch

    from training import checkpoint
    from training.train import main

    import threading

    flags = [*TINY_MODEL_FLAGS, "--batch-size", "4", "--epochs", "30", "--sample-every", "15",
             "--checkpoint-interval", "3600"]
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "training.train", "--data", str(synthetic_dir), "--out", str(run),
                             *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(64), "")))
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while "epoch 3/30" not in "".join(chunks):  # the progress bar: training is under way
            assert proc.poll() is None and time.monotonic() < deadline, "".join(chunks)[-2000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read()  # to the end: the process has exited
        proc.wait(timeout=120)
    finally:
        proc.kill()
        reader.join(timeout=10)
    err = "".join(chunks)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "stopping after this step" in err
    print(out.splitlines()[-1])  # where it stopped
    state = checkpoint.load(run / "checkpoint.pt")
    assert 2 <= state["epoch"] < 30 and state["latent_prior"] and "stopped " in out and "of 30" in out
    assert json.loads((run / "metrics.json").read_text())["training"]["steps"] == state["step"]
    # Finished as if at its end: the last entry, frame and curves are the stopped weights'.
    assert "val_psnr" in state["history"][-1] and state["history"][-1]["step"] == state["step"]
    assert (run / "loss.png").exists() and (run / "progress.gif").exists()
    assert sorted((run / "samples").glob("epoch_*.png"))[-1].stem.startswith(f"epoch_{state['epoch']:04d}")

    # The stop's own evaluation is one an unstopped run never makes: however good, the resumed run must
    # not keep it as its best.
    state["best"]["validation"]["psnr"] = 99.0
    checkpoint.save_atomic(state, run / "checkpoint.pt")
    done = subprocess.run([sys.executable, "-m", "training.train", "--out", str(run), "--resume"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = checkpoint.load(run / "checkpoint.pt")
    main(["--data", str(synthetic_dir), "--out", str(tmp_path / "straight"), *flags])
    straight = checkpoint.load(tmp_path / "straight" / "checkpoint.pt")
    assert (resumed["epoch"], resumed["step"]) == (straight["epoch"], straight["step"]) == (30, 300)
    for key, value in straight["train_model"].items():
        assert torch.equal(resumed["train_model"][key], value), key
    # ...and the same record of its epochs: the cut-short one is redone whole, over all its steps.
    def losses(state):
        return [(h["epoch"], h["step"], h["train_loss"]) for h in state["history"]]
    assert losses(resumed) == losses(straight)
    assert resumed["best"]["step"] == straight["best"]["step"]


KILL_MID_WRITE = textwrap.dedent("""
    import os, signal, sys
    import torch
    from training import checkpoint

    path = sys.argv[1]
    state = checkpoint.load(path)
    state["epoch"] = 999
    state["padding"] = torch.zeros(4_000_000)  # 16 MB: several chunks to write
    checkpoint.CHUNK = 1 << 20

    class DiesMidWrite:
        # The real file, except that the process is SIGKILLed after three chunks hit the disk.
        def __init__(self, handle):
            self.handle, self.chunks = handle, 0
        def write(self, data):
            self.handle.write(data)
            self.chunks += 1
            if self.chunks == 3:
                self.handle.flush()
                os.fsync(self.handle.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        def __getattr__(self, name):
            return getattr(self.handle, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.handle.close()

    checkpoint.open = lambda *args, **kwargs: DiesMidWrite(open(*args, **kwargs))
    checkpoint.save_atomic(state, path)
    print("not reached")
""")


def test_sigkill_mid_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, synthetic_dir):
    from training import checkpoint

    run = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "training.train", "--data", str(synthetic_dir), "--out", str(run),
                            "--epochs", "2", *TINY_MODEL_FLAGS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = (run / "checkpoint.pt").read_bytes()

    killed = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, str(run / "checkpoint.pt")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL and "not reached" not in killed.stdout
    partial = list(run.glob(".checkpoint.pt.tmp-*"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < 16_000_000, "the kill landed mid-write"
    assert (run / "checkpoint.pt").read_bytes() == before, "the old checkpoint is untouched"
    assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 2

    resumed = subprocess.run([sys.executable, "-m", "training.train", "--out", str(run), "--resume", "--epochs", "3"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 3
    assert not list(run.glob(".checkpoint.pt.tmp-*")), "the next save clears the partial file"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_is_refused_with_a_clear_error(tmp_path, tiny_run, damage):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((tiny_run / "config.json").read_text())
    data = (tiny_run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(4096))
    proc = subprocess.run([sys.executable, "-m", "training.train", "--out", str(run), "--resume"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "checkpoint.pt cannot be loaded: it is cut short, damaged" in proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr


class RunsCode:
    """A pickle that would create a file when unpickled: what a hostile checkpoint looks like."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_that_carries_code_is_refused_and_the_code_never_runs(tmp_path, tiny_run):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((tiny_run / "config.json").read_text())
    marker = tmp_path / "pwned"
    torch.save({"model": RunsCode(marker)}, run / "checkpoint.pt")  # plain pickle inside torch's zip format
    proc = subprocess.run([sys.executable, "-m", "training.train", "--out", str(run), "--resume"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "checkpoint.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists(), "weights_only loading must never execute what a checkpoint carries"
    exported = subprocess.run([sys.executable, "-m", "training.export", str(run), "--out", str(tmp_path / "model")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert exported.returncode != 0 and "checkpoint.pt" in exported.stderr and "Traceback" not in exported.stderr
    assert not marker.exists() and not (tmp_path / "model").exists()
