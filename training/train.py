"""Train the car VAE on a folder, zip or manifest of photos.

    python -m training.train --data PHOTOS --out runs/NAME            # one GPU, or the CPU
    torchrun --nproc_per_node=N -m training.train --data ... --out ... # several GPUs (DDP)
    python -m training.train --out runs/NAME --resume                 # continue a run
    python -m training.train --data ... --out runs/B --init runs/A    # fine-tune A's weights

A run folder holds config.json, checkpoint.pt (rewritten atomically), loss.png,
samples/epoch_NNNN.png (validation photos, their reconstructions, random samples from
N(0, I) and from the Gaussian fitted to the photos' codes), progress.gif and, at the end,
metrics.json with validation MSE, PSNR, SSIM and KL. The checkpoint's final `latent_prior`
is the distribution the exported model samples from (see training/prior.py).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.vae import VAE, VAEConfig
from training import checkpoint, prior, report
from training.augment import augment
from training.ema import EMA
from training.data import DatasetError, load_dataset, warnings_printed
from training.losses import KL_NORMS, LossConfig, beta_at, loss_terms
from training.metrics import mse_per_image, psnr_per_image, ssim

# Flags that may change when a run is resumed; every other setting comes from config.json, and
# giving one of them a different value is refused rather than silently ignored.
RESUMABLE = ("epochs", "max_time", "precision", "device", "compile", "sample_every", "checkpoint_interval")
PRECISIONS = ("auto", "bf16", "fp32")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def number_in(low: float | None = None, high: float | None = None, *, above: bool = False, below: bool = False):
    """An argparse type for a finite float in [low, high]; `above`/`below` exclude the bound."""
    def parse(text: str) -> float:
        value = float(text)
        ok = math.isfinite(value)
        if low is not None:
            ok = ok and (value > low if above else value >= low)
        if high is not None:
            ok = ok and (value < high if below else value <= high)
        if not ok:
            lo = "" if low is None else f"{'>' if above else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if below else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(b for b in (lo, hi) if b)}, not {text}")
        return value
    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder, .zip or manifest .csv of JPEG/PNG/WebP photos")
    p.add_argument("--out", required=True, help="run folder (created; holds checkpoints and reports)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--init", metavar="RUN", help="start from the weights of this run folder (fine-tuning): "
                   "its architecture replaces the model flags; optimizer and schedule start afresh")
    p.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep manifest rows where COLUMN equals VALUE (repeatable)")
    p.add_argument("--val-filter", action="append", default=[], metavar="COLUMN=VALUE",
                   help="of the manifest's val rows, keep only those where COLUMN equals VALUE (repeatable)")
    p.add_argument("--val-fraction", type=number_in(0, 1, above=True, below=True), default=0.1,
                   help="held out when the data has no split column")
    model = p.add_argument_group("model")
    model.add_argument("--image-size", type=int, default=128, choices=(64, 128, 256))
    model.add_argument("--latent-dim", type=positive_int, default=256)
    model.add_argument("--base-channels", type=positive_int, default=16)
    model.add_argument("--max-channels", type=positive_int, default=128)
    model.add_argument("--res-blocks", type=non_negative_int, default=1)
    model.add_argument("--encoder-width", type=positive_int, default=1, help="the encoder's stages are this many times "
                       "wider than the decoder's (python -m training.widen widens a trained run's)")
    loss = p.add_argument_group("loss")
    # 0.1: measured (benchmarks/loss_variants.py, README): 0.6 dB more than 0.5, and sampled through
    # the fitted Gaussian (training/prior.py) its samples are cars; from N(0, I) they would be noise.
    loss.add_argument("--beta", type=number_in(0), default=0.1, help="KL weight against per-image squared error")
    loss.add_argument("--kl-norm", choices=KL_NORMS, default="image",
                      help="'original': KL/(batch*C*H*W) + mean MSE, as the original project did")
    loss.add_argument("--l1-weight", type=number_in(0), default=0.0)
    loss.add_argument("--ssim-weight", type=number_in(0), default=0.0)
    loss.add_argument("--free-bits", type=number_in(0), default=0.0, help="nats per latent dimension")
    loss.add_argument("--kl-warmup", type=number_in(0, 1), default=0.2,
                      help="fraction of training over which beta ramps up")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive_int, default=None, help="default 100")
    opt.add_argument("--max-time", type=number_in(0), default=None,
                     help="stop after this many seconds of training; 0: no limit")
    opt.add_argument("--batch-size", type=positive_int, default=64, help="global batch, split across DDP ranks")
    opt.add_argument("--lr", type=number_in(0), default=1e-3)
    opt.add_argument("--ema", type=number_in(0, 1, below=True), default=0.999,
                     help="decay of the weights' moving average, the model that is evaluated and exported; 0: off")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--no-flip", dest="flip", action="store_false")
    opt.add_argument("--hue-prob", type=number_in(0, 1), default=0.8, help="probability of a random hue rotation")
    # 0.1 / 0.05: measured against overfitting (README, "A random zoom and shift against overfitting").
    opt.add_argument("--zoom", type=number_in(0, 1, below=True), default=0.1,
                     help="random scale in [1 - ZOOM, 1 + ZOOM] (white fill); 0: off")
    opt.add_argument("--shift", type=number_in(0, 0.5), default=0.05,
                     help="random shift of up to SHIFT of the image size; 0: off")
    opt.add_argument("--weight-decay", type=number_in(0), default=0.0, help="AdamW's decoupled weight decay")
    opt.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    opt.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                     help="torch.compile the step's forward pass: augmentation, model and loss (GPU)")
    opt.add_argument("--precision", choices=PRECISIONS, default=None,
                     help="forward pass in bf16 autocast or fp32; auto (default): bf16 on GPUs and on "
                     "CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere")
    out = p.add_argument_group("reporting")
    out.add_argument("--sample-every", type=positive_int, default=10, help="epochs between validation + sample grids")
    out.add_argument("--checkpoint-interval", type=number_in(0), default=60.0,
                     help="seconds between checkpoints (written at epoch ends, and always at the end)")
    return p


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The settings named on the command line, as opposed to left at their defaults."""
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def resolve_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, given: set[str] = frozenset()) -> dict:
    out = Path(args.out)
    if not args.resume:
        if not args.data:
            parser.error("--data is required (unless --resume)")
        if (out / "checkpoint.pt").exists():
            raise SystemExit(f"error: {out} already holds a run: pass --resume to continue it, "
                             "or choose another --out")
        if (out / "config.json").exists():  # its samples would end up in this run's progress.gif
            raise SystemExit(f"error: {out} holds a run that stopped before its first checkpoint: delete the "
                             "folder, or choose another --out")
        settings = {k: v for k, v in vars(args).items() if k != "resume"}
        settings["epochs"] = 100 if settings["epochs"] is None else settings["epochs"]
        return settings
    config = out / "config.json"
    if not config.exists():
        raise SystemExit(f"error: --resume: {config} not found (no run there)")
    if not (out / "checkpoint.pt").exists():  # said now, not after minutes of decoding photos
        raise SystemExit(f"error: --resume: {out} has no checkpoint.pt: the run stopped before its first one. "
                         "Delete the folder and start again without --resume")
    try:
        settings = json.loads(config.read_text())
        if not isinstance(settings, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: --resume: {config} cannot be read ({exc})") from None
    # A model setting a run's config.json predates has the default the model then gets (VAEConfig.from_dict).
    model_defaults = VAEConfig().to_dict()
    for key in sorted(given - {"out", "resume"}):
        value, saved = getattr(args, key), settings.get(key, model_defaults.get(key))
        if key in RESUMABLE:
            settings[key] = value
        elif key == "data" and value != saved and settings.get("data_fingerprint"):
            settings[key] = value  # the photos moved: main checks they are the same ones
        elif value != saved:
            raise SystemExit(f"error: --{key.replace('_', '-')} cannot change when resuming: {config} has "
                             f"{saved!r}. Start a new run instead (--init {out} starts from its weights)")
    settings["out"] = str(out)  # the run folder may have been moved since
    return settings


def load_init(run: Path) -> dict:
    try:
        return checkpoint.load(checkpoint.checkpoint_path(run))
    except checkpoint.CheckpointError as exc:
        raise SystemExit(f"error: --init: {exc}") from None


def parse_filters(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise SystemExit(f"error: --filter/--val-filter expects COLUMN=VALUE, got '{item}'")
        filters[column] = value
    return filters


def setup_device(choice: str):
    """Returns (device, rank, world_size). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but no CUDA GPU is available")
    use_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    if "RANK" not in os.environ:
        return torch.device("cuda" if use_cuda else "cpu"), 0, 1
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local), rank, world
    return torch.device("cpu"), rank, world


def lr_at(progress: float, base: float, warmup: float = 0.02) -> float:
    """Linear warm-up, then cosine decay to a tenth of the base rate."""
    if progress < warmup:
        return base * progress / warmup
    t = min(1.0, (progress - warmup) / (1 - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def resolve_precision(device: torch.device, precision: str | None) -> str:
    """auto: bf16 on GPUs and on CPUs with native bf16 (2.0x images/s on this project's AVX512-BF16
    CPU, benchmarks/results/train_speed_cpu.json), fp32 elsewhere (emulated bf16 is slower)."""
    if precision in (None, "auto"):
        native = device.type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return "bf16" if native else "fp32"
    return precision


def autocast_for(device: torch.device, precision: str):
    """The forward pass's autocast context; the loss is always computed in fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def rng_states(device: torch.device, world: int) -> list[dict]:
    """Every rank's random state (the CPU's, and its GPU's), in rank order: what a resumed run
    needs to draw the same augmentations and noise the interrupted one would have."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return [mine]
    states = [None] * world
    dist.all_gather_object(states, mine)
    return states


def restore_rng(state: dict, device: torch.device, rank: int, world: int, seed: int) -> None:
    saved = state.get("rng_ranks")
    if saved and len(saved) == world:
        torch.set_rng_state(saved[rank]["cpu"])
        if device.type == "cuda" and "cuda" in saved[rank]:
            torch.cuda.set_rng_state(saved[rank]["cuda"], device)
        return
    # A checkpoint from another number of ranks (or from before rng_ranks): the interrupted
    # streams cannot be continued, but each rank must still draw its own.
    if world > 1:
        torch.manual_seed(seed + rank + 1_000_003 * state["step"])
    else:
        torch.set_rng_state(state["rng"])


def to_float(batch_uint8: torch.Tensor, device) -> torch.Tensor:
    return batch_uint8.to(device, non_blocking=True).float().div_(255.0)


def forward_loss(model, batch_uint8, device, s: dict, loss_cfg: LossConfig, autocast):
    """A uint8 batch, augmented on the device, through the model (in bf16 where autocast is on) ->
    (reconstruction term, KL term, parts), parts holding the reconstruction error and the KL as
    tensors; the loss is recon_term + beta * kl_term (train_step). --compile compiles this whole
    function, so the augmentation's and the loss's elementwise work fuses into few kernels as the
    model's does."""
    x = augment(to_float(batch_uint8, device), s["flip"], s["hue_prob"], zoom=s.get("zoom", 0.0),
                shift=s.get("shift", 0.0))
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast:
        recon, mu, logvar = model(x)
    return loss_terms(x, recon, mu, logvar, loss_cfg)


def train_step(model, optimizer, batch_uint8, device, s: dict, loss_cfg: LossConfig, progress: float, autocast,
               loss_fn=forward_loss):
    """One optimisation step on a uint8 batch: loss_fn (forward_loss, or it compiled), backward, update."""
    recon_term, kl_term, parts = loss_fn(model, batch_uint8, device, s, loss_cfg, autocast)
    # The KL weight is applied here, outside what --compile compiles: a Python float that changes
    # every step of the warm-up would cost a second compile (dynamo first specialises on its value).
    loss = recon_term + beta_at(loss_cfg, progress) * kl_term
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.detach(), parts


@torch.no_grad()
def evaluate(vae: VAE, images: torch.Tensor, device, batch_size: int = 64) -> dict:
    """Validation metrics with deterministic reconstructions (posterior mean), in float32."""
    vae.eval()
    metrics = reconstruction_metrics(vae.encoder, vae.decoder, images, device, batch_size)
    vae.train()
    return metrics


@torch.no_grad()
def reconstruction_metrics(encode, decode, images: torch.Tensor, device, batch_size: int = 64) -> dict:
    """Mean per-image MSE, PSNR, SSIM and KL of uint8 images (N, 3, S, S) reconstructed from the
    posterior mean: encode(x) -> (mu, logvar), decode(mu); also for an exported model's runtime."""
    sums = {"mse": 0.0, "psnr": 0.0, "ssim": 0.0, "kl": 0.0}
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], device)
        mu, logvar = encode(x)
        recon = decode(mu)
        sums["mse"] += mse_per_image(recon, x).sum().item()
        sums["psnr"] += psnr_per_image(recon, x).sum().item()
        sums["ssim"] += ssim(recon, x).sum().item()
        sums["kl"] += (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum().item()
    return {k: v / len(images) for k, v in sums.items()}


def mean_image_psnr(train: torch.Tensor, val: torch.Tensor, chunk: int = 64) -> float:
    """The baseline any model must beat: predict the average training image for every photo."""
    # Summed a chunk at a time: a float copy of the whole set could be 4x a dataset kept on the GPU.
    total = sum(train[i : i + chunk].double().sum(0) for i in range(0, len(train), chunk))
    mean = (total / (len(train) * 255.0)).float().unsqueeze(0)
    return psnr_per_image(mean.expand(len(val), -1, -1, -1), val.float() / 255.0).mean().item()


@torch.no_grad()
def sample_grid(vae: VAE, val: torch.Tensor, u: torch.Tensor, fitted: dict, device, path: Path) -> None:
    """Validation photos and their reconstructions, then the same draws u decoded as N(0, I) codes
    and as codes of the Gaussian fitted to the photos (what the service will sample)."""
    vae.eval()
    x = to_float(val[: u.shape[0]], device)
    recon = vae.decoder(vae.encoder(x)[0])
    u = u.to(device)
    standard, from_fit = vae.decoder(u), vae.decoder(prior.latents(fitted, u))
    vae.train()
    report.image_grid([
        ("photo", report.as_rows(x)),
        ("recon", report.as_rows(recon)),
        ("N(0,I)", report.as_rows(standard)),
        ("fitted", report.as_rows(from_fit)),
    ]).save(path)


def main(argv: list[str] | None = None, stop_on_ctrl_c: bool = False) -> dict | None:
    """stop_on_ctrl_c: the command line's Ctrl-C stops the run after its current step and finishes
    it (StopRequest); a program calling main() keeps Ctrl-C's usual KeyboardInterrupt."""
    parser = build_parser()
    args = parser.parse_args(argv)
    s = resolve_settings(args, parser, given_flags(parser, argv) if args.resume else set())
    # A new run started from another run's weights takes that run's architecture (the weights fit no other).
    init_state = load_init(Path(s["init"])) if s.get("init") and not args.resume else None
    if init_state:
        s.update(VAEConfig.from_dict(init_state["vae_config"]).to_dict())
    out = Path(s["out"])
    device, rank, world = setup_device(s["device"])
    master = rank == 0
    if s["batch_size"] % world:
        raise SystemExit(f"error: --batch-size {s['batch_size']} does not split across {world} ranks")
    local_batch = s["batch_size"] // world

    torch.manual_seed(s["seed"] + rank)
    created = master and not out.exists()
    if master:  # before minutes of decoding photos: an --out that cannot be written fails now
        try:
            out.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise SystemExit(f"error: --out {out} is a file, not a run folder") from None
        except OSError as exc:
            raise SystemExit(f"error: --out {out}: cannot create the run folder ({exc.strerror})") from None

    def fail(message: str):
        """Stop before the run has begun, leaving no empty run folder behind."""
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise SystemExit(f"error: {message}")

    try:
        with warnings_printed(enabled=master):
            data = load_dataset(s["data"], s["image_size"], parse_filters(s["filter"]), s["val_fraction"],
                                parse_filters(s.get("val_filter", [])))
    except DatasetError as exc:
        fail(str(exc))
    if len(data.train) < 1 or len(data.val) < 1:
        fail(f"{s['data']}: need at least 2 readable images (got {len(data.images)})")
    if world > 1 and len(data.train) < s["batch_size"]:
        fail(f"{len(data.train)} training images cannot fill one --batch-size {s['batch_size']} "
             f"across {world} ranks: lower --batch-size")
    if args.resume and s.get("data_fingerprint", data.fingerprint) != data.fingerprint:
        fail(f"the photos at {s['data']} ({len(data.train)} training, {len(data.val)} validation) are not the ones "
             f"{out} was trained on: some were added, removed or changed, or their validation split moved. "
             f"Resume with the photos it was trained on, "
             f"or start a new run from its weights (--init {out})")
    s["data_fingerprint"] = data.fingerprint

    train = torch.from_numpy(data.train).permute(0, 3, 1, 2).contiguous()
    val = torch.from_numpy(data.val).permute(0, 3, 1, 2).contiguous()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    # Keep the whole (uint8) dataset on the GPU when it fits easily: no loader, no copies.
    if device.type == "cuda" and train.numel() < 0.25 * torch.cuda.mem_get_info(device)[0]:
        train = train.to(device)
    elif device.type == "cuda":
        train = train.pin_memory()

    cfg = VAEConfig.from_dict(s)  # the model flags; a run from before a flag existed gets its default
    steps_per_epoch = max(1, len(train) // s["batch_size"])
    total_steps = s["epochs"] * steps_per_epoch
    loss_cfg = LossConfig(
        beta=s["beta"], kl_norm=s["kl_norm"], l1_weight=s["l1_weight"], ssim_weight=s["ssim_weight"],
        free_bits=s["free_bits"], warmup=s["kl_warmup"],
    )
    vae = VAE(cfg).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=s["lr"], betas=(0.9, 0.99),
                                  weight_decay=s.get("weight_decay", 0.0))

    epoch, step, elapsed, history, batches_done = 0, 0, 0.0, [], 0
    partial_sums = torch.zeros(3)  # of an epoch cut short: its loss sums so far (over every rank)
    best = None  # the served weights at the best validation PSNR so far, with when and how good
    schedule = Schedule(total_steps, s["max_time"])
    ckpt_path = out / "checkpoint.pt"
    if args.resume:
        try:
            state = checkpoint.load(ckpt_path)
        except checkpoint.CheckpointError as exc:
            raise SystemExit(f"error: {exc}") from None
        saved_cfg = state.get("vae_config")
        if saved_cfg and VAEConfig.from_dict(saved_cfg) != cfg:
            raise SystemExit(f"error: {ckpt_path} holds a model of {saved_cfg}, but {out / 'config.json'} "
                             f"describes {cfg.to_dict()}")
        try:
            # With EMA, "model" holds the average and "train_model" the optimiser's own weights.
            vae.load_state_dict(state.get("train_model", state["model"]))
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            reason = checkpoint.first_sentence(str(exc))
            raise SystemExit(f"error: {ckpt_path} does not fit this run ({reason})") from None
        epoch, step, elapsed = state["epoch"], state["step"], state["elapsed"]
        # An epoch a Ctrl-C or --max-time cut short: its rest comes next, and its entry is redone whole.
        batches_done, partial_sums = state.get("batch", 0), state.get("batch_sums", partial_sums)
        history = state["history"]
        # The best weights as they were before the cut: its evaluation is one an unstopped run never makes.
        best = state["best_before_cut"] if batches_done and "best_before_cut" in state else state.get("best")
        restore_rng(state, device, rank, world, s["seed"])
        if "schedule" in state:  # a checkpoint from before had none: it resumes as it always did
            schedule = Schedule(**state["schedule"]).extended_to(total_steps, s["max_time"], step, elapsed)
        if master:
            print(f"resumed {out} at epoch {epoch}, step {step}")
            # The run's length and its photos' place hold for later resumes too; --compile, --device
            # and the like are for this session only.
            config = json.loads((out / "config.json").read_text())
            config.update({key: s[key] for key in ("epochs", "max_time", "data", "data_fingerprint", "out")})
            checkpoint.write_text_atomic(out / "config.json", json.dumps(config, indent=2))
    else:
        if init_state:
            vae.load_state_dict(init_state["model"])
        if master:
            checkpoint.write_text_atomic(out / "config.json", json.dumps(s, indent=2))

    ema = EMA(vae, s["ema"]) if s.get("ema") else None
    if ema and args.resume:
        ema.module.load_state_dict(state["model"])
    served = ema.module if ema else vae  # what is evaluated, sampled, fitted and exported

    model = vae
    loss_fn = torch.compile(forward_loss) if s["compile"] else forward_loss
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    precision = resolve_precision(device, s.get("precision"))
    autocast = autocast_for(device, precision)
    fixed_u = torch.randn(8, cfg.latent_dim, generator=torch.Generator().manual_seed(s["seed"]))
    (out / "samples").mkdir(parents=True, exist_ok=True)  # any rank may get here before rank 0 made out

    saved_epoch = epoch if args.resume else None

    def save_checkpoint(rngs: list[dict], latent_prior: dict | None = None):
        nonlocal saved_epoch
        state = {
            "model": served.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
            "elapsed": elapsed, "history": history, "rng": rngs[0]["cpu"], "rng_ranks": rngs,
            "vae_config": cfg.to_dict(), "loss_config": loss_cfg.to_dict(), "schedule": schedule.to_dict(),
            "batch": batches_done,
        }
        if batches_done:
            state["batch_sums"], state["best_before_cut"] = sums.detach().cpu(), best_before_cut
        if ema:
            state["train_model"] = vae.state_dict()
        if best:
            state["best"] = best
        if latent_prior:
            state["latent_prior"] = latent_prior
        checkpoint.save_atomic(state, ckpt_path)
        saved_epoch = epoch

    def diverged(what: str):
        bar.close()
        kept = (f"{ckpt_path} (epoch {saved_epoch}) is kept" if saved_epoch is not None
                else "no checkpoint was written")
        raise SystemExit(f"error: training diverged: {what} were not finite after epoch {epoch} (step {step}); "
                         f"{kept}. Try a lower --lr (this run's: {s['lr']:g})")

    parameters = sum(p.numel() for p in vae.parameters())
    if master:
        print(f"{len(train)} training / {len(val)} validation images at {cfg.image_size}px on {device}"
              f"{f' x{world}' if world > 1 else ''} ({precision}); {parameters / 1e6:.1f}M parameters")
    if args.resume and (epoch >= s["epochs"] or (s["max_time"] and elapsed >= s["max_time"])):
        # Nothing to train: the run, its checkpoint and its records stay as they are.
        if master:
            limit = f"--epochs ({s['epochs']})" if epoch >= s["epochs"] else f"--max-time ({s['max_time']:g} s)"
            print(f"nothing to train: {out} has reached its {limit}; resume with a larger one to train more")
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return None
    # With a time budget the step count is unknown: the bar then counts steps without a total.
    bar = tqdm(total=None if s["max_time"] else total_steps, initial=step, disable=not master, unit="step", dynamic_ncols=True)
    session_start, session_images = time.perf_counter(), 0
    start_elapsed, last_ckpt = elapsed, time.perf_counter()
    clock = elapsed  # the time the schedule follows: rank 0's, so every rank applies the same LR and beta
    stop, best_before_cut = False, best
    with StopRequest(enabled=stop_on_ctrl_c) as interrupt:
        while epoch < s["epochs"] and not stop:
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(s["seed"] * 100_003 + epoch))
            perm = perm.to(train.device)  # one copy per epoch, not a host-device sync per step
            sums = partial_sums.to(device) if batches_done else torch.zeros(3, device=device)
            for b in range(batches_done, steps_per_epoch):
                start = b * s["batch_size"] + rank * local_batch
                idx = perm[start : start + local_batch]
                progress = schedule.progress(step, clock)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(progress, s["lr"])
                loss, parts = train_step(model, optimizer, train[idx], device, s, loss_cfg, progress, autocast, loss_fn)
                if ema:
                    ema.update(vae, step)
                sums += torch.stack([loss, parts["recon"], parts["kl"]])
                step += 1
                session_images += local_batch * world
                elapsed = start_elapsed + time.perf_counter() - session_start
                bar.update(1)
                if step % 10 == 0 or b == steps_per_epoch - 1:
                    loss_v, mse_v, kl_v = (sums / (b + 1)).tolist()
                    rate = session_images / (time.perf_counter() - session_start)
                    bar.set_description(f"epoch {epoch + 1}/{s['epochs']}")
                    bar.set_postfix_str(f"loss {loss_v:.4f} mse {mse_v:.4f} kl {kl_v:.1f} beta {beta_at(loss_cfg, progress):.3g} {rate:,.0f} img/s")
                if world == 1 or step % 10 == 0:  # ranks agree every 10 steps, on rank 0's word
                    want = interrupt.requested or bool(s["max_time"] and elapsed >= s["max_time"])
                    stop, clock = _from_rank0((want, elapsed), device, world)
                    if stop:
                        break
            # Cut short mid-epoch: the checkpoint keeps how far it got, and a resume trains the rest.
            batches_done = b + 1 if stop and b + 1 < steps_per_epoch else 0
            if not batches_done:
                epoch += 1
            if world > 1:  # the epoch's training numbers over every rank's images, not rank 0's alone
                dist.all_reduce(sums)
                sums /= world
            # Every rank holds the same sums and weights: all stop here, before a NaN is evaluated or saved.
            if not bool(torch.stack([sums.isfinite().all(), *(q.isfinite().all() for q in vae.parameters())]).all()):
                diverged("the loss or the weights")
            last = stop or epoch == s["epochs"]  # the last checkpoint is written below, with the sampling prior
            evaluating = epoch % s["sample_every"] == 0 or last
            metrics = evaluate(served, val, device) if master and evaluating else None
            # Finite but huge weights can still give NaN; rank 0 finds out, and every rank stops.
            if evaluating and _agree(metrics is not None and not math.isfinite(metrics["psnr"]), device, world):
                diverged("the validation reconstructions")
            due = not last and _agree(time.perf_counter() - last_ckpt >= s["checkpoint_interval"], device, world)
            rngs = rng_states(device, world) if due else None  # every rank takes part in gathering them
            if not master:
                continue
            loss_v, mse_v, kl_v = (sums / (b + 1)).tolist()
            trained = epochs_trained(epoch, batches_done, steps_per_epoch)
            entry = {"epoch": trained, "step": step, "elapsed": round(elapsed, 2), "train_loss": loss_v,
                     "train_recon": mse_v, "train_kl": kl_v}
            if batches_done:
                entry["partial"] = True
            if metrics:
                best_before_cut = best
                best = keep_best(best, served, metrics, trained, step)
                entry.update({f"val_{k}": v for k, v in metrics.items()})
                bar.write(f"epoch {trained}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, KL {metrics['kl']:.1f}")
                # A cut-short epoch's frame sorts after the last whole epoch's and before its own.
                frame = out / "samples" / (f"epoch_{epoch:04d}_{batches_done:05d}.png" if batches_done
                                           else f"epoch_{epoch:04d}.png")
                # A quick fit on a subset for the picture; the final one below uses every photo.
                quick = prior.fit(served.encoder, train, device, copies=1, max_images=512, seed=s["seed"])
                sample_grid(served, val, fixed_u, quick, device, frame)
                report.save_gif(sorted((out / "samples").glob("epoch_*.png")), out / "progress.gif")
            if history and history[-1].get("partial"):
                history.pop()  # the cut-short epoch's entry: that epoch is whole now
            history.append(entry)
            if evaluating:
                report.plot_losses(history, out / "loss.png")
            if due:
                save_checkpoint(rngs)
                last_ckpt = time.perf_counter()
    bar.close()

    result = None
    final_rngs = rng_states(device, world)
    if master:  # metrics, best: the last epoch's, which evaluated (and checked) these very weights
        def fit_prior(encoder) -> dict:
            return {**prior.fit(encoder, train, device, seed=s["seed"]), "data": str(s["data"]),
                    "filter": list(s["filter"])}

        latent_prior = prior.fit_final_and_best(served, best, step, fit_prior)
        save_checkpoint(final_rngs, latent_prior)
        rate = session_images / max(time.perf_counter() - session_start, 1e-9)
        result = {
            "validation": {**metrics, "images": len(val), "mean_image_psnr": mean_image_psnr(train, val.to(train.device))},
            "training": {"images": len(train), "skipped": len(data.skipped),
                         "epochs": epochs_trained(epoch, batches_done, steps_per_epoch), "steps": step,
                         "seconds": round(elapsed, 1), "images_per_second": round(rate, 1),
                         "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                         "precision": precision, "ema": s.get("ema") or 0.0,
                         "world_size": world, "data": str(s["data"]), "filter": s["filter"],
                         "val_filter": s.get("val_filter", []), "init": s.get("init")},
            "best": {"epoch": best["epoch"], "step": best["step"], **best["validation"]},
            "model": {**cfg.to_dict(), "parameters": parameters},
            "loss": loss_cfg.to_dict(),
            "sampling": {"prior": "gaussian fitted to the training photos' codes", "codes": latent_prior["codes"],
                         "total_variance": round(prior.total_variance(latent_prior), 2)},
        }
        checkpoint.write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
        v = result["validation"]
        print(f"validation: PSNR {v['psnr']:.2f} dB (mean image {v['mean_image_psnr']:.2f}), "
              f"SSIM {v['ssim']:.3f}, MSE {v['mse']:.5f}, KL {v['kl']:.1f} nats -> {out / 'metrics.json'}")
        if interrupt.requested:
            where = f"{batches_done} steps into epoch {epoch + 1}" if batches_done else f"after epoch {epoch}"
            print(f"stopped {where} of {s['epochs']}: `python -m training.train --out {out} --resume` "
                  "continues the run")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def epochs_trained(epoch: int, batches_done: int, steps_per_epoch: int) -> int | float:
    """Whole epochs, plus the fraction of one cut short (rounded down to 3 places: never a whole one)."""
    return epoch + batches_done * 1000 // steps_per_epoch / 1000 if batches_done else epoch


