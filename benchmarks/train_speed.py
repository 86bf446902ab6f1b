"""Training throughput of the default configuration, in images per second.

    python -m benchmarks.train_speed                      # CUDA if present, else CPU
    python -m benchmarks.train_speed --batch-sizes 64 256 512 --compile
    python -m benchmarks.train_speed --precision fp32 bf16  # the CPU, with and without bf16
    python -m benchmarks.train_speed --flops                # floating-point operations per training image
    python -m benchmarks.train_speed --batch-sizes 1024 --compile default max-autotune-no-cudagraphs \
        --variants model explicit-upsample padded-ends --profile  # levers, A/B, a kernel table each

Each step is exactly the trainer's (training.train.train_step, then the weights' moving
average): augmentation on the device, forward in bf16 autocast where the hardware has it
(the trainer's --precision auto), backward, gradient clipping, AdamW, EMA. The images
are random uint8 tensors kept on the device, as the trainer keeps a dataset that fits.
--compile compiles what the trainer's --compile does, the step's forward pass (augmentation,
model, loss); --compile-scope model compiles the model alone, as the trainer did before.
--variants times the same function computed other ways, to measure a lever before the
model takes it (tests/test_train_speed.py checks each computes what the model does):
  explicit-upsample: the decoder as it was before model.vae.UpsampleConv (the upsampled
      tensor written out, then the 3x3 convolution);
  padded-ends: the two convolutions with 3 channels on one side (the encoder's first, the
      decoder's last) zero-padded to 8, the channel multiple tensor cores need;
  subpixel: each upsampling convolution as a plain 3x3 convolution of the small input with 4x
      the output channels, one per output pixel of each 2x2 block, then a pixel shuffle. More
      multiply-adds than the fold (9 taps against 4 per output), but the most tuned kind of
      kernel cuDNN has, where the fold runs a transposed convolution.
Writes benchmarks/results/train_speed_<device>.json (and, with --profile, the operations
that took the time, per setting: train_speed_<device>_profile.txt), or into --out, after every
setting; a setting that fails (out of memory, a compile error) is recorded and the rest still run.
"""
from __future__ import annotations

import argparse
import itertools
import os
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.common import RESULTS, save
from model.vae import VAE, UpsampleConv, VAEConfig
from training.ema import EMA
from training.losses import LossConfig, vae_loss
from training.train import PRECISIONS, autocast_for, build_parser, forward_loss, resolve_precision, train_step


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
COMPILE_SCOPES = ("step", "model")  # the trainer's --compile: the step's forward pass; or the model alone
TENSOR_CORE_CHANNELS = 8


def _upsample_then_convolve(conv: UpsampleConv, x: torch.Tensor) -> torch.Tensor:
    return nn.Conv2d.forward(conv, F.interpolate(x, scale_factor=2, mode="nearest"))


def _padded(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x), its input and output channels zero-padded to a multiple of 8 and cut back."""
    pad_in, pad_out = (-n % TENSOR_CORE_CHANNELS for n in (conv.in_channels, conv.out_channels))
    weight = F.pad(conv.weight, (0, 0, 0, 0, 0, pad_in, 0, pad_out))
    bias = F.pad(conv.bias, (0, pad_out))
    if pad_in:  # (a zero pad would still copy the whole activation)
        x = F.pad(x, (0, 0, 0, 0, 0, pad_in)).contiguous(memory_format=torch.channels_last)
    return conv._conv_forward(x, weight, bias)[:, : conv.out_channels]


# Sub-pixel form of nearest 2x upsampling then a 3x3 convolution, per axis: output row 2i+a
# reads input rows i-1, i, i+1 (the rows of each matrix) through the 3x3 kernel's taps (its
# columns). Row 2i: i-1 by tap 0, i by taps 1 and 2; row 2i+1: i by taps 0 and 1, i+1 by tap 2.
_PHASES = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
                        [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def _subpixel_convolve(conv: UpsampleConv, x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    # (out, in, 3, 3) -> (out * 4, in, 3, 3), output channel o * 4 + a * 2 + b as pixel_shuffle reads it
    phases = phases.to(conv.weight.dtype)
    weight = torch.einsum("apk,bql,oikl->oabipq", phases, phases, conv.weight).flatten(0, 2)
    y = F.conv2d(x, weight, conv.bias.repeat_interleave(4), padding=1)
    # pixel_shuffle, written for channels-last: CUDA's pixel_shuffle has no channels-last kernel and
    # would copy to the other layout and back. Here one copy, (n, h, a, w, b, o) -> (n, 2h, 2w, o).
    n, c4, h, w = y.shape
    shuffled = y.permute(0, 2, 3, 1).reshape(n, h, w, c4 // 4, 2, 2).permute(0, 1, 4, 2, 5, 3)
    return shuffled.reshape(n, 2 * h, 2 * w, c4 // 4).permute(0, 3, 1, 2)


def _computed_as(vae: VAE, wanted, forward) -> None:
    """Every module of vae that wanted(module) accepts computes forward(module, x) instead."""
    for module in vae.modules():
        if wanted(module):
            module.forward = partial(forward, module)


def _is_upsample(module) -> bool:
    return isinstance(module, UpsampleConv)


def _has_odd_channels(module) -> bool:
    return type(module) is nn.Conv2d and bool(module.in_channels % TENSOR_CORE_CHANNELS
                                             or module.out_channels % TENSOR_CORE_CHANNELS)


def _subpixel(vae: VAE) -> None:
    # Moved to the device once, here: a host copy in every forward would sync each GPU step.
    phases = _PHASES.to(next(vae.parameters()).device)
    _computed_as(vae, _is_upsample, partial(_subpixel_convolve, phases=phases))


VARIANTS = {
    "model": lambda vae: None,
    "explicit-upsample": lambda vae: _computed_as(vae, _is_upsample, _upsample_then_convolve),
    "padded-ends": lambda vae: _computed_as(vae, _has_odd_channels, _padded),
    "subpixel": _subpixel,
}


def measure(settings: dict, batch: int, device: torch.device, compile_mode: str | None, seconds: float,
            precision: str, fused: bool = False, variant: str = "model", profile: bool = False,
            compile_scope: str = "step") -> dict:
    cfg = VAEConfig.from_dict(settings)
    torch.manual_seed(0)
    vae = VAE(cfg).to(device, memory_format=torch.channels_last)
    VARIANTS[variant](vae)
    model, loss_fn = vae, forward_loss
    if compile_mode:
        torch._dynamo.reset()  # forward_loss is compiled once per setting, not recompiled until dynamo gives up
        if compile_scope == "model":
            model = torch.compile(vae, mode=compile_mode)
        else:
            loss_fn = torch.compile(forward_loss, mode=compile_mode)
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
            train_step(model, optimizer, pool[idx], device, settings, loss_cfg, 0.5, autocast, loss_fn)
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
    result = {"steps": steps, "seconds": round(elapsed, 2), "images_per_second": round(steps * batch / elapsed, 1),
              "warmup_seconds": round(warmup_s, 1)}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if profile:
        result["profile"] = profile_table(lambda: (run(5), sync()), device)
    return result


def profile_table(steps, device: torch.device, rows: int = 25) -> str:
    """The operations (on CUDA: the kernels) that took the time in `steps`, busiest first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profiler(activities=activities) as prof:
        steps()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)


