"""Short real training runs on the CPU: learning, reports, resume, errors."""
import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT, TINY_MODEL_FLAGS, needs_torch

pytestmark = needs_torch


def test_a_short_cpu_run_lowers_the_loss_and_writes_reports(tmp_path, synthetic_dir):
    from training.train import main

    run = tmp_path / "run"
    result = main(["--data", str(synthetic_dir), "--out", str(run), "--epochs", "12", "--lr", "3e-3",
                   *TINY_MODEL_FLAGS, "--sample-every", "4"])
    history = json.loads((run / "metrics.json").read_text())
    assert history == result
    state = __import__("training.checkpoint", fromlist=["load"]).load(run / "checkpoint.pt")
    losses = [h["train_loss"] for h in state["history"]]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:2]) / 2, losses
    v = result["validation"]
    assert set(v) >= {"mse", "psnr", "ssim", "kl", "mean_image_psnr"}
    assert v["psnr"] == pytest.approx(10 * __import__("math").log10(1 / v["mse"]), abs=3)  # per-image mean vs pooled
    # Held-out images come back much closer than from the same network untrained (about 6.6 dB
    # here). 24 steps are too few to beat the mean-image baseline; the default model does.
    assert v["psnr"] > untrained_val_psnr(synthetic_dir) + 3.0
    assert Image.open(run / "loss.png").size[0] > 400
    frames = sorted((run / "samples").glob("epoch_*.png"))
    assert [f.name for f in frames] == ["epoch_0004.png", "epoch_0008.png", "epoch_0012.png"]
    gif = Image.open(run / "progress.gif")
    assert gif.n_frames == 3
    assert json.loads((run / "config.json").read_text())["epochs"] == 12
    # The distribution the exported model will sample from: fitted to every training photo x 4 passes.
    prior = state["latent_prior"]
    assert prior["mean"].shape == (16,) and prior["scale_tril"].shape == (16, 16)
    assert prior["codes"] == 4 * result["training"]["images"] == result["sampling"]["codes"]


def test_precision_bf16_is_applied_on_the_cpu_and_recorded(tmp_path, synthetic_dir):
    import torch

    from training.train import main

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no bf16 support in oneDNN")
    flags = ["--data", str(synthetic_dir), "--epochs", "4", "--lr", "3e-3", *TINY_MODEL_FLAGS]
    runs = {p: main([*flags, "--out", str(tmp_path / p), "--precision", p]) for p in ("fp32", "bf16")}
    assert {p: r["training"]["precision"] for p, r in runs.items()} == {"fp32": "fp32", "bf16": "bf16"}
    # Same seed, same data: only the arithmetic differs, so bf16 must change the numbers a little
    # (it is really used) and learn as well (within a dB of fp32's validation PSNR).
    fp32, bf16 = runs["fp32"]["validation"], runs["bf16"]["validation"]
    assert fp32["mse"] != bf16["mse"]
    assert abs(fp32["psnr"] - bf16["psnr"]) < 1.0, (fp32, bf16)


def untrained_val_psnr(data_dir) -> float:
    import torch

    from training.vae import VAE, VAEConfig
    from training.data import load_dataset
    from training.metrics import evaluate

    torch.manual_seed(0)
    val = torch.from_numpy(load_dataset(data_dir, 64).val).permute(0, 3, 1, 2).contiguous()
    return evaluate(VAE(VAEConfig(64, 16, 8, 32, 0)), val, torch.device("cpu"))["psnr"]


def test_resume_continues_from_the_checkpoint(tmp_path, synthetic_dir):
    from training import checkpoint
    from training.train import main

    run = tmp_path / "run"
    main(["--data", str(synthetic_dir), "--out", str(run), "--epochs", "2", *TINY_MODEL_FLAGS])
    first = checkpoint.load(run / "checkpoint.pt")
    assert first["epoch"] == 2
    main(["--out", str(run), "--resume", "--epochs", "4"])
    second = checkpoint.load(run / "checkpoint.pt")
    assert second["epoch"] == 4 and second["step"] == 2 * first["step"]
    assert second["history"][:2] == first["history"]
    assert [h["epoch"] for h in second["history"]] == [1, 2, 3, 4]
    assert not any(p.name.startswith(".checkpoint") for p in run.iterdir()), "no temporary files left behind"


