"""A training run's settings: the command line, a recipe file of overrides, and the run's config.json.

    python -m training.train --recipe recipes/default.py --out runs/NAME   # a recipe, flags on top

A recipe is a short Python file of assignments named as the flags are (`beta = 0.02`,
`val_filter = ["white_background=1"]`), as nanoGPT's config/*.py are: it replaces the flags'
defaults, and flags given on the command line still win (a repeatable flag, --filter or --val-filter,
adds to the recipe's list). Names in CAPITALS are left to the
other stages of a recipe (see recipes/default.py); any other name that is not a flag is refused.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from training.devices import PRECISIONS
from training.losses import KL_NORMS
from training.vae import VAEConfig

# Flags that may change when a run is resumed; every other setting comes from config.json, and
# giving one of them a different value is refused rather than silently ignored.
RESUMABLE = ("epochs", "max_time", "precision", "device", "compile", "sample_every", "checkpoint_interval")
DEFAULT_EPOCHS = 100


@dataclass
class Settings:
    """Everything a run was started with, as its config.json keeps it. A field's default here is what
    a run whose config.json predates that setting gets on --resume (zoom and shift off, no EMA, the
    model's defaults); a new run takes the command line's defaults (build_parser)."""

    out: str = ""
    data: str | None = None
    init: str | None = None
    recipe: str | None = None
    filter: list[str] = field(default_factory=list)
    val_filter: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    data_fingerprint: str | None = None
    # model (VAEConfig)
    image_size: int = VAEConfig.image_size
    latent_dim: int = VAEConfig.latent_dim
    base_channels: int = VAEConfig.base_channels
    max_channels: int = VAEConfig.max_channels
    res_blocks: int = VAEConfig.res_blocks
    encoder_width: int = VAEConfig.encoder_width
    # loss (LossConfig)
    beta: float = 0.1
    kl_norm: str = "image"
    l1_weight: float = 0.0
    ssim_weight: float = 0.0
    free_bits: float = 0.0
    kl_warmup: float = 0.2
    # optimisation
    epochs: int = DEFAULT_EPOCHS
    max_time: float | None = None
    batch_size: int = 64
    lr: float = 1e-3
    ema: float = 0.0
    seed: int = 0
    flip: bool = True
    hue_prob: float = 0.8
    zoom: float = 0.0
    shift: float = 0.0
    weight_decay: float = 0.0
    device: str = "auto"
    compile: bool = False
    precision: str | None = None
    # reporting
    sample_every: int = 10
    checkpoint_interval: float = 60.0

    @classmethod
    def from_dict(cls, values: dict) -> "Settings":
        """From config.json or parsed flags; keys this trainer does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def model(self) -> VAEConfig:
        return VAEConfig.from_dict(self.to_dict())


def defaults(argv: list[str] | None = None) -> Settings:
    """The settings a new run gets from these flags (a benchmark's or a test's stand-in for a run)."""
    return Settings.from_dict(vars(build_parser().parse_args(["--out", "unused", *(argv or [])])))


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


def parse_filters(items: list[str]) -> dict[str, str]:
    filters = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise SystemExit(f"error: --filter/--val-filter expects COLUMN=VALUE, got '{item}'")
        filters[column] = value
    return filters


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train",
                                description="Train the car VAE on a folder, zip or manifest of photos.")
    p.add_argument("--data", help="folder, .zip or manifest .csv of JPEG/PNG/WebP photos")
    p.add_argument("--out", required=True, help="run folder (created; holds checkpoints and reports)")
    p.add_argument("--recipe", metavar="FILE", help="a recipe (recipes/*.py): its settings replace the defaults; "
                   "flags given here still win")
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
    # 0.1: measured from scratch (experiments/loss_variants.py): 0.6 dB more than 0.5, and sampled through
    # the fitted Gaussian (training/prior.py) its samples are cars. The default model used 0.02, the value
    # calibrated for fine-tuning from a trained run (recipes/default.py, experiments/README.md).
    loss.add_argument("--beta", type=number_in(0), default=0.1, help="KL weight against per-image squared error "
                      "(0.1 from scratch; recipes/default.py uses the calibrated 0.02)")
    loss.add_argument("--kl-norm", choices=KL_NORMS, default="image",
                      help="'original': KL/(batch*C*H*W) + mean MSE, as the original project did")
    loss.add_argument("--l1-weight", type=number_in(0), default=0.0)
    loss.add_argument("--ssim-weight", type=number_in(0), default=0.0)
    loss.add_argument("--free-bits", type=number_in(0), default=0.0, help="nats per latent dimension")
    loss.add_argument("--kl-warmup", type=number_in(0, 1), default=0.2,
                      help="fraction of training over which beta ramps up")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=positive_int, default=None, help=f"default {DEFAULT_EPOCHS}")
    opt.add_argument("--max-time", type=number_in(0), default=None,
                     help="stop after this many seconds of training; 0: no limit")
    opt.add_argument("--batch-size", type=positive_int, default=64, help="global batch, split across DDP ranks")
    opt.add_argument("--lr", type=number_in(0), default=1e-3)
    opt.add_argument("--ema", type=number_in(0, 1, below=True), default=0.999,
                     help="decay of the weights' moving average, the model that is evaluated and exported; 0: off")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--no-flip", dest="flip", action="store_false")
    opt.add_argument("--hue-prob", type=number_in(0, 1), default=0.8, help="probability of a random hue rotation")
    # 0.1 / 0.05: measured against overfitting (experiments/README.md, "A random zoom and shift").
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


