"""Real-photo handling: orientation, transparency, odd modes, padding, and bad bytes."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from model.images import ImageError, load_square, open_image, png_bytes, psnr
from tests.conftest import png_of


def jpeg_of(image, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95, **save_args)
    return out.getvalue()


def test_real_photo_becomes_square_uint8_with_white_padding(real_photos):
    for path in real_photos:
        with Image.open(path) as im:
            width, height = im.size
        square = load_square(path.read_bytes(), 128)
        assert square.shape == (128, 128, 3) and square.dtype == np.uint8
        if width > height * 1.2:  # landscape photo: white bars above and below, never stretched
            assert (square[:5] >= 250).all() and (square[-5:] >= 250).all()
            assert not (square[64] >= 250).all()


def test_aspect_ratio_is_kept_not_squashed():
    # A black 200x100 rectangle must become a 128x64 black band centred on white.
    square = load_square(png_of(Image.new("RGB", (200, 100), (0, 0, 0))), 128)
    black_rows = np.where((square < 10).all(axis=(1, 2)))[0]
    assert 62 <= len(black_rows) <= 66
    assert black_rows[0] in (31, 32, 33)
    assert (square[:30] == 255).all() and (square[-30:] == 255).all()


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (120, 60), (255, 255, 255))
    im.paste((255, 0, 0), (0, 0, 60, 60))  # red on the left half
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = open_image(jpeg_of(im, exif=exif.tobytes()))
    assert upright.size == (60, 120)
    top, bottom = np.asarray(upright)[10, 30], np.asarray(upright)[110, 30]
    assert top[0] > 200 and top[1] < 60  # red ends up on top
    assert bottom.min() > 200


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_onto_white(mode):
    im = Image.new("RGBA", (64, 64), (0, 0, 255, 0))  # fully transparent blue
    im.paste((0, 0, 0, 255), (16, 16, 48, 48))  # opaque black square
    if mode == "LA":
        im = im.convert("LA")
    elif mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        im.info["transparency"] = im.getpixel((0, 0))
    out = np.asarray(open_image(png_of(im, transparency=im.info.get("transparency")) if mode == "P" else png_of(im)))
    assert (out[2, 2] == 255).all(), "transparent pixels must be white, not their hidden colour"
    assert (out[32, 32] < 10).all()


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "I;16"])
def test_a_colour_key_is_transparent_on_white(mode):
    # PNG's tRNS chunk without an alpha channel: every pixel of one colour is transparent.
    key = {"RGB": (0, 0, 255), "L": 77, "1": 1, "I;16": 1000}[mode]
    im = Image.new(mode, (64, 64), key)
    im.paste((0, 0, 0) if mode == "RGB" else 0, (16, 16, 48, 48))
    out = np.asarray(open_image(png_of(im, transparency=key)))
    assert (out[2, 2] == 255).all(), "keyed pixels must be white, not the key colour"
    assert (out[32, 32] < 10).all()


def test_16_bit_greyscale_is_scaled_not_clipped():
    grey = np.array([[0, 32768], [65535, 16384]], dtype=np.uint16)
    im = Image.fromarray(grey)
    assert im.mode.startswith("I;16")
    out = np.asarray(open_image(png_of(im)))
    assert out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 0 and out[1, 0, 0] == 255
    assert 125 <= out[0, 1, 0] <= 130 and 60 <= out[1, 1, 0] <= 66


@pytest.mark.parametrize("mode", ["1", "L", "CMYK", "P", "RGB"])
def test_odd_modes_decode_to_rgb(mode):
    base = Image.new("RGB", (40, 30), (200, 40, 40))
    im = base.convert(mode)
    data = jpeg_of(im) if mode == "CMYK" else png_of(im)
    out = open_image(data)
    assert out.mode == "RGB" and out.size == (40, 30)
    # The colours survive (not inverted, not blanked): what Pillow's own conversion gives, within JPEG's loss.
    want = np.asarray(im.convert("RGB"), dtype=int)
    assert np.abs(np.asarray(out, dtype=int) - want).max() <= 8


def test_animated_webp_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
    out = io.BytesIO()
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    pixel = np.asarray(open_image(out.getvalue()))[16, 16]
    assert pixel[0] > 200 and pixel[2] < 50


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])  # (Pillow's JPEG reader tolerates this one itself)
def test_a_damaged_exif_block_keeps_the_pixels(fmt):
    # "Exif\0\0MM\0*\0": a TIFF header cut short. The orientation is unknowable; the photo is fine.
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, format=fmt, exif=bytes.fromhex("4578696600004d4d002a00"))
    im = open_image(out.getvalue())
    assert im.size == (40, 30) and np.asarray(im)[15, 20, 0] > 150


def test_a_multi_picture_jpeg_is_a_jpeg(real_photos):
    # Phones save JPEGs with a second picture (MPO): Pillow names them "MPO", not "JPEG".
    photo = Image.open(real_photos[0]).convert("RGB")
    out = io.BytesIO()
    photo.save(out, format="MPO", save_all=True, append_images=[photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert Image.open(io.BytesIO(out.getvalue())).format == "MPO"
    assert psnr(load_square(out.getvalue(), 64), load_square(jpeg_of(photo), 64)) > 30


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG header that claims an enormous size: a decompression bomb's calling card."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, code", [
    (b"", "empty_image"),
    (b"this is not an image at all", "not_an_image"),
    (huge_png_header(100_000, 100_000), "image_too_large"),
    (huge_png_header(7000, 6000), "image_too_large"),
])
def test_bad_bytes_raise_a_user_facing_error(data, code):
    with pytest.raises(ImageError) as info:
        load_square(data, 64)
    assert info.value.code == code


def test_truncated_jpeg_is_rejected(real_jpeg):
    with pytest.raises(ImageError) as info:
        load_square(real_jpeg[: len(real_jpeg) // 2], 64)
    assert info.value.code == "corrupt_image"


def test_gif_and_bmp_are_unsupported():
    for fmt in ("GIF", "BMP"):
        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, format=fmt)
        with pytest.raises(ImageError) as info:
            open_image(out.getvalue())
        assert info.value.code == "unsupported_format"
        assert fmt in str(info.value)


def test_png_round_trip_and_psnr():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert (np.asarray(Image.open(io.BytesIO(png_bytes(a)))) == a).all()
    assert psnr(a, a) == 100.0
    b = a.astype(np.int16)
    b[..., 0] = np.clip(b[..., 0] + 10, 0, 255)
    mse = np.mean((a.astype(float) - b) ** 2) / 255**2
    assert psnr(a, b.astype(np.uint8)) == pytest.approx(10 * np.log10(1 / mse))


@pytest.mark.parametrize("width, height", [(1, 40_000_000), (40_000_000, 1), (20_001, 1_000)])
def test_a_side_longer_than_any_photo_is_refused_before_decoding(width, height):
    # Within the pixel cap, but a thin image costs far more than its pixels (one row pointer, and for
    # the PNG decoder one whole row, each): refused from the header alone.
    with pytest.raises(ImageError) as info:
        load_square(huge_png_header(width, height), 64)
    assert info.value.code == "image_too_large" and "20,000 pixels" in str(info.value)
    assert load_square(png_of(Image.new("L", (1, 20_000), 0)), 64).shape == (64, 64, 3)  # the longest accepted


def test_a_decoder_error_is_said_in_the_users_words_and_kept_for_the_log(real_jpeg):
    # Issue 18: "the image could not be decoded (OSError: image file is truncated (8 bytes not processed))".
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png = png_bytes(noise)
    for data in (png[: len(png) // 2], real_jpeg[: len(real_jpeg) // 2]):
        with pytest.raises(ImageError) as info:
            load_square(data, 64)
        message = str(info.value)
        assert info.value.code == "corrupt_image" and "damaged or incomplete" in message
        assert "Error" not in message and "(" not in message, message
        assert info.value.detail and "Error" in info.value.detail  # what the decoder said, for the log


def test_a_big_image_is_shrunk_before_it_is_composited():
    # A 2400x1600 palette image with a transparent key: reduced by a whole factor right after decoding,
    # and still white where transparent, with the opaque square where it was.
    im = Image.new("P", (2400, 1600), 0)
    im.putpalette([0, 0, 255, 0, 0, 0] + [0] * 762)
    im.paste(1, (800, 400, 1600, 1200))
    square = load_square(png_of(im, transparency=0), 64)
    assert (square[5, 5] == 255).all() and (square[32, 32] < 10).all()
