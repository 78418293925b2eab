"""loader/pipeline/turbo.py (the C window decoder + resize) against Pillow and torch as oracles: pixels, windows,
mirroring, every kind of bad input, threads."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from tagstream.loader.pipeline import turbo
from tagstream.loader.pipeline.augment import train_params
from tagstream.tools.bench.loader_data import encode_jpeg, photo_like


def test_the_extension_is_built():
    # make test installs libjpeg-turbo's headers and compiles it; a missing build must fail, not skip
    assert turbo.available(), turbo._MISSING


@pytest.fixture(params=["simd", "portable"])
def path(request):
    """Run a test with the AVX2 resize (where the CPU has it) and with the portable one."""
    before = turbo._jpeg.simd()
    turbo._jpeg.simd(1 if request.param == "simd" else 0)
    yield request.param
    turbo._jpeg.simd(int(before))


def _photo(seed: int, w: int, h: int, quality: int = 90) -> bytes:
    return encode_jpeg(photo_like(np.random.default_rng(seed), w, h), quality=quality)


def _pil(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize(
    "w,h,size",
    [(318, 318, 224), (500, 375, 224), (150, 120, 224), (224, 224, 224), (1000, 50, 32), (7, 300, 16), (1, 1, 8)],
)
def test_antialiased_resize_is_pillows_bilinear(w, h, size, path):
    img = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = turbo.resize(img, size)
    ref = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR, reducing_gap=None))
    assert np.abs(ours.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("w,h,size", [(318, 318, 224), (100, 60, 224), (500, 375, 64)])
def test_plain_resize_is_torchs_bilinear_without_antialiasing(w, h, size, path):
    img = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = turbo.resize(img, size, antialias=False)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    ref = ref[0].permute(1, 2, 0).round().clamp(0, 255).numpy()
    assert np.abs(ours.astype(int) - ref).max() <= 1


def test_mirror_is_a_horizontal_flip(path):
    img = np.random.default_rng(3).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    np.testing.assert_array_equal(turbo.resize(img, 40, mirror=True), turbo.resize(img, 40)[:, ::-1])


def test_full_decode_matches_pillow():
    data = _photo(0, 500, 375)
    np.testing.assert_array_equal(turbo.decode(data), _pil(data))


def test_grayscale_jpeg_decodes_to_rgb():
    buf = io.BytesIO()
    Image.fromarray(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64) % 251).save(buf, "JPEG", quality=95)
    out = turbo.decode(buf.getvalue())
    assert out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("seed", range(12))
def test_window_decode_equals_full_decode_then_crop(seed):
    """The ROI decode (rows above skipped, columns outside cropped) gives the full decode's pixels,
    edges included, for random-resized-crop windows of photo-like images."""
    w, h = (500, 375) if seed % 3 else (375, 500)
    data = _photo(seed, w, h)
    (x, y, cw, ch), flip = train_params(w, h, seed=seed, epoch=0, rank=0, position=seed)
    full = turbo.decode(data)
    expect = turbo.resize(full[y : y + ch, x : x + cw], 224, mirror=flip)
    np.testing.assert_array_equal(turbo.crop_resize(data, (x, y, cw, ch), 224, mirror=flip), expect)


def test_crop_resize_is_torchvisions_resized_crop_on_pillow(path):
    """The baseline's augmentation (torchvision resized_crop + hflip on a PIL image), pixel for pixel within 1."""
    import torchvision.transforms.functional as F

    for seed in range(6):
        data = _photo(100 + seed, 500, 375)
        (x, y, w, h), flip = train_params(500, 375, seed=seed, epoch=1, rank=0, position=3)
        ref = F.resized_crop(
            Image.open(io.BytesIO(data)).convert("RGB"),
            y,
            x,
            h,
            w,
            [224, 224],
            interpolation=F.InterpolationMode.BILINEAR,
        )
        ref = np.asarray(F.hflip(ref) if flip else ref).astype(int)
        ours = turbo.crop_resize(data, (x, y, w, h), 224, mirror=flip)
        assert np.abs(ours.astype(int) - ref).max() <= 1


def test_writes_into_a_given_buffer():
    data = _photo(1, 200, 150)
    out = np.zeros((32, 32, 3), np.uint8)
    assert turbo.crop_resize(data, (0, 0, 200, 150), 32, out=out) is out
    assert out.any()
    with pytest.raises(ValueError, match="shape"):
        turbo.crop_resize(data, (0, 0, 200, 150), 32, out=np.zeros((32, 33, 3), np.uint8))


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d[: len(d) // 3], "Premature end"),
        (lambda d: d[:20], "Premature end|JPEG"),
        (lambda d: b"not a jpeg at all", "Not a JPEG"),
        (lambda d: b"", "JPEG"),
    ],
    ids=["truncated", "header-only", "garbage", "empty"],
)
def test_bad_data_raises_instead_of_decoding_grey(mutate, match):
    """(A window above the damage decodes correctly: rows below the window are never read.)"""
    data = mutate(_photo(2, 300, 200))
    with pytest.raises(ValueError, match=match):
        turbo.crop_resize(data, (0, 0, 300, 200), 32)


