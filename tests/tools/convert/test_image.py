"""Image validation: every rejection kind, every re-encode kind, baseline JPEGs kept byte-for-byte (or losslessly
with restart markers, the default)."""

from __future__ import annotations

import io
import os
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from tagstream.tools.convert.image import Accepted, ImageOptions, Rejected, jpeg_sof, read_image_file, validate_image

OPTS = ImageOptions(min_side=16, max_side=128, max_pixels=200 * 200, max_file_bytes=100_000)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb() -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def baseline(rgb) -> bytes:
    return encode(rgb, "JPEG", quality=90)


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def check_stored(result) -> Accepted:
    """Every accepted image is a baseline RGB JPEG whose recorded size is its true size."""
    assert isinstance(result, Accepted), result
    assert jpeg_sof(result.data) == 0xC0
    img = decode(result.data)
    assert img.format == "JPEG" and img.mode == "RGB"
    assert img.size == (result.width, result.height)
    return result


def test_baseline_jpeg_kept_byte_for_byte(baseline):
    res = check_stored(validate_image(baseline, replace(OPTS, restart_interval=0)))
    assert res.data == baseline
    assert res.reencoded == ()
    assert (res.width, res.height) == (80, 60)


@pytest.mark.parametrize("interval", [4, "rows"])
def test_baseline_jpeg_kept_losslessly_with_restart_markers(baseline, interval):
    """The default: the same coefficients with restart markers (DRI), so the same pixels; not a re-encode."""
    res = check_stored(validate_image(baseline, replace(OPTS, restart_interval=interval)))
    assert res.data != baseline and b"\xff\xdd\x00\x04" in res.data and res.reencoded == ()
    np.testing.assert_array_equal(np.asarray(decode(res.data)), np.asarray(decode(baseline)))


def test_reencoded_images_get_restart_markers_too(rgb):
    res = check_stored(validate_image(encode(rgb, "PNG"), OPTS))
    assert res.reencoded == ("png",) and b"\xff\xdd\x00\x04" in res.data


@pytest.mark.parametrize("interval", [-1, 65536, "cols", 2.5, True])
def test_a_bad_restart_interval_is_refused_by_name(interval):
    with pytest.raises(ValueError, match="restart_interval"):
        ImageOptions(restart_interval=interval)


def test_jpeg_sof():
    assert jpeg_sof(b"") is None
    assert jpeg_sof(b"\x89PNG\r\n") is None
    assert jpeg_sof(b"\xff\xd8\xff\xe0\x00\x04ab") is None  # header runs out before a frame


@pytest.mark.parametrize(
    ("kind", "make", "expected"),
    [
        ("progressive", lambda im: encode(im, "JPEG", progressive=True), {"progressive_jpeg"}),
        ("png", lambda im: encode(im, "PNG"), {"png"}),
        ("webp", lambda im: encode(im, "WEBP"), {"webp"}),
        ("gif", lambda im: encode(im.convert("P"), "GIF"), {"gif", "palette"}),
        ("cmyk", lambda im: encode(im.convert("CMYK"), "JPEG"), {"cmyk"}),
        ("greyscale", lambda im: encode(im.convert("L"), "JPEG"), {"greyscale"}),
        ("rgba", lambda im: encode(im.convert("RGBA"), "PNG"), {"png", "alpha"}),
        ("bmp", lambda im: encode(im, "BMP"), {"bmp"}),
        ("mpo", lambda im: encode(im, "MPO", save_all=True, append_images=[im.rotate(90)]), {"mpo"}),
    ],
)
def test_reencode_kinds(rgb, kind, make, expected):
    res = check_stored(validate_image(make(rgb), OPTS))
    assert set(res.reencoded) == expected
    assert (res.width, res.height) == (80, 60)
    # content survives: mean colour close to the original's
    if kind not in ("greyscale", "rgba", "gif"):
        diff = np.abs(np.asarray(decode(res.data), np.float64).mean((0, 1)) - np.asarray(rgb, np.float64).mean((0, 1)))
        assert diff.max() < 6, diff


def test_16bit_png_scaled_not_clipped():
    values = np.array([[0, 256, 32768, 65535]], np.uint16).repeat(40, 0).repeat(10, 1)  # 40x40
    res = check_stored(validate_image(encode(Image.fromarray(values), "PNG"), OPTS))
    assert "16bit" in res.reencoded and "greyscale" in res.reencoded
    px = np.asarray(decode(res.data), np.float64)[20, [5, 15, 25, 35], 0]
    assert np.allclose(px, [0, 1, 128, 255], atol=4), px


def test_alpha_composited_on_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    res = check_stored(validate_image(encode(img, "PNG"), OPTS))
    assert np.asarray(decode(res.data)).min() > 245


def test_palette_with_transparency():
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.paste(1, (0, 0, 16, 32))
    res = check_stored(validate_image(encode(img, "PNG", transparency=0), OPTS))
    px = np.asarray(decode(res.data), np.float64)
    assert px[16, 4, 0] > 150 and px[16, 4, 1] < 60  # opaque palette colour kept
    assert px[16, 28].min() > 240  # transparent part white


