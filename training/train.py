"""Train the car VAE on a folder, zip or manifest of photos.

    python -m training.train --recipe recipes/default.py --out runs/NAME  # the default model's recipe
    python -m training.train --data PHOTOS --out runs/NAME            # one GPU, or the CPU
    torchrun --nproc_per_node=N -m training.train --data ... --out ... # several GPUs (DDP)
    python -m training.train --out runs/NAME --resume                 # continue a run
    python -m training.train --data ... --out runs/B --init runs/A    # fine-tune A's weights

A run folder holds config.json, checkpoint.pt (rewritten atomically), loss.png,
samples/epoch_NNNN.png (validation photos, their reconstructions, random samples from
N(0, I) and from the Gaussian fitted to the photos' codes; epoch_NNNN_BBBBB.png for an epoch
cut short after BBBBB batches), progress.gif and, at the end, metrics.json with validation MSE,
PSNR, SSIM and KL. The checkpoint's final `latent_prior` is the distribution the exported model
samples from (see training/prior.py).

main() reads as the run goes: settings -> devices -> photos -> model and optimiser -> resume or
start -> the loop (each epoch: train_epoch, then evaluate, log and checkpoint) -> the final
sampling distribution, checkpoint and metrics.json. The parts live beside it: config.py (flags,
recipes, Settings), devices.py, schedule.py, step.py, checkpoint.py, metrics.py, report.py.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from training import checkpoint, config, devices, prior, report
from training.checkpoint import RunState
from training.config import Settings, parse_filters
from training.data import DatasetError, load_dataset, warnings_printed
from training.devices import Ranks
from training.ema import EMA
from training.losses import LossConfig, beta_at
from training.metrics import evaluate as validation_metrics, mean_image_psnr
from training.schedule import Schedule, StopRequest, epochs_trained, lr_at
from training.step import forward_loss, train_step
from training.vae import VAE, VAEConfig


@dataclass
class Job:
    """What the loop works with, built once by main() before the first step."""

    s: Settings
    ranks: Ranks
    out: Path
    vae: VAE  # the weights the optimiser moves
    served: VAE  # what is evaluated, sampled, fitted and exported: vae, or its moving average
    model: torch.nn.Module  # vae, or vae wrapped for DDP
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    loss_cfg: LossConfig
    loss_fn: object  # forward_loss, or it compiled
    autocast: object
    train: torch.Tensor  # uint8 (N, 3, S, S), on the GPU when it fits
    val: torch.Tensor
    steps_per_epoch: int
    fixed_u: torch.Tensor  # the sample grids' draws: the same in every frame

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"


@dataclass
class Session:
    """This process's share of the run's time: the clock, and the images it trained."""

    start: float  # time.perf_counter() when the loop began
    start_elapsed: float  # the run's seconds of training before this session
    images: int = 0
    clock: float = 0.0  # the time the schedule follows: rank 0's, so every rank applies the same LR and beta

    def elapsed(self) -> float:
        return self.start_elapsed + time.perf_counter() - self.start

    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)


def make_run_folder(out: Path) -> bool:
    """Create --out before minutes of decoding photos (a folder that cannot be written fails now) -> created it."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SystemExit(f"error: --out {out} is a file, not a run folder") from None
    except OSError as exc:
        raise SystemExit(f"error: --out {out}: cannot create the run folder ({exc.strerror})") from None
    return created


def fail_start(out: Path, created: bool, message: str):
    """Stop before the run has begun, leaving no empty run folder behind."""
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    raise SystemExit(f"error: {message}")


def load_photos(s: Settings, resuming: bool, ranks: Ranks, created: bool):
    """The run's photos -> (the dataset, train, val): uint8 (N, 3, S, S), train placed on the device."""
    out = Path(s.out)
    try:
        with warnings_printed(enabled=ranks.master):
            data = load_dataset(s.data, s.image_size, parse_filters(s.filter), s.val_fraction,
                                parse_filters(s.val_filter))
    except DatasetError as exc:
        fail_start(out, created, str(exc))
    if len(data.train) < 1 or len(data.val) < 1:
        fail_start(out, created, f"{s.data}: need at least 2 readable images (got {len(data.images)})")
    if ranks.world > 1 and len(data.train) < s.batch_size:
        fail_start(out, created, f"{len(data.train)} training images cannot fill one --batch-size {s.batch_size} "
                   f"across {ranks.world} ranks: lower --batch-size")
    if resuming and s.data_fingerprint not in (None, data.fingerprint):
        fail_start(out, created, f"the photos at {s.data} ({len(data.train)} training, {len(data.val)} validation) "
                   f"are not the ones {out} was trained on: some were added, removed or changed, or their validation "
                   f"split moved. Resume with the photos it was trained on, or start a new run from its weights "
                   f"(--init {out})")
    s.data_fingerprint = data.fingerprint
    train = torch.from_numpy(data.train).permute(0, 3, 1, 2).contiguous()
    val = torch.from_numpy(data.val).permute(0, 3, 1, 2).contiguous()
    return data, devices.place_dataset(train, ranks.device), val


