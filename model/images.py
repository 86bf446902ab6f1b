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
from PIL import Image, UnidentifiedImageError

# MPO: how Pillow names a JPEG that carries a second picture (phones' multi-picture and
# HDR gain-map JPEGs); its first picture is an ordinary JPEG.
JPEG_FORMATS = ("JPEG", "MPO")
ACCEPTED_FORMATS = JPEG_FORMATS + ("PNG", "WEBP")
# A 40-megapixel photo is larger than any phone camera produces; anything bigger is
# most likely a decompression bomb (a tiny file that expands to gigabytes).
DEFAULT_MAX_PIXELS = 40_000_000
# The pixel cap alone does not bound the cost of a thin image: Pillow keeps one pointer (and for
# a 1-pixel-wide image, most of a memory block) per row, and the PNG decoder holds whole rows, so a
# 1 x 40,000,000 PNG of 155 kB peaked at 2.85 GB. No photo has a side this long (a 40-megapixel
# panorama of 8:1 is 17,900 px wide); WebP itself stops at 16,383.
DEFAULT_MAX_SIDE = 20_000
WHITE = (255, 255, 255)
# Rows of a 16-bit image converted to 8 bits at a time: about 4 MB of float32 each.
_CHUNK_PIXELS = 1 << 20
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


class ImageError(ValueError):
    """The bytes are not a usable image. The message is safe to show to a user; `detail`, when set,
    is what the decoder itself said, for the log."""

    def __init__(self, message: str, code: str = "bad_image", detail: str | None = None):
        super().__init__(message)
        self.code = code
        self.detail = detail


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None,
               max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
    """Decode JPEG/PNG/WebP bytes into an upright RGB image on white.

    draft_size: the caller needs only that many pixels on the long side. JPEG then decodes at a
    reduced scale, and any image more than 6x that size is shrunk by a whole factor right after
    decoding, before it is turned upright and composited (each of which copies the whole image).

    Memory: the size is checked before any pixel is decoded, and at most one full-size copy of
    the image is made besides the decoded one (benchmarks/decode_memory.py measures the worst).
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
            if max(width, height) > max_side:
                raise ImageError(
                    f"the image is {width}x{height} pixels; its sides may be at most {max_side:,} pixels long",
                    "image_too_large",
                )
            if draft_size and im.format in JPEG_FORMATS:
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            orientation = _orientation(im)
            im = _flat(im)  # L, LA, RGB or RGBA: transparency as alpha, at most 8 bits
            if draft_size:
                im = _reduced(im, draft_size)
            if orientation in _TRANSPOSE:
                im = im.transpose(_TRANSPOSE[orientation])
            return _on_white(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image has too many pixels; at most {max_pixels:,} are accepted", "image_too_large") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("the file is not a JPEG, PNG or WebP image", "not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError) as exc:
        # Truncated or corrupt data surfaces as any of these from Pillow's decoders. What the decoder
        # said means nothing to a user; the handler logs it.
        raise ImageError("the image could not be decoded: the file is damaged or incomplete", "corrupt_image",
                         detail=f"{exc.__class__.__name__}: {exc}") from exc


def _orientation(im: Image.Image) -> int | None:
    """The EXIF orientation (1-8), read before any conversion, or None."""
    try:
        return im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a damaged EXIF block (any error Pillow's parser meets)
        return None  # ...leaves the pixels fine: keep them as stored rather than refuse the photo


def _reduced(im: Image.Image, size: int) -> Image.Image:
    """A big image shrunk by a whole factor as soon as it is decoded, keeping at least 3x the pixels
    needed (as JPEG's draft mode does while decoding), so that turning it upright and compositing it
    on white copy a small image, not a 40-megapixel one. The factor is the one resize's own
    reducing_gap=3 would use; the whole-factor reduction rounds the far edges a little differently
    from resize's, so the result is close to, not equal to, the full-size path's."""
    factor = int(max(im.size) / size / 3.0)
    if factor < 2:
        return im
    return im.reduce(factor)  # alpha is premultiplied while averaging


def _flat(im: Image.Image) -> Image.Image:
    """Any decoded mode -> L, LA, RGB or RGBA, with a colour key or palette transparency as alpha.
    Each step replaces the image, so at most two full-size images are alive at once."""
    key = im.info.get("transparency")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _sixteen_bit(im)
    if im.mode == "F":
        grey = np.clip(np.nan_to_num(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L")
    if im.mode in ("1", "P", "L", "RGB") and key is not None:
        # A palette index or a colour key (PNG tRNS) marks the transparent pixels.
        return im.convert("RGBA")
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if im.mode == "1":
        return im.convert("L")
    if im.mode in ("PA", "RGBa", "La"):
        return im.convert("RGBA")
    if im.mode == "P":
        return im.convert("RGBA" if im.palette is not None and im.palette.mode == "RGBA" else "RGB")
    return im.convert("RGB")  # CMYK, YCbCr, RGBX, ...


def _sixteen_bit(im: Image.Image) -> Image.Image:
    """16/32-bit greyscale -> L (LA with a colour key): scaled, not clipped as Pillow's convert would.
    A block of rows at a time, so the float copy stays small whatever the image's size."""
    raw = np.asarray(im)
    key = im.info.get("transparency")
    # A colour key (tRNS) is a 16-bit value: it must be found before scaling to 8 bits loses it.
    keyed = isinstance(key, int)
    peak = 65535.0 if im.mode.startswith("I;16") or raw.max() > 255 else 255.0
    scale = np.float32(255.0 / peak)
    grey = np.empty(raw.shape, np.uint8)
    alpha = np.empty(raw.shape, np.uint8) if keyed else None
    rows = max(1, _CHUNK_PIXELS // max(1, raw.shape[1]))
    for top in range(0, raw.shape[0], rows):
        block = raw[top:top + rows]
        if keyed:
            alpha[top:top + rows] = np.where(block == key, np.uint8(0), np.uint8(255))
        block = block.astype(np.float32)
        block *= scale
        block += np.float32(0.5)
        grey[top:top + rows] = np.clip(block, 0, 255, out=block)
    del raw
    grey_im = Image.fromarray(grey, "L")
    return grey_im if alpha is None else Image.merge("LA", (grey_im, Image.fromarray(alpha, "L")))


def _on_white(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA"):
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