def load_recipe(path: str | Path, parser: argparse.ArgumentParser) -> dict:
    """A recipe file's settings, checked as the flags are: {dest: value}."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        raise SystemExit(f"error: --recipe {path}: cannot be read ({exc.strerror})") from None
    names: dict = {}
    try:
        exec(compile(source, str(path), "exec"), names)  # noqa: S102 - a file the user names, as nanoGPT's are
    except Exception as exc:  # noqa: BLE001 - a recipe's own mistake, said as such
        raise SystemExit(f"error: --recipe {path}: {type(exc).__name__}: {exc}") from None
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "out", "resume", "recipe")}
    settings = {}
    for name, value in names.items():
        if name.startswith("_") or name.isupper() or callable(value) or type(value).__name__ == "module":
            continue
        action = actions.get(name)
        if action is None:
            raise SystemExit(f"error: --recipe {path}: '{name}' is not a training setting (`python -m training.train "
                             "--help` lists them: --kl-warmup is kl_warmup in a recipe)")
        flag = action.option_strings[0]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if action.type is not None and not isinstance(item, bool):
                try:
                    action.type(str(item))
                except (argparse.ArgumentTypeError, ValueError) as exc:
                    raise SystemExit(f"error: --recipe {path}: {name} = {item!r}: {flag} {exc}") from None
            if action.choices is not None and item not in action.choices:
                raise SystemExit(f"error: --recipe {path}: {name} = {item!r}: {flag} takes one of "
                                 f"{', '.join(map(str, action.choices))}")
        settings[name] = value
    return settings


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The settings named on the command line, as opposed to left at their defaults."""
    probe = copy.deepcopy(parser)
    probe._defaults = {}  # a recipe's settings (set_defaults) are defaults too, not given
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def parse(argv: list[str] | None = None) -> tuple[Settings, bool]:
    """The command line (and its --recipe) -> (the run's Settings, whether it resumes)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.recipe:
        parser.set_defaults(**load_recipe(args.recipe, parser))
        args = parser.parse_args(argv)
    given = given_flags(parser, argv) if args.resume else set()
    return resolve_settings(args, parser, given), args.resume


def resolve_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, given: set[str] = frozenset()) -> Settings:
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
        settings["epochs"] = DEFAULT_EPOCHS if settings["epochs"] is None else settings["epochs"]
        return Settings.from_dict(settings)
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
    for key in sorted(given - {"out", "resume", "recipe"}):
        value, saved = getattr(args, key), settings.get(key, model_defaults.get(key))
        if key in RESUMABLE:
            settings[key] = value
        elif key == "data" and value != saved and settings.get("data_fingerprint"):
            settings[key] = value  # the photos moved: the trainer checks they are the same ones
        elif value != saved:
            raise SystemExit(f"error: --{key.replace('_', '-')} cannot change when resuming: {config} has "
                             f"{saved!r}. Start a new run instead (--init {out} starts from its weights)")
    settings["out"] = str(out)  # the run folder may have been moved since
    return Settings.from_dict(settings)