def train_epoch(job: Job, run: RunState, session: Session, bar: report.ProgressBar, interrupt: StopRequest):
    """One epoch's steps (the rest of one cut short), until its end or a stop -> (stopped, batches done).
    Each step: learning rate and beta from the schedule -> forward/backward/update -> moving average ->
    log -> stop (Ctrl-C, --max-time), agreed with rank 0 every 10 steps."""
    s, device, world = job.s, job.ranks.device, job.ranks.world
    local_batch = s.batch_size // world
    order = torch.Generator().manual_seed(s.seed * 100_003 + run.epoch)
    perm = torch.randperm(len(job.train), generator=order).to(job.train.device)  # one copy per epoch, not per step
    sums = run.batch_sums.to(device) if run.batch else torch.zeros(3, device=device)
    stop = False
    for b in range(run.batch, job.steps_per_epoch):
        start = b * s.batch_size + job.ranks.rank * local_batch
        idx = perm[start : start + local_batch]
        progress = run.schedule.progress(run.step, session.clock)
        for group in job.optimizer.param_groups:
            group["lr"] = lr_at(progress, s.lr)
        loss, parts = train_step(job.model, job.optimizer, job.train[idx], device, s, job.loss_cfg, progress,
                                 job.autocast, job.loss_fn)
        if job.ema:
            job.ema.update(job.vae, run.step)
        sums += torch.stack([loss, parts["recon"], parts["kl"]])
        run.step += 1
        session.images += local_batch * world
        run.elapsed = session.elapsed()
        bar.update(run.step, run.elapsed)
        if run.step % 10 == 0 or b == job.steps_per_epoch - 1:
            loss_v, mse_v, kl_v = (sums / (b + 1)).tolist()
            bar.show(run.epoch + 1, s.epochs, f"loss {loss_v:.4f} mse {mse_v:.4f} kl {kl_v:.1f} beta "
                     f"{beta_at(job.loss_cfg, progress):.3g} {session.rate():,.0f} img/s", run.step, run.elapsed)
        if world == 1 or run.step % 10 == 0:  # ranks agree every 10 steps, on rank 0's word
            want = interrupt.requested or bool(s.max_time and run.elapsed >= s.max_time)
            stop, session.clock = devices.from_rank0((want, run.elapsed), device, world)
            if stop:
                break
    run.batch_sums = devices.mean_over_ranks(sums, world)  # every rank's images, not rank 0's alone
    return stop, b + 1


def evaluate(job: Job, run: RunState, metrics: dict | None, done: int, bar: report.ProgressBar) -> None:
    """Rank 0, after an epoch: its history entry, and when it was evaluated (metrics), the best
    weights, a line, a sample grid and the GIF; then the curves."""
    loss_v, mse_v, kl_v = (run.batch_sums / done).tolist()
    trained = epochs_trained(run.epoch, run.batch, job.steps_per_epoch)
    entry = {"epoch": trained, "step": run.step, "elapsed": round(run.elapsed, 2), "train_loss": loss_v,
             "train_recon": mse_v, "train_kl": kl_v}
    if run.batch:
        entry["partial"] = True
    if metrics:
        run.best_before_cut = run.best
        run.best = checkpoint.keep_best(run.best, job.served, metrics, trained, run.step)
        entry.update({f"val_{k}": v for k, v in metrics.items()})
        bar.write(f"epoch {trained}: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, "
                  f"KL {metrics['kl']:.1f}{'' if run.batch else bar.left(run.step, run.elapsed)}")  # a stop leaves no time
        # A quick fit on a subset for the picture; the final one uses every photo.
        quick = prior.fit(job.served.encoder, job.train, job.ranks.device, copies=1, max_images=512, seed=job.s.seed)
        report.sample_grid(job.served.encoder, job.served.decoder, job.val, job.fixed_u, quick, job.ranks.device,
                           report.frame_path(job.out, run.epoch, run.batch))
        report.save_gif(sorted((job.out / "samples").glob("epoch_*.png")), job.out / "progress.gif")
    if run.history and run.history[-1].get("partial"):
        run.history.pop()  # the cut-short epoch's entry: that epoch is whole now
    run.history.append(entry)
    if metrics is not None:
        report.plot_losses(run.history, job.out / "loss.png")


