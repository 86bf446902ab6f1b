"""What the service does with a loaded model: reconstruct, sample, interpolate.

Plain functions over a `runtime.Model`, independent of HTTP. They validate their
arguments (raising InputError or images.ImageError with a message fit for users) and
return JSON-ready dicts with images as base64 PNG.
"""
from __future__ import annotations

import math

import numpy as np

from model.images import (DEFAULT_MAX_PIXELS, ImageError, from_model_output, load_square, png_base64, psnr,
                          to_model_input)
from model.runtime import Model

# Limits that keep one request from burning the function: each bounds the work per call.
MAX_SAMPLES = 16
MIN_STEPS, MAX_STEPS = 2, 16
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**32 - 1


class InputError(ValueError):
    def __init__(self, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.code = code


def bounded_int(value, name: str, low: int, high: int) -> int:
    # bool is an int in Python; "true" samples are not what anyone means.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"'{name}' must be a whole number from {low} to {high}")
    if not low <= value <= high:
        raise InputError(f"'{name}' must be from {low} to {high}, not {value}", "out_of_range")
    return value


def bounded_float(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"'{name}' must be a number from {low} to {high}")
    # Only floats can be NaN or infinite; math.isfinite(10**400) would overflow instead.
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"'{name}' must be a number from {low} to {high}")
    if not low <= value <= high:  # exact for ints of any size
        raise InputError(f"'{name}' must be from {low} to {high}, not {value}", "out_of_range")
    return float(value)


def _encode_images(model: Model, images: list[np.ndarray]) -> np.ndarray:
    mu, _ = model.encode(to_model_input(np.stack(images)))
    return mu


def reconstruct(model: Model, image: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """The photo as the model sees it, its reconstruction from the posterior mean, and their PSNR."""
    seen = load_square(image, model.image_size, max_pixels)
    recon = from_model_output(model.decode(_encode_images(model, [seen])))[0]
    return {
        "input": png_base64(seen),
        "reconstruction": png_base64(recon),
        "psnr": round(psnr(seen, recon), 2),
        "image_size": model.image_size,
    }


def sample(model: Model, n=8, seed=None, temperature=1.0) -> dict:
    """n new cars: codes drawn from the model's prior (the mixture fitted to its training photos'
    codes, or N(0, I)) at this temperature; the same seed gives the same cars."""
    n = bounded_int(n, "n", 1, MAX_SAMPLES)
    temperature = bounded_float(temperature, "temperature", 0.0, MAX_TEMPERATURE)
    if seed is None:
        seed = int(np.random.default_rng().integers(0, MAX_SEED))
    seed = bounded_int(seed, "seed", 0, MAX_SEED)
    codes = model.sample_codes(np.random.default_rng(seed), n, temperature)
    images = from_model_output(model.decode(codes))
    return {"images": [png_base64(im) for im in images], "seed": seed, "temperature": temperature, "n": n}


def _photo(data: bytes, field: str, size: int, max_pixels: int):
    try:
        return load_square(data, size, max_pixels)
    except ImageError as exc:  # of two photos, say which one is wrong
        raise ImageError(f"photo {field}: {exc}", exc.code, exc.detail) from None


def interpolate(model: Model, a: bytes, b: bytes, steps=8, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Decode evenly spaced points on the line between the two photos' latent means (both ends included)."""
    steps = bounded_int(steps, "steps", MIN_STEPS, MAX_STEPS)
    seen = [_photo(data, name, model.image_size, max_pixels) for name, data in (("a", a), ("b", b))]
    mu = _encode_images(model, seen)
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    z = (1.0 - t) * mu[0] + t * mu[1]
    images = from_model_output(model.decode(z))
    return {"images": [png_base64(im) for im in images], "steps": steps,
            "inputs": [png_base64(im) for im in seen]}