def flops_per_image(settings: dict) -> float:
    """Forward + backward of one training image, counted by torch (the optimizer's few are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = VAEConfig.from_dict(settings)
    vae, x = VAE(cfg), torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with FlopCounterMode(display=False) as counter:
        recon, mu, logvar = vae(x)
        vae_loss(x, recon, mu, logvar, LossConfig(beta=settings["beta"]), 0.5)[0].backward()
    return counter.get_total_flops() / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: the trainer's default batch")
    p.add_argument("--compile", nargs="*", choices=COMPILE_MODES, metavar="MODE",
                   help=f"also measure with torch.compile, in each MODE of {', '.join(COMPILE_MODES)} "
                   "(none given: default)")
    p.add_argument("--compile-scope", nargs="+", choices=COMPILE_SCOPES, default=["step"],
                   help="what --compile compiles: the step's forward pass, as the trainer does, or the model alone")
    p.add_argument("--fused", action="store_true", help="also measure AdamW's fused kernel (not the trainer's yet)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["model"],
                   help="the model as it is, and the same function computed other ways (see above)")
    p.add_argument("--profile", action="store_true",
                   help="after each timing, profile 5 steps: train_speed_<device>_profile.txt")
    p.add_argument("--flops", action="store_true", help="only print the operations per training image")
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per setting")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["auto"],
                   help="auto: what the trainer uses on this device")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default %(default)s)")
    args = p.parse_args()
    settings = vars(build_parser().parse_args(["--out", "unused"]))
    if args.flops:
        print(f"{flops_per_image(settings) / 1e9:.2f} GFLOP per training image (forward + backward)")
        return
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.profile:
        # Detach the CUDA profiler's hooks when each profile ends, or they slow every later setting
        # (pytorch/pytorch#144455).
        os.environ.setdefault("TEARDOWN_CUPTI", "1")
    batches = args.batch_sizes or [settings["batch_size"]]
    compiled = [] if args.compile is None else args.compile or ["default"]
    compile_modes = [(None, "step")] + list(itertools.product(compiled, args.compile_scope))
    precisions = dict.fromkeys(resolve_precision(device, p) for p in args.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    runs, tables = [], []
    for batch, (compile_mode, scope), precision, fused, variant in itertools.product(
            batches, compile_modes, precisions, [False, True] if args.fused else [False], args.variants):
        compiled_as = f"{compile_mode} ({scope})" if compile_mode else "no"
        label = f"batch {batch:5d} compile {compiled_as} {precision} fused {fused} {variant}"
        r = {"batch": batch, "compile": compile_mode or False, "compile_scope": scope if compile_mode else None,
             "precision": precision, "fused_adamw": fused, "variant": variant}
        try:
            r.update(measure(settings, batch, device, compile_mode, args.seconds, precision, fused, variant,
                             args.profile, scope))
        except Exception as exc:  # noqa: BLE001 - out of memory, a compile error: the other settings still count
            r["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
            print(f"{label}: FAILED {r['error']}", flush=True)
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            print(f"{label}: {r['images_per_second']:>10,.1f} images/s", flush=True)
        if "profile" in r:
            tables.append(f"== {label}: {r['images_per_second']:,.1f} images/s\n{r.pop('profile')}")
        runs.append(r)
        # Written after every setting: a device call that runs out of time still brings back those done.
        if tables:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"train_speed_{device.type}_profile.txt").write_text("\n\n".join(tables) + "\n")
        path = save(f"train_speed_{device.type}", {
            "device": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "config": {k: settings[k] for k in ("image_size", "latent_dim", "base_channels", "max_channels", "res_blocks")},
            "runs": runs,
        }, args.out)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
