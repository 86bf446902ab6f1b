"""Turning real photos into model input, and model output into PNGs.

Shared by training and serving so both see a photo the same way: EXIF orientation
applied, transparency composited onto white, the aspect ratio kept by padding with
white (never squashed), then resized to the model's square size. Needs only Pillow
and numpy, so it runs inside the Lambda package.
"""
from __future__ import annotations

import base64
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# MPO: how Pillow names a JPEG that carries a second picture (phones' multi-picture and
# HDR gain-map JPEGs); its first picture is an ordinary JPEG.
JPEG_FORMATS = ("JPEG", "MPO")
ACCEPTED_FORMATS = JPEG_FORMATS + ("PNG", "WEBP")
# A 40-megapixel photo is larger than any phone camera produces; anything bigger is
# most likely a decompression bomb (a tiny file that expands to gigabytes).
DEFAULT_MAX_PIXELS = 40_000_000
WHITE = (255, 255, 255)


class ImageError(ValueError):
    """The bytes are not a usable image. The message is safe to show to a user."""

    def __init__(self, message: str, code: str = "bad_image"):
        super().__init__(message)
        self.code = code


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode JPEG/PNG/WebP bytes into an upright RGB image on white.

    draft_size lets JPEG decode at a reduced scale (much faster for big photos) when
    the caller only needs that many pixels on the short side.
    """
    if not data:
        raise ImageError("the image is empty", "empty_image")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and later raises) on huge images; we check the size ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.format not in ACCEPTED_FORMATS:
                raise ImageError(
                    f"unsupported image format {im.format}: send a JPEG, PNG or WebP image",
                    "unsupported_format",
                )
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageError("the image has no pixels")
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is {width}x{height} pixels; at most {max_pixels:,} pixels are accepted",
                    "image_too_large",
                )
            if draft_size and im.format in JPEG_FORMATS:
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            if draft_size:
                im = _reduced(im, draft_size)
            return _to_rgb_on_white(_upright(im))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image has too many pixels; at most {max_pixels:,} are accepted", "image_too_large") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("the file is not a JPEG, PNG or WebP image", "not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError) as exc:
        # Truncated or corrupt data surfaces as any of these from Pillow's decoders.
        raise ImageError(f"the image could not be decoded ({exc.__class__.__name__}: {exc})", "corrupt_image") from exc


def _reduced(im: Image.Image, size: int) -> Image.Image:
    """A big image with an alpha channel shrunk by a whole factor as soon as it is decoded, keeping
    at least 3x the pixels needed (as JPEG's draft mode does while decoding). Turning it upright and
    compositing it on white would otherwise each make full-size copies: 1.3 GB for a 40-megapixel
    RGBA WebP (benchmarks/decode_memory.py). The whole-factor reduction rounds the image's far edges
    a little differently from resize's own, so the result is close to, not equal to, the full-size path's."""
    factor = int(max(im.size) / size / 3.0)
    if factor < 2 or im.mode not in ("LA", "RGBA"):
        return im
    return im.reduce(factor)  # alpha is premultiplied while averaging


def _upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a damaged EXIF block (any error Pillow's parser meets)
        return im  # ...leaves the pixels fine: keep them as stored rather than refuse the photo


def _to_rgb_on_white(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: Pillow's convert("RGB") would clip instead of scaling.
        # float32 and in place: a 40-megapixel 16-bit PNG must fit the Lambda's memory several times over.
        raw = np.asarray(im).astype(np.float32)
        key = im.info.get("transparency")
        # A colour key (tRNS) is a 16-bit value: it must be found before scaling to 8 bits loses it.
        alpha = Image.fromarray(np.where(raw == key, 0, 255).astype(np.uint8), "L") if isinstance(key, int) else None
        peak = 65535.0 if im.mode.startswith("I;16") or raw.max() > 255 else 255.0
        raw *= np.float32(255.0 / peak)
        raw += np.float32(0.5)
        grey = Image.fromarray(np.clip(raw, 0, 255, out=raw).astype(np.uint8), "L")
        im = grey if alpha is None else Image.merge("LA", (grey, alpha))
    elif im.mode == "F":
        grey = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        im = Image.fromarray(grey, "L")
    if im.mode in ("1", "P", "L", "RGB") and "transparency" in im.info:
        # A palette index or a colour key (PNG tRNS) marks the transparent pixels: on white too.
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def square_on_white(im: Image.Image, size: int) -> Image.Image:
    """Fit the image inside size x size, keeping its aspect ratio, padded with white."""
    width, height = im.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = im.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), WHITE)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def load_square(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of a photo -> uint8 array (size, size, 3), as the model sees it."""
    im = open_image(data, max_pixels=max_pixels, draft_size=size)
    return np.asarray(square_on_white(im, size), dtype=np.uint8)


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def from_model_output(batch: np.ndarray) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3)."""
    return (np.clip(batch, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes."""
    out = io.BytesIO()
    # compress_level 1: the images are tiny, and speed matters more than bytes here.
    Image.fromarray(image, "RGB").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def png_base64(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images (capped at 100 for identical images)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0**2
    return 100.0 if mse <= 1e-10 else float(10.0 * np.log10(1.0 / mse))