def keep_best(best: dict | None, served, metrics: dict, epoch: int, step: int) -> dict:
    """The served weights (a CPU copy) if they beat the best validation PSNR so far: what
    `training.export --weights best` exports when a run peaks before it ends."""
    if not math.isfinite(metrics["psnr"]):  # diverged weights never replace the kept ones
        return best
    if best is not None and metrics["psnr"] <= best["validation"]["psnr"]:
        return best
    weights = {k: v.detach().to("cpu", copy=True) for k, v in served.state_dict().items()}
    return {"epoch": epoch, "step": step, "validation": dict(metrics), "model": weights}


def _from_rank0(values: tuple[bool, float], device, world: int) -> tuple[bool, float]:
    """(stop, clock) as rank 0 has them: all ranks stop together, and follow one clock."""
    if world == 1:
        return bool(values[0]), float(values[1])
    t = torch.tensor([float(values[0]), float(values[1])], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    flag, clock = t.tolist()
    return flag > 0, clock


def _agree(flag: bool, device, world: int) -> bool:
    """All ranks decide together: rank 0's flag."""
    return _from_rank0((flag, 0.0), device, world)[0]


@dataclass(frozen=True)
class Schedule:
    """Training progress in [0, 1], which drives the learning rate and the KL weight: the further of
    the steps done of total_steps and the seconds of max_time. `anchor` is (step, elapsed, progress)
    where these limits took over: a resume that changes --epochs or --max-time continues from the
    progress already reached and spreads what is left over the new limits, instead of moving the
    run to another point of its schedule (back into the LR warm-up, say)."""

    total_steps: int
    max_time: float | None
    anchor: tuple[int, float, float] = (0, 0.0, 0.0)

    def progress(self, step: int, elapsed: float) -> float:
        start_step, start_elapsed, start_progress = self.anchor
        done = (step - start_step) / max(self.total_steps - start_step, 1)
        if self.max_time:
            done = max(done, (elapsed - start_elapsed) / max(self.max_time - start_elapsed, 1e-9))
        return min(1.0, start_progress + (1.0 - start_progress) * done)

    def extended_to(self, total_steps: int, max_time: float | None, step: int, elapsed: float) -> "Schedule":
        if (total_steps, max_time) == (self.total_steps, self.max_time):
            return self
        return Schedule(total_steps, max_time, (step, elapsed, self.progress(step, elapsed)))

    def to_dict(self) -> dict:
        return {"total_steps": self.total_steps, "max_time": self.max_time, "anchor": list(self.anchor)}


class StopRequest:
    """While active (and enabled), the first Ctrl-C asks the run to stop after the current step,
    then evaluate and save as at its end; a second one interrupts at once."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._previous = None

    def _ask(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nstopping after this step, then evaluating and saving the run (Ctrl-C again to quit "
              "without saving)", file=sys.stderr)

    def __enter__(self) -> "StopRequest":
        # Started in the background, Ctrl-C is ignored (a shell's `&`): it stays so.
        if not self.enabled or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            return self
        try:
            self._previous = signal.signal(signal.SIGINT, self._ask)
        except ValueError:  # not the main thread (main() called from a worker): Ctrl-C as usual
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


if __name__ == "__main__":
    try:
        main(stop_on_ctrl_c=True)
    except KeyboardInterrupt:
        print("\ninterrupted: the run folder keeps its last checkpoint, if it has one (--resume continues "
              "from it)", file=sys.stderr)
        sys.exit(130)
