"""The CUDA paths, on a GPU only (CI has none; scripts/gpu_session.sh runs these first)."""
import pytest

from tests.conftest import TINY_MODEL_FLAGS, needs_torch

torch = pytest.importorskip("torch")
pytestmark = [needs_torch, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


# The model eager and compiled; the speed benchmark's other ways to compute it eager (their compiled
# graphs read only the model and the batch: tests/test_train_speed.py, on the CPU).
STEPS = [(False, "model"), (True, "model"), (False, "explicit-upsample"), (False, "padded-ends"),
         (False, "subpixel"), (False, "s2d-ends"), (False, "s2d-stage")]


@pytest.mark.parametrize("compiled, variant", STEPS, ids=[("compiled-" if c else "eager-") + v for c, v in STEPS])
def test_a_training_step_never_waits_for_the_host(compiled, variant):
    """A small VAE is fast on a GPU only if the CPU can queue steps ahead of it: no hidden
    host-device synchronisation (.item(), copies from pageable memory) inside a step, eager or
    as --compile runs it."""
    from benchmarks.train_speed import apply_variant
    from training.vae import VAE, VAEConfig
    from training.losses import LossConfig
    from training.config import defaults
    from training.step import forward_loss, train_step

    device = torch.device("cuda")
    settings = defaults()
    vae = VAE(VAEConfig()).to(device, memory_format=torch.channels_last)
    apply_variant(vae, variant)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (64, 3, 128, 128), dtype=torch.uint8, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    torch._dynamo.reset()
    loss_fn = torch.compile(forward_loss) if compiled else forward_loss
    for _ in range(2):  # warm-up (and the compile): lazy initialisation may synchronise once
        train_step(vae, optimizer, images[:32], device, settings, LossConfig(), 0.5, autocast, loss_fn)
    batches = [torch.randperm(64, device=device)[:32] for _ in range(3)]  # as the trainer: made per epoch
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for idx in batches:
            train_step(vae, optimizer, images[idx], device, settings, LossConfig(), 0.5, autocast, loss_fn)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_training_on_the_gpu_with_bf16_and_compile_then_export_for_the_cpu(tmp_path, synthetic_dir):
    import json

    from training import checkpoint
    from training.export import export
    from training.train import main

    run = tmp_path / "run"
    main(["--data", str(synthetic_dir), "--out", str(run), "--epochs", "4", "--compile", *TINY_MODEL_FLAGS])
    assert json.loads((run / "metrics.json").read_text())["training"]["device"] != "cpu"
    history = checkpoint.load(run / "checkpoint.pt")["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    meta = export(run, tmp_path / "model")  # a GPU-trained checkpoint exports on the CPU
    assert max(meta["parity_max_abs_error"].values()) <= 1e-4
