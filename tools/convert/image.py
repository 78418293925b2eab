"""Validate one image by decoding it once; keep baseline RGB JPEGs' coefficients, re-encode everything else.

Trade-off: re-encoding (quality 90, baseline, 4:2:0) loses a little fidelity, but every stored image is then
a baseline RGB JPEG that every decoder (nvJPEG's hardware path included) takes, with its true width and
height in the index; a bad file is rejected here with a reason instead of failing a training batch. Every
stored JPEG is then losslessly rewritten with restart markers (`restart_interval`; 0 keeps the bytes as they
are): the same pixels, and a crop's window decodes without the entropy data outside it.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from tagstream.loader.data import MAX_PIXELS, storage
from tagstream.loader.pipeline import turbo
from tagstream.tools.convert.inputs import Item
from tagstream.tools.convert.tags import canonical_tags
from tagstream.tools.dedup.imagehash import content_phash

REJECT_REASONS = (
    "bad_metadata",  # the metadata line could not be used
    "missing_file",  # no such file, or not a regular file
    "unreadable_file",  # the file exists but reading it failed
    "empty_file",  # zero bytes
    "file_too_large",  # more bytes than --max-file-bytes
    "not_an_image",  # no image format recognises the bytes
    "truncated",  # the image data ends early
    "corrupt",  # recognised format, but decoding fails
    "too_small",  # shorter side below --min-side
    "decompression_bomb",  # more pixels than --max-pixels
    "no_image",  # a tar sample without an image member
    "damaged_file",  # a tar or table after the point where it is damaged (or one that cannot be opened at all)
    "download_failed",  # img2dataset could not download the image (status failed_to_download, or another failure)
    "resize_failed",  # img2dataset downloaded bytes it could not decode or resize (status failed_to_resize)
    "sidecar_mismatch",  # img2dataset's sidecars disagree with its tar (fewer samples than successes) or are unreadable
    "duplicate_member",  # a tar sample holding one extension twice (which image is meant cannot be told)
    "too_many_members",  # a tar sample of more members than inputs.bounds.MEMBERS_PER_SAMPLE
    "video",  # YFCC100M: the entry is a video
    "symlink",  # ImageFolder: a symbolic link to a folder, or to a file outside SRC (not followed)
)

ORIENTATION = 0x0112  # EXIF tag; decoders that honour it (DALI does by default) would rotate the stored image
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageOptions:
    min_side: int = 32
    max_side: int = 1024
    max_pixels: int = 89_478_485  # Pillow's own default guard
    max_file_bytes: int = 64 << 20
    quality: int = 90
    # Stored JPEGs are losslessly rewritten with restart markers every ~N MCUs (N = 4: 64 px of a 4:2:0
    # image), "rows" one per MCU row, 0 kept as they are: the CPU decoder then decodes only a crop's
    # intervals (docs/loader-bench.md has the figures behind the default and docs/architecture.md the
    # exception it makes to keeping the bytes).
    restart_interval: int | str = 4

    def __post_init__(self) -> None:
        for name in ("min_side", "max_side", "max_pixels", "max_file_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must not exceed max_side ({self.max_side})")
        if self.max_side**2 > MAX_PIXELS:  # a stored image must be readable: readers refuse more pixels
            raise ValueError(
                f"max_side ({self.max_side}) must be at most {math.isqrt(MAX_PIXELS)} "
                f"(a stored image holds at most {MAX_PIXELS} pixels)"
            )
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in [1, 100], got {self.quality!r}")
        ri = self.restart_interval
        if ri != "rows" and not (isinstance(ri, int) and not isinstance(ri, bool) and 0 <= ri <= 65535):
            raise ValueError(f"restart_interval must be 0 (none), 'rows' or an integer in [1, 65535], got {ri!r}")


@dataclass(frozen=True)
class Accepted:
    data: bytes  # the stored baseline JPEG
    width: int
    height: int
    phash: int  # of the content box
    content_box: tuple[int, int, int, int]  # inside uniform borders (tools.dedup.borders): left, top, right, bottom
    # why it was re-encoded; empty = the input's own coefficients (its bytes: restart_interval=0)
    reencoded: tuple[str, ...]


@dataclass(frozen=True)
class Rejected:
    reason: str  # one of REJECT_REASONS
    detail: str


@dataclass(frozen=True)
class ItemResult:
    item: Item
    outcome: Accepted | Rejected
    tags: tuple[str, ...]  # canonical tags


def jpeg_sof(data: bytes) -> int | None:
    """The SOF marker of a JPEG (0xC0 = baseline, 0xC2 = progressive, ...) or None if there is none."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF_MARKERS:
            return marker
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