@pytest.mark.parametrize(
    "mutate",
    [lambda d: d[:-2] + b"\x00\x00\x00" + d[-2:], lambda d: d[:900] + bytes(60) + d[960:]],
    ids=["extraneous-bytes", "zeroed-run"],
)
def test_corrupt_data_that_pillow_decodes_decodes_here_too(mutate):
    """`convert` keeps any JPEG Pillow decodes; libjpeg only warns about these (Pillow ignores the
    warnings), so they must not stop a training run: same policy, same pixels as a full decode."""
    data = mutate(_photo(4, 300, 200))
    ref = _pil(data)  # Pillow accepts it
    assert ref.shape == (200, 300, 3)
    out = turbo.crop_resize(data, (0, 0, 300, 200), 32)
    np.testing.assert_array_equal(out, turbo.resize(turbo.decode(data), 32))


@pytest.mark.parametrize(
    "window", [(250, 0, 100, 10), (0, 150, 10, 100), (-1, 0, 10, 10), (0, 0, 0, 10), (0, 0, 10, -5)]
)
def test_window_outside_the_image_raises(window):
    with pytest.raises(ValueError, match="window"):
        turbo.crop_resize(_photo(3, 300, 200), window, 32)


def test_threads_decode_concurrently_with_identical_results():
    """The GIL is released and scratch buffers are per thread: 4 threads give the serial results."""
    items = [(_photo(s, 320 + 8 * s, 240), s) for s in range(8)]
    windows = [train_params(320 + 8 * s, 240, seed=0, epoch=0, rank=0, position=s) for s in range(8)]

    def work(k):
        data, _ = items[k % 8]
        window, flip = windows[k % 8]
        return turbo.crop_resize(data, window, 64, mirror=flip)

    serial = [work(k) for k in range(32)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(work, range(32)))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "w,h,size,resize",
    [(500, 375, 224, 256), (375, 500, 224, 256), (300, 300, 224, 256), (64, 48, 32, 37), (101, 40, 32, 37)],
)
def test_eval_box_is_torchvisions_resize_then_centre_crop(w, h, size, resize, path):
    """Eval on the CPU path: box_resize(centre_box) = torchvision's Resize(resize) + CenterCrop(size) on
    the Pillow-decoded image, within 1."""
    import torchvision.transforms as T

    data = _photo(w + h, w, h)
    box = turbo.centre_box(w, h, image_size=size, resize_size=resize)
    ref = np.asarray(
        T.Compose([T.Resize(resize), T.CenterCrop(size)])(Image.open(io.BytesIO(data)).convert("RGB"))
    ).astype(int)
    assert np.abs(turbo.box_resize(data, box, size).astype(int) - ref).max() <= 1
    full = turbo.decode(data)  # the same through resize(box=) on the decoded image, against Pillow's box
    pil = np.asarray(Image.fromarray(full).resize((size, size), Image.BILINEAR, box=box, reducing_gap=None)).astype(int)
    assert np.abs(turbo.resize(full, size, box=box).astype(int) - pil).max() <= 1


def test_centre_box_refuses_a_crop_larger_than_the_resize():
    with pytest.raises(ValueError, match="resize_size"):
        turbo.centre_box(100, 100, image_size=64, resize_size=32)


@pytest.mark.parametrize("box", [(-1.0, 0.0, 10.0, 10.0), (0.0, 0.0, 301.0, 10.0), (5.0, 5.0, 5.0, 10.0)])
def test_a_box_outside_the_image_raises(box):
    with pytest.raises(ValueError, match="box"):
        turbo.box_resize(_photo(3, 300, 200), box, 32)


def test_config_picks_the_decode_placement(monkeypatch):
    from tagstream.loader.config import LoaderConfig
    from tagstream.loader.pipeline.source import source_decodes

    base = dict(dataset="ds", vocab="v")
    assert source_decodes("cpu", "auto")  # auto, extension built
    assert not source_decodes("cpu", "dali")
    assert not source_decodes("gpu", "auto")  # nvJPEG in the pipeline
    assert LoaderConfig(**base).dct_scaling and not LoaderConfig(**base, dct_scaling=False).dct_scaling
    with pytest.raises(ValueError, match="cpu_decoder='fast' is not one of"):
        LoaderConfig(**base, cpu_decoder="fast")
    with pytest.raises(ValueError, match="resize_size=200 must be >= image_size=224"):
        LoaderConfig(**base, resize_size=200)
    monkeypatch.setattr(turbo, "_jpeg", None)
    assert not source_decodes("cpu", "auto")  # auto falls back to DALI's decoder
    with pytest.raises(RuntimeError, match="libjpeg"):
        source_decodes("cpu", "turbo")


