"""Restart intervals (loader/pipeline/_restart.c through turbo.py): the transcode is lossless, a window cut out of
the covered intervals decodes to the pixels of the whole stream's window decode, and hostile streams fall back or
are refused with one line."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tagstream.loader.pipeline import turbo
from tagstream.tools.bench.loader_data import photo_like
from tests.helpers.fuzz import byte_mutation, fuzz_settings, mutated, one_line_or_refusal

LAYOUTS = ("420", "422", "444", "grey")


def _jpeg(seed: int, w: int, h: int, layout: str = "420", **kw) -> bytes:
    rgb = photo_like(np.random.default_rng(seed), w, h)
    img = Image.fromarray(rgb[..., 1]) if layout == "grey" else Image.fromarray(rgb)
    opts = {} if layout == "grey" else {"subsampling": {"444": 0, "422": 1, "420": 2}[layout]}
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **opts, **kw)
    return buf.getvalue()


def _cut(data: bytes, region: tuple[int, int, int, int]):
    return turbo._jpeg.narrow(data, *region)


def _dri(data: bytes) -> int | None:
    at = data.find(b"\xff\xdd\x00\x04")
    return None if at < 0 else int.from_bytes(data[at + 4 : at + 6], "big")


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[bytes, bytes]]:
    """Odd sizes in every chroma layout: (the encoder's bytes, the same with restart markers every ~4 MCUs)."""
    sizes = {"420": (333, 250), "422": (301, 199), "444": (250, 333), "grey": (211, 157)}
    out = {}
    for i, (layout, (w, h)) in enumerate(sizes.items()):
        plain = _jpeg(20 + i, w, h, layout)
        out[layout] = (plain, turbo.add_restarts(plain, 4))
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("interval", ["rows", 1, 2, 4, 5, 64])
def test_the_transcode_is_lossless(layout, interval):
    plain = _jpeg(1, 203, 97, layout)
    rst = turbo.add_restarts(plain, interval)
    np.testing.assert_array_equal(turbo.decode(rst), turbo.decode(plain))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(rst))), np.asarray(Image.open(io.BytesIO(plain))))
    mcu_w = 8 if layout in ("444", "grey") else 16
    per_row = -(-203 // mcu_w)
    divisors = [d for d in range(1, per_row + 1) if per_row % d == 0]
    expect = per_row if interval == "rows" else min(divisors, key=lambda d: (abs(d - interval), d))
    assert _dri(rst) == expect  # a divisor of the MCUs per row: the intervals tile the rows


def test_the_transcode_of_a_progressive_jpeg_is_baseline_with_the_same_pixels():
    plain = _jpeg(2, 160, 120, progressive=True)
    rst = turbo.add_restarts(plain, 4)
    assert b"\xff\xc0" in rst[: rst.find(b"\xff\xda")] and _dri(rst) == 5  # 10 MCUs per row: 5 is the divisor nearest 4
    np.testing.assert_array_equal(turbo.decode(rst), turbo.decode(plain))


def test_the_transcode_keeps_app_and_comment_markers():
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    plain = _jpeg(3, 64, 48, exif=exif.tobytes(), comment=b"from the test")
    rst = turbo.add_restarts(plain, "rows")
    img = Image.open(io.BytesIO(rst))
    assert img.getexif()[0x010F] == "camera maker" and img.info.get("comment") == b"from the test"


@pytest.mark.parametrize("interval", [0, -1, 65536, "cols", True, 2.0])
def test_a_bad_interval_is_refused_by_name(interval):
    with pytest.raises(ValueError, match="interval must be"):
        turbo.add_restarts(_jpeg(4, 32, 32), interval)


@pytest.mark.parametrize("bad", [b"", b"not a jpeg", None], ids=["empty", "garbage", "truncated"])
def test_the_transcode_refuses_bad_data_in_one_line(bad):
    data = _jpeg(5, 120, 90)[:900] if bad is None else bad
    with pytest.raises(ValueError, match="JPEG") as exc:
        turbo.add_restarts(data, 4)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_cut_is_a_jpeg_of_the_covered_intervals(layout, photos):
    plain, rst = photos[layout]
    full = turbo.decode(plain)
    h, w = full.shape[:2]
    sub, dx, dy = _cut(rst, (100, 70, 180, 150))
    mcu = 8 if layout in ("444", "grey") else 16
    mcu_h = 16 if layout == "420" else 8
    assert dx % mcu == 0 and dy % mcu_h == 0 and dx <= 100 and dy <= 70
    part = turbo.decode(sub)
    ph, pw = part.shape[:2]
    assert dx + pw >= 180 and dy + ph >= 150 and pw * ph < w * h / 3  # the region, and much less than the image
    # inside the cut's edges (where chroma upsampling sees its neighbours) the pixels are the full image's
    np.testing.assert_array_equal(part[2:-2, 2:-2], full[dy + 2 : dy + ph - 2, dx + 2 : dx + pw - 2])


def test_nothing_to_cut_without_restart_markers_or_for_the_whole_image(photos):
    plain, rst = photos["420"]
    assert _cut(plain, (100, 70, 180, 150)) is None
    assert _cut(rst, (0, 0, 333, 250)) is None
    assert _cut(rst, (-50, -50, 10**6, 10**6)) is None
    assert _cut(_jpeg(6, 160, 120, progressive=True), (10, 10, 20, 20)) is None


@given(
    layout=st.sampled_from(LAYOUTS),
    frac=st.tuples(*[st.floats(0, 1)] * 4),
    size=st.sampled_from([16, 37, 64]),
    mirror=st.booleans(),
    dct=st.booleans(),
)
@fuzz_settings(examples=60)
def test_window_pixels_are_the_whole_streams(photos, layout, frac, size, mirror, dct):
    """Any window, with and without DCT scaling: the intervals' decode equals the window decode of the same
    coefficients without restart markers (bit for bit), and the eval box's likewise."""
    plain, rst = photos[layout]
    w, h = turbo.decode(plain).shape[1::-1]
    x, y = int(frac[0] * (w - 1)), int(frac[1] * (h - 1))
    cw, ch = 1 + int(frac[2] * (w - x - 1)), 1 + int(frac[3] * (h - y - 1))
    kw = {"mirror": mirror, "dct_scaling": dct}
    np.testing.assert_array_equal(
        turbo.crop_resize(rst, (x, y, cw, ch), size, **kw), turbo.crop_resize(plain, (x, y, cw, ch), size, **kw)
    )
    box = (x + 0.25, y + 0.5, x + cw - 0.125, y + ch)
    np.testing.assert_array_equal(
        turbo.box_resize(rst, box, size, dct_scaling=dct), turbo.box_resize(plain, box, size, dct_scaling=dct)
    )


@pytest.mark.parametrize("window", [(0, 0, 40, 30), (293, 0, 40, 30), (0, 220, 40, 30), (293, 220, 40, 30)])
def test_windows_at_the_image_edges(photos, window):
    for layout in LAYOUTS:
        plain, rst = photos[layout]
        w, h = turbo.decode(plain).shape[1::-1]
        x, y = min(window[0], w - 40), min(window[1], h - 30)
        assert _cut(rst, (x - 8, y - 8, x + 48, y + 38)) is not None
        np.testing.assert_array_equal(
            turbo.crop_resize(rst, (x, y, 40, 30), 24), turbo.crop_resize(plain, (x, y, 40, 30), 24)
        )


def test_dct_scaled_windows_of_a_large_photo():
    plain = _jpeg(7, 1024, 683)  # convert's --max-side: 64 x 43 MCUs (43 is prime: an interval row of 1 MCU)
    rst = turbo.add_restarts(plain, 4)
    for window in [(101, 37, 700, 500), (3, 0, 1020, 683), (500, 300, 460, 383), (0, 200, 1024, 250)]:
        for dct in (False, True):
            a = turbo.crop_resize(rst, window, 112, dct_scaling=dct)
            np.testing.assert_array_equal(a, turbo.crop_resize(plain, window, 112, dct_scaling=dct))


def _markers(data: bytes) -> list[int]:
    """Offsets of the RST markers in the scan."""
    scan = data.find(b"\xff\xda")
    return [m.start() for m in re.finditer(rb"\xff[\xd0-\xd7]", data[scan:])]


def _forge(rst: bytes, how: str) -> bytes:
    scan = rst.find(b"\xff\xda")
    rsts = [scan + at for at in _markers(rst)]
    dri = rst.find(b"\xff\xdd\x00\x04")
    sof = rst.find(b"\xff\xc0")
    b = bytearray(rst)
    if how == "missing-rst":
        del b[rsts[5] : rsts[5] + 2]
    elif how == "rst-out-of-order":
        b[rsts[3] + 1], b[rsts[4] + 1] = b[rsts[4] + 1], b[rsts[3] + 1]
    elif how == "forged-dri-smaller":
        b[dri + 4 : dri + 6] = (1).to_bytes(2, "big")
    elif how == "forged-dri-larger":
        b[dri + 4 : dri + 6] = (8).to_bytes(2, "big")
    elif how == "dri-not-tiling":
        b[dri + 4 : dri + 6] = (7).to_bytes(2, "big")
    elif how == "forged-height":
        b[sof + 5 : sof + 7] = (60000).to_bytes(2, "big")  # 10^6 intervals expected of a few hundred markers
    elif how == "forged-width":
        b[sof + 7 : sof + 9] = (65535).to_bytes(2, "big")
    elif how == "extra-rst":
        b[rsts[-1] : rsts[-1]] = b"\xff\xd0"
    elif how == "no-eoi":
        del b[-2:]
    elif how == "truncated-in-scan":
        del b[rsts[len(rsts) // 2] :]
    return bytes(b)


FORGERIES = [
    "missing-rst",
    "rst-out-of-order",
    "forged-dri-smaller",
    "forged-dri-larger",
    "dri-not-tiling",
    "forged-height",
    "forged-width",
    "extra-rst",
    "no-eoi",
    "truncated-in-scan",
]


@pytest.mark.parametrize("how", FORGERIES)
def test_a_forged_layout_is_not_cut_and_decodes_as_before(photos, how):
    """Markers missing, extra or out of order, a DRI or frame size that does not match the markers: no cut (the
    whole stream is decoded as it was before restart intervals, with libjpeg's own resync or refusal)."""
    bad = _forge(photos["420"][1], how)
    assert _cut(bad, (100, 70, 180, 150)) is None
    out = one_line_or_refusal(lambda: turbo.crop_resize(bad, (100, 70, 80, 80), 32), (ValueError,))
    assert isinstance(out, (np.ndarray, ValueError))


@given(mutation=byte_mutation(), frac=st.tuples(*[st.floats(0, 1)] * 2), dct=st.booleans())
@fuzz_settings(examples=80)
def test_hostile_bytes_give_pixels_or_one_line(photos, mutation, frac, dct):
    rst = photos["422"][1]
    bad = mutated(rst, mutation)
    x, y = int(frac[0] * 250), int(frac[1] * 150)
    for call in (
        lambda: turbo.crop_resize(bad, (x, y, 50, 48), 24, dct_scaling=dct),
        lambda: turbo.box_resize(bad, (x + 0.5, y, x + 50, y + 48.5), 24),
        lambda: turbo.add_restarts(bad, 4),
        lambda: _cut(bad, (x, y, x + 50, y + 48)),
    ):
        one_line_or_refusal(call, (ValueError,))
