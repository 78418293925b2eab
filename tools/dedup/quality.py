"""How well the perceptual hash separates near copies from distinct images: recall and false-match rate per
Hamming distance, on photo-like synthetic images (tools/synth/draw.py photo_like) and seeded random edits.

The trade-off: synthetic 1/f images with flat shapes stand in for photos, so no data set is needed and the
run is reproducible, but real photo collections hold more look-alike images (same scene, same layout),
so their false-match rate is higher than measured here; treat the chosen distance as an upper bound.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageEnhance

from tagstream.kernels.phash import hamming
from tagstream.tools.dedup.imagehash import content_phash, phash_image
from tagstream.tools.synth.draw import photo_like

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]


def _resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    s = rng.uniform(0.5, 2.0)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.BILINEAR)


def jpeg_edit(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(50, 96)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _brightness(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))


def cropper(low: float, high: float) -> Edit:
    def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Remove a fraction in [low, high] of the width and of the height, split at random between the sides."""
        cut_w = round(img.width * rng.uniform(low, high))
        cut_h = round(img.height * rng.uniform(low, high))
        left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
        return img.crop((left, top, img.width - (cut_w - left), img.height - (cut_h - top)))

    return crop


def img2dataset_border(size: int, fill: tuple[int, int, int] = (0, 0, 0)) -> Edit:
    """img2dataset's `--resize_mode border --image_size SIZE` (its defaults: border, 256): the longer side
    resized to SIZE (area filter down, Lanczos up: its cv2 INTER_AREA / INTER_LANCZOS4), centred on a SIZE x
    SIZE canvas of `fill` (albumentations' PadIfNeeded, odd pixel after the content), JPEG q95 (its
    --encode_quality). img2dataset asks for white; albumentations releases that ignore PadIfNeeded's `value`
    pad black, which is what the issue's downloads held."""

    def border(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        scale = size / max(img.size)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
        canvas = Image.new("RGB", (size, size), fill)
        canvas.paste(img.resize((w, h), resample), ((size - w) // 2, (size - h) // 2))
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=95)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return border


def _flip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _combined(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    for edit in (cropper(0.0, 0.05), _resize, _brightness, jpeg_edit):
        img = edit(img, rng)
    return img


# family -> (edit, main): the target (recall >= 0.95) applies to the main families; the others are reported
EDITS: dict[str, tuple[Edit, bool]] = {
    "resize 50-200%": (_resize, True),
    "jpeg q50-95": (jpeg_edit, True),
    "brightness +-10%": (_brightness, True),
    "crop <=5%": (cropper(0.0, 0.05), True),
    "all four": (_combined, True),
    "border 256": (img2dataset_border(256), True),
    "border 224": (img2dataset_border(224), True),
    "border 224 white": (img2dataset_border(224, (255, 255, 255)), True),
    "crop 5-20%": (cropper(0.05, 0.20), False),
    "flip": (_flip, False),
}


def _flip_combined(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return _combined(_flip(img, rng), rng)


# families matched as `tagstream dedup --mirrors` does: to the nearer of the original and its mirror image
MIRRORED: dict[str, Edit] = {"flip, --mirrors": _flip, "flip+all four, --mirrors": _flip_combined}


@dataclass(frozen=True)
class Quality:
    """Distances measured on one hash: near copies per edit family, and all pairs of distinct images."""

    hash_name: str
    hash_bits: int
    images: int
    size: tuple[int, int]
    near: dict[str, NDArray[np.int64]]  # family -> distance of each edited copy to its original
    distinct: NDArray[np.int64]  # distance of every pair of distinct originals (i < j)
    distinct_mirrored: NDArray[np.int64]  # the same, to the nearer of j and j flipped (dedup --mirrors)

    def recall(self, family: str, d: int) -> float:
        return float(np.mean(self.near[family] <= d))

    def false_match_rate(self, d: int, *, mirrored: bool = False) -> float:
        return float(np.mean((self.distinct_mirrored if mirrored else self.distinct) <= d))

    def choose_distance(self, *, min_recall: float = 0.95, max_false: float = 1e-4) -> tuple[int, bool]:
        """(D, target met): the smallest D at which every main family reaches min_recall with a false-match
        rate <= max_false (fewest false matches, cheapest join); if there is none, the largest D within
        the false-match budget, with target met False."""
        mains = [f for f, (_, main) in EDITS.items() if main and f in self.near]
        within = [d for d in range(self.hash_bits + 1) if self.false_match_rate(d) <= max_false]
        for d in within:
            if all(self.recall(f, d) >= min_recall for f in mains):
                return d, True
        return (max(within) if within else 0), False


# the border families hashed on their whole frame too, as before content boxes (reported only, for comparison)
UNCROPPED = {f"{f}, no crop": f for f in EDITS if f.startswith("border")}


def _hash_all(imgs: list[Image.Image], *, crop: bool = True) -> NDArray[np.uint64]:
    return np.array([content_phash(img)[1] if crop else phash_image(img) for img in imgs], np.uint64)


def measure(*, images: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Quality:
    """Make `images` distinct photo-like originals, edit each once per family (seeded), hash everything
    with the conversion's recipe (tools/dedup/imagehash.py content_phash: inside the content box)."""
    if images < 2:
        raise ValueError(f"images={images!r}: need at least 2 to form distinct pairs")
    rng = np.random.default_rng(seed)
    originals = [Image.fromarray(photo_like(rng, size[0], size[1])) for _ in range(images)]
    h0 = _hash_all(originals)
    hm = _hash_all([img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for img in originals])
    near = {f: hamming(h0, _hash_all([edit(img, rng) for img in originals])) for f, (edit, _) in EDITS.items()}
    for f, edit in MIRRORED.items():
        he = _hash_all([edit(img, rng) for img in originals])
        near[f] = np.minimum(hamming(h0, he), hamming(hm, he))
    whole = _hash_all(originals, crop=False)
    for f, family in UNCROPPED.items():
        near[f] = hamming(whole, _hash_all([EDITS[family][0](img, rng) for img in originals], crop=False))
    iu, ju = np.triu_indices(images, k=1)
    distinct = hamming(h0[iu], h0[ju])
    return Quality("dct64", 64, images, size, near, distinct, np.minimum(distinct, hamming(h0[iu], hm[ju])))


def table(q: Quality, distances: range) -> str:
    """Recall per family and false-match rate per distance, one row each, as fixed-width text."""
    head = f"{q.hash_name} ({q.hash_bits} bits, {q.images} images {q.size[0]}x{q.size[1]}, {q.distinct.size} distinct pairs)"
    cols = "".join(f"{d:>7d}" for d in distances)
    lines = [head, f"{'recall at D':<28}{cols}"]
    for f, (_, main) in EDITS.items():
        label = f + ("" if main else " *")
        lines.append(f"{label:<28}" + "".join(f"{q.recall(f, d):7.3f}" for d in distances))
    lines.append(f"{'false-match rate':<28}" + "".join(f"{q.false_match_rate(d):7.0e}" for d in distances))
    lines.append(f"{'false matches':<28}" + "".join(f"{int(np.sum(q.distinct <= d)):7d}" for d in distances))
    for f in [*MIRRORED, *UNCROPPED]:
        lines.append(f"{f + ' *':<28}" + "".join(f"{q.recall(f, d):7.3f}" for d in distances))
    lines.append(
        f"{'false-match rate, --mirrors':<28}"
        + "".join(f"{q.false_match_rate(d, mirrored=True):7.0e}" for d in distances)
    )
    lines.append("* reported only: not a main edit")
    return "\n".join(lines)