def test_simd_and_portable_resize_agree_bit_for_bit():
    img = np.random.default_rng(11).integers(0, 256, (301, 457, 3), dtype=np.uint8)
    before = turbo._jpeg.simd()
    try:
        turbo._jpeg.simd(1)
        fast = [
            turbo.resize(img, s, antialias=aa, mirror=m)
            for s in (17, 224)
            for aa in (True, False)
            for m in (True, False)
        ]
        turbo._jpeg.simd(0)
        slow = [
            turbo.resize(img, s, antialias=aa, mirror=m)
            for s in (17, 224)
            for aa in (True, False)
            for m in (True, False)
        ]
    finally:
        turbo._jpeg.simd(int(before))
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_a_huge_image_decodes_and_the_next_small_one_still_does():
    """Scratch buffers above 8 MB are given back after the call; a later call must not reuse them."""
    big = _photo(5, 2600, 1400, quality=75)  # 10.9 MB of RGB
    out = turbo.crop_resize(big, (100, 50, 2400, 1300), 64)
    assert out.shape == (64, 64, 3) and out.std() > 0
    assert turbo.decode(big).shape == (1400, 2600, 3)
    small = _photo(6, 120, 90)
    np.testing.assert_array_equal(turbo.crop_resize(small, (0, 0, 120, 90), 32), turbo.resize(turbo.decode(small), 32))


@pytest.mark.parametrize("kind", ["444", "422", "420", "progressive", "grey"])
def test_window_decode_of_every_jpeg_layout(kind):
    """Chroma layouts and progressive files (converted datasets hold baseline RGB, but other data may
    not): the window decode still equals the full decode's crop, and the full decode Pillow's."""
    rgb = photo_like(np.random.default_rng(9), 333, 250)
    img = Image.fromarray(rgb[..., 0]) if kind == "grey" else Image.fromarray(rgb)
    buf = io.BytesIO()
    opts = {"subsampling": {"444": 0, "422": 1, "420": 2}.get(kind, 2), "progressive": kind == "progressive"}
    img.save(buf, "JPEG", quality=90, **({} if kind == "grey" else opts))
    data = buf.getvalue()
    full = turbo.decode(data)
    np.testing.assert_array_equal(full, _pil(data))
    for x, y, w, h in [(17, 33, 200, 150), (0, 0, 333, 250), (301, 201, 32, 49), (1, 1, 5, 7)]:
        expect = turbo.resize(full[y : y + h, x : x + w], 48, mirror=True)
        np.testing.assert_array_equal(turbo.crop_resize(data, (x, y, w, h), 48, mirror=True), expect)


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_dct_scaling_leaves_a_small_region_at_full_scale(kind):
    """A crop or box under 2x the output size on a side decodes at full scale: the exact pixels."""
    data = _photo(12, 500, 375)
    if kind == "train":
        window = (40, 30, 460, 300)  # 300 < 2 * 224
        np.testing.assert_array_equal(
            turbo.crop_resize(data, window, 224, dct_scaling=True), turbo.crop_resize(data, window, 224)
        )
    else:
        box = turbo.centre_box(500, 375, image_size=224, resize_size=256)
        np.testing.assert_array_equal(
            turbo.box_resize(data, box, 224, dct_scaling=True), turbo.box_resize(data, box, 224)
        )


@pytest.mark.parametrize(
    "scale,window", [(2, (101, 37, 700, 500)), (4, (3, 0, 1020, 760)), (2, (0, 0, 1024, 100 + 128))]
)
def test_dct_scaling_is_pillows_draft_then_the_window_resized(scale, window, path):
    """With dct_scaling, a crop >= 2x the output on both sides is libjpeg's DCT-scaled decode (Pillow's
    draft() is the same libjpeg call) of the crop's whole scaled pixels, resized as Pillow's resize(box=)
    of the crop in scaled coordinates: within 1 of that oracle."""
    size = 112 if window[3] == 228 else 128
    data = _photo(13, 1024, 768)
    x, y, w, h = window
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (1024 // scale, 768 // scale))
    assert img.size == (1024 // scale, 768 // scale)
    img = img.convert("RGB")
    b = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
    lo = (int(b[0]), int(b[1]), min(int(np.ceil(b[2])), img.width), min(int(np.ceil(b[3])), img.height))
    rel = (b[0] - lo[0], b[1] - lo[1], b[2] - lo[0], b[3] - lo[1])
    ref = np.asarray(img.crop(lo).resize((size, size), Image.BILINEAR, box=rel, reducing_gap=None)).astype(int)
    ours = turbo.crop_resize(data, window, size, mirror=True, dct_scaling=True).astype(int)
    assert np.abs(ours[:, ::-1] - ref).max() <= 1
    exact = turbo.crop_resize(data, window, size, mirror=True).astype(int)
    assert np.abs(ours - exact).max() > 1  # a different filter: not the full-scale pixels