def test_oversize_downscaled_keeping_aspect(rgb):
    big = rgb.resize((400, 300))
    res = check_stored(validate_image(encode(big, "JPEG"), ImageOptions(min_side=16, max_side=128)))
    assert res.reencoded == ("oversize",)
    assert (res.width, res.height) == (128, 96)


def test_exif_orientation_applied():
    img = Image.new("RGB", (60, 30), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    res = check_stored(validate_image(encode(img, "JPEG", exif=exif.tobytes()), OPTS))
    assert "exif_orientation" in res.reencoded
    assert (res.width, res.height) == (30, 60)


def test_phash_matches_imagehash(rgb, baseline):
    from tagstream.tools.dedup.imagehash import phash_image

    res = validate_image(baseline, OPTS)
    assert res.phash == phash_image(decode(baseline))
    other = validate_image(encode(Image.new("RGB", (80, 60), (10, 200, 10)).rotate(0), "PNG"), OPTS)
    assert other.phash != res.phash


def corrupt_stream(data: bytes, marker: bytes, skip: int) -> bytes:
    out = bytearray(data)
    at = data.index(marker) + skip
    for j in range(at, at + 30):
        out[j] ^= 0x55
    return bytes(out)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda rgb, base: base[: len(base) // 2], "truncated"),
        (lambda rgb, base: encode(rgb, "PNG")[:500], "truncated"),
        (lambda rgb, base: base[:200], "truncated"),  # ends inside the headers
        (lambda rgb, base: b"hello, this is not an image at all", "not_an_image"),
        (lambda rgb, base: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 9, "not_an_image"),
        (lambda rgb, base: corrupt_stream(encode(rgb, "PNG"), b"IDAT", 20), "corrupt"),
        (lambda rgb, base: corrupt_stream(base, b"\xff\xc4", 4), "corrupt"),
        (lambda rgb, base: encode(Image.new("RGB", (10, 100)), "JPEG"), "too_small"),
        (lambda rgb, base: encode(Image.new("L", (250, 200)), "PNG"), "decompression_bomb"),  # our check
        (
            lambda rgb, base: encode(Image.new("L", (1000, 1000)), "PNG"),
            "decompression_bomb",
        ),  # > 2x: Pillow's own error
    ],
)
def test_rejection_kinds(rgb, baseline, make, reason):
    res = validate_image(make(rgb, baseline), OPTS)
    assert isinstance(res, Rejected), res
    assert res.reason == reason, res
    assert res.detail


def test_pillow_globals_restored(baseline):
    from PIL import ImageFile

    before = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert validate_image(baseline[: len(baseline) // 2], OPTS).reason == "truncated"
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before[1]
    assert Image.MAX_IMAGE_PIXELS == before[0]


def test_read_image_file_rejections(tmp_path, baseline):
    assert read_image_file(str(tmp_path / "nope.jpg"), OPTS).reason == "missing_file"
    assert read_image_file(str(tmp_path), OPTS).reason == "missing_file"  # a directory
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_image_file(str(tmp_path / "empty.jpg"), OPTS).reason == "empty_file"
    (tmp_path / "huge.jpg").write_bytes(b"\0" * 100_001)
    assert read_image_file(str(tmp_path / "huge.jpg"), OPTS).reason == "file_too_large"
    os.mkfifo(tmp_path / "fifo.jpg")  # reading it would block forever
    assert read_image_file(str(tmp_path / "fifo.jpg"), OPTS).reason == "missing_file"
    assert read_image_file(str(tmp_path / "a\0b.jpg"), OPTS).reason == "missing_file"
    assert read_image_file(str(tmp_path / ("x" * 300)), OPTS).reason == "unreadable_file"  # name too long
    (tmp_path / "ok.jpg").write_bytes(baseline)
    assert read_image_file(str(tmp_path / "ok.jpg"), OPTS) == baseline


def test_image_options_validated():
    with pytest.raises(ValueError, match="min_side"):
        ImageOptions(min_side=0)
    with pytest.raises(ValueError, match="must not exceed"):
        ImageOptions(min_side=300, max_side=200)
    with pytest.raises(ValueError, match="quality"):
        ImageOptions(quality=101)


def test_libjpeg_warning_about_extraneous_bytes_before_the_end_is_damage():
    """Pillow decodes it without a word; libjpeg warns "extraneous bytes before marker 0xd9": rejected as corrupt."""
    from tagstream.loader.pipeline import turbo
    from tests.helpers.damage import extraneous_before_eoi, small_jpeg

    if not turbo.available():
        pytest.skip("the libjpeg-turbo extension is not built")
    good = small_jpeg(64, 48)
    assert isinstance(validate_image(good, ImageOptions()), Accepted)
    got = validate_image(extraneous_before_eoi(good), ImageOptions())
    assert isinstance(got, Rejected) and got.reason == "corrupt"
    assert "extraneous bytes before marker 0xd9" in got.detail
