"""The sample scores that benchmarks/sample_quality.py reports and the bundled-model test uses."""
import numpy as np
import pytest

from benchmarks.sample_quality import dominant_colour, sharpness, spread, white_border


def car_on(background, body, size=64):
    image = np.full((size, size, 3), background, np.uint8)
    image[size // 3 : 2 * size // 3, size // 6 : 5 * size // 6] = body
    return image


@pytest.mark.parametrize("body, colour", [((200, 30, 30), "red"), ((30, 60, 200), "blue"),
                                          ((40, 170, 60), "green"), ((220, 200, 40), "yellow"),
                                          ((90, 90, 90), "grey")])
def test_dominant_colour(body, colour):
    assert dominant_colour(car_on((255, 255, 255), body)) == colour


def test_white_border_tells_catalogue_pictures_from_street_scenes():
    catalogue = car_on((250, 250, 250), (200, 30, 30))
    street = car_on((120, 130, 110), (200, 30, 30))
    shadow = catalogue.copy()
    shadow[-10:, :32] = 80  # a dark corner: under a fifth of the border, so still catalogue-style
    assert white_border(np.stack([catalogue, street, shadow])).tolist() == [True, False, True]


def test_sharpness_and_spread_rank_blur_and_sameness():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    blurred = ((sharp.astype(np.float32) + np.roll(sharp, 1, 1) + np.roll(sharp, 1, 2)) / 3).astype(np.uint8)
    assert sharpness(blurred).mean() < 0.7 * sharpness(sharp).mean()
    alike = np.repeat(sharp[:1], 4, axis=0)
    assert spread(alike) == 0.0 < spread(sharp)