def test_init_fine_tunes_from_another_runs_weights_and_architecture(tmp_path, tiny_run, synthetic_dir):
    import torch

    from training import checkpoint
    from training.train import main

    start = checkpoint.load(tiny_run / "checkpoint.pt")
    run = tmp_path / "fine-tuned"
    # No model flags: the architecture comes from --init. With lr 0 the weights cannot move,
    # so the new run's weights must be exactly the ones it started from.
    main(["--data", str(synthetic_dir), "--out", str(run), "--init", str(tiny_run), "--epochs", "1",
          "--batch-size", "16", "--lr", "0", "--sample-every", "1"])
    tuned = checkpoint.load(run / "checkpoint.pt")
    assert tuned["vae_config"] == start["vae_config"] and tuned["epoch"] == 1
    assert all(torch.equal(tuned["model"][k], v) for k, v in start["model"].items())
    assert json.loads((run / "config.json").read_text())["init"] == str(tiny_run)

    with pytest.raises(SystemExit, match="--init: .*missing"):
        main(["--data", str(synthetic_dir), "--out", str(tmp_path / "x"), "--init", str(tmp_path / "missing")])


def test_refuses_to_overwrite_a_run_and_names_missing_data(tmp_path, tiny_run):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "training.train", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    again = cli("--data", str(tmp_path), "--out", str(tiny_run))
    assert again.returncode != 0 and "--resume" in again.stderr
    missing = cli("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert missing.returncode != 0 and "nowhere: no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    empty = cli("--data", str(tmp_path), "--out", str(tmp_path / "r2"))
    assert empty.returncode != 0 and "no JPEG, PNG or WebP images" in empty.stderr


def test_ddp_with_torchrun_on_cpu(tmp_path, synthetic_dir):
    """Two gloo ranks on the CPU: the same script that runs on N GPUs, resumed as one."""
    import torch

    from training import checkpoint

    def torchrun(*args):
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "training.train", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)

    run = tmp_path / "ddp"
    proc = torchrun("--data", str(synthetic_dir), "--out", str(run), "--epochs", "2", *TINY_MODEL_FLAGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "metrics.json").read_text())
    assert result["training"]["world_size"] == 2
    assert result["training"]["steps"] == 2 * (result["training"]["images"] // 16)

    # Each rank keeps its own random stream across a resume. Both draw equally many numbers
    # per step, so had both restarted from one saved state they would end in the same one.
    proc = torchrun("--out", str(run), "--resume", "--epochs", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = checkpoint.load(run / "checkpoint.pt")["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["cpu"], ranks[1]["cpu"])

    small = torchrun("--data", str(synthetic_dir), "--out", str(tmp_path / "small"), *TINY_MODEL_FLAGS,
                     "--batch-size", "64")
    assert small.returncode != 0 and "cannot fill one --batch-size 64 across 2 ranks" in small.stderr

    # Only rank 0 validates; when that shows divergence, every rank stops with the error (rank 1 used
    # to run on into a collective that rank 0 had left).
    nan = torchrun("--data", str(synthetic_dir), "--out", str(tmp_path / "nan"), *TINY_MODEL_FLAGS, "--epochs", "3",
                   "--lr", "1e30", "--precision", "fp32", "--ema", "0")
    assert nan.returncode != 0 and nan.stderr.count("training diverged") >= 2, nan.stderr[-3000:]
    assert "Connection closed" not in nan.stderr


def test_resume_refuses_settings_it_cannot_apply(tmp_path, tiny_run, capsys):
    from training.train import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    saved = json.loads((run / "config.json").read_text())
    for flag, value in [("--lr", "0.5"), ("--image-size", "128"), ("--filter", "a=b")]:
        with pytest.raises(SystemExit, match=f"{flag} cannot change when resuming"):
            main(["--out", str(run), "--resume", flag, value])
    # Repeating the run's own settings, or changing one that may change, is fine.
    main(["--out", str(run), "--resume", "--lr", str(saved["lr"]), "--epochs", str(saved["epochs"] + 1),
          "--sample-every", "5"])
    # The new length holds for later resumes; a session's own choices do not stick.
    kept = json.loads((run / "config.json").read_text())
    assert kept["epochs"] == saved["epochs"] + 1 and kept["sample_every"] == saved["sample_every"]

    # A run from before a model flag existed has that flag's default, which may be repeated.
    older = {k: v for k, v in saved.items() if k != "encoder_width"}
    (run / "config.json").write_text(json.dumps(older))
    main(["--out", str(run), "--resume", "--encoder-width", "1", "--epochs", str(saved["epochs"] + 2)])

    (run / "config.json").write_text(json.dumps({**saved, "latent_dim": saved["latent_dim"] * 2}))
    with pytest.raises(SystemExit, match="checkpoint.pt holds a model of .*config.json describes"):
        main(["--out", str(run), "--resume", "--epochs", "9"])
    (run / "config.json").write_text('{"image_size": 64, ')
    with pytest.raises(SystemExit, match="config.json cannot be read"):
        main(["--out", str(run), "--resume", "--epochs", "9"])


def test_resume_follows_moved_photos_but_refuses_other_photos(tmp_path, tiny_run, synthetic_dir):
    from training import checkpoint
    from training.train import main

    run, moved = tmp_path / "run", tmp_path / "moved"
    shutil.copytree(tiny_run, run)
    shutil.copytree(synthetic_dir, moved)  # the photos, somewhere else now
    epochs = json.loads((run / "config.json").read_text())["epochs"]
    main(["--out", str(run), "--resume", "--data", str(moved), "--epochs", str(epochs + 1)])
    assert json.loads((run / "config.json").read_text())["data"] == str(moved)  # the next resume finds them
    assert checkpoint.load(run / "checkpoint.pt")["epoch"] == epochs + 1

    first = sorted(moved.iterdir())[0]
    shutil.copy(first, moved / f"extra{first.suffix}")
    with pytest.raises(SystemExit, match="photos at .*moved .*are not the ones .*--init"):
        main(["--out", str(run), "--resume", "--epochs", str(epochs + 2)])


def test_extending_a_run_continues_its_schedule_from_where_it_was():
    from training.schedule import Schedule

    plain = Schedule(total_steps=100, max_time=None)
    assert plain.progress(10, 99.0) == 0.1 and plain.extended_to(100, None, 10, 5.0) is plain
    timed = Schedule(total_steps=1000, max_time=50.0)
    assert timed.progress(10, 25.0) == 0.5 and timed.progress(600, 25.0) == 0.6
    # Stopped at step 10 of 100, resumed for 1000: no jump back into the warm-ups.
    longer = plain.extended_to(1000, None, 10, 5.0)
    assert longer.progress(10, 5.0) == pytest.approx(0.1)
    assert longer.progress(505, 0.0) == pytest.approx(0.55) and longer.progress(1000, 0.0) == 1.0
    # A finished 480 s run given 960 s: it carries on at the end of its schedule.
    finished = Schedule(total_steps=10**6, max_time=480.0)
    assert finished.extended_to(10**6, 960.0, 5000, 480.0).progress(6000, 700.0) == 1.0
    # The schedule a checkpoint keeps is the one a later resume continues.
    assert Schedule(**longer.to_dict()).progress(505, 0.0) == pytest.approx(0.55)


def test_a_run_that_diverges_stops_with_an_error_and_keeps_its_best_weights(tmp_path, synthetic_dir):
    import math

    import torch

    from training.vae import VAE, VAEConfig
    from training import prior
    from training.checkpoint import keep_best
    from training.train import main

    with pytest.raises(SystemExit, match="training diverged.*after epoch 1 .*no checkpoint was written.*--lr"):
        main(["--data", str(synthetic_dir), "--out", str(tmp_path / "r"), *TINY_MODEL_FLAGS, "--epochs", "3",
              "--lr", "1e30", "--precision", "fp32", "--ema", "0"])
    vae = VAE(VAEConfig(image_size=64, latent_dim=8, base_channels=4, max_channels=8, res_blocks=0))
    best = keep_best(None, vae, {"psnr": 21.0}, 1, 10)
    assert keep_best(best, vae, {"psnr": math.nan}, 2, 20) is best
    with pytest.raises(ValueError, match="not finite"):  # it used to grow its ridge forever
        prior.fit_gaussian(torch.full((10, 4), math.nan))


def test_out_of_range_numbers_are_refused_by_name(capsys):
    from training.config import build_parser

    assert build_parser().parse_args(["--out", "x", "--max-time", "0"]).max_time == 0  # 0: no limit
    assert build_parser().parse_args(["--out", "x", "--compile", "--no-compile"]).compile is False

    for flag, value, says in [("--lr", "-1", "must be >= 0"), ("--val-fraction", "1.5", "must be > 0 and < 1"),
                              ("--beta", "nan", "must be >= 0"), ("--zoom", "1", "< 1"),
                              ("--kl-warmup", "2", "<= 1"), ("--ema", "1", "< 1")]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--out", "x", flag, value])
        assert f"{flag}: must" in (err := capsys.readouterr().err) and says in err, err


def test_a_time_budget_ending_mid_epoch_still_leaves_the_final_reports(tmp_path, synthetic_dir, capsys):
    from training import checkpoint
    from training.schedule import epochs_trained
    from training.train import main

    run = tmp_path / "run"
    flags = [*TINY_MODEL_FLAGS, "--batch-size", "4", "--epochs", "100000", "--sample-every", "100000"]
    result = main(["--data", str(synthetic_dir), "--out", str(run), *flags, "--max-time", "2"])
    state = checkpoint.load(run / "checkpoint.pt")
    assert state["batch"] or result["training"]["epochs"] == state["epoch"]  # mid-epoch, nearly always
    assert result["training"]["epochs"] == pytest.approx(state["epoch"] + state["batch"] / 10)
    assert "val_psnr" in state["history"][-1] and len(list((run / "samples").glob("epoch_*.png"))) == 1
    assert (run / "loss.png").exists() and (run / "progress.gif").exists()
    # Its budget spent, a resume says so, and leaves the run and its records as they are.
    capsys.readouterr()
    records = [(run / name).read_bytes() for name in ("checkpoint.pt", "metrics.json")]
    assert main(["--out", str(run), "--resume"]) is None
    printed = capsys.readouterr().out
    assert "nothing to train" in printed and "--max-time (2 s)" in printed
    assert [(run / name).read_bytes() for name in ("checkpoint.pt", "metrics.json")] == records
    assert epochs_trained(7, 1999, 2000) == 7.999 and epochs_trained(15, 8, 10) == 15.8  # never rounded up
    assert repr(epochs_trained(1, 253, 1000)) == "1.253"  # as the validation line prints it, not 1.2530000000000001


def test_a_program_calling_main_keeps_ctrl_c_as_keyboard_interrupt(tmp_path, synthetic_dir):
    # Benchmarks run main() in a loop: a Ctrl-C must stop them, not cut one run short and go on.
    import os
    import signal
    import threading

    from training.train import main

    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            main(["--data", str(synthetic_dir), "--out", str(tmp_path / "r"), *TINY_MODEL_FLAGS, "--epochs", "1000"])
    finally:
        timer.cancel()


def test_unreadable_photos_are_named_and_a_failed_start_leaves_no_folder(tmp_path, capsys):
    from training.train import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    with pytest.raises(SystemExit, match="photos: its one image could not be read"):
        main(["--data", str(photos), "--out", str(tmp_path / "run"), *TINY_MODEL_FLAGS])
    assert "broken.jpg" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

    stopped = tmp_path / "stopped"  # killed before its first checkpoint
    stopped.mkdir()
    (stopped / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match="stopped before its first checkpoint: delete"):
        main(["--data", str(photos), "--out", str(stopped)])
    with pytest.raises(SystemExit, match="has no checkpoint.pt"):
        main(["--out", str(stopped), "--resume"])


def test_bad_settings_are_refused_before_any_work(tmp_path, synthetic_dir):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "training.train", "--data", str(synthetic_dir), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    for flag in ("--batch-size", "--sample-every", "--epochs", "--latent-dim"):
        proc = cli("--out", str(tmp_path / "r"), flag, "0")
        assert proc.returncode == 2 and f"{flag}: must be at least 1" in proc.stderr, proc.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = cli("--out", str(blocker / "run"))
    assert proc.returncode != 0 and f"--out {blocker / 'run'}: cannot create" in proc.stderr
    assert "Traceback" not in proc.stderr and "images at" not in proc.stdout
    proc = cli("--out", str(blocker))
    assert proc.returncode != 0 and f"--out {blocker} is a file, not a run folder" in proc.stderr
    assert blocker.read_text() == "" and "Traceback" not in proc.stderr


def test_weight_decay_and_zoom_shift_augmentation_are_applied_and_recorded(tmp_path, synthetic_dir):
    import torch

    from training import checkpoint
    from training.train import main

    def run(name, *flags):
        main(["--data", str(synthetic_dir), "--out", str(tmp_path / name), "--epochs", "3", "--ema", "0",
              *TINY_MODEL_FLAGS, *flags])
        state = checkpoint.load(tmp_path / name / "checkpoint.pt")
        norm = torch.sqrt(sum((w.float() ** 2).sum() for k, w in state["model"].items() if k.endswith("weight")))
        return state, norm.item(), json.loads((tmp_path / name / "config.json").read_text())

    plain, plain_norm, _ = run("plain", "--lr", "3e-3", "--zoom", "0", "--shift", "0")
    warped, _, _ = run("warped", "--lr", "3e-3", "--zoom", "0.3", "--shift", "0.2")
    # Same seed, same photos, same order: only the augmentation differs, so the losses do.
    assert warped["history"][0]["train_recon"] != plain["history"][0]["train_recon"]
    state, decayed_norm, config = run("regularised", "--lr", "3e-3", "--weight-decay", "30", "--zoom", "0.1",
                                      "--shift", "0.05")
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 30
    assert decayed_norm < 0.8 * plain_norm  # decoupled decay shrank the weights: (1 - lr * 30) per step
    assert (config["weight_decay"], config["zoom"], config["shift"]) == (30, 0.1, 0.05)
    assert all(h["train_loss"] == h["train_loss"] for h in state["history"])  # finite: no NaN from the warp


def test_the_compiled_forward_pass_computes_the_eager_one_without_a_compile_per_step():
    """What --compile compiles (augmentation, model and loss), checked on the CPU; tests/test_cuda.py
    trains with it on a GPU."""
    from contextlib import nullcontext

    import torch
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config

    from training.vae import VAE, VAEConfig
    from training.losses import LossConfig
    from training.config import defaults
    from training.step import forward_loss, train_step

    torch._dynamo.reset()
    counters.clear()
    settings = defaults()
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=16, res_blocks=0))
    batch = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    loss_cfg, cpu, params = LossConfig(beta=0.1, warmup=0.2), torch.device("cpu"), list(vae.parameters())
    compiled = torch.compile(forward_loss)
    results = []
    for fn in (forward_loss, compiled):
        torch.manual_seed(1)
        # (config.patch, not monkeypatch: undoing a setattr on a torch config module deletes the option)
        with inductor_config.patch(fallback_random=True):  # the same random draws as eager
            recon_term, kl_term, parts = fn(vae, batch, cpu, settings, loss_cfg, nullcontext())
        loss = recon_term + 0.05 * kl_term
        results.append(((recon_term, kl_term), torch.autograd.grad(loss, params), parts))
    (eager, eager_grads, eager_parts), (got, grads, parts) = results
    assert all(torch.allclose(g, e, rtol=1e-4) for g, e in zip(got, eager)), (got, eager)
    assert parts.keys() == eager_parts.keys() == {"recon", "kl"}
    assert all(torch.allclose(parts[k], eager_parts[k], rtol=1e-4) for k in parts)
    for a, b in zip(grads, eager_grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)

    # Across the KL warm-up beta changes every step: the step applies it (none at the start, more
    # later), and the compiled graph does not depend on it, so it is compiled once, not per step.
    frozen = torch.optim.SGD(params, lr=0.0)
    losses = {}
    for progress in (0.0, 0.05, 0.1, 0.5, 0.9):
        torch.manual_seed(2)
        losses[progress], step_parts = train_step(vae, frozen, batch, cpu, settings, loss_cfg, progress,
                                                  nullcontext(), compiled)
        if progress == 0.0:
            assert torch.allclose(losses[0.0], step_parts["recon"])
    assert losses[0.0] < losses[0.05] < losses[0.1] < losses[0.5] == losses[0.9]
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_the_compiled_forward_pass_reads_no_tensor_from_outside_the_model_and_batch():
    """A tensor the graph takes from elsewhere (a module's global, say) is an input copied from the
    host on every call: on a GPU, a wait in every step. Only the model's weights and the batch may be."""
    from contextlib import nullcontext

    import torch

    from training.vae import VAE, VAEConfig
    from training.losses import LossConfig
    from training.config import defaults
    from training.step import forward_loss

    torch._dynamo.reset()
    settings = defaults()
    vae = VAE(VAEConfig(image_size=64, latent_dim=16, base_channels=8, max_channels=16, res_blocks=0))
    batch = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    graphs = []

    def record(graph, example_inputs):  # a dynamo backend that keeps what each graph is called with
        names = [node.name for node in graph.graph.nodes if node.op == "placeholder"]
        graphs.append(list(zip(names, example_inputs)))
        return graph.forward

    torch.compile(forward_loss, backend=record)(vae, batch, torch.device("cpu"), settings, LossConfig(beta=0.1),
                                                nullcontext())
    ours = {id(t) for t in [*vae.parameters(), *vae.buffers(), batch]}
    assert graphs
    foreign = [name for graph in graphs for name, value in graph
               if isinstance(value, torch.Tensor) and id(value) not in ours]
    assert not foreign, foreign
