"""Training throughput of the default configuration, in images per second.

    python -m benchmarks.train_speed                      # CUDA if present, else CPU
    python -m benchmarks.train_speed --batch-sizes 64 256 512 --compile
    python -m benchmarks.train_speed --precision fp32 bf16  # the CPU, with and without bf16
    python -m benchmarks.train_speed --flops --variants model subpixel  # operations per training image
    python -m benchmarks.train_speed --bytes --variants model subpixel  # activations kept for backward
    python -m benchmarks.train_speed --batch-sizes 1024 --compile default max-autotune-no-cudagraphs \
        --variants model explicit-upsample padded-ends --profile  # levers, A/B, a kernel table each

Each step is exactly the trainer's (training.step.train_step, then the weights' moving
average): augmentation on the device, forward in bf16 autocast where the hardware has it
(the trainer's --precision auto), backward, gradient clipping, AdamW, EMA. The images
are random uint8 tensors kept on the device, as the trainer keeps a dataset that fits.
--compile compiles what the trainer's --compile does, the step's forward pass (augmentation,
model, loss); --compile-scope model compiles the model alone, as the trainer did before.
--variants times the same function computed other ways, to measure a lever before the
model takes it (tests/test_train_speed.py checks each computes what the model does):
  explicit-upsample: the decoder as it was before training.vae.UpsampleConv (the upsampled
      tensor written out, then the 3x3 convolution);
  padded-ends: the two convolutions with 3 channels on one side (the encoder's first, the
      decoder's last) zero-padded to 8, the channel multiple tensor cores need;
  subpixel: each upsampling convolution as a plain 3x3 convolution of the small input with 4x
      the output channels, one per output pixel of each 2x2 block, then a pixel shuffle. More
      multiply-adds than the fold (9 taps against 4 per output), but the most tuned kind of
      kernel cuDNN has, where the fold runs a transposed convolution.
  s2d-ends: the full-resolution tensors (3 and 16 channels, where tensor cores are used worst) held
      in 2x2 blocks of pixels, as half-size tensors of 4x the channels: the encoder's stem, the
      decoder's last upsampling and its output convolution become convolutions of those;
  s2d-stage: that, and the half-size stage (16 channels) in blocks too, as 64 channels at a
      quarter of the size; its residual blocks' convolutions then do 4x their multiply-adds.
Variants join with '+' (subpixel+s2d-stage), applied in order: a later one's layers win (an
s2d variant can only come last, and only one).
Writes benchmarks/results/train_speed_<device>.json (and, with --profile, the operations
that took the time, per setting: train_speed_<device>_profile.txt), or into --out, after every
setting; a setting that fails (out of memory, a compile error) is recorded and the rest still run.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.common import RESULTS, save
from training.vae import VAE, ResBlock, UpsampleConv, VAEConfig
from training.ema import EMA
from training.losses import LossConfig, vae_loss
from training.config import Settings, defaults
from training.devices import PRECISIONS, autocast_for, resolve_precision
from training.step import forward_loss, train_step


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


# Convolutions computed on tensors stored in blocks: a tensor with block factor b holds each b x b
# block of pixels as one pixel of b*b times the channels (channel c * b*b + a * b + a', as
# F.pixel_unshuffle lays them out). Every convolution here, after an optional nearest upsampling,
# is then a plain stride-`step` convolution of the blocked input that writes the blocked output,
# with a kernel gathered from the original one (block_taps). That turns the narrow full-resolution
# layers (3 and 16 channels), which use tensor cores worst, into wide half-resolution ones.

def _to_blocks(x: torch.Tensor, b: int, channels: int) -> torch.Tensor:
    """F.pixel_unshuffle by b of x with its channels zero-padded up to `channels`, in one copy, written
    for channels-last (CUDA's pixel_(un)shuffle has no channels-last kernel and would copy to the other
    layout and back)."""
    n, c, h, w = x.shape
    cells = x.permute(0, 2, 3, 1).reshape(n, h // b, b, w // b, b, c).permute(0, 1, 3, 5, 2, 4)
    cells = F.pad(cells, (0, 0, 0, 0, 0, channels - c))  # the one copy; the reshape is then a view
    return cells.reshape(n, h // b, w // b, channels * b * b).permute(0, 3, 1, 2)


def _from_blocks(y: torch.Tensor, b: int) -> torch.Tensor:
    """F.pixel_shuffle by b, for channels-last: one copy, (n, h, w, c, a, a') -> (n, h, a, w, a', c)."""
    n, cbb, h, w = y.shape
    pixels = y.permute(0, 2, 3, 1).reshape(n, h, w, cbb // (b * b), b, b).permute(0, 1, 4, 2, 5, 3)
    return pixels.reshape(n, h * b, w * b, cbb // (b * b)).permute(0, 3, 1, 2)


def block_taps(kernel: int, stride: int, padding: int, upsample: int, block_in: int, block_out: int):
    """One axis of a convolution (after nearest upsampling) on blocked tensors: taps[a, j, p, t] is 1
    where tap t of output phase a reads input phase p of input cell step * i + j - pad, for output cell i.
    Returns (taps, step, pad). Output row y = block_out * i + a reads upsampled row stride * y - padding + t,
    which is input row r = (stride * y - padding + t) // upsample, in cell r // block_in at phase r % block_in."""
    step, remainder = divmod(stride * block_out, upsample * block_in)
    if remainder or not step:
        raise ValueError("each output cell must start on an input cell")
    rows = {(a, t): (stride * a - padding + t) // upsample for a in range(block_out) for t in range(kernel)}
    cells = [row // block_in for row in rows.values()]  # relative to cell step * i
    pad = -min(cells)
    taps = torch.zeros(block_out, max(cells) + pad + 1, block_in, kernel)
    for (a, t), row in rows.items():
        taps[a, row // block_in + pad, row % block_in, t] = 1.0
    return taps, step, pad


def _block_conv(conv: nn.Conv2d, x: torch.Tensor, step: int, pad: int, block_out: int, unblock_input: int = 1,
                unblock_output: bool = False) -> torch.Tensor:
    if unblock_input > 1:
        x = _from_blocks(x, unblock_input)
    taps = conv.block_taps.to(conv.weight.dtype)
    assert x.shape[1] >= conv.in_channels * taps.shape[2] ** 2, "input narrower than the blocked kernel"
    # (o, c, kh, kw) -> (o * bo * bo, c * bi * bi, kh', kw'), channels in the blocked order
    weight = torch.einsum("ajpt,bkqu,octu->oabcpqjk", taps, taps, conv.weight).flatten(0, 2).flatten(1, 3)
    out = weight.shape[0]
    pad_out = -out % TENSOR_CORE_CHANNELS
    weight = F.pad(weight, (0, 0, 0, 0, 0, x.shape[1] - weight.shape[1], 0, pad_out))
    bias = F.pad(conv.bias.repeat_interleave(block_out * block_out), (0, pad_out))
    y = F.conv2d(x, weight, bias, stride=step, padding=pad)
    y = y[:, :out] if pad_out else y
    return _from_blocks(y, block_out) if unblock_output else y


def _blocked(conv: nn.Conv2d, block_in: int, block_out: int, *, block_input: bool = False, unblock_input: int = 1,
             unblock_output: bool = False):
    """conv's forward, computed on an input with block factor block_in (blocked here first if
    block_input; unblocked from unblock_input first if given) and writing block factor block_out (or
    plain pixels, if unblock_output)."""
    upsample = 2 if isinstance(conv, UpsampleConv) else 1
    taps, step, pad = block_taps(conv.kernel_size[0], conv.stride[0], conv.padding[0], upsample, block_in, block_out)
    # A buffer, so it lives on the module's device (a host copy in every forward would sync each GPU
    # step) and stays put under CUDA graphs. Not persistent: checkpoints stay as they are.
    conv.register_buffer("block_taps", taps.to(conv.weight.device), persistent=False)
    block_conv = partial(_block_conv, conv, step=step, pad=pad, block_out=block_out, unblock_input=unblock_input,
                         unblock_output=unblock_output)
    if not block_input:
        return block_conv
    # Zero channels up to a multiple of 8 once blocked (a whole number of them, as b * b is 4)
    cells = block_in * block_in
    channels = conv.in_channels + -(conv.in_channels * cells) % TENSOR_CORE_CHANNELS // cells
    return lambda x: block_conv(_to_blocks(x, block_in, channels))


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
    for module in vae.modules():
        if _is_upsample(module):
            module.forward = _blocked(module, 1, 2, unblock_output=True)


def _high_resolution_layers(vae: VAE):
    """The layers at half the image size and above: (encoder stem, its residual blocks' convolutions, the
    next downsampling) and (the decoder's upsampling to half size, its residual blocks' convolutions,
    the last upsampling, the output convolution)."""
    def convs_of_blocks(layers):
        return [conv for block in layers if isinstance(block, ResBlock) for conv in (block.conv1, block.conv2)]

    encoder, decoder = list(vae.encoder.features), list(vae.decoder.features)
    down = next(i for i, m in enumerate(encoder) if i and isinstance(m, nn.Conv2d))  # the second strided conv
    ups = [i for i, m in enumerate(decoder) if _is_upsample(m)]
    return ((encoder[0], convs_of_blocks(encoder[:down]), encoder[down]),
            (decoder[ups[-2]], convs_of_blocks(decoder[ups[-2]:ups[-1]]), decoder[ups[-1]], decoder[-1]))


def _s2d_ends(vae: VAE) -> None:
    """The full-resolution tensors in 2x2 blocks: the image into the stem; the last upsampling's output
    into the output convolution."""
    (stem, _, _), (_, _, last_upsample, head) = _high_resolution_layers(vae)
    stem.forward = _blocked(stem, 2, 1, block_input=True)
    last_upsample.forward = _blocked(last_upsample, 1, 2)
    head.forward = _blocked(head, 2, 2, unblock_output=True)


def _s2d_stage(vae: VAE) -> None:
    """s2d-ends, and the half-size stage's tensors in 2x2 blocks too (16 channels become 64), at 4x the
    multiply-adds of its residual blocks' convolutions (a 3x3 kernel read over 3x3 cells of 2x2 pixels)."""
    (stem, enc_convs, down), (up, dec_convs, last_upsample, head) = _high_resolution_layers(vae)
    stem.forward = _blocked(stem, 2, 2, block_input=True)
    for conv in enc_convs + dec_convs:
        conv.forward = _blocked(conv, 2, 2)
    down.forward = _blocked(down, 2, 1)
    up.forward = _blocked(up, 1, 2)
    # Blocks of 2 in and out would need half a cell per output cell: unblocked first (one copy of
    # the 16-channel tensor), as in s2d-ends.
    last_upsample.forward = _blocked(last_upsample, 1, 2, unblock_input=2)
    head.forward = _blocked(head, 2, 2, unblock_output=True)


VARIANTS = {
    "model": lambda vae: None,
    "explicit-upsample": lambda vae: _computed_as(vae, _is_upsample, _upsample_then_convolve),
    "padded-ends": lambda vae: _computed_as(vae, _has_odd_channels, _padded),
    "subpixel": _subpixel,
    "s2d-ends": _s2d_ends,
    "s2d-stage": _s2d_stage,
}


def apply_variant(vae: VAE, variant: str) -> None:
    """variant: a name of VARIANTS, or several joined by '+', applied in order (a later one's layers win;
    variant_name checks the order)."""
    for name in variant_name(variant).split("+"):
        VARIANTS[name](vae)


def variant_name(text: str) -> str:
    names = text.split("+")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant {unknown[0]!r} (choose from {', '.join(VARIANTS)}, "
                                         "or several joined by '+')")
    # A blocked variant hands blocked tensors between the layers it changes: another variant after it
    # would change one of those layers back to plain pixels.
    blocked = [i for i, name in enumerate(names) if name.startswith("s2d")]
    if blocked and blocked != [len(names) - 1]:
        raise argparse.ArgumentTypeError(f"{text}: one s2d variant at most, and last")
    return text


def measure(settings: Settings, batch: int, device: torch.device, compile_mode: str | None, seconds: float,
            precision: str, fused: bool = False, variant: str = "model", profile: bool = False,
            compile_scope: str = "step") -> dict:
    cfg = settings.model()
    torch.manual_seed(0)
    vae = VAE(cfg).to(device, memory_format=torch.channels_last)
    apply_variant(vae, variant)
    model, loss_fn = vae, forward_loss
    if compile_mode:
        torch._dynamo.reset()  # forward_loss is compiled once per setting, not recompiled until dynamo gives up
        if compile_scope == "model":
            model = torch.compile(vae, mode=compile_mode)
        else:
            loss_fn = torch.compile(forward_loss, mode=compile_mode)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, betas=(0.9, 0.99), fused=fused or None)
    ema = EMA(vae, settings.ema) if settings.ema else None
    loss_cfg = LossConfig(beta=settings.beta)
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


def flops_per_image(settings: Settings, variant: str = "model") -> float:
    """Forward + backward of one training image, counted by torch (the optimizer's few are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = settings.model()
    vae, x = VAE(cfg), torch.rand(2, 3, cfg.image_size, cfg.image_size)
    apply_variant(vae, variant)
    with FlopCounterMode(display=False) as counter:
        recon, mu, logvar = vae(x)
        vae_loss(x, recon, mu, logvar, LossConfig(beta=settings.beta), 0.5)[0].backward()
    return counter.get_total_flops() / len(x)


def saved_bytes_per_image(settings: Settings, variant: str = "model", precision: str = "bf16") -> float:
    """Bytes the trainer's forward pass keeps for backward, per training image, eager (compiled, the
    partitioner may keep fewer and recompute the rest). Backward reads each once after forward wrote it:
    an estimate of the step's least memory traffic. Taken as the difference between two batch sizes, so the
    once-per-step bf16 copies of the weights drop out."""
    cfg = settings.model()
    loss_cfg = LossConfig(beta=settings.beta)
    autocast = autocast_for(torch.device("cpu"), precision)

    def kept(batch: int) -> int:
        torch.manual_seed(0)
        vae = VAE(cfg).to(memory_format=torch.channels_last)
        apply_variant(vae, variant)
        storages = {}  # by address: views of one tensor share its storage, counted once

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        images = torch.randint(0, 256, (batch, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            forward_loss(vae, images, torch.device("cpu"), settings, loss_cfg, autocast)
        return sum(storages.values())

    return (kept(8) - kept(4)) / 4


def fastest_variant(results: Path) -> str:
    """The variant of the fastest setting in a results file this benchmark wrote (a failed one aside)."""
    runs = [r for r in json.loads(results.read_text())["runs"] if "images_per_second" in r]
    if not runs:
        raise SystemExit(f"error: {results} holds no finished setting")
    return max(runs, key=lambda r: r["images_per_second"])["variant"]


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
    p.add_argument("--variants", nargs="+", type=variant_name, default=["model"], metavar="VARIANT",
                   help=f"the model as it is, and the same function computed other ways: {', '.join(VARIANTS)}, "
                   "or several joined by '+' (see above)")
    p.add_argument("--profile", action="store_true",
                   help="after each timing, profile 5 steps: train_speed_<device>_profile.txt")
    p.add_argument("--fastest-in", type=Path, metavar="RESULTS",
                   help="only print the variant of the fastest setting in RESULTS, a file this benchmark wrote")
    p.add_argument("--flops", action="store_true", help="only print the operations per training image")
    p.add_argument("--bytes", action="store_true",
                   help="only print the bytes kept for backward per training image (bf16 autocast, eager)")
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per setting")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["auto"],
                   help="auto: what the trainer uses on this device")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the results (default %(default)s)")
    args = p.parse_args()
    if args.fastest_in:
        print(fastest_variant(args.fastest_in))
        return
    settings = defaults()
    if args.flops:
        for variant in args.variants:
            print(f"{variant}: {flops_per_image(settings, variant) / 1e9:.2f} GFLOP per training image "
                  "(forward + backward)")
        return
    if args.bytes:
        for variant in args.variants:
            print(f"{variant}: {saved_bytes_per_image(settings, variant) / 2**20:.2f} MiB kept for backward "
                  "per training image (bf16 autocast, eager)")
        return
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.profile:
        # Detach the CUDA profiler's hooks when each profile ends, or they slow every later setting
        # (pytorch/pytorch#144455).
        os.environ.setdefault("TEARDOWN_CUPTI", "1")
    batches = args.batch_sizes or [settings.batch_size]
    compiled = [] if args.compile is None else args.compile or ["default"]
    # Compiled first: the fastest settings are what a device call cut short by its time limit must not lose.
    compile_modes = list(itertools.product(compiled, args.compile_scope)) + [(None, "step")]
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
            "config": {k: getattr(settings, k) for k in ("image_size", "latent_dim", "base_channels", "max_channels", "res_blocks")},
            "runs": runs,
        }, args.out)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