def save(job: Job, run: RunState, rngs: list[dict], latent_prior: dict | None = None) -> None:
    checkpoint.save_training(job.ckpt_path, run, job.served, job.vae, job.optimizer, job.vae.cfg.to_dict(),
                             job.loss_cfg.to_dict(), rngs, latent_prior)


def diverged(job: Job, run: RunState, bar: report.ProgressBar, what: str):
    bar.close()
    kept = (f"{job.ckpt_path} (epoch {run.saved_epoch}) is kept" if run.saved_epoch is not None
            else "no checkpoint was written")
    raise SystemExit(f"error: training diverged: {what} were not finite after epoch {run.epoch} (step {run.step}); "
                     f"{kept}. Try a lower --lr (this run's: {job.s.lr:g})")


def fit_prior(s: Settings, train: torch.Tensor, device, encoder) -> dict:
    """The sampling distribution fitted to every training photo's code, and what it was fitted on."""
    return {**prior.fit(encoder, train, device, seed=s.seed), "data": str(s.data), "filter": list(s.filter)}


def main(argv: list[str] | None = None, stop_on_ctrl_c: bool = False) -> dict | None:
    """stop_on_ctrl_c: the command line's Ctrl-C stops the run after its current step and finishes
    it (StopRequest); a program calling main() keeps Ctrl-C's usual KeyboardInterrupt."""
    # Settings: the flags, a --recipe under them, a resumed run's config.json.
    s, resuming = config.parse(argv)
    init_state = checkpoint.load_init(s.init) if s.init and not resuming else None
    if init_state:  # a new run from another run's weights takes its architecture (the weights fit no other)
        for key, value in VAEConfig.from_dict(init_state["vae_config"]).to_dict().items():
            setattr(s, key, value)
    out = Path(s.out)

    # Devices: this rank's device, and its share of the batch.
    ranks = devices.setup_device(s.device)
    device, world, master = ranks.device, ranks.world, ranks.master
    if s.batch_size % world:
        raise SystemExit(f"error: --batch-size {s.batch_size} does not split across {world} ranks")
    torch.manual_seed(s.seed + ranks.rank)
    created = master and make_run_folder(out)

    # Photos.
    data, train, val = load_photos(s, resuming, ranks, created)

    # Model, loss and optimiser.
    cfg = s.model()  # a run from before a model flag existed gets its default
    steps_per_epoch = max(1, len(train) // s.batch_size)
    loss_cfg = LossConfig(beta=s.beta, kl_norm=s.kl_norm, l1_weight=s.l1_weight, ssim_weight=s.ssim_weight,
                          free_bits=s.free_bits, warmup=s.kl_warmup)
    vae = VAE(cfg).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=s.lr, betas=(0.9, 0.99), weight_decay=s.weight_decay)

    # Resume, or start (from --init's weights, or from scratch).
    total_steps = s.epochs * steps_per_epoch
    if resuming:
        state, run = checkpoint.resume(out / "checkpoint.pt", vae, optimizer, cfg, total_steps, s.max_time)
        devices.restore_rng(state, device, ranks.rank, world, s.seed)
        if master:
            print(f"resumed {out} at epoch {run.epoch}, step {run.step}")
            # The run's length and its photos' place hold for later resumes too; --compile, --device
            # and the like are for this session only.
            saved = json.loads((out / "config.json").read_text())
            saved.update({key: getattr(s, key) for key in ("epochs", "max_time", "data", "data_fingerprint", "out")})
            checkpoint.write_text_atomic(out / "config.json", json.dumps(saved, indent=2))
    else:
        state, run = None, RunState(Schedule(total_steps, s.max_time))
        if init_state:
            vae.load_state_dict(init_state["model"])
        if master:
            checkpoint.write_text_atomic(out / "config.json", json.dumps(s.to_dict(), indent=2))
    ema = EMA(vae, s.ema) if s.ema else None
    if ema and resuming:
        ema.module.load_state_dict(state["model"])
    model = vae
    loss_fn = torch.compile(forward_loss) if s.compile else forward_loss
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    precision = devices.resolve_precision(device, s.precision)
    job = Job(s, ranks, out, vae, ema.module if ema else vae, model, ema, optimizer, loss_cfg, loss_fn,
              devices.autocast_for(device, precision), train, val, steps_per_epoch,
              torch.randn(8, cfg.latent_dim, generator=torch.Generator().manual_seed(s.seed)))
    (out / "samples").mkdir(parents=True, exist_ok=True)  # any rank may get here before rank 0 made out

    parameters = sum(p.numel() for p in vae.parameters())
    if master:
        print(f"{len(train)} training / {len(val)} validation images at {cfg.image_size}px on {device}"
              f"{f' x{world}' if world > 1 else ''} ({precision}); {parameters / 1e6:.1f}M parameters")
    if resuming and (run.epoch >= s.epochs or (s.max_time and run.elapsed >= s.max_time)):
        # Nothing to train: the run, its checkpoint and its records stay as they are.
        if master:
            limit = f"--epochs ({s.epochs})" if run.epoch >= s.epochs else f"--max-time ({s.max_time:g} s)"
            print(f"nothing to train: {out} has reached its {limit}; resume with a larger one to train more")
        devices.finish(ranks)
        return None

    # The loop: each epoch, train -> check -> evaluate -> log -> checkpoint, until the end or a stop.
    if master:
        print(report.plan_line(run.schedule, s.epochs, steps_per_epoch, run.step))
    bar = report.ProgressBar(run.schedule, run.step, run.elapsed, enabled=master)
    session = Session(time.perf_counter(), run.elapsed, clock=run.elapsed)
    last_ckpt, stop, metrics = time.perf_counter(), False, None
    run.best_before_cut = run.best
    with StopRequest(enabled=stop_on_ctrl_c) as interrupt:
        while run.epoch < s.epochs and not stop:
            stop, done = train_epoch(job, run, session, bar, interrupt)
            # Cut short mid-epoch: the checkpoint keeps how far it got, and a resume trains the rest.
            run.batch = done if stop and done < steps_per_epoch else 0
            if not run.batch:
                run.epoch += 1
            # Every rank holds the same sums and weights: all stop here, before a NaN is evaluated or saved.
            finite = [run.batch_sums.isfinite().all(), *(q.isfinite().all() for q in vae.parameters())]
            if not bool(torch.stack(finite).all()):
                diverged(job, run, bar, "the loss or the weights")
            last = stop or run.epoch == s.epochs  # the last checkpoint is written below, with the sampling prior
            evaluating = run.epoch % s.sample_every == 0 or last
            metrics = validation_metrics(job.served, val, device) if master and evaluating else None
            # Finite but huge weights can still give NaN; rank 0 finds out, and every rank stops.
            if evaluating and devices.agree(metrics is not None and not math.isfinite(metrics["psnr"]), device, world):
                diverged(job, run, bar, "the validation reconstructions")
            due = not last and devices.agree(time.perf_counter() - last_ckpt >= s.checkpoint_interval, device, world)
            rngs = devices.rng_states(device, world) if due else None  # every rank takes part in gathering them
            if not master:
                continue
            evaluate(job, run, metrics, done, bar)
            if due:
                save(job, run, rngs)
                last_ckpt = time.perf_counter()
    bar.close()

    # The end: the sampling distribution fitted to every photo, the last checkpoint, metrics.json.
    result = None
    final_rngs = devices.rng_states(device, world)
    if master:  # metrics, best: the last epoch's, which evaluated (and checked) these very weights
        latent_prior = prior.fit_final_and_best(job.served, run.best, run.step, partial(fit_prior, s, train, device))
        save(job, run, final_rngs, latent_prior)
        result = report.run_summary(
            s, run, metrics, mean_image_psnr(train, val.to(train.device)), images=len(train), skipped=len(data.skipped),
            epochs=epochs_trained(run.epoch, run.batch, steps_per_epoch), rate=session.rate(), device=device,
            precision=precision, world=world, model={**cfg.to_dict(), "parameters": parameters},
            loss=loss_cfg.to_dict(), latent_prior=latent_prior, validation_images=len(val))
        checkpoint.write_text_atomic(out / "metrics.json", json.dumps(result, indent=2))
        v = result["validation"]
        print(f"validation: PSNR {v['psnr']:.2f} dB (mean image {v['mean_image_psnr']:.2f}), "
              f"SSIM {v['ssim']:.3f}, MSE {v['mse']:.5f}, KL {v['kl']:.1f} nats -> {out / 'metrics.json'}")
        if interrupt.requested:
            where = f"{run.batch} steps into epoch {run.epoch + 1}" if run.batch else f"after epoch {run.epoch}"
            print(f"stopped {where} of {s.epochs}: `python -m training.train --out {out} --resume` "
                  "continues the run")
    devices.finish(ranks)
    return result


if __name__ == "__main__":
    try:
        main(stop_on_ctrl_c=True)
    except KeyboardInterrupt:
        print("\ninterrupted: the run folder keeps its last checkpoint, if it has one (--resume continues "
              "from it)", file=sys.stderr)
        sys.exit(130)