@contextmanager
def _pillow_limits(max_pixels: int):
    """Pillow's guards set to our limits for the duration of one decode (and restored after)."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated image must fail, not decode grey
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _is_truncation(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, EOFError) or "truncated" in msg or "premature end" in msg


def _to_rgb(img: Image.Image, kinds: list[str]) -> Image.Image:
    """Any mode -> 8-bit RGB; transparency composited on white; 16-bit greys scaled (>> 8), not clipped."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        kinds.append("16bit")
        a = np.asarray(img).astype(np.int64)
        a = np.clip(a, 0, 65535) >> 8
        img, mode = Image.fromarray(a.astype(np.uint8), "L"), "L"
    elif mode == "F":
        kinds.append("float")
        img, mode = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L"), "L"
    if mode == "P":
        kinds.append("palette")
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("1", "L", "LA", "La"):
        kinds.append("greyscale")
    elif mode == "CMYK":
        kinds.append("cmyk")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        kinds.append("alpha")
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB") if mode != "RGB" else img


def validate_image(data: bytes, options: ImageOptions) -> Accepted | Rejected:
    """Decode once, then either keep the bytes (baseline RGB JPEG within limits) or re-encode."""
    with _pillow_limits(options.max_pixels):
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            return Rejected("not_an_image", "no image format recognises the bytes")
        except (Image.DecompressionBombError, ValueError) as exc:
            if isinstance(exc, Image.DecompressionBombError) or "too large" in str(exc).lower():
                return Rejected("decompression_bomb", str(exc))
            return Rejected("corrupt", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # Pillow plugins raise many unrelated types on malformed headers
            if _is_truncation(exc):
                return Rejected("truncated", f"{type(exc).__name__}: {exc}")
            return Rejected("corrupt", f"{type(exc).__name__}: {exc}")
        width, height = img.size
        if width * height > options.max_pixels:
            pixels = width * height
            return Rejected(
                "decompression_bomb", f"{width}x{height} = {pixels} pixels > --max-pixels {options.max_pixels}"
            )
        if min(width, height) < options.min_side:
            return Rejected("too_small", f"{width}x{height}: shorter side below --min-side {options.min_side}")
        try:
            img.load()
        except Image.DecompressionBombError as exc:
            return Rejected("decompression_bomb", str(exc))
        except Exception as exc:  # as above: every decoder failure becomes a reason, never a crash
            if _is_truncation(exc):
                return Rejected("truncated", f"{type(exc).__name__}: {exc}")
            if "too large" in str(exc).lower():
                return Rejected("decompression_bomb", f"{type(exc).__name__}: {exc}")
            return Rejected("corrupt", f"{type(exc).__name__}: {exc}")
        scan = _scan_problem(img, data)
        if scan is not None:
            return Rejected("corrupt", scan)
        try:
            return _store(img, data, options)
        except Exception as exc:  # bad EXIF, odd modes: the decoded image still cannot be stored
            return Rejected("corrupt", f"cannot convert the decoded image: {type(exc).__name__}: {exc}")


def _scan_problem(img: Image.Image, data: bytes) -> str | None:
    """Damaged JPEG scan data, which Pillow decodes without a word (libjpeg warns, pads or guesses): the
    strict check of loader/pipeline/turbo.py (its entropy decoding again, at 1/8 scale: its CPU cost per JPEG input is in
    docs/costs.md).
    None when the scan is sound, the image is no JPEG, or the extension is not built."""
    if (
        (img.format or "").upper() not in ("JPEG", "MPO")
        or img.width * img.height > MAX_PIXELS
        or not turbo.available()
    ):
        return None
    try:
        turbo.check(data)
    except ValueError as exc:
        return f"damaged JPEG scan data: {exc}"
    return None


def _store(img: Image.Image, data: bytes, options: ImageOptions) -> Accepted:
    kinds: list[str] = []
    fmt = (img.format or "unknown").lower()
    if fmt == "jpeg":  # MPO (JPEG + appended frames) is re-encoded: its extra frames are dead weight
        sof = jpeg_sof(data)
        if sof == 0xC2:
            kinds.append("progressive_jpeg")
        elif sof != 0xC0:
            kinds.append("non_baseline_jpeg")
    else:
        kinds.append(fmt)
    orientation = img.getexif().get(ORIENTATION, 1)
    if orientation not in (1, None):
        kinds.append("exif_orientation")
        img = ImageOps.exif_transpose(img)
    rgb = _to_rgb(img, kinds)
    if max(rgb.size) > options.max_side:
        kinds.append("oversize")
        scale = options.max_side / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    box, phash = content_phash(rgb)
    if kinds:
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=options.quality, progressive=False, optimize=False)
        data = buf.getvalue()
    if options.restart_interval and turbo.available():
        try:  # lossless (the same coefficients), so not counted as a re-encode
            data = turbo.add_restarts(data, options.restart_interval)
        except ValueError:  # libjpeg warns about bytes Pillow and check() pass over: stored as they are
            pass
    return Accepted(data, rgb.width, rgb.height, phash, box, tuple(kinds))


