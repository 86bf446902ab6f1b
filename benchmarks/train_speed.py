"""Training throughput of the default configuration, in images per second.

    python -m benchmarks.train_speed                      # CUDA if present, else CPU
    python -m benchmarks.train_speed --batch-sizes 64 256 512 --compile
    python -m benchmarks.train_speed --precision fp32 bf16  # the CPU, with and without bf16
    python -m benchmarks.train_speed --flops                # floating-point operations per training image

Each step is exactly the trainer's (training.train.train_step, then the weights' moving
average): augmentation on the device, forward in bf16 autocast where the hardware has it
(the trainer's --precision auto), backward, gradient clipping, AdamW, EMA. The images
are random uint8 tensors kept on the device, as the trainer keeps a dataset that fits.
Writes benchmarks/results/train_speed_<device>.json.
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import save
from model.vae import VAE, VAEConfig
from training.ema import EMA
from training.losses import LossConfig, vae_loss
from training.train import PRECISIONS, autocast_for, build_parser, resolve_precision, train_step


def measure(settings: dict, batch: int, device: torch.device, compile_model: bool, seconds: float,
            precision: str, fused: bool = False) -> dict:
    cfg = VAEConfig(settings["image_size"], settings["latent_dim"], settings["base_channels"],
                    settings["max_channels"], settings["res_blocks"])
    torch.manual_seed(0)
    vae = VAE(cfg).to(device, memory_format=torch.channels_last)
    model = torch.compile(vae) if compile_model else vae
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings["lr"], betas=(0.9, 0.99), fused=fused or None)
    ema = EMA(vae, settings["ema"]) if settings["ema"] else None
    loss_cfg = LossConfig(beta=settings["beta"])
    autocast = autocast_for(device, precision)
    pool = torch.randint(0, 256, (max(batch * 4, 1024), 3, cfg.image_size, cfg.image_size), dtype=torch.uint8,
                         device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(steps: int) -> None:
        for _ in range(steps):
            idx = torch.randint(0, len(pool), (batch,), device=device)
            train_step(model, optimizer, pool[idx], device, settings, loss_cfg, 0.5, autocast)
            if ema:
                ema.update(vae, 1000)  # past the decay's warm-up: the trainer's steady state

    started = time.perf_counter()
    run(5)  # compile, cudnn autotuning, allocator warm-up
    sync()
    warmup_s = time.perf_counter() - started
    # Size the timed run from a short probe so it lasts about `seconds`.
    probe = time.perf_counter()
    run(5)
    sync()
    per_step = (time.perf_counter() - probe) / 5
    steps = max(5, int(seconds / max(per_step, 1e-6)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    run(steps)
    sync()
    elapsed = time.perf_counter() - start
    result = {"batch": batch, "compile": compile_model, "precision": precision, "fused_adamw": fused, "steps": steps,
              "seconds": round(elapsed, 2),
              "images_per_second": round(steps * batch / elapsed, 1), "warmup_seconds": round(warmup_s, 1)}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def flops_per_image(settings: dict) -> float:
    """Forward + backward of one training image, counted by torch (the optimizer's few are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = VAEConfig(settings["image_size"], settings["latent_dim"], settings["base_channels"],
                    settings["max_channels"], settings["res_blocks"])
    vae, x = VAE(cfg), torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with FlopCounterMode(display=False) as counter:
        recon, mu, logvar = vae(x)
        vae_loss(x, recon, mu, logvar, LossConfig(beta=settings["beta"]), 0.5)[0].backward()
    return counter.get_total_flops() / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: the trainer's default batch")
    p.add_argument("--compile", action="store_true", help="also measure with torch.compile")
    p.add_argument("--fused", action="store_true", help="also measure AdamW's fused kernel (not the trainer's yet)")
    p.add_argument("--flops", action="store_true", help="only print the operations per training image")
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per setting")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["auto"],
                   help="auto: what the trainer uses on this device")
    args = p.parse_args()
    settings = vars(build_parser().parse_args(["--out", "unused"]))
    if args.flops:
        print(f"{flops_per_image(settings) / 1e9:.2f} GFLOP per training image (forward + backward)")
        return
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batches = args.batch_sizes or [settings["batch_size"]]
    runs = []
    for batch in batches:
        for compile_model in ([False, True] if args.compile else [False]):
            for precision in dict.fromkeys(resolve_precision(device, p) for p in args.precision):
                for fused in [False, True] if args.fused else [False]:
                    r = measure(settings, batch, device, compile_model, args.seconds, precision, fused)
                    runs.append(r)
                    print(f"batch {batch:5d} compile {str(compile_model):5s} {precision} fused {str(fused):5s}: "
                          f"{r['images_per_second']:>10,.1f} images/s", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    path = save(f"train_speed_{device.type}", {
        "device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": {k: settings[k] for k in ("image_size", "latent_dim", "base_channels", "max_channels", "res_blocks")},
        "runs": runs,
    })
    print(f"-> {path}")


if __name__ == "__main__":
    main()