def read_image_file(path: str, options: ImageOptions) -> bytes | Rejected:
    """The bytes of an image file, or why they cannot be had; never follows into a FIFO or device."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Rejected("missing_file", f"no such file: {path}")
    except ValueError as exc:  # e.g. an embedded NUL byte: no file can have this name
        return Rejected("missing_file", f"not a valid path ({exc}): {path!r}")
    except OSError as exc:
        return Rejected("unreadable_file", f"{type(exc).__name__}: {exc}")
    if not os.path.isfile(path):
        return Rejected("missing_file", f"not a regular file: {path}")
    if st.st_size == 0:
        return Rejected("empty_file", "zero bytes")
    if st.st_size > options.max_file_bytes:
        return Rejected("file_too_large", f"{st.st_size} bytes > --max-file-bytes {options.max_file_bytes}")
    try:
        with open(path, "rb") as f:
            data = f.read(options.max_file_bytes + 1)
    except OSError as exc:
        return Rejected("unreadable_file", f"{type(exc).__name__}: {exc}")
    if not data:
        return Rejected("empty_file", "zero bytes")
    if len(data) > options.max_file_bytes:  # grew after the stat
        return Rejected("file_too_large", f"more than --max-file-bytes {options.max_file_bytes} bytes")
    return data


def check_image_bytes(data: bytes, options: ImageOptions) -> bytes | Rejected:
    """Image bytes an input holds itself (a tar member, a Parquet cell), under the same size rules as a file."""
    if not data:
        return Rejected("empty_file", "zero bytes")
    if len(data) > options.max_file_bytes:
        return Rejected("file_too_large", f"{len(data)} bytes > --max-file-bytes {options.max_file_bytes}")
    return data


def read_member(tar: str, offset: int, size: int, options: ImageOptions) -> bytes | Rejected:
    """An image member of a local tar, read at its offset (the converter's main process only walked the headers)."""
    if size > options.max_file_bytes:
        return Rejected("file_too_large", f"{size} bytes > --max-file-bytes {options.max_file_bytes}")
    try:
        with open(tar, "rb") as f:
            data = os.pread(f.fileno(), size, offset)
    except OSError as exc:
        return Rejected("unreadable_file", f"{type(exc).__name__}: {exc}")
    if len(data) != size:
        return Rejected("truncated", f"tar member of {size} bytes at byte {offset}: only {len(data)} bytes there")
    return check_image_bytes(data, options)


def read_image(path: str, options: ImageOptions) -> bytes | Rejected:
    """The bytes of an image file or object (an fsspec URL); a storage fault after its retries is raised
    (StorageError: the conversion stops and resumes on a rerun), never taken for a bad image."""
    if not storage.is_url(path):
        return read_image_file(path, options)
    if storage.local_path(path) is not None:  # file://
        return read_image_file(str(storage.local_path(path)), options)
    try:
        size = storage.size(path)
    except FileNotFoundError:
        return Rejected("missing_file", f"no such object: {storage.redact(path)}")
    if size > options.max_file_bytes:
        return Rejected("file_too_large", f"{size} bytes > --max-file-bytes {options.max_file_bytes}")
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        return Rejected("missing_file", f"no such object: {storage.redact(path)}")
    return check_image_bytes(data, options)


def process_item(item: Item, options: ImageOptions) -> ItemResult:
    """Worker entry: one input -> accepted image with canonical tags, or a rejection with its reason."""
    if item.error is not None:
        return ItemResult(item, Rejected(item.reason, item.error), ())
    if item.data is not None:
        data = check_image_bytes(item.data, options)
    elif item.member is not None:
        data = read_member(*item.member, options)
    else:
        data = read_image(item.image, options)
    if isinstance(data, Rejected):
        return ItemResult(item, data, ())
    return ItemResult(item, validate_image(data, options), tuple(canonical_tags(item.tags)))


def process_batch(items: list[Item], options: ImageOptions) -> list[ItemResult]:
    return [process_item(item, options) for item in items]
